"""Bounded queues: how many requests run at once, how many may wait, and the
refusal (with a retry-after hint) for one more, so no queue grows without bound.

The validator and processor bound their calls with `Admission`; the gateway
bounds uploads in all (`Admission` with no waiting) and per user (`PerKeyLimit`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

from services.shared.errors import RETRY_AFTER, Code, ServiceError


class Admission:
    """At most `running` at once and `queued` more waiting their turn; beyond that,
    BUSY at once, carrying `retry_after_s`."""

    def __init__(
        self,
        what: str,
        running: int,
        queued: int,
        retry_after_s: float,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.what = what
        self.running = max(1, running)
        self.queued = max(0, queued)
        self.retry_after_s = retry_after_s
        self._on_refused = on_refused
        self._turns = asyncio.Semaphore(self.running)
        self._inside = 0  # running and waiting

    @property
    def inside(self) -> int:
        """Requests running or waiting now."""
        return self._inside

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Runs the block in its turn; BUSY when running and waiting are at their bounds."""
        if self._inside >= self.running + self.queued:
            if self._on_refused is not None:
                self._on_refused(Code.BUSY)
            raise ServiceError(
                Code.BUSY,
                f"{self.what} is busy ({self.running} running, {self.queued} waiting); "
                f"try again in {self.retry_after_s:g} s",
                **{RETRY_AFTER: self.retry_after_s},
            )
        self._inside += 1
        try:
            async with self._turns:
                yield
        finally:
            self._inside -= 1


class PerKeyLimit:
    """At most `limit` at once per key (a user); one more is refused with `code`."""

    def __init__(
        self,
        limit: int,
        retry_after_s: float,
        code: Code,
        what: str,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.limit = max(1, limit)
        self.retry_after_s = retry_after_s
        self.code = code
        self.what = what
        self._on_refused = on_refused
        self._held: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, key: str) -> Iterator[None]:
        held = self._held.get(key, 0)
        if held >= self.limit:
            if self._on_refused is not None:
                self._on_refused(self.code)
            raise ServiceError(
                self.code,
                f"you have {held} {self.what} in progress, the most allowed; "
                f"try again when one has finished (in about {self.retry_after_s:g} s)",
                **{RETRY_AFTER: self.retry_after_s},
            )
        self._held[key] = held + 1
        try:
            yield
        finally:
            if self._held[key] <= 1:
                del self._held[key]
            else:
                self._held[key] -= 1
