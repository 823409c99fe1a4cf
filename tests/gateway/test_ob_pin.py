"""A failed upload records nothing, the OB's pin to a run included: after a
refused upload for a new OB in run A, run B's members may still use that OB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.harness import FileMaker, Gateway, field, new_ob, new_user, not_fits, table_only

TARGET = (150.0, 2.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("bad_file", [not_fits, table_only], ids=["NOT_FITS", "NO_IMAGE_HDU"])
async def test_a_refused_upload_does_not_pin_the_ob(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path, bad_file: FileMaker
) -> None:
    pi_a, pi_b = new_user(), new_user()
    run_a, run_b = gateway.new_run(pi_a), gateway.new_run(pi_b)
    ob_id = new_ob()
    resp, body = await gateway.upload(http, bad_file(tmp_path), ob_id, run_a, TARGET, pi_a)
    assert resp.status == 422, body
    # Run B's PI lists and uploads for the OB: no RUN_MISMATCH, the OB is B's.
    listing = await gateway.listing(http, ob_id, run_b, TARGET, pi_b)
    assert listing["selected"]["selection"] == "default"
    resp, body = await gateway.upload(http, field(tmp_path), ob_id, run_b, TARGET, pi_b)
    assert resp.status == 201, body
    resp, body = await gateway.upload(http, field(tmp_path, name="again.fits"), ob_id, run_a, TARGET, pi_a)
    assert resp.status == 409 and body["code"] == "RUN_MISMATCH", body
