"""Resumable uploads (tus 1.0: core, creation, expiration, termination): a dropped
connection costs only the bytes that were in flight.

The catalog keeps each upload's record (its creator, the OB context given at creation,
Upload-Length, expiry, the claim of the PATCH writing now); the bytes go to the same
staging object path as a one-shot upload's, hashed on the way. On the local store a PATCH
appends to the staging file in place; on S3, which cannot append, PATCHes become the parts
of a multipart upload (PART_BYTES each, the last one shorter), the bytes short of a part
kept in a file on the gateway's disk (its spool), never in memory. The offset is what the
store holds: the staged file's size, or the parts' sizes plus the spool's.

The SHA-256 state cannot be saved, so the hash lives in this process: a PATCH that does not
continue the bytes this gateway hashed (after a restart, or through another replica) leaves
the hash to be computed again from the staged object once the last byte is in. When it is,
the upload goes through the same checks and processing as a one-shot upload
(`Uploads.finish`), and the last PATCH answers as a one-shot upload does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.arguments import Caller
from services.gateway.uploads import StagedUpload, UploadOutcome, Uploads, UploadTarget, hashed_blocks
from services.shared.errors import Code, ServiceError
from services.shared.grpc_client import call
from services.shared.store import LocalStore, ObjectInfo, ObjectStore, S3Store

log = logging.getLogger(__name__)

PART_BYTES = 8 << 20  # an S3 part (at least 5 MiB but the last)
TUS_VERSION = "1.0.0"
SETTLE_S = 2.0  # how long a HEAD or PATCH waits for the upload's PATCH in progress to end
TUS_EXTENSIONS = "creation,expiration,termination"


@dataclasses.dataclass(frozen=True)
class Policy:
    max_bytes: int  # the upload size limit
    ttl_s: int  # idle time before an upload expires
    claim_s: int  # how long a PATCH's claim lasts unless renewed
    max_per_user: int  # live resumable uploads per user
    spool_dir: Path  # where S3 tails wait for a whole part


@dataclasses.dataclass
class _Hash:
    """The SHA-256 of an upload's first `at` bytes, as this process saw them."""

    sha: Any
    at: int


class _NoHash:
    """What a PATCH that does not continue this process's hash updates: nothing."""

    def update(self, data: bytes) -> None:
        pass


_NO_HASH = _NoHash()


@dataclasses.dataclass(frozen=True)
class Patched:
    offset: int
    expires_at: float
    outcome: UploadOutcome | None = None  # set when the PATCH brought the last byte


