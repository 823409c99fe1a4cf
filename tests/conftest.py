"""Fixtures shared by all tests: a real PostgreSQL, both object stores, FITS files."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.shared import embedded_pg
from services.shared.store import LocalStore, S3Store
from tests import contract


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PostgreSQL server: DATABASE_URL when set, else an embedded one."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    # Not under pytest's private temp folder: as root, pgserver runs PostgreSQL
    # as its own user, who must reach the data folder to stop the server.
    import tempfile

    folder = tempfile.mkdtemp(prefix="bgimages-pg-")
    os.chmod(folder, 0o755)
    return embedded_pg.start(folder, throwaway=True)


def _with_db(url: str, name: str) -> str:
    """The same server URL naming database `name`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
async def db_url(pg_url: str) -> AsyncIterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield _with_db(pg_url, name)
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback, speaking the protocol `minio` uses."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


S3_KEYS = {"S3_ACCESS_KEY": "testing", "S3_SECRET_KEY": "testing"}


def make_s3_store(endpoint: str) -> S3Store:
    store = S3Store(endpoint, "testing", "testing", "b-" + uuid.uuid4().hex[:10], False, "us-east-1")
    store.ensure_bucket()
    return store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LocalStore | S3Store:
    """Each object-store implementation in turn, empty."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return make_s3_store(endpoint)


# --- The whole suite as processes (end-to-end tests) ---------------------------------

from collections.abc import Callable  # noqa: E402

from services.devrun import Suite  # noqa: E402


def _create_database(server_url: str) -> str:
    import asyncio

    name = "e2e_" + uuid.uuid4().hex[:12]

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    # In a thread of its own: a fixture of an async test may run inside its event loop.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result()
    return _with_db(server_url, name)


@pytest.fixture(scope="session")
def suite_factory(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Suite]]:
    """Starts the four services as processes; `make(env={...})` for extra settings.

    Each suite gets a fresh database on the test server and its own store
    folder (or the S3 server given by env S3_ENDPOINT & co).
    """
    started: list[Suite] = []

    def make(env: dict[str, str] | None = None) -> Suite:
        full = {"DATABASE_URL": _create_database(pg_url), **(env or {})}
        suite = Suite(tmp_path_factory.mktemp("suite"), full)
        suite.start()
        started.append(suite)
        contract.watch(suite.gateway_url)
        return suite

    yield make
    for suite in started:
        suite.stop()


@pytest.fixture(scope="session")
def suite(suite_factory: Callable[..., Suite]) -> Suite:
    """One running suite shared by the session's end-to-end tests (use unique OB ids and users)."""
    return suite_factory()


def suite_store(suite: Suite) -> LocalStore:
    """The suite's local object store, to look at what it holds."""
    return LocalStore(suite.env["STORE_DIR"])


# The gateway tests' suite (`gateway` fixture), shared by tests/gateway and tests/browser.
pytest_plugins = ["tests.gateway.harness"]


# --- Every response from a gateway checked against its OpenAPI document ---------------


@pytest.fixture(scope="session", autouse=True)
def api_contract() -> Iterator[None]:
    with contract.install():
        yield


@pytest.fixture(autouse=True)
def no_contract_mismatch() -> Iterator[None]:
    """Fails a test that met a response the document does not describe, even one the
    test itself caught as an exception."""
    seen = len(contract.CHECKED.mismatches)
    yield
    new = contract.CHECKED.mismatches[seen:]
    assert not new, "responses the OpenAPI document does not describe:\n" + "\n".join(new)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if contract.CHECKED.responses:
        terminalreporter.write_line(
            f"OpenAPI contract: {contract.CHECKED.responses} gateway responses checked, "
            f"{contract.CHECKED.count} JSON bodies validated, {len(contract.CHECKED.mismatches)} mismatches"
        )
