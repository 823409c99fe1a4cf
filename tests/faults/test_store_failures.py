"""When the object store fails (issue 11): a store folder that refuses writes
(`chattr +i`, as a read-only volume does), a store the processor cannot write,
an S3 server stopped mid-upload. Uploads answer 503 STORE_UNAVAILABLE without
the OS's words; `/readyz` and a metric say the store refuses writes while the
gateway stays in service for reads; nothing is left behind.

Suites of their own (real processes over real HTTP): their stores get frozen.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.devrun import Suite
from services.shared.store import S3Store
from tests.conftest import S3_KEYS, free_port
from tests.gateway.harness import Gateway, field, gateway_env, new_ob, new_user

TARGET = (150.0, 2.0)
OS_WORDS = ("Errno", "not permitted", "Permission", "OSError", "MaxRetryError", "/tmp/", "127.0.0.1")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def freeze(folder: Path, frozen: bool, recursive: bool = True) -> None:
    """Makes a folder refuse writes even to root (the immutable attribute), or undoes it."""
    args = ["chattr", *(["-R"] if recursive else []), "+i" if frozen else "-i", str(folder)]
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="module")
def frozen_gateway(
    suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gateway = Gateway(suite_factory(gateway_env(tmp_path_factory.mktemp("frozen"))))
    yield gateway
    freeze(Path(gateway.suite.env["STORE_DIR"]), False)  # pytest must be able to remove it


def assert_store_unavailable(status: int, body: Any) -> None:
    assert status == 503 and body["code"] == "STORE_UNAVAILABLE", body
    for words in OS_WORDS:
        assert words not in str(body), body


async def readyz(http: aiohttp.ClientSession, gateway: Gateway) -> tuple[int, Any]:
    async with http.get(f"{gateway.url}/readyz") as resp:
        return resp.status, await resp.json(content_type=None)


async def metric(http: aiohttp.ClientSession, gateway: Gateway, name: str) -> float:
    async with http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, f"no metric {name}"
    return float(found.group(1))


def temp_files(gateway: Gateway) -> list[str]:
    return os.listdir(Path(gateway.suite.env["STORE_DIR"]) / ".tmp")


async def test_a_store_that_refuses_writes(
    frozen_gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = frozen_gateway
    owner = new_user()
    run = gw.new_run(owner)
    ob = new_ob()
    auth = gw.auth(owner)
    resp, image = await gw.upload(http, field(tmp_path, "before.fits"), ob, run, TARGET, owner)
    assert resp.status == 201, image
    fits_hash = image["fits_hash"]
    async with http.get(
        f"{gw.url}/api/v1/images/{fits_hash}/hips", params={"ob_id": str(ob)}, headers=auth
    ) as resp:
        hips_url = (await resp.json())["hips_url"]
    status, ready = await readyz(http, gw)
    assert status == 200 and ready["store_writable"] is True and ready["status"] == "ready"
    before = (await gw.store_keys(), await gw.image_rows())

    store = Path(gw.suite.env["STORE_DIR"])
    freeze(store, True)
    try:
        resp, body = await gw.upload(http, field(tmp_path, "multipart.fits"), new_ob(), run, TARGET, owner)
        assert_store_unavailable(resp.status, body)
        params = {"run_id": run, "target_ra": "150", "target_dec": "2"}
        async with http.post(
            f"{gw.url}/api/v1/obs/{new_ob()}/background-images",
            params=params,
            data=field(tmp_path, "raw.fits").read_bytes(),
            headers={**auth, "Content-Type": "application/fits"},
        ) as resp:
            assert_store_unavailable(resp.status, await resp.json(content_type=None))

        # Still in service for what only reads: readyz 200, saying that writes fail.
        status, ready = await readyz(http, gw)
        assert status == 200, ready
        assert ready["store_writable"] is False and ready["status"] == "degraded"
        assert ready["checks"]["store"] is True
        assert any("STORE_UNAVAILABLE" in w for w in ready["warnings"])
        assert await metric(http, gw, "bgimages_gateway_store_writable") == 0
        async with http.get(f"{hips_url}/properties") as resp:
            assert resp.status == 200
        async with http.get(f"{gw.url}/api/v1/images/{fits_hash}/preview.png", headers=auth) as resp:
            assert resp.status == 200
        listing = await gw.listing(http, ob, run, TARGET, owner)
        assert [i["fits_hash"] for i in listing["own"]] == [fits_hash]
    finally:
        freeze(store, False)
    assert (await gw.store_keys(), await gw.image_rows()) == before
    assert temp_files(gw) == []

    # Writable again: said so, and uploads work.
    status, ready = await readyz(http, gw)
    assert status == 200 and ready["store_writable"] is True and "warnings" not in ready
    assert await metric(http, gw, "bgimages_gateway_store_writable") == 1
    resp, body = await gw.upload(http, field(tmp_path, "after.fits"), new_ob(), run, TARGET, owner)
    assert resp.status == 201, body
    gw.sweep_and_check()


async def test_a_processor_that_cannot_write_answers_503(
    frozen_gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = frozen_gateway
    owner = new_user()
    run = gw.new_run(owner)
    resp, body = await gw.upload(http, field(tmp_path, "first.fits"), new_ob(), run, TARGET, owner)
    assert resp.status == 201, body
    before = (await gw.store_keys(), await gw.image_rows())
    # Staging works (the gateway writes under staging/), the processor's content/ does not.
    content = Path(gw.suite.env["STORE_DIR"]) / "content"
    freeze(content, True, recursive=False)
    try:
        resp, body = await gw.upload(http, field(tmp_path, "second.fits"), new_ob(), run, TARGET, owner)
    finally:
        freeze(content, False, recursive=False)
    assert_store_unavailable(resp.status, body)
    assert (await gw.store_keys(), await gw.image_rows()) == before
    assert temp_files(gw) == []
    gw.sweep_and_check()


# ---- S3 stopped mid-upload ------------------------------------------------------------------------


class MotoServer:
    """moto's S3 server on a fixed port, stopped and started again (its objects survive)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Any = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_gateway(
    suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory, moto: MotoServer
) -> Gateway:
    env = {
        **gateway_env(tmp_path_factory.mktemp("s3gw")),
        **S3_KEYS,
        "S3_ENDPOINT": moto.endpoint,
        "S3_BUCKET": "b-" + uuid.uuid4().hex[:10],
    }
    return Gateway(suite_factory(env))


