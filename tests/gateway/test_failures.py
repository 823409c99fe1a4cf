"""When a part fails: processing fails, or a service is down. The user gets a
clear problem+json, and nothing is left behind (no object, no row).

A suite of its own: SWarp is replaced by /bin/false, and processes get stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from services.devrun import Suite
from tests.gateway.harness import Gateway, field, gateway_env, new_ob, new_user, paw_print

TARGET = (150.0, 2.0)


@pytest.fixture(scope="module")
def broken(suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    env = {**gateway_env(tmp_path_factory.mktemp("broken")), "SWARP_BIN": "/bin/false"}
    return Gateway(suite_factory(env))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_processing_failure_leaves_nothing(
    broken: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = broken.new_run(owner)
    # A paw print whose target lies on a chip: valid, but the mosaic needs SWarp.
    path = paw_print(tmp_path, ra=150.0, dec=2.0)
    before = (await broken.store_keys(), await broken.image_rows())
    resp, body = await broken.upload(http, path, new_ob(), run, (150.02, 2.0), owner)
    assert resp.status == 500 and body["code"] == "PROCESSING_FAILED", body
    assert "SWarp" in body["detail"] and "Traceback" not in str(body)
    assert (await broken.store_keys(), await broken.image_rows()) == before
    # A single-HDU image needs no SWarp and still goes through.
    resp, body = await broken.upload(http, field(tmp_path), new_ob(), run, TARGET, owner)
    assert resp.status == 201, body


async def test_services_down(broken: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner = new_user()
    run = broken.new_run(owner)
    ob = new_ob()
    broken.suite.procs["processor"].terminate()
    broken.suite.procs["processor"].wait(10)
    async with http.get(f"{broken.url}/readyz") as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 503 and body["code"] == "UNAVAILABLE"
    assert body["checks"] == {"validator": True, "processor": False, "catalog": True, "store": True}

    before = (await broken.store_keys(), await broken.image_rows())
    resp, body = await broken.upload(http, field(tmp_path), ob, run, TARGET, owner)
    assert resp.status == 503 and body["code"] == "UNAVAILABLE", body
    assert "127.0.0.1" not in body["detail"]  # internal addresses stay in the logs
    assert (await broken.store_keys(), await broken.image_rows()) == before

    broken.suite.procs["catalog"].terminate()
    broken.suite.procs["catalog"].wait(10)
    params = {"run_id": run, "target_ra": "150", "target_dec": "2"}
    async with http.get(
        f"{broken.url}/api/v1/obs/{ob}/background-images", params=params, headers=broken.auth(owner)
    ) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 503 and body["code"] == "UNAVAILABLE"
    resp, body = await broken.upload(http, field(tmp_path, "again.fits"), ob, run, TARGET, owner)
    assert resp.status == 503 and body["code"] == "UNAVAILABLE"
    assert await broken.store_keys() == before[0]
    async with http.get(f"{broken.url}/healthz") as resp:
        assert resp.status == 200  # alive, though not ready


@pytest.fixture(scope="module")
def impatient(suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    env = {**gateway_env(tmp_path_factory.mktemp("impatient")), "PROCESS_TIMEOUT_S": "3"}
    return Gateway(suite_factory(env))


async def test_a_hung_processor_fails_the_upload_at_its_deadline(
    impatient: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    import asyncio
    import signal
    import time

    owner = new_user()
    run = impatient.new_run(owner)
    processor = impatient.suite.procs["processor"]
    before = (await impatient.store_keys(), await impatient.image_rows())
    processor.send_signal(signal.SIGSTOP)  # alive, holding its sockets, answering nothing
    try:
        t0 = time.monotonic()
        resp, body = await impatient.upload(http, field(tmp_path), new_ob(), run, TARGET, owner)
        waited = time.monotonic() - t0
    finally:
        processor.send_signal(signal.SIGCONT)
    assert resp.status == 503 and body["code"] == "UNAVAILABLE", body
    assert 3 <= waited < 30
    await asyncio.sleep(3)  # the processor, awake again, must not write for the dead call
    assert (await impatient.store_keys(), await impatient.image_rows()) == before
    # And the suite works again.
    resp, body = await impatient.upload(http, field(tmp_path, "later.fits"), new_ob(), run, TARGET, owner)
    assert resp.status == 201, body
