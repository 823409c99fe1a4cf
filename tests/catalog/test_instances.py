"""OBs are keyed by (p2 instance, ob_id): two p2 instances that number their
OBs alike pin, select and list independently; a run of another instance
named with an OB is refused and changes nothing; migration 003 converts the
OBs stored before it."""

from __future__ import annotations

import asyncpg
import pytest

from bgimages.catalog.v1 import catalog_pb2
from services.catalog.model import instance_of
from services.catalog.repository import migrate, migration_files
from tests.catalog.conftest import Harness, caller, fits_hash, next_ob, ob, square
from tests.catalog.test_access import snapshot

RA, DEC = 120.0, -30.0
USER_IMAGE = catalog_pb2.SELECTION_KIND_USER_IMAGE
GAIA = catalog_pb2.SELECTION_KIND_GAIA
SURVEY = catalog_pb2.SELECTION_KIND_SURVEY
DEFAULT = catalog_pb2.SELECTION_KIND_DEFAULT

# Two instances with the same run code and the same user number: only the namespace differs.
RUN_A, USER_A = "p2:60.I-0001(A)", "p2:500"
RUN_B, USER_B = "p2demo:60.I-0001(A)", "p2demo:500"


def test_instance_of_an_id() -> None:
    assert instance_of("p2:52052") == "p2"
    assert instance_of("p2demo:60.A-9252(A)") == "p2demo"
    assert instance_of("p2:a:b") == "p2"  # the text before the first ':'
    assert instance_of("alice") == ""
    assert instance_of(":7") == ""


async def selection(catalog: Harness, user: str, ob_id: int, run: str = "") -> catalog_pb2.Selection:
    sel: catalog_pb2.Selection = await catalog.call(
        "GetSelection", catalog_pb2.GetSelectionRequest(caller=caller(user), ob_id=ob_id, run_id=run)
    )
    return sel


async def listing(catalog: Harness, user: str, ob_id: int, run: str) -> catalog_pb2.ListImagesResponse:
    resp: catalog_pb2.ListImagesResponse = await catalog.call(
        "ListImages", catalog_pb2.ListImagesRequest(caller=caller(user), ob=ob(ob_id, run, RA, DEC))
    )
    return resp


async def test_same_ob_id_in_two_instances_pins_selects_and_lists_apart(catalog: Harness) -> None:
    await catalog.set_run(RUN_A, USER_A)
    await catalog.set_run(RUN_B, USER_B)
    n = next_ob()
    image_a = await catalog.upload(USER_A, n, RUN_A, "inst-a", [square(RA, DEC, 0.1)], target=(RA, DEC))
    # Before OBs were keyed by instance, this was RUN_MISMATCH (OB n pinned to RUN_A).
    image_b = await catalog.upload(USER_B, n, RUN_B, "inst-b", [square(RA, DEC, 0.2)], target=(RA, DEC))
    assert image_a.fits_hash != image_b.fits_hash
    rows = await catalog.pool.fetch("SELECT p2_instance, run_id FROM obs WHERE ob_id = $1 ORDER BY 1", n)
    assert [tuple(r) for r in rows] == [("p2", RUN_A), ("p2demo", RUN_B)]

    # Each sees its own pin and selection, with or without naming the run.
    for user, run, image in ((USER_A, RUN_A, image_a), (USER_B, RUN_B, image_b)):
        for named in (run, ""):
            sel = await selection(catalog, user, n, named)
            assert sel.kind == USER_IMAGE and sel.image.fits_hash == image.fits_hash
        resp = await listing(catalog, user, n, run)
        assert [i.fits_hash for i in resp.own] == [image.fits_hash]
        assert list(resp.shared) == []
        assert resp.selected.kind == USER_IMAGE and resp.selected.image.fits_hash == image.fits_hash

    # A selection in one instance leaves the other's OB alone.
    await catalog.call(
        "Select",
        catalog_pb2.SelectRequest(caller=caller(USER_B), ob=ob(n, RUN_B, RA, DEC), kind=GAIA),
    )
    assert (await selection(catalog, USER_B, n)).kind == GAIA
    assert (await selection(catalog, USER_A, n)).image.fits_hash == image_a.fits_hash
    await catalog.call(
        "Select",
        catalog_pb2.SelectRequest(
            caller=caller(USER_B), ob=ob(n, RUN_B, RA, DEC), kind=USER_IMAGE, value=image_b.fits_hash
        ),
    )
    await catalog.call(
        "Select",
        catalog_pb2.SelectRequest(caller=caller(USER_A), ob=ob(n, RUN_A, RA, DEC), kind=SURVEY, value="DSS2"),
    )
    assert (await selection(catalog, USER_A, n)).value == "DSS2"
    assert (await selection(catalog, USER_B, n)).image.fits_hash == image_b.fits_hash

    # Display through OB n's selection follows the caller's instance only.
    shown = await catalog.call(
        "AuthorizeDisplay",
        catalog_pb2.AuthorizeDisplayRequest(caller=caller(USER_B), fits_hash=image_b.fits_hash, ob_id=n),
    )
    assert shown.fits_hash == image_b.fits_hash
    await catalog.fails(
        "NOT_FOUND",
        "AuthorizeDisplay",
        catalog_pb2.AuthorizeDisplayRequest(caller=caller(USER_B), fits_hash=image_a.fits_hash, ob_id=n),
    )

    # Deleting B's image falls back B's OB only.
    await catalog.call(
        "DeleteImage", catalog_pb2.DeleteImageRequest(caller=caller(USER_B), fits_hash=image_b.fits_hash)
    )
    assert (await selection(catalog, USER_B, n)).kind == DEFAULT
    assert (await selection(catalog, USER_A, n)).value == "DSS2"


