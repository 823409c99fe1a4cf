"""The catalog's side of the upload protocol: BeginUpload, CompleteUpload, AbortUpload.

Begin checks access and any pin the OB has (a new OB is pinned by
Complete, so an upload that fails pins nothing), locks the content row of the hash
(so it cannot be removed under a reuse, and a removal cannot race the
decision), and takes a lease: on the stored content (REUSE_CONTENT) or on
a fresh generation's prefix (PROCESS). Complete records everything in one
transaction and makes the image the OB's selection.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re

from services.catalog import access, footprint
from services.catalog.model import (
    Caller,
    FootprintIn,
    Generated,
    ImageView,
    ObRef,
    SelectionKind,
    check_hash,
)
from services.catalog.removal import purge
from services.catalog.repository import Repository, lease_uuid
from services.shared.errors import Code, ServiceError
from services.shared.failpoints import failpoint
from services.shared.store import ObjectStore

log = logging.getLogger(__name__)

MAX_TEXT = 1024
_STAGING_KEY = re.compile(r"^staging/[0-9a-f]{32}$")


class Action(enum.IntEnum):
    """Numbers of BeginUploadResponse.Action."""

    PROCESS = 1
    REUSE_CONTENT = 2


@dataclasses.dataclass(frozen=True)
class Begun:
    action: Action
    lease_id: str
    output_prefix: str
    generation: int
    existing: ImageView | None
    lease_ttl_s: int


@dataclasses.dataclass(frozen=True)
class Processed:
    """What the processor wrote (ignored when the upload reuses a content)."""

    fits_key: str = ""
    preview_key: str = ""
    hips_prefix: str = ""
    hips_order: int = 0
    cut_low: float = 0.0
    cut_high: float = 0.0
    stored_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Described:
    """What the user and the validator said about the file."""

    file_name: str
    filter: str
    object_name: str
    footprints: tuple[FootprintIn, ...]


def prefix_of(fits_hash: str, generation: int) -> str:
    return f"content/{fits_hash}/g{generation}/"


def _text(value: str, what: str) -> str:
    if len(value) > MAX_TEXT or "\x00" in value:
        raise ServiceError(Code.INVALID_ARGUMENT, f"{what} is too long or holds NUL characters")
    return value


class Uploads:
    def __init__(self, repo: Repository, store: ObjectStore, lease_ttl_s: int) -> None:
        self.repo = repo
        self.store = store
        self.lease_ttl_s = lease_ttl_s

    async def begin(
        self,
        caller: Caller,
        ob: ObRef,
        fits_hash: str,
        size_bytes: int,
        staging_key: str = "",
        generated: Generated | None = None,
    ) -> Begun:
        """The caller needs access to the OB's run; the image will be theirs, or the
        system owner's when the suite makes it (`generated`)."""
        fits_hash = check_hash(fits_hash)
        owner_id = generated.owner_id if generated else caller.user_id
        if size_bytes < 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "size_bytes is negative")
        if staging_key and not _STAGING_KEY.match(staging_key):
            raise ServiceError(Code.INVALID_ARGUMENT, "staging_key is not a staging object key")
        access.check_same_instance(caller, ob.run_id)
        async with self.repo.transaction() as conn:
            ctx = access.ObContext.of(await self.repo.ob_context(conn, caller, ob.ob_id, ob.run_id))
            # A pin of another run is refused now; a new OB is pinned only by
            # CompleteUpload, so an upload that fails pins nothing.
            access.check_run_access(ctx, caller, ob)
            content = await self.repo.lock_content_by_hash(conn, fits_hash)
            if content is not None:
                lease = await self.repo.insert_lease(
                    conn,
                    fits_hash=fits_hash,
                    owner_id=owner_id,
                    ob_id=ob.ob_id,
                    run_id=ob.run_id,
                    generation=content["generation"],
                    prefix=content["prefix"],
                    content_id=content["content_id"],
                    ttl_s=self.lease_ttl_s,
                    staging_key=staging_key,
                    file_bytes=size_bytes,
                )
                existing = await self.repo.own_image(conn, owner_id, fits_hash)
                return Begun(
                    Action.REUSE_CONTENT,
                    str(lease),
                    content["prefix"],
                    content["generation"],
                    existing,
                    self.lease_ttl_s,
                )
            generation = await self.repo.next_generation(conn)
            prefix = prefix_of(fits_hash, generation)
            lease = await self.repo.insert_lease(
                conn,
                fits_hash=fits_hash,
                owner_id=owner_id,
                ob_id=ob.ob_id,
                run_id=ob.run_id,
                generation=generation,
                prefix=prefix,
                content_id=None,
                ttl_s=self.lease_ttl_s,
                staging_key=staging_key,
                file_bytes=size_bytes,
            )
            return Begun(Action.PROCESS, str(lease), prefix, generation, None, self.lease_ttl_s)

    async def complete(
        self,
        caller: Caller,
        ob: ObRef,
        lease_id: str,
        fits_hash: str,
        described: Described,
        processed: Processed,
        generated: Generated | None = None,
        keep_selection: bool = False,
    ) -> ImageView:
        """Records the image and makes it the OB's selection (unless `keep_selection`). A system-owned one
        (`generated`) is not selected here (Select with its source key does it, for
        every OB that asked); one already stored for its key is kept instead."""
        fits_hash = check_hash(fits_hash)
        owner_id = generated.owner_id if generated else caller.user_id
        access.check_same_instance(caller, ob.run_id)
        lease_key = lease_uuid(lease_id)
        if lease_key is None:
            raise ServiceError(Code.INVALID_ARGUMENT, "lease_id is not a lease id")
        _text(described.file_name, "file_name")
        _text(described.filter, "filter")
        _text(described.object_name, "object_name")
        # The index rows are computed before the transaction (CPU work, no locks held).
        index_rows = []
        for fp in described.footprints:
            flat, xyz = footprint.corner_arrays(fp)
            index_rows.append((fp.hdu, flat, xyz, fp.pixel_scale_arcsec, footprint.cells(fp)))
        if len({row[0] for row in index_rows}) != len(index_rows):
            raise ServiceError(Code.INVALID_ARGUMENT, "two footprints name the same HDU")
        orphan_prefix: str | None = None
        async with self.repo.transaction() as conn:
            lease = await self.repo.take_lease(conn, lease_key)
            if lease is None or not lease["live"]:
                raise ServiceError(
                    Code.NOT_FOUND, "unknown or expired upload lease; upload again", lease_id=lease_id
                )
            if (lease["fits_hash"], lease["owner_id"], lease["ob_id"]) != (fits_hash, owner_id, ob.ob_id):
                raise ServiceError(
                    Code.INVALID_ARGUMENT, "the lease was taken for another upload", lease_id=lease_id
                )
            if lease["run_id"] != ob.run_id:
                raise ServiceError(Code.RUN_MISMATCH, f"OB {ob.ob_id} belongs to run {lease['run_id']!r}")
            made = (
                None if generated is None else await self.repo.generated_image(conn, generated.source_key, "")
            )
            if made is not None:
                # Made meanwhile by another request (the same key): that one is shown;
                # what this request wrote is for nothing.
                if await self.repo.lock_content(conn, made.content_id) is None:
                    raise ServiceError(Code.GONE, "the image was removed meanwhile; ask again")
                content_id = made.content_id
                if not lease["reuse"]:
                    orphan_prefix = lease["prefix"]
            elif lease["reuse"]:
                content = None
                if lease["content_id"] is not None:
                    content = await self.repo.lock_content(conn, lease["content_id"])
                if content is None:
                    raise ServiceError(
                        Code.GONE,
                        "the stored copy of these bytes was removed during the upload; upload again",
                    )
                content_id = content["content_id"]
            else:
                self._check_processed(lease["prefix"], processed)
                if not index_rows:
                    raise ServiceError(
                        Code.INVALID_ARGUMENT, "an upload needs the footprint of at least one HDU"
                    )
                new_id = await self.repo.insert_content(
                    conn,
                    fits_hash=fits_hash,
                    generation=lease["generation"],
                    prefix=lease["prefix"],
                    fits_key=processed.fits_key,
                    preview_key=processed.preview_key,
                    hips_prefix=processed.hips_prefix,
                    hips_order=processed.hips_order,
                    cut_low=processed.cut_low,
                    cut_high=processed.cut_high,
                    stored_bytes=processed.stored_bytes,
                    file_bytes=lease["file_bytes"],
                )
                if new_id is None:
                    # The same bytes were completed by another upload first:
                    # use that content; ours is written for nothing.
                    content = await self.repo.lock_content_by_hash(conn, fits_hash)
                    if content is None:  # pragma: no cover - the conflict row cannot vanish under ON CONFLICT
                        raise ServiceError(Code.INTERNAL, "content row vanished")
                    content_id = content["content_id"]
                    orphan_prefix = lease["prefix"]
                else:
                    content_id = new_id
                    await self.repo.insert_footprints(conn, content_id, index_rows)
                    await self.repo.add_usage(conn, bytes_=processed.stored_bytes, contents=1)
            if made is not None:
                image_id, created = made.image_id, False
            else:
                image_id, created = await self.repo.upsert_image(
                    conn,
                    owner_id=owner_id,
                    fits_hash=fits_hash,
                    content_id=content_id,
                    file_name=described.file_name,
                    filter=described.filter,
                    object_name=described.object_name,
                    source_key=generated.source_key if generated else None,
                )
            if created:
                await self.repo.add_to_content_count(conn, content_id, 1)
            pinned = await self.repo.pin_ob(conn, caller.instance, ob.ob_id, ob.run_id)
            if pinned != ob.run_id:  # pinned by another request since BeginUpload
                raise ServiceError(
                    Code.RUN_MISMATCH, f"OB {ob.ob_id} belongs to run {pinned!r}", ob_id=ob.ob_id
                )
            await self.repo.touch_content(conn, content_id)
            # An upload is a use by the owner: it associates the OB's run (and so does
            # making a system-owned image for an OB of the run).
            await self.repo.associate(conn, image_id, ob.run_id)
            if generated is None and not keep_selection:  # an upload is the OB's selection
                await self.repo.set_selection(
                    conn, caller.instance, ob.ob_id, SelectionKind.USER_IMAGE, fits_hash, image_id
                )
            if created:
                await self.repo.add_usage(conn, images=1)
            image = await self.repo.image_by_id(conn, image_id, caller.user_id)
            await failpoint("upload.complete")
        if orphan_prefix:
            await purge(self.store, [orphan_prefix])
        assert image is not None
        return image

    @staticmethod
    def _check_processed(prefix: str, p: Processed) -> None:
        """Rows may only name objects under the lease's prefix (removal goes by prefix)."""
        for name, key in (
            ("fits_key", p.fits_key),
            ("preview_key", p.preview_key),
            ("hips_prefix", p.hips_prefix),
        ):
            if not key.startswith(prefix) or ".." in key:
                raise ServiceError(Code.INVALID_ARGUMENT, f"{name} {key!r} is not under {prefix}")
        if p.stored_bytes <= 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "stored_bytes must be positive")
        if not 0 <= p.hips_order <= 29:
            raise ServiceError(Code.INVALID_ARGUMENT, "hips_order must be in [0, 29]")

    async def renew(self, lease_id: str) -> int:
        """Keeps a live lease alive for another TTL; NOT_FOUND once it has ended or expired."""
        lease_key = lease_uuid(lease_id)
        if lease_key is None:
            raise ServiceError(Code.INVALID_ARGUMENT, "lease_id is not a lease id")
        if not await self.repo.renew_lease(lease_key, self.lease_ttl_s):
            raise ServiceError(
                Code.NOT_FOUND, "unknown or expired upload lease; upload again", lease_id=lease_id
            )
        return self.lease_ttl_s

    async def abort(self, lease_id: str) -> None:
        lease_key = lease_uuid(lease_id)
        if lease_key is None:
            raise ServiceError(Code.INVALID_ARGUMENT, "lease_id is not a lease id")
        prefixes: list[str] = []
        async with self.repo.transaction() as conn:
            lease = await self.repo.take_lease(conn, lease_key)
            if lease is None:
                return  # ended already: aborting twice is harmless
            if lease["reuse"]:
                if lease["content_id"] is not None:
                    content = await self.repo.lock_content(conn, lease["content_id"])
                    # Deleted while we held it: nobody uses it now.
                    if (
                        content is not None
                        and content["image_count"] == 0
                        and await self.repo.live_leases_on(conn, content["content_id"]) == 0
                    ):
                        for row in await self.repo.delete_contents(conn, [content["content_id"]]):
                            prefixes.append(row["prefix"])
                            await self.repo.add_usage(conn, bytes_=-row["stored_bytes"], contents=-1)
            elif not await self.repo.referenced_prefixes(conn, [lease["prefix"]]):
                prefixes.append(lease["prefix"])
        await purge(self.store, prefixes)
