"""Object store: one interface, a local folder (default) and S3/MinIO.

Keys are relative, slash-separated paths ("staging/<id>",
"content/<hash>/g3/hips/Norder3/Dir0/Npix12.png"). Both implementations are
asyncio-facing; blocking work runs in threads. `open_reader` returns a
synchronous, seekable file object that reads by ranges, for code (astropy,
the validator's header walk) that wants a file.

Every failure of the store itself is a `StoreError`: `ObjectMissing`
(NOT_FOUND) or `StoreUnavailable` (STORE_UNAVAILABLE), raised alike by both
implementations and by their readers, so callers never look at the client
library's exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import queue
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from services.shared.errors import Code, ServiceError

log = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*$")


def check_key(key: str) -> str:
    """Refuses keys that could leave the store's namespace."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise ServiceError(Code.INVALID_ARGUMENT, f"invalid object key {key!r}")
    return key


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: float  # seconds since the epoch


class StoreError(ServiceError):
    """A failure of the object store (not of the request): the base of the store's errors."""


class ObjectMissing(StoreError):
    """No object under the key (NOT_FOUND)."""

    def __init__(self, key: str) -> None:
        super().__init__(Code.NOT_FOUND, f"no object {key!r}")
        self.key = key


class StoreUnavailable(StoreError):
    """The store could not be reached or refused the operation (STORE_UNAVAILABLE). The message
    says only what failed: the OS's or the network's text goes to the log (`unavailable`)."""

    def __init__(self, message: str = "the object store is unavailable") -> None:
        super().__init__(Code.STORE_UNAVAILABLE, message)


class ObjectStore(Protocol):
    async def put_stream(self, key: str, chunks: AsyncIterator[bytes], content_type: str = ...) -> int: ...
    async def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> None: ...
    async def put_file(self, key: str, path: str | Path, content_type: str = ...) -> int: ...
    async def get_bytes(self, key: str) -> bytes: ...
    async def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    def stream(self, key: str, chunk_size: int = ...) -> AsyncIterator[bytes]: ...
    async def download(self, key: str, path: str | Path) -> None: ...
    async def stat(self, key: str) -> ObjectInfo | None: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> tuple[int, int]: ...
    def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]: ...
    def open_reader(self, key: str, block: int = ...) -> IO[bytes]: ...
    async def ping(self) -> bool: ...
    async def remove_abandoned_writes(
        self, older_than_s: float, keep: frozenset[str] = frozenset()
    ) -> tuple[int, int]: ...
    async def abort_multipart(self, key: str, upload_id: str) -> None: ...


def unavailable(action: str, key: str, exc: BaseException) -> StoreUnavailable:
    """STORE_UNAVAILABLE for an OS or network error. Its text (an errno, a host) goes to
    the log for the SRE; the error carries only what failed, so no caller can show it."""
    log.warning("object store: could not %s %r: %s: %s", action, key, type(exc).__name__, exc)
    return StoreUnavailable(f"the object store could not {action} an object")


@contextlib.contextmanager
def _os_errors(action: str, key: str) -> Iterator[None]:
    """OSError -> STORE_UNAVAILABLE around the store's own file operations."""
    try:
        yield
    except OSError as exc:
        raise unavailable(action, key, exc) from None


# Written (and overwritten) by `can_write`; nothing reads it.
WRITE_PROBE_KEY = "health/write-probe"


async def can_write(store: ObjectStore) -> bool:
    """Whether the store takes a write now (reads may work when writes do not)."""
    try:
        await store.put_bytes(WRITE_PROBE_KEY, b"ok\n", "text/plain")
    except Exception:
        return False
    return True


