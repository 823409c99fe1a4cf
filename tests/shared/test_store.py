"""Both object-store implementations behave the same: local folder and S3 (moto)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.shared.errors import ServiceError
from services.shared.store import (
    LocalStore,
    ObjectMissing,
    S3Store,
    StoreError,
    StoreUnavailable,
    can_write,
    check_key,
)

Store = LocalStore | S3Store


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_put_get_stat_delete(store: Store) -> None:
    await store.put_bytes("a/b/c.txt", b"hello world")
    assert await store.get_bytes("a/b/c.txt") == b"hello world"
    assert await store.get_range("a/b/c.txt", 6, 5) == b"world"
    info = await store.stat("a/b/c.txt")
    assert info is not None and info.size == 11
    await store.delete("a/b/c.txt")
    assert await store.stat("a/b/c.txt") is None
    with pytest.raises(ObjectMissing) as err:
        await store.get_bytes("a/b/c.txt")
    assert err.value.code == "NOT_FOUND"


async def test_streamed_put_is_multipart_and_exact(store: Store) -> None:
    data = os.urandom(40 << 20)  # over two S3 parts of 16 MiB
    n = await store.put_stream("staging/big", chunks(data, 1 << 20))
    assert n == len(data)
    digest = hashlib.sha256()
    async for piece in store.stream("staging/big"):
        digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


async def test_failed_stream_leaves_no_object(store: Store) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        await store.put_stream("staging/broken", broken())
    assert await store.stat("staging/broken") is None
    assert [i.key async for i in store.list("staging/")] == []


async def test_list_and_delete_prefix(store: Store) -> None:
    for key in ("content/h1/g1/hips/properties", "content/h1/g1/preview.png", "content/h2/g1/x"):
        await store.put_bytes(key, b"12345")
    keys = sorted([i.key async for i in store.list("content/h1/")])
    assert keys == ["content/h1/g1/hips/properties", "content/h1/g1/preview.png"]
    assert await store.delete_prefix("content/h1/") == (2, 10)
    assert [i.key async for i in store.list("content/")] == ["content/h2/g1/x"]
    if isinstance(store, LocalStore):  # no empty folders left behind
        assert not (store.root / "content" / "h1").exists()
        assert (store.root / "content" / "h2" / "g1").is_dir()


async def test_ranged_reader_seeks(store: Store) -> None:
    data = bytes(range(256)) * 40000  # 10 MB
    await store.put_bytes("f.fits", data)
    with store.open_reader("f.fits") as f:
        f.seek(2880 * 1000)
        assert f.read(10) == data[2880000:2880010]
        f.seek(-5, 2)
        assert f.read() == data[-5:]


@pytest.mark.parametrize("block", [2880, 64 << 10, 1 << 20])
async def test_ranged_reader_reads_the_same_whatever_its_block(store: Store, block: int) -> None:
    """The reader's block (how much a small read fetches) changes what is fetched, never what is read."""
    data = os.urandom(300_000)
    await store.put_bytes("f.fits", data)
    with store.open_reader("f.fits", block=block) as f:
        # Across a block's edge, past the end of the object, and nothing.
        for offset, length in [
            (0, 80),
            (2880, 2880 * 8),
            (min(block, 200_000) - 7, 20),
            (250_000, 100_000),
            (5, 0),
        ]:
            f.seek(offset)
            assert f.read(length) == data[offset : offset + length]
            assert f.tell() == min(len(data), offset + length)
        f.seek(1000)
        assert f.read() == data[1000:]


async def test_a_missing_object_is_object_missing_in_every_call(store: Store, tmp_path: Path) -> None:
    async def stream() -> None:
        async for _ in store.stream("staging/none"):
            pass

    calls = [
        store.get_bytes("staging/none"),
        store.get_range("staging/none", 0, 10),
        store.download("staging/none", tmp_path / "out"),
        stream(),
    ]
    for call in calls:
        with pytest.raises(ObjectMissing) as err:
            await call
        assert err.value.code == "NOT_FOUND" and isinstance(err.value, StoreError)
    with pytest.raises(ObjectMissing):
        store.open_reader("staging/none")
    assert await store.stat("staging/none") is None
    await store.delete("staging/none")  # removing what is not there is no error


async def test_an_object_removed_under_an_open_s3_reader_is_object_missing(s3_endpoint: str) -> None:
    """The reader's ranged GETs raise the store's errors, not minio's."""
    from tests.conftest import make_s3_store

    store = make_s3_store(s3_endpoint)
    await store.put_bytes("staging/k", os.urandom(100_000))
    with store.open_reader("staging/k", block=4096) as f:
        assert len(f.read(100)) == 100
        await store.delete("staging/k")
        f.seek(50_000)
        with pytest.raises(ObjectMissing):
            f.read(100)


def test_a_local_read_that_fails_is_store_unavailable(tmp_path: Path) -> None:
    """An OS error while reading (here: the descriptor closed under the reader) is STORE_UNAVAILABLE,
    without the OS's text."""
    store = LocalStore(tmp_path / "store")
    store.put_bytes_sync("staging/k", b"x" * 100_000)
    f = store.open_reader("staging/k")
    os.close(f.fileno())
    try:
        for read in (lambda: f.read(10), f.read, lambda: f.seek(5000)):
            with pytest.raises(StoreUnavailable) as err:
                read()
            assert "Errno" not in err.value.message and str(tmp_path) not in err.value.message
    finally:
        with contextlib.suppress(OSError):
            f.close()


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/../b", "", "a/./b", "sp ace"])
def test_keys_cannot_leave_the_namespace(key: str) -> None:
    with pytest.raises(ServiceError) as err:
        check_key(key)
    assert err.value.code == "INVALID_ARGUMENT"


def chattr(flag: str, folder: Path) -> None:
    """+i: the folder refuses writes even to root (as a read-only volume does); -i undoes it."""
    subprocess.run(["chattr", "-R", flag, str(folder)], check=True)


async def test_a_store_that_refuses_writes_says_store_unavailable(tmp_path: Path) -> None:
    """The store maps OS errors itself, so every service answers 503, never the OS's text."""
    store = LocalStore(tmp_path / "store")
    await store.put_bytes("content/a/x.txt", b"kept")
    chattr("+i", store.root)
    try:
        for write in (
            store.put_bytes("content/a/y.txt", b"no"),
            store.put_stream("staging/s", chunks(b"no" * 100, 10)),
            store.put_file("content/b/z.txt", tmp_path / "store" / "content" / "a" / "x.txt"),
            store.delete("content/a/x.txt"),
        ):
            with pytest.raises(StoreUnavailable) as err:
                await write
            assert err.value.code == "STORE_UNAVAILABLE"
            assert "Errno" not in err.value.message and str(tmp_path) not in err.value.message
        assert await store.get_bytes("content/a/x.txt") == b"kept"  # reads still work
        assert not await can_write(store)
    finally:
        chattr("-i", store.root)
    assert os.listdir(store.root / ".tmp") == []
    assert await can_write(store)


async def test_an_s3_server_that_is_down_says_store_unavailable() -> None:
    from tests.conftest import free_port

    store = S3Store(f"127.0.0.1:{free_port()}", "testing", "testing", "b-nobody", False, "us-east-1")
    # (minio retries for some seconds each: two calls, a write and a read)
    for call in (store.put_stream("staging/k", chunks(b"x" * 10, 5)), store.get_bytes("k")):
        with pytest.raises(StoreUnavailable) as err:
            await call
        assert err.value.code == "STORE_UNAVAILABLE"
        assert "127.0.0.1" not in err.value.message and "Retry" not in err.value.message
