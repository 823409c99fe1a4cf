"""All of the catalog's SQL (asyncpg), and the migrations runner.

Methods that are part of a larger transaction take the connection; the
domain modules (uploads, images, removal, culling, sweep) decide, this
module only reads and writes. Queries that depend on "the runs of U" take
the user as $1 and the runs p2 gave (or NULL: the runs SetRun stored) as $2.
OBs are keyed by (p2_instance, ob_id); the instance is always the caller's
(Caller.instance), so a caller never reads or pins another instance's OB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from importlib import resources
from typing import Any

import asyncpg

from services.catalog.model import (
    Caller,
    FootprintOut,
    ImageView,
    RemovalReason,
    SelectionKind,
    TombstoneView,
)
from services.shared.errors import Code, ServiceError

MIGRATION_LOCK = 0x6267_6361_7431  # pg_advisory_lock key of the catalog migrations
HOUSEKEEPING_LOCK = 0x6267_6361_7432  # held by the replica running the background rounds

# "The runs of U": the set p2 gave for this request, else the SetRun data.
MY_RUNS = """
my_runs AS (
    SELECT unnest($2::text[]) AS run_id WHERE $2::text[] IS NOT NULL
    UNION ALL
    SELECT m.run_id FROM run_members m WHERE m.user_id = $1 AND $2::text[] IS NULL
)"""

# The list rule: U owns I, or has access to a run I is associated with.
LISTABLE = """(i.owner_id = $1 OR EXISTS (
    SELECT 1 FROM image_runs ir JOIN my_runs mr ON mr.run_id = ir.run_id WHERE ir.image_id = i.image_id))"""

IMAGE_COLUMNS = """
    i.image_id, i.fits_hash, i.owner_id, i.file_name, i.filter, i.object_name,
    c.file_bytes, c.stored_bytes, c.hips_order, c.cut_low, c.cut_high, i.created_at, i.last_used_at,
    c.fits_key, c.preview_key, c.hips_prefix, c.content_id, i.source_key,
    ARRAY(SELECT ir2.run_id FROM image_runs ir2
          WHERE ir2.image_id = i.image_id ORDER BY ir2.run_id) AS run_ids,
    (SELECT json_agg(json_build_array(f.hdu, f.pixel_scale_arcsec, f.corners) ORDER BY f.hdu)
       FROM footprints f WHERE f.content_id = i.content_id) AS footprints"""

# Footprints holding a point: GIN lookup of its cells, then the exact test.
HOLDS = """EXISTS (SELECT 1 FROM footprints f WHERE f.content_id = {content}
    AND f.cells && {keys}::bigint[] AND footprint_holds(f.xyz, {x}, {y}, {z}))"""


PointKey = tuple[list[int], tuple[float, float, float]]  # (cells of a point, its unit vector)


def compatible_ctes(gate: str) -> str:
    """CTEs `hit`, `fit`, `found`: footprints holding the target (GIN lookup of
    its cells, then the exact test) and the BOA star when there is one, of
    images the caller may list. $3..$6 target, $8..$11 BOA star (NULL: none),
    $7 limit; `gate`: a condition that must hold for anything to be looked up."""
    holds_boa = HOLDS.format(content="h.content_id", keys="$8", x="$9", y="$10", z="$11")
    return f"""
    hit AS (
        SELECT DISTINCT f.content_id FROM footprints f
        WHERE {gate} AND f.cells && $3::bigint[] AND footprint_holds(f.xyz, $4, $5, $6)
    ),
    fit AS (
        SELECT h.content_id FROM hit h WHERE $8::bigint[] IS NULL OR {holds_boa}
    ),
    found AS (
        SELECT {IMAGE_COLUMNS}, (i.owner_id = $1) AS own
        FROM fit JOIN images i ON i.content_id = fit.content_id
                 JOIN contents c ON c.content_id = i.content_id
        WHERE {LISTABLE} AND i.source_key IS NULL
        ORDER BY own DESC, i.last_used_at DESC, i.image_id
        LIMIT $7
    )"""


# A removed image would have fitted: the footprints its tombstone keeps hold a point.
TOMBSTONE_HOLDS = """EXISTS (SELECT 1 FROM tombstone_footprints f WHERE f.tombstone_id = t.tombstone_id
    AND f.cells && {keys}::bigint[] AND footprint_holds(f.xyz, {x}, {y}, {z}))"""


# What the selector shows for one OB, in one round trip: the caller's access to
# the named run ($13) and the OB's pin and selection ($15, $12), the compatible
# images (looked up only when the caller may see the OB), the selected image,
# the caller's tombstones since $14 of images that would fit the OB and whose
# bytes the caller has not uploaded again since, and the stored system-owned images
# of the source keys $16.
LISTING = f"""WITH {MY_RUNS},
    ob AS (SELECT * FROM obs WHERE p2_instance = $15 AND ob_id = $12),
    ctx AS (
        SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = $13) AS run_known,
               EXISTS (SELECT 1 FROM my_runs WHERE run_id = $13) AS has_access,
               (SELECT run_id FROM ob) AS pinned_run,
               (SELECT sel_kind FROM ob) AS sel_kind,
               (SELECT sel_value FROM ob) AS sel_value,
               (SELECT sel_image_id FROM ob) AS sel_image_id
    ),
    {compatible_ctes("(SELECT has_access AND coalesce(pinned_run = $13, true) FROM ctx)")}
    SELECT ctx.*,
        (SELECT json_agg(found ORDER BY found.own DESC, found.last_used_at DESC, found.image_id)
           FROM found) AS images,
        (SELECT row_to_json(s) FROM (
            SELECT {IMAGE_COLUMNS} FROM images i JOIN contents c ON c.content_id = i.content_id
            WHERE i.image_id = ctx.sel_image_id AND ctx.has_access) s) AS selected,
        (SELECT json_agg(t ORDER BY t.removed_at DESC) FROM (
            SELECT DISTINCT ON (t.fits_hash) t.fits_hash, t.owner_id, t.file_name, t.removed_at, t.reason
            FROM tombstones t
            WHERE t.owner_id = $1 AND t.removed_at >= $14 AND ctx.has_access
              AND NOT EXISTS (SELECT 1 FROM images i
                              WHERE i.owner_id = t.owner_id AND i.fits_hash = t.fits_hash)
              AND {TOMBSTONE_HOLDS.format(keys="$3", x="$4", y="$5", z="$6")}
              AND ($8::bigint[] IS NULL OR {TOMBSTONE_HOLDS.format(keys="$8", x="$9", y="$10", z="$11")})
            ORDER BY t.fits_hash, t.removed_at DESC LIMIT 50) t) AS tombstones,
        (SELECT json_agg(g ORDER BY g.source_key) FROM (
            SELECT {IMAGE_COLUMNS} FROM images i JOIN contents c ON c.content_id = i.content_id
            WHERE i.source_key = ANY($16::text[]) AND ctx.has_access) g) AS generated
    FROM ctx"""


def listing_args(
    caller: Caller,
    ob_id: int,
    run_id: str,
    target: PointKey,
    boa: PointKey | None,
    since: dt.datetime,
    source_keys: Sequence[str] = (),
) -> list[object]:
    return [
        *compatible_args(caller, target, boa, 500),
        ob_id,
        run_id,
        since,
        caller.instance,
        list(source_keys),
    ]


def compatible_args(caller: Caller, target: PointKey, boa: PointKey | None, limit: int) -> list[object]:
    t_keys, (tx, ty, tz) = target
    boa_keys, (bx, by, bz) = boa if boa else (None, (0.0, 0.0, 0.0))
    return [caller.user_id, caller.run_list, t_keys, tx, ty, tz, limit, boa_keys, bx, by, bz]


def _runs_param(caller: Caller) -> list[str] | None:
    return caller.run_list


def _when(value: dt.datetime | str) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def image_view(row: Mapping[str, Any], user_id: str) -> ImageView:
    """An image from a row, or from the same row as JSON (row_to_json)."""
    fps = row["footprints"] or []
    if isinstance(fps, str):
        fps = json.loads(fps)
    return ImageView(
        image_id=row["image_id"],
        fits_hash=row["fits_hash"],
        owner_id=row["owner_id"],
        file_name=row["file_name"],
        filter=row["filter"],
        object_name=row["object_name"],
        file_bytes=row["file_bytes"],
        stored_bytes=row["stored_bytes"],
        footprints=tuple(
            FootprintOut(
                hdu=hdu,
                corners=tuple((corners[k], corners[k + 1]) for k in range(0, len(corners), 2)),
                pixel_scale_arcsec=scale,
            )
            for hdu, scale, corners in fps
        ),
        hips_order=row["hips_order"],
        cut_low=row["cut_low"],
        cut_high=row["cut_high"],
        created_at=_when(row["created_at"]),
        last_used_at=_when(row["last_used_at"]),
        # A system-owned image's runs are other programmes' OBs on the same field: not told.
        run_ids=() if row["source_key"] else tuple(row["run_ids"]),
        fits_key=row["fits_key"],
        preview_key=row["preview_key"],
        hips_prefix=row["hips_prefix"],
        owned_by_caller=row["owner_id"] == user_id,
        content_id=row["content_id"],
        source_key=row["source_key"] or "",
    )


def tombstone_view(row: Mapping[str, Any]) -> TombstoneView:
    return TombstoneView(
        fits_hash=row["fits_hash"],
        owner_id=row["owner_id"],
        file_name=row["file_name"],
        removed_at=_when(row["removed_at"]),
        reason=RemovalReason(row["reason"]),
    )


def migration_files() -> list[tuple[int, str, str]]:
    """The numbered migrations shipped with the package, in order."""
    out = []
    folder = resources.files("services.catalog") / "migrations"
    for entry in folder.iterdir():
        m = re.match(r"^(\d+)_(.+)\.sql$", entry.name)
        if m:
            out.append((int(m.group(1)), entry.name, entry.read_text()))
    out.sort()
    if len({v for v, _, _ in out}) != len(out):
        raise RuntimeError("two catalog migrations share a number")
    return out


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Applies the migrations not applied yet, under an advisory lock (replicas
    starting together wait for each other); returns the names applied."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


ACQUIRE_TIMEOUT_S = 10.0  # waiting for a pooled connection longer than this is an outage

# What a database that is down, restarting or out of connections raises
# (rather than a wrong query): OS errors (refused, reset, timed out), SQLSTATE
# class 08 (connection exception), 57 (operator intervention: shutdown, crash,
# cannot connect now) and 53 (insufficient resources).
_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
)


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, _OUTAGES):
        return True
    # A query on a connection the server closed under it.
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


@contextlib.contextmanager
def database_outage_as_unavailable() -> Iterator[None]:
    """Turns a database outage into UNAVAILABLE (503 for users, never INTERNAL)."""
    try:
        yield
    except ServiceError:
        raise
    except Exception as exc:
        if is_outage(exc):
            raise ServiceError(
                Code.UNAVAILABLE, "the catalog's database is unavailable; please try again shortly"
            ) from exc
        raise


class Repository:
    """The catalog's tables, over one asyncpg pool made at start-up."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        with database_outage_as_unavailable():
            async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn, conn.transaction():
                yield conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        with database_outage_as_unavailable():
            async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                yield conn

    async def try_lock(self, conn: asyncpg.Connection, key: int) -> bool:
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))

    async def unlock(self, conn: asyncpg.Connection, key: int) -> None:
        await conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def ping(self) -> bool:
        """Whether the database answers. After a failure every pooled connection
        is replaced on its next use: connections to a server that restarted are
        dead, and requests should not each find that out for themselves."""
        try:
            async with self.pool.acquire(timeout=2) as conn:
                return bool(await conn.fetchval("SELECT true", timeout=2))
        except Exception:
            await self.pool.expire_connections()
            raise

    # Runs -------------------------------------------------------------------

    async def set_run(self, run_id: str, owner_id: str, delegate_ids: Sequence[str]) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                """INSERT INTO runs (run_id, owner_id) VALUES ($1, $2)
                   ON CONFLICT (run_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, updated_at = now()""",
                run_id,
                owner_id,
            )
            await conn.execute("DELETE FROM run_members WHERE run_id = $1", run_id)
            await conn.execute(
                """INSERT INTO run_members (user_id, run_id, is_owner)
                   SELECT DISTINCT ON (u) u, $1, u = $2 FROM unnest($3::text[]) AS u
                   ORDER BY u""",
                run_id,
                owner_id,
                [owner_id, *delegate_ids],
            )

    async def remove_run(self, run_id: str) -> bool:
        async with self.connection() as conn:
            status = await conn.execute("DELETE FROM runs WHERE run_id = $1", run_id)
        return bool(status.endswith(" 1"))

    # OB context and pins -----------------------------------------------------

    async def ob_context(
        self, conn: asyncpg.Connection, caller: Caller, ob_id: int, run_id: str | None
    ) -> asyncpg.Record:
        """One row: whether run_id is known and accessible to the caller, and
        the OB's pin and selection (NULLs when the OB is new). With run_id
        NULL, access is checked against the OB's pinned run."""
        return await conn.fetchrow(
            f"""WITH {MY_RUNS}, ob AS (SELECT * FROM obs WHERE p2_instance = $5 AND ob_id = $3)
                SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = coalesce($4, (SELECT run_id FROM ob)))
                           AS run_known,
                       EXISTS (SELECT 1 FROM my_runs
                               WHERE run_id = coalesce($4, (SELECT run_id FROM ob))) AS has_access,
                       (SELECT run_id FROM ob) AS pinned_run,
                       (SELECT sel_kind FROM ob) AS sel_kind,
                       (SELECT sel_value FROM ob) AS sel_value,
                       (SELECT sel_image_id FROM ob) AS sel_image_id""",
            caller.user_id,
            _runs_param(caller),
            ob_id,
            run_id,
            caller.instance,
        )

    async def pin_ob(self, conn: asyncpg.Connection, instance: str, ob_id: int, run_id: str) -> str:
        """Pins OB (instance, ob_id) to run_id unless pinned already; returns the pinned run."""
        pinned: str = await conn.fetchval(
            """WITH ins AS (INSERT INTO obs (p2_instance, ob_id, run_id) VALUES ($1, $2, $3)
                            ON CONFLICT (p2_instance, ob_id) DO NOTHING RETURNING run_id)
               SELECT run_id FROM ins
               UNION ALL SELECT run_id FROM obs WHERE p2_instance = $1 AND ob_id = $2 LIMIT 1""",
            instance,
            ob_id,
            run_id,
        )
        return pinned

    async def set_selection(
        self,
        conn: asyncpg.Connection,
        instance: str,
        ob_id: int,
        kind: SelectionKind,
        value: str,
        image_id: int | None,
    ) -> None:
        await conn.execute(
            """UPDATE obs SET sel_kind = $2, sel_value = $3, sel_image_id = $4, updated_at = now()
               WHERE p2_instance = $5 AND ob_id = $1""",
            ob_id,
            int(kind),
            value,
            image_id,
            instance,
        )

    # Images ------------------------------------------------------------------

    async def visible_image(
        self, conn: asyncpg.Connection, caller: Caller, fits_hash: str
    ) -> ImageView | None:
        """The caller's own image of fits_hash, else one the caller may list."""
        row = await conn.fetchrow(
            f"""WITH {MY_RUNS}
                SELECT {IMAGE_COLUMNS}
                FROM images i JOIN contents c ON c.content_id = i.content_id
                WHERE i.fits_hash = $3 AND {LISTABLE}
                ORDER BY (i.owner_id = $1) DESC, i.last_used_at DESC, i.image_id
                LIMIT 1""",
            caller.user_id,
            _runs_param(caller),
            fits_hash,
        )
        return None if row is None else image_view(row, caller.user_id)

    async def image_by_id(self, conn: asyncpg.Connection, image_id: int, user_id: str) -> ImageView | None:
        row = await conn.fetchrow(
            f"""SELECT {IMAGE_COLUMNS}
                FROM images i JOIN contents c ON c.content_id = i.content_id WHERE i.image_id = $1""",
            image_id,
        )
        return None if row is None else image_view(row, user_id)

    async def generated_image(
        self, conn: asyncpg.Connection, source_key: str, user_id: str
    ) -> ImageView | None:
        """The system-owned image made from `source_key`, if stored."""
        row = await conn.fetchrow(
            f"""SELECT {IMAGE_COLUMNS}
                FROM images i JOIN contents c ON c.content_id = i.content_id WHERE i.source_key = $1""",
            source_key,
        )
        return None if row is None else image_view(row, user_id)

    async def own_image(self, conn: asyncpg.Connection, owner_id: str, fits_hash: str) -> ImageView | None:
        row = await conn.fetchrow(
            f"""SELECT {IMAGE_COLUMNS}
                FROM images i JOIN contents c ON c.content_id = i.content_id
                WHERE i.owner_id = $1 AND i.fits_hash = $2""",
            owner_id,
            fits_hash,
        )
        return None if row is None else image_view(row, owner_id)

    async def listing(
        self,
        conn: asyncpg.Connection,
        caller: Caller,
        ob_id: int,
        run_id: str,
        target: PointKey,
        boa: PointKey | None,
        since: dt.datetime,
        source_keys: Sequence[str] = (),
    ) -> tuple[asyncpg.Record, list[ImageView], ImageView | None, list[TombstoneView], list[ImageView]]:
        """The OB context row, compatible images, selected image, tombstones and the
        stored system-owned images of `source_keys` (LISTING)."""
        args = listing_args(caller, ob_id, run_id, target, boa, since, source_keys)
        row = await conn.fetchrow(LISTING, *args)
        images = [image_view(r, caller.user_id) for r in json.loads(row["images"] or "[]")]
        selected = image_view(json.loads(row["selected"]), caller.user_id) if row["selected"] else None
        tombstones = [tombstone_view(t) for t in json.loads(row["tombstones"] or "[]")]
        generated = [image_view(r, caller.user_id) for r in json.loads(row["generated"] or "[]")]
        return row, images, selected, tombstones, generated

    async def content_holds(self, conn: asyncpg.Connection, content_id: int, point: PointKey) -> bool:
        keys, (x, y, z) = point
        return bool(
            await conn.fetchval(
                "SELECT " + HOLDS.format(content="$1", keys="$2", x="$3", y="$4", z="$5"),
                content_id,
                keys,
                x,
                y,
                z,
            )
        )

    async def touch_content(self, conn: asyncpg.Connection, content_id: int) -> bool:
        """Records a use of the content; locks its row. False when it is gone."""
        row = await conn.fetchval(
            """UPDATE contents SET last_used_at = greatest(last_used_at, clock_timestamp())
               WHERE content_id = $1 RETURNING content_id""",
            content_id,
        )
        return row is not None

    async def touch_image(self, conn: asyncpg.Connection, image_id: int) -> bool:
        row = await conn.fetchval(
            """UPDATE images SET last_used_at = greatest(last_used_at, clock_timestamp())
               WHERE image_id = $1 RETURNING image_id""",
            image_id,
        )
        return row is not None

    async def touch_contents_by_hash(self, conn: asyncpg.Connection, hashes: Sequence[str]) -> int:
        # Locks in content_id order: two batches from two gateways never deadlock.
        status = await conn.execute(
            """UPDATE contents SET last_used_at = greatest(last_used_at, clock_timestamp())
               WHERE content_id IN (SELECT content_id FROM contents WHERE fits_hash = ANY($1::text[])
                                    ORDER BY content_id FOR UPDATE)""",
            list(hashes),
        )
        return int(status.split()[-1])

    async def associate(self, conn: asyncpg.Connection, image_id: int, run_id: str) -> None:
        await conn.execute(
            "INSERT INTO image_runs (image_id, run_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            image_id,
            run_id,
        )

    async def may_display_selection(
        self, conn: asyncpg.Connection, caller: Caller, ob_id: int, fits_hash: str
    ) -> int | None:
        """The image OB ob_id (of the caller's instance) has selected, when it
        has fits_hash and the caller has access to the OB's run (the display rule)."""
        image_id: int | None = await conn.fetchval(
            f"""WITH {MY_RUNS}
                SELECT o.sel_image_id FROM obs o JOIN images i ON i.image_id = o.sel_image_id
                WHERE o.p2_instance = $5 AND o.ob_id = $3 AND i.fits_hash = $4
                  AND EXISTS (SELECT 1 FROM my_runs WHERE run_id = o.run_id)""",
            caller.user_id,
            _runs_param(caller),
            ob_id,
            fits_hash,
            caller.instance,
        )
        return image_id

    # Tombstones --------------------------------------------------------------

    async def visible_tombstone(
        self, conn: asyncpg.Connection, caller: Caller, fits_hash: str, since: dt.datetime
    ) -> TombstoneView | None:
        """The latest tombstone of fits_hash the caller may hear about: their
        own image's, or one associated with a run they have access to."""
        row = await conn.fetchrow(
            f"""WITH {MY_RUNS}
                SELECT * FROM tombstones t
                WHERE t.fits_hash = $3 AND t.removed_at >= $4
                  AND (t.owner_id = $1 OR t.run_ids && ARRAY(SELECT run_id FROM my_runs))
                ORDER BY (t.owner_id = $1) DESC, t.removed_at DESC LIMIT 1""",
            caller.user_id,
            _runs_param(caller),
            fits_hash,
            since,
        )
        return None if row is None else tombstone_view(row)

    # Uploads -----------------------------------------------------------------

    async def lock_content_by_hash(self, conn: asyncpg.Connection, fits_hash: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM contents WHERE fits_hash = $1 FOR UPDATE", fits_hash
        )
        return row

    async def lock_content(self, conn: asyncpg.Connection, content_id: int) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM contents WHERE content_id = $1 FOR UPDATE", content_id
        )
        return row

    async def next_generation(self, conn: asyncpg.Connection) -> int:
        gen: int = await conn.fetchval("SELECT nextval('content_generation')")
        return gen

    async def insert_lease(
        self,
        conn: asyncpg.Connection,
        *,
        fits_hash: str,
        owner_id: str,
        ob_id: int,
        run_id: str,
        generation: int,
        prefix: str,
        content_id: int | None,
        ttl_s: int,
        staging_key: str = "",
        file_bytes: int = 0,
    ) -> uuid.UUID:
        lease_id = uuid.uuid4()
        await conn.execute(
            """INSERT INTO upload_leases (lease_id, fits_hash, owner_id, ob_id, run_id, generation, prefix,
                                        content_id, reuse, expires_at, staging_key, file_bytes)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::bigint, $8::bigint IS NOT NULL,
                       now() + make_interval(secs => $9), nullif($10, ''), $11)""",
            lease_id,
            fits_hash,
            owner_id,
            ob_id,
            run_id,
            generation,
            prefix,
            content_id,
            float(ttl_s),
            staging_key,
            file_bytes,
        )
        return lease_id

    async def renew_lease(self, lease_id: uuid.UUID, ttl_s: int) -> bool:
        """Extends a live lease by ttl_s from now; False when it has ended or expired."""
        async with self.connection() as conn:
            row = await conn.fetchval(
                """UPDATE upload_leases SET expires_at = now() + make_interval(secs => $2)
                   WHERE lease_id = $1 AND expires_at > now() RETURNING true""",
                lease_id,
                float(ttl_s),
            )
        return bool(row)

    async def take_lease(self, conn: asyncpg.Connection, lease_id: uuid.UUID) -> asyncpg.Record | None:
        """Removes the lease and returns it (with `live`: not expired)."""
        row: asyncpg.Record | None = await conn.fetchrow(
            """DELETE FROM upload_leases WHERE lease_id = $1
               RETURNING *, expires_at > now() AS live""",
            lease_id,
        )
        return row

    async def live_leases_on(self, conn: asyncpg.Connection, content_id: int) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM upload_leases WHERE content_id = $1 AND expires_at > now()", content_id
        )
        return count

    async def insert_content(
        self,
        conn: asyncpg.Connection,
        *,
        fits_hash: str,
        generation: int,
        prefix: str,
        fits_key: str,
        preview_key: str,
        hips_prefix: str,
        hips_order: int,
        cut_low: float,
        cut_high: float,
        stored_bytes: int,
        file_bytes: int,
    ) -> int | None:
        """Inserts a content row; None when one exists for fits_hash already."""
        content_id: int | None = await conn.fetchval(
            """INSERT INTO contents (fits_hash, generation, prefix, fits_key, preview_key, hips_prefix,
                                     hips_order, cut_low, cut_high, stored_bytes, file_bytes, last_used_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, clock_timestamp())
               ON CONFLICT (fits_hash) DO NOTHING RETURNING content_id""",
            fits_hash,
            generation,
            prefix,
            fits_key,
            preview_key,
            hips_prefix,
            hips_order,
            cut_low,
            cut_high,
            stored_bytes,
            file_bytes,
        )
        return content_id

    async def insert_footprints(
        self,
        conn: asyncpg.Connection,
        content_id: int,
        rows: Sequence[tuple[int, list[float], list[float], float, list[int]]],
    ) -> None:
        await conn.executemany(
            """INSERT INTO footprints (content_id, hdu, corners, xyz, pixel_scale_arcsec, cells)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            [(content_id, hdu, corners, xyz, scale, cells) for hdu, corners, xyz, scale, cells in rows],
        )

    async def upsert_image(
        self,
        conn: asyncpg.Connection,
        *,
        owner_id: str,
        fits_hash: str,
        content_id: int,
        file_name: str,
        filter: str,
        object_name: str,
        source_key: str | None = None,
    ) -> tuple[int, bool]:
        """The owner's image of fits_hash, made if new; (image_id, created)."""
        row = await conn.fetchrow(
            """INSERT INTO images (owner_id, fits_hash, content_id, file_name, filter, object_name,
                                   source_key, created_at, last_used_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, clock_timestamp(), clock_timestamp())
               ON CONFLICT (owner_id, fits_hash)
                   DO UPDATE SET last_used_at = greatest(images.last_used_at, clock_timestamp())
               RETURNING image_id, (xmax = 0) AS created""",
            owner_id,
            fits_hash,
            content_id,
            file_name,
            filter,
            object_name,
            source_key,
        )
        return row["image_id"], row["created"]

    async def add_to_content_count(self, conn: asyncpg.Connection, content_id: int, delta: int) -> int:
        count: int = await conn.fetchval(
            "UPDATE contents SET image_count = image_count + $2 WHERE content_id = $1 RETURNING image_count",
            content_id,
            delta,
        )
        return count

    async def add_usage(
        self,
        conn: asyncpg.Connection,
        *,
        bytes_: int = 0,
        contents: int = 0,
        images: int = 0,
        culled: int = 0,
    ) -> None:
        """Adjusts the usage counter; callers lock content rows before this row."""
        await conn.execute(
            """UPDATE usage SET used_bytes = used_bytes + $1, content_count = content_count + $2,
                                image_count = image_count + $3, culled_images = culled_images + $4""",
            bytes_,
            contents,
            images,
            culled,
        )

    # Removal -----------------------------------------------------------------

    async def images_of_contents(self, conn: asyncpg.Connection, content_ids: Sequence[int]) -> list[int]:
        rows = await conn.fetch(
            "SELECT image_id FROM images WHERE content_id = ANY($1::bigint[]) ORDER BY image_id",
            list(content_ids),
        )
        return [r["image_id"] for r in rows]

    async def remove_images(
        self, conn: asyncpg.Connection, image_ids: Sequence[int], reason: RemovalReason
    ) -> list[TombstoneView]:
        """Removes images with their associations, falls back the OBs that
        selected them to the default survey, and writes their tombstones. OBs
        showing a system-owned image keep their kind (it is made again when
        asked); such images get no tombstone."""
        ids = list(image_ids)
        rows = await conn.fetch(
            """INSERT INTO tombstones (owner_id, fits_hash, file_name, run_ids, removed_at, reason)
               SELECT i.owner_id, i.fits_hash, i.file_name,
                      ARRAY(SELECT run_id FROM image_runs r WHERE r.image_id = i.image_id ORDER BY run_id),
                      clock_timestamp(), $2
               FROM images i WHERE i.image_id = ANY($1::bigint[]) AND i.source_key IS NULL
               ORDER BY i.image_id
               RETURNING *""",
            ids,
            int(reason),
        )
        await conn.execute(
            """INSERT INTO tombstone_footprints (tombstone_id, hdu, xyz, cells)
               SELECT t.tombstone_id, f.hdu, f.xyz, f.cells
               FROM tombstones t
               JOIN images i ON i.owner_id = t.owner_id AND i.fits_hash = t.fits_hash
               JOIN footprints f ON f.content_id = i.content_id
               WHERE t.tombstone_id = ANY($1::bigint[])""",
            [r["tombstone_id"] for r in rows],
        )
        await conn.execute(
            """UPDATE obs SET sel_kind = CASE WHEN sel_kind = 5 THEN $2 ELSE sel_kind END,
                              sel_value = CASE WHEN sel_kind = 5 THEN '' ELSE sel_value END,
                              sel_image_id = NULL, updated_at = now()
               WHERE sel_image_id = ANY($1::bigint[])""",
            ids,
            int(SelectionKind.DEFAULT),
        )
        await conn.execute("DELETE FROM images WHERE image_id = ANY($1::bigint[])", ids)
        return [tombstone_view(r) for r in rows]

    async def delete_contents(
        self, conn: asyncpg.Connection, content_ids: Sequence[int]
    ) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            """DELETE FROM contents WHERE content_id = ANY($1::bigint[])
               RETURNING content_id, fits_hash, prefix, stored_bytes""",
            list(content_ids),
        )
        return rows

    # Culling -----------------------------------------------------------------

    async def cull_candidates(self, conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
        """The contents used longest ago (no lock), with no live upload lease."""
        rows: list[asyncpg.Record] = await conn.fetch(
            """SELECT c.content_id, c.last_used_at FROM contents c
               WHERE NOT EXISTS (SELECT 1 FROM upload_leases l
                                 WHERE l.content_id = c.content_id AND l.expires_at > now())
               ORDER BY c.last_used_at, c.content_id LIMIT $1""",
            limit,
        )
        return rows

    async def lock_for_removal(
        self, conn: asyncpg.Connection, content_ids: Sequence[int]
    ) -> list[asyncpg.Record]:
        """Locks those of the contents nobody else holds (SKIP LOCKED), as they are now."""
        rows: list[asyncpg.Record] = await conn.fetch(
            """SELECT c.content_id, c.last_used_at, c.stored_bytes, c.image_count, c.prefix FROM contents c
               WHERE c.content_id = ANY($1::bigint[])
                 AND NOT EXISTS (SELECT 1 FROM upload_leases l
                                 WHERE l.content_id = c.content_id AND l.expires_at > now())
               ORDER BY c.content_id FOR UPDATE OF c SKIP LOCKED""",
            list(content_ids),
        )
        return rows

    async def usage(self, conn: asyncpg.Connection) -> asyncpg.Record:
        row: asyncpg.Record = await conn.fetchrow(
            "SELECT used_bytes, content_count, image_count, culled_images FROM usage"
        )
        return row

    async def reconcile_usage(self, conn: asyncpg.Connection) -> asyncpg.Record:
        """Recomputes the usage counter from the rows."""
        row: asyncpg.Record = await conn.fetchrow(
            """UPDATE usage SET used_bytes = s.b, content_count = s.c, image_count = s.i
               FROM (SELECT coalesce((SELECT sum(stored_bytes) FROM contents), 0)::bigint AS b,
                            (SELECT count(*) FROM contents) AS c,
                            (SELECT count(*) FROM images) AS i) s
               RETURNING used_bytes, content_count, image_count, culled_images"""
        )
        return row

    # Sweep -------------------------------------------------------------------

    async def drop_old_tombstones(self, conn: asyncpg.Connection, before: dt.datetime) -> int:
        status = await conn.execute("DELETE FROM tombstones WHERE removed_at < $1", before)
        return int(status.split()[-1])

    async def drop_expired_leases(self, conn: asyncpg.Connection) -> int:
        status = await conn.execute("DELETE FROM upload_leases WHERE expires_at <= now()")
        return int(status.split()[-1])

    async def unused_contents(self, conn: asyncpg.Connection, limit: int = 1000) -> list[int]:
        """Contents no image uses and no live lease holds (left by a delete
        during a reuse upload that then died)."""
        rows = await conn.fetch(
            """SELECT c.content_id FROM contents c
               WHERE c.image_count = 0
                 AND NOT EXISTS (SELECT 1 FROM upload_leases l WHERE l.content_id = c.content_id)
               ORDER BY c.content_id LIMIT $1""",
            limit,
        )
        return [r["content_id"] for r in rows]

    async def referenced_prefixes(self, conn: asyncpg.Connection, prefixes: Sequence[str]) -> set[str]:
        """Those of the prefixes a content row or a live lease holds."""
        rows = await conn.fetch(
            """SELECT p FROM unnest($1::text[]) AS p
               WHERE EXISTS (SELECT 1 FROM contents c WHERE c.prefix = p)
                  OR EXISTS (SELECT 1 FROM upload_leases l WHERE l.prefix = p AND l.expires_at > now())""",
            list(prefixes),
        )
        return {r["p"] for r in rows}

    async def held_staging_keys(self, conn: asyncpg.Connection, keys: Sequence[str]) -> set[str]:
        """Those of the staging keys a live upload lease or resumable upload holds."""
        rows = await conn.fetch(
            """SELECT l.staging_key FROM upload_leases l
               WHERE l.staging_key = ANY($1::text[]) AND l.expires_at > now()
               UNION
               SELECT r.staging_key FROM resumable_uploads r
               WHERE r.staging_key = ANY($1::text[]) AND r.expires_at > now()""",
            list(keys),
        )
        return {r["staging_key"] for r in rows}

    # ---- resumable uploads ----------------------------------------------------------------------

    async def live_resumables(self, conn: asyncpg.Connection, owner_id: str) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM resumable_uploads WHERE owner_id = $1 AND expires_at > now()", owner_id
        )
        return count

    async def insert_resumable(
        self,
        conn: asyncpg.Connection,
        *,
        upload_id: str,
        owner_id: str,
        ob_id: int,
        run_id: str,
        ob: bytes,
        bandpass: str,
        file_name: str,
        length_bytes: int,
        staging_key: str,
        ttl_s: int,
    ) -> asyncpg.Record:
        # Resumable bookkeeping is not worth a WAL flush each (see claim_resumable): a record
        # lost to a database crash is an upload the client starts again.
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        return await conn.fetchrow(
            """INSERT INTO resumable_uploads (upload_id, owner_id, ob_id, run_id, ob, bandpass,
                   file_name, length_bytes, staging_key, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))
               RETURNING *""",
            uuid.UUID(upload_id),
            owner_id,
            ob_id,
            run_id,
            ob,
            bandpass,
            file_name,
            length_bytes,
            staging_key,
            float(ttl_s),
        )

    async def resumable(
        self, conn: asyncpg.Connection, upload_id: uuid.UUID, owner_id: str, lock: bool = False
    ) -> asyncpg.Record | None:
        """The owner's upload (None for anyone else's: its existence is not told)."""
        return await conn.fetchrow(
            "SELECT * FROM resumable_uploads WHERE upload_id = $1 AND owner_id = $2"
            + (" FOR UPDATE" if lock else ""),
            upload_id,
            owner_id,
        )

    async def claim_resumable(
        self, conn: asyncpg.Connection, upload_id: uuid.UUID, token: uuid.UUID, claim_s: int, ttl_s: int
    ) -> bool:
        """Takes the upload's claim unless another holds it; starts its expiry again. A claim
        is not worth a WAL flush (one per PATCH, behind the staging writes on a busy disk): if
        the database crashes before writing it, it is lost, and the PATCH then loses its claim
        (ReleaseResumable answers UPLOAD_LOCKED) or the claim expires after claim_seconds."""
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        done = await conn.fetchval(
            """UPDATE resumable_uploads
               SET claim_token = $2, claimed_until = now() + make_interval(secs => $3),
                   expires_at = greatest(expires_at, now() + make_interval(secs => $4))
               WHERE upload_id = $1 AND (claim_token IS NULL OR claimed_until < now())
               RETURNING true""",
            upload_id,
            token,
            float(claim_s),
            float(ttl_s),
        )
        return bool(done)

    async def release_resumable(
        self,
        conn: asyncpg.Connection,
        upload_id: uuid.UUID,
        token: uuid.UUID,
        renew: bool,
        claim_s: int,
        multipart_id: str,
    ) -> asyncpg.Record | None:
        await conn.execute("SET LOCAL synchronous_commit TO OFF")  # as for the claim
        return await conn.fetchrow(
            """UPDATE resumable_uploads
               SET claim_token = CASE WHEN $3 THEN claim_token END,
                   claimed_until = CASE WHEN $3 THEN now() + make_interval(secs => $4) END,
                   multipart_id = CASE WHEN $5 = '' THEN multipart_id ELSE $5 END
               WHERE upload_id = $1 AND claim_token = $2
               RETURNING *""",
            upload_id,
            token,
            renew,
            float(claim_s),
            multipart_id,
        )

    async def delete_resumable(
        self, conn: asyncpg.Connection, upload_id: uuid.UUID, owner_id: str
    ) -> asyncpg.Record | None:
        # Not flushed either: a deletion lost to a crash leaves a record the sweep removes at expiry.
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        return await conn.fetchrow(
            "DELETE FROM resumable_uploads WHERE upload_id = $1 AND owner_id = $2 RETURNING *",
            upload_id,
            owner_id,
        )

    async def live_multipart_ids(self, conn: asyncpg.Connection) -> frozenset[str]:
        """The S3 multipart uploads of resumable uploads in progress (not abandoned writes)."""
        rows = await conn.fetch(
            "SELECT multipart_id FROM resumable_uploads WHERE multipart_id <> '' AND expires_at > now()"
        )
        return frozenset(r["multipart_id"] for r in rows)

    async def delete_expired_resumables(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(
            "DELETE FROM resumable_uploads WHERE expires_at <= now() RETURNING staging_key, multipart_id"
        )
        return rows

    async def content_objects(self, conn: asyncpg.Connection) -> list[asyncpg.Record]:
        """Every content row's prefix and the objects it names (the consistency check)."""
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT prefix, fits_key, preview_key, hips_prefix FROM contents ORDER BY content_id"
        )
        return rows

    async def has_live_leases(self, conn: asyncpg.Connection) -> bool:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM upload_leases WHERE expires_at > now())")
        )


# Short OLTP queries: a parallel plan's worker start-up (and JIT compilation,
# which the GIN lookup's pessimistic row estimate can trigger) costs far more
# than the query itself.
SESSION_SETTINGS = {"max_parallel_workers_per_gather": "0", "jit": "off"}


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: the catalog
    sets no session state (no SET, LISTEN, cursors; advisory locks are released
    where taken), and asyncpg's default reset costs a round trip per request."""


async def create_pool(url: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings=SESSION_SETTINGS, reset=_keep_session
    )
    return pool


def lease_uuid(lease_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(lease_id)
    except (ValueError, TypeError):
        return None


__all__ = ["Repository", "create_pool", "lease_uuid", "migrate", "migration_files"]
