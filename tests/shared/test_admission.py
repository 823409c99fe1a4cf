"""Bounded queues: turns in order, one call too many refused at once with a retry-after."""

from __future__ import annotations

import asyncio

import pytest

from services.shared.admission import Admission, PerKeyLimit
from services.shared.errors import RETRY_AFTER, Code, ServiceError


async def test_running_waiting_and_refused() -> None:
    admission = Admission("the validator", running=1, queued=1, retry_after_s=5)
    release = asyncio.Event()
    order: list[str] = []

    async def job(name: str) -> None:
        async with admission.slot():
            order.append(name)
            await release.wait()

    first = asyncio.create_task(job("first"))
    second = asyncio.create_task(job("second"))
    await asyncio.sleep(0.01)
    assert admission.inside == 2 and order == ["first"]  # one runs, one waits
    with pytest.raises(ServiceError) as err:
        async with admission.slot():
            pass
    assert err.value.code == "BUSY" and err.value.details[RETRY_AFTER] == 5
    assert "the validator" in err.value.message
    release.set()
    await asyncio.gather(first, second)
    assert order == ["first", "second"] and admission.inside == 0


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    admission = Admission("the processor", running=1, queued=1, retry_after_s=60)
    hold = asyncio.Event()

    async def job() -> None:
        async with admission.slot():
            await hold.wait()

    running = asyncio.create_task(job())
    waiting = asyncio.create_task(job())
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert admission.inside == 1
    hold.set()
    await running
    assert admission.inside == 0


def test_per_key_limit() -> None:
    refused: list[str] = []
    limit = PerKeyLimit(2, 30, Code.TOO_MANY_UPLOADS, "uploads", on_refused=refused.append)
    with limit.slot("alice"), limit.slot("alice"), limit.slot("bob"):
        with pytest.raises(ServiceError) as err, limit.slot("alice"):
            pass
        assert err.value.code == "TOO_MANY_UPLOADS" and err.value.details[RETRY_AFTER] == 30
    assert refused == ["TOO_MANY_UPLOADS"]
    with limit.slot("alice"), limit.slot("alice"):
        pass  # all given back