class LocalStore:
    """Objects as files under one folder; writes are atomic renames."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _commit(self, tmp: str, key: str) -> None:
        dest = self._path(key)
        for attempt in range(3):
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
                return
            except FileNotFoundError:  # a removal pruned the empty folder meanwhile
                if attempt == 2:
                    raise

    def _tempfile(self, key: str) -> tuple[int, str]:
        with _os_errors("write", key):
            return tempfile.mkstemp(dir=self._tmp)

    @staticmethod
    def _drop(tmp: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str = "application/octet-stream"
    ) -> int:
        check_key(key)
        fd, tmp = self._tempfile(key)
        out = os.fdopen(fd, "wb")
        total = 0
        try:
            # Only the store's own writes map to STORE_UNAVAILABLE: what the chunks raise
            # (the client went away, the body is too large) passes through as it is.
            async for chunk in chunks:
                with _os_errors("write", key):
                    await asyncio.to_thread(out.write, chunk)
                total += len(chunk)
            with _os_errors("write", key):
                out.close()
                self._commit(tmp, key)
        except BaseException:
            with contextlib.suppress(OSError):
                out.close()
            self._drop(tmp)
            raise
        return total

    async def append_stream(self, key: str, offset: int, chunks: AsyncIterator[bytes]) -> int:
        """Writes chunks into object `key` from byte `offset` on (where it ends: 0 creates
        it), in place, for a resumable upload; answers the bytes written. What was written
        before a failure stays: the upload resumes from there."""
        path = self._path(key)
        written = 0
        with _os_errors("write", key):
            path.parent.mkdir(parents=True, exist_ok=True)
            out = open(path, "r+b" if offset else "wb")  # noqa: SIM115 - closed below
        try:
            with _os_errors("write", key):
                out.seek(offset)
                out.truncate()
            async for chunk in chunks:
                with _os_errors("write", key):
                    await asyncio.to_thread(out.write, chunk)
                written += len(chunk)
        finally:
            with contextlib.suppress(OSError):
                out.close()
        return written

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Nothing to abort: a local object is written in place."""

    async def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self.put_bytes_sync, key, data)

    def put_bytes_sync(self, key: str, data: bytes) -> None:
        check_key(key)
        fd, tmp = self._tempfile(key)
        try:
            with _os_errors("write", key):
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                self._commit(tmp, key)
        except BaseException:
            self._drop(tmp)
            raise

    async def put_file(
        self, key: str, path: str | Path, content_type: str = "application/octet-stream"
    ) -> int:
        def copy() -> int:
            check_key(key)
            fd, tmp = self._tempfile(key)
            os.close(fd)
            try:
                with _os_errors("write", key):
                    shutil.copyfile(path, tmp)
                    self._commit(tmp, key)
                    return os.path.getsize(self._path(key))
            except BaseException:
                self._drop(tmp)
                raise

        return await asyncio.to_thread(copy)

    async def get_bytes(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise unavailable("read", key, exc) from None

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        def read() -> bytes:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)

        try:
            return await asyncio.to_thread(read)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise unavailable("read", key, exc) from None

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise unavailable("read", key, exc) from None
        try:
            while True:
                with _os_errors("read", key):
                    chunk = await asyncio.to_thread(f.read, chunk_size)
                if not chunk:
                    break
                yield chunk
        finally:
            f.close()

    async def download(self, key: str, path: str | Path) -> None:
        try:
            await asyncio.to_thread(shutil.copyfile, self._path(key), path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise unavailable("read", key, exc) from None

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise unavailable("read", key, exc) from None
        if not os.path.isfile(self._path(key)):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        except OSError as exc:
            raise unavailable("remove", key, exc) from None
        # Folders exist only for their objects: drop the ones left empty.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone): stop
                break
            parent = parent.parent

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        count = size = 0
        async for info in self.list(prefix):
            await self.delete(info.key)
            count += 1
            size += info.size
        return count, size

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        start = self.root
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if head:
            start = self.root / check_key(head)
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not (dirpath == str(self.root) and d == ".tmp"))
            for name in sorted(filenames):
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    try:
                        st = full.stat()
                    except FileNotFoundError:  # removed while listing
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        with _os_errors("list", prefix):
            infos = await asyncio.to_thread(lambda: list(self._walk(prefix)))
        for info in infos:
            yield info

    def open_reader(self, key: str, block: int = 1 << 20) -> IO[bytes]:
        """The object's file (`block` is for ranged stores: a local read costs no request)."""
        try:
            return io.BufferedReader(_LocalFile(self._path(key), key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise unavailable("read", key, exc) from None

    async def ping(self) -> bool:
        return self.root.is_dir()

    async def remove_abandoned_writes(
        self, older_than_s: float, keep: frozenset[str] = frozenset()
    ) -> tuple[int, int]:
        """Removes temporary files of writes that died half way (a writer killed
        before its rename), untouched for older_than_s; returns (files, bytes)."""

        def remove() -> tuple[int, int]:
            now, files, size = time.time(), 0, 0
            for entry in os.scandir(self._tmp):
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat()
                    if now - st.st_mtime >= older_than_s:
                        os.unlink(entry.path)
                        files, size = files + 1, size + st.st_size
            return files, size

        return await asyncio.to_thread(remove)


class _LocalFile(io.FileIO):
    """An object's file, read-only; a read or seek that fails is StoreUnavailable, as on S3."""

    def __init__(self, path: Path, key: str) -> None:
        super().__init__(path, "r")
        self._key = key

    def readinto(self, b: Any) -> int:
        with _os_errors("read", self._key):
            return super().readinto(b)

    def readall(self) -> bytes:
        with _os_errors("read", self._key):
            return super().readall()

    def seek(self, offset: int, whence: int = 0) -> int:
        with _os_errors("read", self._key):
            return super().seek(offset, whence)


class _QueueReader(io.RawIOBase):
    """A blocking file object fed by an asyncio producer (for minio uploads).

    Chunks are handed out without joining them into one growing buffer: a
    read returns at most what is pending, as the file protocol allows.
    """

    def __init__(self, q: queue.Queue[bytes | None]) -> None:
        self._q = q
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        while not self._pending and not self._eof:
            chunk = self._q.get()
            if chunk is None:
                self._eof = True
            else:
                self._pending = memoryview(chunk)
        return bool(self._pending)

    def readinto(self, b: Any) -> int:
        if not self._next():
            return 0
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = bytearray()
            while self._next():
                parts += self._pending
                self._pending = memoryview(b"")
            return bytes(parts)
        out = bytearray(size)
        filled = 0
        # minio asks for whole parts: fill up to size, crossing chunk edges.
        while filled < size and self._next():
            n = min(size - filled, len(self._pending))
            out[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        del out[filled:]
        return bytes(out)


def _s3_error(exc: BaseException, key: str, action: str = "read") -> ServiceError:
    """The store's error for what minio (or urllib3 under it) raised; ours pass through."""
    from minio.error import S3Error

    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, S3Error) and exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
        return ObjectMissing(key)
    return unavailable(action, key, exc)


def _get(client: Any, bucket: str, key: str, offset: int, length: int) -> bytes:
    """One (ranged) GET of an object's bytes; length 0 reads to the end."""
    resp = client.get_object(bucket, key, offset=offset, length=length)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


class _RangeReader(io.RawIOBase):
    """A seekable file object over an S3 object, reading by ranged GETs (failures: StoreError)."""

    def __init__(self, client: Any, bucket: str, key: str, size: int, block: int = 1 << 20) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._size, self._pos, self._block = size, 0, block
        self._cache: tuple[int, bytes] = (-1, b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _fetch(self, offset: int, length: int) -> bytes:
        try:
            return _get(self._client, self._bucket, self._key, offset, length)
        except Exception as exc:
            raise _s3_error(exc, self._key) from None

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        out = bytearray()
        while self._pos < end:
            start, data = self._cache
            if start <= self._pos < start + len(data):
                piece = data[self._pos - start : end - start]
            elif end - self._pos >= self._block:
                piece = self._fetch(self._pos, end - self._pos)
            else:
                block_start = self._pos
                self._cache = (
                    block_start,
                    self._fetch(block_start, min(self._block, self._size - block_start)),
                )
                continue
            out += piece
            self._pos += len(piece)
            if not piece:
                break
        return bytes(out)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


Parts = list[tuple[int, str, int]]  # (number, etag, size) of a multipart upload's parts


class S3Store:
    """Objects in one bucket of MinIO or any S3 server, through `minio`."""

    PART_SIZE = 16 << 20

    def __init__(
        self, endpoint: str, access_key: str, secret_key: str, bucket: str, secure: bool, region: str
    ) -> None:
        from minio import Minio

        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        self.bucket = bucket

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            with contextlib.suppress(Exception):
                self.client.make_bucket(self.bucket)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str = "application/octet-stream"
    ) -> int:
        check_key(key)
        q: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        reader = _QueueReader(q)
        total = 0
        upload = asyncio.create_task(
            asyncio.to_thread(
                self.client.put_object,
                self.bucket,
                key,
                reader,  # type: ignore[arg-type]
                -1,
                content_type,
                part_size=self.PART_SIZE,
            )
        )

        def failure() -> ServiceError:
            exc = upload.exception() if not upload.cancelled() else None
            if exc is None:
                return StoreUnavailable("the object store could not write an object")
            return _s3_error(exc, key, "write")

        async def feed(item: bytes | None) -> None:
            while True:
                if upload.done():
                    raise failure()  # the upload ended before its body did: it failed
                try:
                    q.put_nowait(item)
                    return
                except queue.Full:
                    await asyncio.sleep(0.005)

        try:
            async for chunk in chunks:
                total += len(chunk)
                await feed(chunk)
            await feed(None)
            await asyncio.wait([upload])
            if upload.exception() is not None:
                raise failure()
        except BaseException:
            # Unblock the reader so the thread ends, and drop the partial object.
            with contextlib.suppress(Exception):
                while True:
                    q.get_nowait()
            q.put(None)
            with contextlib.suppress(BaseException):
                await upload
            with contextlib.suppress(StoreError):  # the store is down: the sweep removes it
                await self.delete(key)
            raise
        return total

    async def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        check_key(key)
        await asyncio.to_thread(self.put_bytes_sync, key, data, content_type)

    def put_bytes_sync(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type)
        except Exception as exc:
            raise _s3_error(exc, key, "write") from None

    async def put_file(
        self, key: str, path: str | Path, content_type: str = "application/octet-stream"
    ) -> int:
        check_key(key)
        try:
            await asyncio.to_thread(
                self.client.fput_object, self.bucket, key, str(path), content_type, part_size=self.PART_SIZE
            )
        except Exception as exc:
            raise _s3_error(exc, key, "write") from None
        return os.path.getsize(path)

    async def get_bytes(self, key: str) -> bytes:
        return await self.get_range(key, 0, 0)

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        check_key(key)
        try:
            return await asyncio.to_thread(_get, self.client, self.bucket, key, offset, length)
        except Exception as exc:
            raise _s3_error(exc, key) from None

    async def stream(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        check_key(key)
        try:
            resp = await asyncio.to_thread(self.client.get_object, self.bucket, key)
        except Exception as exc:
            raise _s3_error(exc, key) from None
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(resp.read, chunk_size)
                except Exception as exc:
                    raise _s3_error(exc, key) from None
                if not chunk:
                    break
                yield chunk
        finally:
            resp.close()
            resp.release_conn()

    async def download(self, key: str, path: str | Path) -> None:
        check_key(key)
        try:
            await asyncio.to_thread(self.client.fget_object, self.bucket, key, str(path))
        except Exception as exc:
            raise _s3_error(exc, key) from None

    async def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        try:
            st = await asyncio.to_thread(self.client.stat_object, self.bucket, key)
        except Exception as exc:
            err = _s3_error(exc, key)
            if isinstance(err, ObjectMissing):
                return None
            raise err from None
        modified = st.last_modified.timestamp() if st.last_modified else time.time()
        return ObjectInfo(key, st.size or 0, modified)

    async def delete(self, key: str) -> None:
        check_key(key)
        try:
            await asyncio.to_thread(self.client.remove_object, self.bucket, key)
        except Exception as exc:
            raise _s3_error(exc, key, "remove") from None

    async def delete_prefix(self, prefix: str) -> tuple[int, int]:
        from minio.deleteobjects import DeleteObject

        infos = [info async for info in self.list(prefix)]
        if infos:

            def remove() -> None:
                errors = list(self.client.remove_objects(self.bucket, (DeleteObject(i.key) for i in infos)))
                if errors:
                    raise StoreUnavailable(f"could not remove {len(errors)} objects")

            try:
                await asyncio.to_thread(remove)
            except Exception as exc:
                raise _s3_error(exc, prefix, "remove") from None
        return len(infos), sum(i.size for i in infos)

    async def list(self, prefix: str = "") -> AsyncIterator[ObjectInfo]:
        def collect() -> list[ObjectInfo]:
            out = []
            for obj in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True):
                modified = obj.last_modified.timestamp() if obj.last_modified else time.time()
                out.append(ObjectInfo(obj.object_name or "", obj.size or 0, modified))
            return out

        try:
            infos = await asyncio.to_thread(collect)
        except Exception as exc:
            raise _s3_error(exc, prefix, "list") from None
        for info in infos:
            yield info

    def open_reader(self, key: str, block: int = 1 << 20) -> IO[bytes]:
        """Small reads fetch `block` bytes by one ranged GET (later reads inside it cost none);
        a read of a block or more is fetched whole."""
        check_key(key)
        try:
            st = self.client.stat_object(self.bucket, key)
        except Exception as exc:
            raise _s3_error(exc, key) from None
        raw = _RangeReader(self.client, self.bucket, key, st.size or 0, block)
        return io.BufferedReader(raw, min(block, 1 << 16))

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.to_thread(self.client.bucket_exists, self.bucket))
        except Exception:
            return False

    async def remove_abandoned_writes(
        self, older_than_s: float, keep: frozenset[str] = frozenset()
    ) -> tuple[int, int]:
        """Aborts multipart uploads that died half way (a writer killed before
        completing), started more than older_than_s ago, but those in `keep` (the
        resumable uploads in progress); returns (uploads, 0): S3 does not tell the
        size of the parts an upload holds. minio-py has no public call for this; its
        ListMultipartUploads / AbortMultipartUpload wrappers are used (a bucket
        lifecycle rule is the other way)."""

        def remove() -> int:
            now, aborted = time.time(), 0
            listing = self.client._list_multipart_uploads(self.bucket)
            for upload in listing.uploads:
                started = upload.initiated_time.timestamp() if upload.initiated_time else now
                if upload.upload_id in keep:
                    continue
                if now - started >= older_than_s and upload.object_name and upload.upload_id:
                    self.client._abort_multipart_upload(self.bucket, upload.object_name, upload.upload_id)
                    aborted += 1
            return aborted

        return await asyncio.to_thread(remove), 0

    # ---- multipart uploads, part by part (resumable uploads) ---------------------------------
    # minio-py offers them only as its wrappers of the S3 calls (underscored), used here.

    async def create_multipart(self, key: str, content_type: str = "application/fits") -> str:
        check_key(key)
        try:
            upload_id: str = await asyncio.to_thread(
                self.client._create_multipart_upload, self.bucket, key, {"Content-Type": content_type}
            )
        except Exception as exc:
            raise _s3_error(exc, key, "write") from None
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, path: str | Path) -> int:
        """Uploads part `number` (from 1) from a file on disk; answers its size."""
        check_key(key)

        def put() -> int:
            data = Path(path).read_bytes()  # at most a part: PART_SIZE
            self.client._upload_part(self.bucket, key, data, None, upload_id, number)
            return len(data)

        try:
            return await asyncio.to_thread(put)
        except Exception as exc:
            raise _s3_error(exc, key, "write") from None

    async def list_parts(self, key: str, upload_id: str) -> Parts:
        """(number, etag, size) of each part uploaded so far, in order."""
        check_key(key)

        def collect() -> Parts:
            out: Parts = []
            marker = "0"
            while True:
                result = self.client._list_parts(self.bucket, key, upload_id, part_number_marker=marker)
                out += [(p.part_number, p.etag, p.size or 0) for p in result.parts]
                if not result.is_truncated:
                    return sorted(out)
                marker = str(result.next_part_number_marker)

        try:
            return await asyncio.to_thread(collect)
        except Exception as exc:
            raise _s3_error(exc, key) from None

    async def complete_multipart(self, key: str, upload_id: str, parts: Parts) -> None:
        from minio.datatypes import Part

        check_key(key)
        try:
            await asyncio.to_thread(
                self.client._complete_multipart_upload,
                self.bucket,
                key,
                upload_id,
                [Part(n, etag) for n, etag, _ in parts],
            )
        except Exception as exc:
            raise _s3_error(exc, key, "write") from None

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        check_key(key)
        try:
            await asyncio.to_thread(self.client._abort_multipart_upload, self.bucket, key, upload_id)
        except Exception as exc:
            err = _s3_error(exc, key, "remove")
            if not isinstance(err, ObjectMissing):
                raise err from None


def open_store(settings: Any) -> LocalStore | S3Store:
    """The store the settings name: S3 when S3_ENDPOINT is set, else the local folder."""
    if settings.s3_endpoint:
        store = S3Store(
            settings.s3_endpoint,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            settings.s3_bucket,
            settings.s3_secure,
            settings.s3_region,
        )
        store.ensure_bucket()
        return store
    return LocalStore(settings.store_dir)


__all__ = [
    "LocalStore",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "S3Store",
    "StoreError",
    "StoreUnavailable",
    "can_write",
    "check_key",
    "open_store",
    "unavailable",
]