class Resumable:
    def __init__(
        self,
        uploads: Uploads,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        store: ObjectStore,
        policy: Policy,
    ) -> None:
        self.uploads = uploads
        self.catalog = catalog
        self.store = store
        self.policy = policy
        self._hashes: dict[str, _Hash] = {}
        # The PATCHes in progress here: when the next one of an upload comes, the last one's
        # client may have gone already (a dropped link) while its PATCH has yet to notice.
        self._writing: dict[str, tuple[asyncio.Event, Callable[[], bool]]] = {}
        policy.spool_dir.mkdir(parents=True, exist_ok=True)

    # ---- the four requests --------------------------------------------------------------------

    async def create(
        self, caller: Caller, target: UploadTarget, length: int, file_name: str
    ) -> catalog_pb2.Resumable:
        if length > self.policy.max_bytes:
            raise ServiceError(
                Code.TOO_LARGE,
                f"Upload-Length {length} is over the limit of {self.policy.max_bytes} bytes",
                limit=self.policy.max_bytes,
            )
        record: catalog_pb2.Resumable = await call(
            self.catalog.CreateResumable,
            catalog_pb2.CreateResumableRequest(
                caller=caller,
                ob=target.ob,
                length_bytes=length,
                bandpass=target.bandpass.strip()[:64],
                file_name=file_name,
                ttl_seconds=self.policy.ttl_s,
                max_per_user=self.policy.max_per_user,
            ),
        )
        self._remove_old_spool()
        return record

    async def status(self, caller: Caller, upload_id: str) -> tuple[catalog_pb2.Resumable, int]:
        """The caller's upload and its offset (NOT_FOUND for anyone else's)."""
        record = await self._get(caller, upload_id)
        await self._settled(upload_id)
        return record, await self._offset(record)

    async def patch(
        self,
        caller: Caller,
        upload_id: str,
        offset: int,
        length: int,
        chunks: AsyncIterator[bytes],
        connected: Callable[[], bool] = lambda: True,
    ) -> Patched:
        """Appends `length` bytes at `offset`; the last byte completes the upload. `connected`
        tells whether this PATCH's client is still there."""
        await self._settled(upload_id)
        ended = asyncio.Event()
        self._writing[upload_id] = (ended, connected)
        try:
            return await self._patch(caller, upload_id, offset, length, chunks)
        finally:
            ended.set()
            if self._writing.get(upload_id, (None,))[0] is ended:
                del self._writing[upload_id]

    async def _settled(self, upload_id: str) -> None:
        """Waits for a PATCH of the upload in progress here to write what it holds and end, so
        that the offset told is final: at most SETTLE_S while its client looks connected (it may
        be a live concurrent PATCH: the next PATCH then gets UPLOAD_LOCKED), longer when gone."""
        previous = self._writing.get(upload_id)
        if previous is not None:
            # A dropped link: the gateway may still hold bytes it received before the drop
            # (its socket's buffers), and writes them before it sees the end. It ends soon.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(previous[0].wait(), timeout=SETTLE_S if previous[1]() else 10)

    async def _patch(
        self, caller: Caller, upload_id: str, offset: int, length: int, chunks: AsyncIterator[bytes]
    ) -> Patched:
        record: catalog_pb2.Resumable = await call(
            self.catalog.ClaimResumable,
            catalog_pb2.ClaimResumableRequest(
                caller=caller,
                upload_id=upload_id,
                claim_seconds=self.policy.claim_s,
                ttl_seconds=self.policy.ttl_s,
            ),
        )
        renewing = asyncio.create_task(self._renew(record))
        multipart_id = record.multipart_id
        released = False
        try:
            at = await self._offset(record)
            if offset != at:
                raise ServiceError(
                    Code.UPLOAD_OFFSET_MISMATCH,
                    f"Upload-Offset {offset} is not where the upload stands: {at} (HEAD tells)",
                    offset=at,
                )
            if offset + length > record.length_bytes:
                raise ServiceError(
                    Code.TOO_LARGE,
                    f"the PATCH would end at byte {offset + length}, "
                    f"past Upload-Length {record.length_bytes}",
                    limit=record.length_bytes,
                )
            hashed = self._hashed(upload_id, at, chunks)
            if isinstance(self.store, S3Store):
                multipart_id, at = await self._append_parts(record, multipart_id, at, hashed)
            else:
                assert isinstance(self.store, LocalStore)
                at += await self.store.append_stream(record.staging_key, at, hashed)
            renewing.cancel()
            done = at == record.length_bytes
            record = await self._release(record, multipart_id)
            released = True
            if not done:
                return Patched(at, record.expires_at.seconds)
            outcome = await self._complete(caller, record, multipart_id)
            return Patched(at, record.expires_at.seconds, outcome)
        finally:
            renewing.cancel()
            if not released:
                with contextlib.suppress(ServiceError):
                    await self._release(record, multipart_id)

    async def terminate(self, caller: Caller, upload_id: str) -> None:
        await self._get(caller, upload_id)
        await self._end(caller, upload_id, remove_objects=True)

    # ---- the parts ----------------------------------------------------------------------------

    async def _get(self, caller: Caller, upload_id: str) -> catalog_pb2.Resumable:
        record: catalog_pb2.Resumable = await call(
            self.catalog.GetResumable, catalog_pb2.GetResumableRequest(caller=caller, upload_id=upload_id)
        )
        return record

    async def _offset(self, record: catalog_pb2.Resumable) -> int:
        if isinstance(self.store, S3Store):
            parts = await self._parts(record, record.multipart_id)
            tail = await self._tail(record, len(parts))
            return sum(size for _, _, size in parts) + (tail.size if tail is not None else 0)
        info = await self.store.stat(record.staging_key)
        return info.size if info is not None else 0

    async def _parts(self, record: catalog_pb2.Resumable, multipart_id: str) -> list[tuple[int, str, int]]:
        assert isinstance(self.store, S3Store)
        return await self.store.list_parts(record.staging_key, multipart_id) if multipart_id else []

    async def _tail(self, record: catalog_pb2.Resumable, parts: int) -> ObjectInfo | None:
        """The bytes short of a part that the last PATCH left, kept beside the staging object
        as `<key>.tail<N>` (N: the parts before them). Tails of other N are stale: a PATCH
        that died after uploading a part holding them; they are removed."""
        current = None
        async for info in self.store.list(record.staging_key + ".tail"):
            if info.key == tail_key(record.staging_key, parts):
                current = info
            else:
                await self.store.delete(info.key)
        return current

    def _spool(self, upload_id: str) -> Path:
        return self.policy.spool_dir / f"{upload_id}.tail"

    async def _append_parts(
        self, record: catalog_pb2.Resumable, multipart_id: str, at: int, chunks: AsyncIterator[bytes]
    ) -> tuple[str, int]:
        """S3: the bytes go to a spool file on disk, the last PATCH's tail first; each whole
        part is uploaded and the spool begun again; the last part goes once the last byte is
        in. What is short of a part when the PATCH ends (or is cut) is kept in the store as the
        tail, so that any gateway resumes it. Answers the multipart id and the offset."""
        assert isinstance(self.store, S3Store)
        store = self.store
        key = record.staging_key
        spool = self._spool(record.upload_id)
        parts = await self._parts(record, multipart_id)
        if not multipart_id:
            multipart_id = await store.create_multipart(key)
            await self._release(record, multipart_id, renew=True)
        tail = await self._tail(record, len(parts))
        spool.unlink(missing_ok=True)
        if tail is not None:
            await store.download(tail.key, spool)
        held = tail.size if tail is not None else 0
        out = await asyncio.to_thread(open, spool, "ab")
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    take = min(len(view), PART_BYTES - held)
                    await asyncio.to_thread(out.write, view[:take])
                    held += take
                    at += take
                    view = view[take:]
                    if held == PART_BYTES or at == record.length_bytes:
                        await asyncio.to_thread(out.close)
                        await store.upload_part(key, multipart_id, len(parts) + 1, spool)
                        parts.append((len(parts) + 1, "", held))
                        if tail is not None:  # in the part now
                            await store.delete(tail.key)
                            tail = None
                        spool.unlink()
                        held = 0
                        out = await asyncio.to_thread(open, spool, "ab")
        finally:
            await asyncio.to_thread(out.close)
            if held and (tail is None or held != tail.size):
                await store.put_file(tail_key(key, len(parts)), spool)
                if tail is not None and tail.key != tail_key(key, len(parts)):
                    await store.delete(tail.key)
            spool.unlink(missing_ok=True)
        return multipart_id, at

    def _hashed(self, upload_id: str, at: int, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The chunks in blocks, hashed on the way when they continue what this process hashed
        (as a one-shot upload's are: `hashed_blocks`)."""
        state = self._hashes.get(upload_id)
        if at == 0:
            state = self._hashes[upload_id] = _Hash(hashlib.sha256(), 0)
        elif state is None or state.at != at:
            self._hashes.pop(upload_id, None)  # hashed again from the store at the end
            state = None

        def seen(block: bytes) -> None:
            if state is not None:
                state.at += len(block)
            self.uploads.metrics.upload_bytes.inc(len(block))

        return hashed_blocks(chunks, state.sha if state is not None else _NO_HASH, seen)

    async def _complete(
        self, caller: Caller, record: catalog_pb2.Resumable, multipart_id: str
    ) -> UploadOutcome:
        """The last byte is in: the staged object whole, hashed, then the one-shot upload's
        checks and processing. The record ends whatever the outcome."""
        try:
            if isinstance(self.store, S3Store):
                parts = await self._parts(record, multipart_id)
                await self.store.complete_multipart(record.staging_key, multipart_id, parts)
            state = self._hashes.pop(record.upload_id, None)
            if state is not None and state.at == record.length_bytes:
                fits_hash = state.sha.hexdigest()
            else:
                fits_hash = await self._rehash(record)
            target = UploadTarget(record.ob, record.bandpass)
            staged = StagedUpload(record.staging_key, fits_hash, record.length_bytes)
            return await self.uploads.finish(caller, target, staged, record.file_name)
        finally:
            await self._end(caller, record.upload_id, remove_objects=True)

    async def _rehash(self, record: catalog_pb2.Resumable) -> str:
        started = time.perf_counter()
        sha = hashlib.sha256()
        async for chunk in self.store.stream(record.staging_key, 4 << 20):
            await asyncio.to_thread(sha.update, chunk)
        log.info(
            "resumable upload hashed again from the store",
            extra={
                "upload_id": record.upload_id,
                "bytes": record.length_bytes,
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        return sha.hexdigest()

    async def _renew(self, record: catalog_pb2.Resumable) -> None:
        """Keeps the PATCH's claim while it runs (a long PATCH outlives one claim)."""
        while True:
            await asyncio.sleep(max(self.policy.claim_s / 3, 0.5))
            with contextlib.suppress(ServiceError):
                await self._release(record, "", renew=True)

    async def _release(
        self, record: catalog_pb2.Resumable, multipart_id: str, renew: bool = False
    ) -> catalog_pb2.Resumable:
        released: catalog_pb2.Resumable = await call(
            self.catalog.ReleaseResumable,
            catalog_pb2.ReleaseResumableRequest(
                upload_id=record.upload_id,
                claim_token=record.claim_token,
                renew=renew,
                claim_seconds=self.policy.claim_s,
                multipart_id=multipart_id,
            ),
        )
        return released

    async def _end(self, caller: Caller, upload_id: str, remove_objects: bool) -> None:
        self._hashes.pop(upload_id, None)
        with contextlib.suppress(ServiceError):
            await call(
                self.catalog.EndResumable,
                catalog_pb2.EndResumableRequest(
                    caller=caller, upload_id=upload_id, remove_objects=remove_objects
                ),
            )

    def _remove_old_spool(self) -> None:
        """Spool files left by a gateway that died in a PATCH (the tail it had is lost: the
        client resends it)."""
        cutoff = time.time() - 2 * self.policy.ttl_s
        with contextlib.suppress(OSError):
            for path in self.policy.spool_dir.glob("*.tail"):
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()


def tail_key(staging_key: str, parts: int) -> str:
    return f"{staging_key}.tail{parts}"


def upload_metadata(text: str) -> dict[str, str]:
    """tus Upload-Metadata: comma-separated `key base64value` pairs (a key alone: empty)."""
    out: dict[str, str] = {}
    for pair in text.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key:
            continue
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode("utf-8") if value else ""
        except (ValueError, UnicodeDecodeError):
            raise ServiceError(
                Code.INVALID_ARGUMENT, f"Upload-Metadata {key[:40]!r}: not base64 of UTF-8 text"
            ) from None
    return out


def spool_dir(configured: str) -> Path:
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"bgimages-tus-{os.getuid()}"
