"""Fixtures of the p2api-face tests: the trap server that must never be contacted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.p2fc.p2_standin import Trap


@pytest.fixture(scope="module")
def trap() -> Iterator[Trap]:
    """A server that records every connection: SSRF attempts aim at it."""
    server = Trap()
    server.start()
    yield server
    server.stop()