async def test_p2api_face_and_unnamespaced_ids_are_instances_too(catalog: Harness) -> None:
    """Runs given per request (the p2api face), and ids without a namespace
    (the instance ""), with an OB id another instance uses."""
    n = next_ob()
    await catalog.set_run(RUN_A, USER_A)
    await catalog.set_run("60.I-0009(A)", "alice")
    a = await catalog.upload(USER_A, n, RUN_A, "face-a", [square(RA, DEC, 0.1)], target=(RA, DEC))
    c = await catalog.upload("alice", n, "60.I-0009(A)", "face-c", [square(RA, DEC, 0.1)], target=(RA, DEC))
    b = await catalog.upload(
        "p2demo:77",
        n,
        "p2demo:60.I-0077(A)",
        "face-b",
        [square(RA, DEC, 0.1)],
        target=(RA, DEC),
        runs=["p2demo:60.I-0077(A)"],
    )
    got = await catalog.call(
        "GetSelection",
        catalog_pb2.GetSelectionRequest(caller=caller("p2demo:77", ["p2demo:60.I-0077(A)"]), ob_id=n),
    )
    assert got.image.fits_hash == b.fits_hash
    assert (await selection(catalog, "alice", n)).image.fits_hash == c.fits_hash
    assert (await selection(catalog, USER_A, n)).image.fits_hash == a.fits_hash
    rows = await catalog.pool.fetch("SELECT p2_instance FROM obs WHERE ob_id = $1 ORDER BY 1", n)
    assert [r[0] for r in rows] == ["", "p2", "p2demo"]


