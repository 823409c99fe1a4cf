"""The catalog's side of resumable (tus) uploads: the record of each upload in progress.

A record binds the upload to its creator and to the OB context given at creation, and
holds its staging object against the sweep until it completes, is terminated or expires.
One PATCH writes at a time: a claim (a token and a short deadline, renewed while the PATCH
runs) taken atomically, so two gateways never append to one upload at once. The bytes
themselves are the gateway's: this module never sees them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import asyncpg

from services.catalog import access
from services.catalog.model import Caller, ObRef
from services.catalog.repository import Repository
from services.shared.errors import Code, ServiceError
from services.shared.store import ObjectStore, StoreError

MAX_TEXT = 1024


@dataclasses.dataclass(frozen=True)
class Record:
    upload_id: str
    owner_id: str
    ob: bytes  # common.v1.ObContext, serialised
    bandpass: str
    file_name: str
    length_bytes: int
    staging_key: str
    multipart_id: str
    expires_at: dt.datetime
    claim_token: str = ""


def staging_key_of(upload_id: str) -> str:
    """The same staging path as a one-shot upload's (staging/<32 hex digits>)."""
    return f"staging/{uuid.UUID(upload_id).hex}"


def _id(upload_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(upload_id)
    except ValueError:
        raise ServiceError(Code.NOT_FOUND, "no such upload") from None


def _record(r: asyncpg.Record, token: str = "") -> Record:
    return Record(
        upload_id=str(r["upload_id"]),
        owner_id=r["owner_id"],
        ob=bytes(r["ob"]),
        bandpass=r["bandpass"],
        file_name=r["file_name"],
        length_bytes=r["length_bytes"],
        staging_key=r["staging_key"],
        multipart_id=r["multipart_id"],
        expires_at=r["expires_at"],
        claim_token=token,
    )


class Resumables:
    def __init__(self, repo: Repository, store: ObjectStore) -> None:
        self.repo = repo
        self.store = store

    async def create(
        self,
        caller: Caller,
        ob: ObRef,
        ob_bytes: bytes,
        length_bytes: int,
        bandpass: str,
        file_name: str,
        ttl_s: int,
        max_per_user: int,
    ) -> Record:
        if length_bytes <= 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "Upload-Length must be positive")
        if len(bandpass) > MAX_TEXT or len(file_name) > MAX_TEXT or ttl_s <= 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "bandpass, file_name or ttl_seconds out of range")
        access.check_same_instance(caller, ob.run_id)
        upload_id = str(uuid.uuid4())
        async with self.repo.transaction() as conn:
            ctx = access.ObContext.of(await self.repo.ob_context(conn, caller, ob.ob_id, ob.run_id))
            access.check_run_access(ctx, caller, ob)
            if max_per_user > 0 and await self.repo.live_resumables(conn, caller.user_id) >= max_per_user:
                raise ServiceError(
                    Code.TOO_MANY_UPLOADS,
                    f"{caller.user_id} has {max_per_user} resumable uploads in progress: finish or "
                    "terminate one, or wait for it to expire",
                    retry_after_s=60,
                )
            row = await self.repo.insert_resumable(
                conn,
                upload_id=upload_id,
                owner_id=caller.user_id,
                ob_id=ob.ob_id,
                run_id=ob.run_id,
                ob=ob_bytes,
                bandpass=bandpass,
                file_name=file_name,
                length_bytes=length_bytes,
                staging_key=staging_key_of(upload_id),
                ttl_s=ttl_s,
            )
        return _record(row)

    async def get(self, caller: Caller, upload_id: str) -> Record:
        async with self.repo.connection() as conn:
            row = await self.repo.resumable(conn, _id(upload_id), caller.user_id)
        return _record(_live(row, upload_id))

    async def claim(self, caller: Caller, upload_id: str, claim_s: int, ttl_s: int) -> Record:
        token = str(uuid.uuid4())
        async with self.repo.transaction() as conn:
            row = _live(await self.repo.resumable(conn, _id(upload_id), caller.user_id, lock=True), upload_id)
            if not await self.repo.claim_resumable(conn, row["upload_id"], uuid.UUID(token), claim_s, ttl_s):
                raise ServiceError(
                    Code.UPLOAD_LOCKED,
                    "another PATCH of this upload is in progress: wait for it to end (HEAD tells the offset)",
                )
            row = await self.repo.resumable(conn, row["upload_id"], caller.user_id)
        return _record(row, token)

    async def release(
        self, upload_id: str, token: str, renew: bool, claim_s: int, multipart_id: str
    ) -> Record:
        async with self.repo.transaction() as conn:
            row = await self.repo.release_resumable(
                conn, _id(upload_id), _token(token), renew, claim_s, multipart_id
            )
        if row is None:
            raise ServiceError(Code.UPLOAD_LOCKED, "the claim on this upload was lost (it timed out)")
        return _record(row)

    async def end(self, caller: Caller, upload_id: str, remove_objects: bool) -> None:
        async with self.repo.transaction() as conn:
            row = await self.repo.delete_resumable(conn, _id(upload_id), caller.user_id)
        if row is None:
            raise ServiceError(Code.NOT_FOUND, "no such upload")
        if remove_objects:
            await remove_staged(self.store, row["staging_key"], row["multipart_id"])

    async def expire(self) -> int:
        """Removes expired uploads and what they staged (the sweep's round); answers how many."""
        async with self.repo.transaction() as conn:
            rows = await self.repo.delete_expired_resumables(conn)
        for row in rows:
            await remove_staged(self.store, row["staging_key"], row["multipart_id"])
        return len(rows)


async def remove_staged(store: ObjectStore, key: str, multipart_id: str) -> None:
    """The staging object and, on S3, its unfinished multipart upload (its parts are no object
    the sweep could find). A store that is down: the expired record is gone, the sweep removes
    the object later; an unfinished multipart upload ages out by the bucket's lifecycle rule."""
    try:
        if multipart_id:
            await store.abort_multipart(key, multipart_id)
        await store.delete(key)
        await store.delete_prefix(key + ".tail")  # the bytes short of a part, on S3
    except StoreError:
        pass


def _live(row: asyncpg.Record | None, upload_id: str) -> asyncpg.Record:
    if row is None:
        raise ServiceError(Code.NOT_FOUND, "no such upload", upload_id=upload_id)
    if row["expires_at"] <= dt.datetime.now(dt.UTC):
        raise ServiceError(
            Code.UPLOAD_EXPIRED, "the upload was left idle past its expiry: upload the file again"
        )
    return row


def _token(token: str) -> uuid.UUID:
    try:
        return uuid.UUID(token)
    except ValueError:
        raise ServiceError(Code.INVALID_ARGUMENT, "claim_token is not a claim's token") from None