async def wait_ready(http: aiohttp.ClientSession, gateway: Gateway, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status, body = await readyz(http, gateway)
        if status == 200 and body["store_writable"]:
            return
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.5)


async def test_s3_stopped_mid_upload_answers_503(
    s3_gateway: Gateway, moto: MotoServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    gw = s3_gateway
    owner = new_user()
    run = gw.new_run(owner)
    bucket = S3Store(moto.endpoint, "testing", "testing", gw.suite.env["S3_BUCKET"], False, "us-east-1")

    async def objects() -> list[str]:
        return sorted([i.key async for i in bucket.list("") if not i.key.startswith("health/")])

    before = await objects()
    sent = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for n in range(8):
            yield b"\0" * (256 << 10)
            if n == 1:
                sent.set()
                await asyncio.sleep(1.0)  # the store goes away while the body is still coming

    async def stop_store() -> None:
        await sent.wait()
        await asyncio.to_thread(moto.stop)

    stopper = asyncio.create_task(stop_store())
    try:
        async with http.post(
            f"{gw.url}/api/v1/obs/{new_ob()}/background-images",
            params={"run_id": run, "target_ra": "150", "target_dec": "2"},
            data=body(),
            headers={**gw.auth(owner), "Content-Type": "application/fits"},
            timeout=aiohttp.ClientTimeout(total=120),
        ) as resp:
            status, answer = resp.status, await resp.json(content_type=None)
        await stopper
        assert_store_unavailable(status, answer)
        status, ready = await readyz(http, gw)
        assert status == 503 and ready["checks"]["store"] is False  # reads fail too: out of service
    finally:
        moto.start()
    assert await objects() == before  # no staging object
    await wait_ready(http, gw)
    resp, answer = await gw.upload(http, field(tmp_path), new_ob(), run, TARGET, owner)
    assert resp.status == 201, answer
    gw.sweep_and_check()