async def test_a_run_of_another_instance_is_refused_and_changes_nothing(catalog: Harness) -> None:
    await catalog.set_run(RUN_A, USER_A)
    # USER_A even has access to a run of the other instance (a SetRun can say so):
    # the OB would be keyed under USER_A's instance, so naming it is still refused.
    await catalog.set_run(RUN_B, USER_B, [USER_A])
    await catalog.set_run("60.I-0009(A)", "alice")
    n = next_ob()
    image_b = await catalog.upload(USER_B, n, RUN_B, "refused-b", [square(RA, DEC, 0.1)], target=(RA, DEC))
    begun = await catalog.call(
        "BeginUpload",
        catalog_pb2.BeginUploadRequest(
            caller=caller(USER_A), ob=ob(next_ob(), RUN_A, RA, DEC), fits_hash=fits_hash("x"), size_bytes=1
        ),
    )
    before = await snapshot(catalog)
    h = fits_hash("never uploaded")
    crossed = [
        (USER_A, RUN_B, None),  # p2 user, p2demo run (pinned there to OB n)
        (USER_A, RUN_B, ["p2:60.I-0001(A)", RUN_B]),  # runs given per request
        ("alice", RUN_A, None),  # no namespace, a namespaced run
        (USER_A, "60.I-0009(A)", None),  # namespaced user, a run without one
    ]
    for user, run, runs in crossed:
        who = caller(user, runs)
        for ob_id in (n, next_ob()):
            requests: list[tuple[str, object]] = [
                (
                    "BeginUpload",
                    catalog_pb2.BeginUploadRequest(caller=who, ob=ob(ob_id, run, RA, DEC), fits_hash=h),
                ),
                (
                    "CompleteUpload",
                    catalog_pb2.CompleteUploadRequest(
                        caller=who,
                        ob=ob(ob_id, run, RA, DEC),
                        lease_id=begun.lease_id,
                        fits_hash=fits_hash("x"),
                        footprints=[square(RA, DEC, 0.1)],
                    ),
                ),
                (
                    "Select",
                    catalog_pb2.SelectRequest(
                        caller=who, ob=ob(ob_id, run, RA, DEC), kind=USER_IMAGE, value=image_b.fits_hash
                    ),
                ),
                ("Select", catalog_pb2.SelectRequest(caller=who, ob=ob(ob_id, run, RA, DEC), kind=GAIA)),
                ("ListImages", catalog_pb2.ListImagesRequest(caller=who, ob=ob(ob_id, run, RA, DEC))),
                ("GetSelection", catalog_pb2.GetSelectionRequest(caller=who, ob_id=ob_id, run_id=run)),
            ]
            for method, request in requests:
                err = await catalog.fails("INVALID_ARGUMENT", method, request)
                assert "p2 instance" in err.message and repr(run) in err.message, err.message
    assert await snapshot(catalog) == before
    # The other instance's OB is as it was, and the lease still completes for its own OB.
    assert (await selection(catalog, USER_B, n)).image.fits_hash == image_b.fits_hash
    await catalog.call("AbortUpload", catalog_pb2.AbortUploadRequest(lease_id=begun.lease_id))


async def test_migration_003_keys_existing_obs_by_their_runs_instance(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                               applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for version, name, sql in migration_files():
            if version < 3:
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
        await conn.executemany(
            "INSERT INTO obs (ob_id, run_id, sel_kind, sel_value) VALUES ($1, $2, $3, $4)",
            [
                (7, "p2:60.M-0001(A)", 3, "DSS2"),
                (8, "p2demo:60.M-0002(A)", 2, ""),
                (9, "60.M-0003(A)", 1, ""),
            ],
        )
        assert "003_ob_instance.sql" in await migrate(conn)
        rows = await conn.fetch(
            "SELECT p2_instance, ob_id, run_id, sel_kind, sel_value FROM obs ORDER BY ob_id"
        )
        assert [tuple(r) for r in rows] == [
            ("p2", 7, "p2:60.M-0001(A)", 3, "DSS2"),
            ("p2demo", 8, "p2demo:60.M-0002(A)", 2, ""),
            ("", 9, "60.M-0003(A)", 1, ""),
        ]
        # Now an OB id is free in the other instances, and a row cannot name a run of another.
        await conn.execute("INSERT INTO obs (p2_instance, ob_id, run_id) VALUES ('p2demo', 7, 'p2demo:r')")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO obs (p2_instance, ob_id, run_id) VALUES ('p2', 7, 'p2:r')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("INSERT INTO obs (p2_instance, ob_id, run_id) VALUES ('p2', 70, 'p2demo:r')")
        assert await migrate(conn) == []
    finally:
        await conn.close()
