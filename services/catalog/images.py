"""Listing, resolving, selecting, displaying and deleting images (the access
rules are in `access`; the SQL in `repository`)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import asyncpg

from services.catalog import access, footprint
from services.catalog.model import (
    DEFAULT_SELECTION,
    GENERATED_KINDS,
    Caller,
    ImageView,
    Listing,
    ObRef,
    RemovalReason,
    SelectionKind,
    SelectionView,
    SkyPoint,
    TombstoneView,
    check_hash,
)
from services.catalog.removal import Removed, purge, remove_images
from services.catalog.repository import PointKey, Repository
from services.shared.errors import Code, ServiceError
from services.shared.store import ObjectStore

_NAME = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,199}$")  # survey names and DPIDs: printable ASCII
MAX_DISPLAY_BATCH = 10_000
MAX_SOURCE_KEYS = 64


def point_key(p: SkyPoint) -> PointKey:
    return footprint.point_keys(p), footprint.unit_vector(p)


def _gone(t: TombstoneView) -> ServiceError:
    what = "culled" if t.reason == RemovalReason.CULLED else "deleted"
    return ServiceError(
        Code.GONE,
        f"image {t.file_name!r} was {what} on {t.removed_at:%Y-%m-%d}; please upload it again",
        fits_hash=t.fits_hash,
        reason=what,
        removed_at=t.removed_at.isoformat(),
        file_name=t.file_name,
    )


class Images:
    def __init__(self, repo: Repository, store: ObjectStore, tombstone_days: int) -> None:
        self.repo = repo
        self.store = store
        self.tombstone_days = tombstone_days

    def _since(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(days=self.tombstone_days)

    async def _missing(self, conn: asyncpg.Connection, caller: Caller, fits_hash: str) -> ServiceError:
        """GONE when the caller may hear of a removed image of fits_hash, else NOT_FOUND."""
        t = await self.repo.visible_tombstone(conn, caller, fits_hash, self._since())
        return _gone(t) if t else access.not_found(fits_hash)

    async def listing(self, caller: Caller, ob: ObRef, source_keys: Sequence[str] = ()) -> Listing:
        """What the selector shows for the OB; with the stored system-owned images of
        `source_keys` (the OB's Gaia image) for a caller with access to its run."""
        access.check_same_instance(caller, ob.run_id)
        if len(source_keys) > MAX_SOURCE_KEYS or any(len(k) > 1024 for k in source_keys):
            raise ServiceError(Code.INVALID_ARGUMENT, f"at most {MAX_SOURCE_KEYS} source keys of 1024 bytes")
        target = point_key(ob.require_target())
        boa = point_key(ob.boa_star) if ob.boa_star else None
        async with self.repo.connection() as conn:
            row, found, image, tombstones, generated = await self.repo.listing(
                conn, caller, ob.ob_id, ob.run_id, target, boa, self._since(), source_keys
            )
        ctx = access.ObContext.of(row)
        access.check_run_access(ctx, caller, ob)
        selected = (
            DEFAULT_SELECTION if ctx.pinned_run is None else SelectionView(ctx.sel_kind, ctx.sel_value, image)
        )
        return Listing(
            own=[i for i in found if i.owned_by_caller],
            shared=[i for i in found if not i.owned_by_caller],
            selected=selected,
            tombstones=tombstones,
            generated=generated,
        )

    async def _selection(
        self, conn: asyncpg.Connection, ctx: access.ObContext, caller: Caller
    ) -> SelectionView:
        if ctx.pinned_run is None:
            return DEFAULT_SELECTION
        image = None
        if ctx.sel_image_id is not None:
            image = await self.repo.image_by_id(conn, ctx.sel_image_id, caller.user_id)
        return SelectionView(ctx.sel_kind, ctx.sel_value, image)

    async def get(self, caller: Caller, fits_hash: str) -> ImageView:
        fits_hash = check_hash(fits_hash)
        async with self.repo.connection() as conn:
            image = await self.repo.visible_image(conn, caller, fits_hash)
            if image is None:
                raise await self._missing(conn, caller, fits_hash)
            return image

    async def select(
        self, caller: Caller, ob: ObRef, kind: SelectionKind, value: str, source_key: str = ""
    ) -> SelectionView:
        """A use: selects a background for the OB (DESIGN.md "use" and "association").
        A Gaia or archive selection with `source_key` shows that stored system-owned
        image (NOT_FOUND when it is not stored: the gateway makes or fetches it)."""
        if source_key and kind not in GENERATED_KINDS:
            raise ServiceError(Code.INVALID_ARGUMENT, "source_key goes with a gaia or eso_im selection only")
        if kind == SelectionKind.USER_IMAGE:
            value = check_hash(value)
            target = point_key(ob.require_target())
            boa = point_key(ob.boa_star) if ob.boa_star else None
        elif kind in (SelectionKind.DEFAULT, SelectionKind.GAIA):
            if value:
                raise ServiceError(Code.INVALID_ARGUMENT, f"{kind.name.lower()} takes no value")
        elif kind in (SelectionKind.SURVEY, SelectionKind.ESO_IMAGE):
            if not _NAME.match(value):
                raise ServiceError(Code.INVALID_ARGUMENT, f"{kind.name.lower()} needs a name or DPID")
        else:
            raise ServiceError(Code.INVALID_ARGUMENT, "unknown selection kind")
        access.check_same_instance(caller, ob.run_id)
        async with self.repo.transaction() as conn:
            ctx = access.ObContext.of(await self.repo.ob_context(conn, caller, ob.ob_id, ob.run_id))
            access.check_run_access(ctx, caller, ob)
            pinned = await self.repo.pin_ob(conn, caller.instance, ob.ob_id, ob.run_id)
            if pinned != ob.run_id:
                raise ServiceError(
                    Code.RUN_MISMATCH, f"OB {ob.ob_id} belongs to run {pinned!r}", ob_id=ob.ob_id
                )
            if source_key:
                return await self._select_generated(conn, caller, ob, kind, value, source_key)
            if kind != SelectionKind.USER_IMAGE:
                await self.repo.set_selection(conn, caller.instance, ob.ob_id, kind, value, None)
                return SelectionView(kind, value)
            image = await self.repo.visible_image(conn, caller, value)
            if image is None:
                raise await self._missing(conn, caller, value)
            # The use locks the content row first: a cull that committed first
            # has removed it (this use is refused as culled), one that comes
            # later sees the new last use and keeps it. A refusal below rolls
            # the use back.
            if not await self.repo.touch_content(conn, image.content_id) or not await self.repo.touch_image(
                conn, image.image_id
            ):
                raise await self._missing(conn, caller, value)
            if not await self.repo.content_holds(conn, image.content_id, target) or (
                boa is not None and not await self.repo.content_holds(conn, image.content_id, boa)
            ):
                raise ServiceError(
                    Code.NOT_COMPATIBLE,
                    "the image does not hold the OB's target"
                    + (" and BOA star" if boa is not None else "")
                    + " (per extension)",
                    fits_hash=value,
                )
            if access.adds_association(caller, image):
                await self.repo.associate(conn, image.image_id, ob.run_id)
            await self.repo.set_selection(conn, caller.instance, ob.ob_id, kind, value, image.image_id)
            fresh = await self.repo.image_by_id(conn, image.image_id, caller.user_id)
        return SelectionView(kind, value, fresh)

    async def _select_generated(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        ob: ObRef,
        kind: SelectionKind,
        value: str,
        source_key: str,
    ) -> SelectionView:
        """Selects the stored system-owned image of `source_key`: a use (its content's
        last use) that associates the OB's run, whoever the caller is."""
        image = await self.repo.generated_image(conn, source_key, caller.user_id)
        if image is None or not await self.repo.touch_content(conn, image.content_id):
            raise ServiceError(Code.NOT_FOUND, "that image is not stored (any more); make it first")
        await self.repo.touch_image(conn, image.image_id)
        await self.repo.associate(conn, image.image_id, ob.run_id)
        await self.repo.set_selection(conn, caller.instance, ob.ob_id, kind, value, image.image_id)
        fresh = await self.repo.image_by_id(conn, image.image_id, caller.user_id)
        return SelectionView(kind, value, fresh)

    async def get_selection(self, caller: Caller, ob_id: int, run_id: str) -> SelectionView:
        """The OB's selection, for anyone with access to its run (display rule)."""
        if ob_id <= 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "ob_id must be a positive integer")
        if run_id:
            access.check_same_instance(caller, run_id)
        async with self.repo.connection() as conn:
            ctx = access.ObContext.of(await self.repo.ob_context(conn, caller, ob_id, run_id or None))
            if run_id:
                access.check_run_access(ctx, caller, ObRef(ob_id, run_id))
            else:
                access.check_pinned_access(ctx, caller, ob_id)
            return await self._selection(conn, ctx, caller)

    async def authorize_display(self, caller: Caller, fits_hash: str, ob_id: int | None) -> ImageView:
        """Display: the list rule, or the image is ob_id's selection and the
        caller has access to that OB's run."""
        fits_hash = check_hash(fits_hash)
        async with self.repo.connection() as conn:
            image = await self.repo.visible_image(conn, caller, fits_hash)
            if image is not None:
                return image
            if ob_id is not None:
                image_id = await self.repo.may_display_selection(conn, caller, ob_id, fits_hash)
                if image_id is not None:
                    shown = await self.repo.image_by_id(conn, image_id, caller.user_id)
                    if shown is not None:
                        return shown
            raise await self._missing(conn, caller, fits_hash)

    async def record_displays(self, hashes: list[str]) -> int:
        """Displays count as uses for culling (batched by the gateway)."""
        if len(hashes) > MAX_DISPLAY_BATCH:
            raise ServiceError(Code.INVALID_ARGUMENT, f"at most {MAX_DISPLAY_BATCH} hashes a batch")
        clean = sorted({check_hash(h) for h in hashes})
        if not clean:
            return 0
        async with self.repo.transaction() as conn:
            return await self.repo.touch_contents_by_hash(conn, clean)

    async def delete(self, caller: Caller, fits_hash: str) -> TombstoneView:
        """Delete (owner only): the image, its associations; selections fall back."""
        fits_hash = check_hash(fits_hash)
        removed = Removed()
        async with self.repo.transaction() as conn:
            image = await self.repo.visible_image(conn, caller, fits_hash)
            if image is None:
                raise await self._missing(conn, caller, fits_hash)
            access.may_delete(caller, image)
            content = await self.repo.lock_content(conn, image.content_id)
            # Re-read under the content lock: a cull may have removed it meanwhile.
            if content is None or await self.repo.own_image(conn, caller.user_id, fits_hash) is None:
                raise await self._missing(conn, caller, fits_hash)
            await remove_images(self.repo, conn, content, [image.image_id], RemovalReason.DELETED, removed)
        await purge(self.store, removed.prefixes)
        return removed.tombstones[0]
