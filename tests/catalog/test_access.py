"""The access rules of DESIGN.md: the user x action matrix, association on use,
delete and its fall-backs, re-upload after delete, refusals that change nothing."""

from __future__ import annotations

import dataclasses
import itertools

from bgimages.catalog.v1 import catalog_pb2
from services.shared.errors import ServiceError
from tests.catalog.conftest import Harness, caller, fits_hash, next_ob, ob, square

RA, DEC = 83.8, -5.4
USER_IMAGE = catalog_pb2.SELECTION_KIND_USER_IMAGE
DEFAULT = catalog_pb2.SELECTION_KIND_DEFAULT
_worlds = itertools.count(1)


@dataclasses.dataclass
class World:
    """The seed's situation, with ids of its own.

    R1: PI p, delegates o (the uploader) and d1.  R2: PI o, delegate d3.
    X: PI q, delegates d1 and d2.  S: PI t (a stranger).
    o uploads I for OB1 of R1 (A(I) = {R1}); d1 selects I for OBX of X
    (X is not added). d2 is the seed's delegate-of-a-delegate.
    """

    n: int
    image: catalog_pb2.Image = dataclasses.field(default_factory=catalog_pb2.Image)
    ob1: int = 0
    obx: int = 0

    def user(self, name: str) -> str:
        return f"p2:{name}-{self.n}"

    def run(self, name: str) -> str:
        return f"p2:60.A-{self.n:04d}({name})"

    @property
    def hash(self) -> str:
        return self.image.fits_hash


async def make_world(catalog: Harness) -> World:
    w = World(next(_worlds))
    u, r = w.user, w.run
    await catalog.set_run(r("R1"), u("p"), [u("o"), u("d1")])
    await catalog.set_run(r("R2"), u("o"), [u("d3")])
    await catalog.set_run(r("X"), u("q"), [u("d1"), u("d2")])
    await catalog.set_run(r("S"), u("t"))
    w.ob1, w.obx = next_ob(), next_ob()
    w.image = await catalog.upload(
        u("o"), w.ob1, r("R1"), f"world-{w.n}", [square(RA, DEC, 0.1)], target=(RA, DEC)
    )
    sel = await catalog.call(
        "Select",
        catalog_pb2.SelectRequest(
            caller=caller(u("d1")), ob=ob(w.obx, r("X"), RA, DEC), kind=USER_IMAGE, value=w.hash
        ),
    )
    assert sel.image.fits_hash == w.hash
    return w


# Each user and the run of the OB they work in (where they list and use).
USERS = {
    "owner": "R2",  # o: owns I; uses it in an OB of another run of theirs
    "pi_of_upload_run": "R1",  # p: PI of R1, did not upload I
    "delegate_of_upload_run": "X",  # d1: delegate of R1 (and of X, where they work)
    "delegate_of_other_owner_run": "R2",  # d3: delegate of R2, a run of o where I was never used
    "delegate_of_delegate": "X",  # d2: the seed's D2, delegate of X only
    "stranger": "S",  # t
}
SHORT = {
    "owner": "o",
    "pi_of_upload_run": "p",
    "delegate_of_upload_run": "d1",
    "delegate_of_other_owner_run": "d3",
    "delegate_of_delegate": "d2",
    "stranger": "t",
}

# The expected answer of every cell: "ok", "listed"/"not listed", or the error code.
EXPECTED: dict[str, dict[str, str]] = {
    "owner": {"list": "listed", "use": "ok", "display": "ok", "delete": "ok"},
    "pi_of_upload_run": {"list": "listed", "use": "ok", "display": "ok", "delete": "FORBIDDEN"},
    "delegate_of_upload_run": {"list": "listed", "use": "ok", "display": "ok", "delete": "FORBIDDEN"},
    "delegate_of_other_owner_run": {
        "list": "not listed",
        "use": "NOT_FOUND",
        "display": "NOT_FOUND",
        "delete": "NOT_FOUND",
    },
    "delegate_of_delegate": {
        "list": "not listed",
        "use": "NOT_FOUND",
        "display": "ok",
        "delete": "NOT_FOUND",
    },
    "stranger": {"list": "not listed", "use": "NOT_FOUND", "display": "NOT_FOUND", "delete": "NOT_FOUND"},
}


async def act(catalog: Harness, w: World, who: str, action: str) -> str:
    user, run = w.user(SHORT[who]), w.run(USERS[who])
    try:
        if action == "list":
            resp = await catalog.call(
                "ListImages",
                catalog_pb2.ListImagesRequest(caller=caller(user), ob=ob(next_ob(), run, RA, DEC)),
            )
            return "listed" if w.hash in [i.fits_hash for i in [*resp.own, *resp.shared]] else "not listed"
        if action == "use":
            await catalog.call(
                "Select",
                catalog_pb2.SelectRequest(
                    caller=caller(user), ob=ob(next_ob(), run, RA + 0.01, DEC), kind=USER_IMAGE, value=w.hash
                ),
            )
            return "ok"
        if action == "display":
            # In the OB that has I selected in a run the user works in, if any (OB1 otherwise).
            shown_in = w.obx if USERS[who] == "X" else w.ob1
            await catalog.call(
                "AuthorizeDisplay",
                catalog_pb2.AuthorizeDisplayRequest(caller=caller(user), fits_hash=w.hash, ob_id=shown_in),
            )
            return "ok"
        if action == "delete":
            await catalog.call(
                "DeleteImage", catalog_pb2.DeleteImageRequest(caller=caller(user), fits_hash=w.hash)
            )
            return "ok"
    except ServiceError as err:
        return err.code
    raise AssertionError(action)


async def test_access_matrix(catalog: Harness) -> None:
    """Every user x action cell, each in a world of its own (a use or delete changes the world)."""
    got: dict[str, dict[str, str]] = {}
    for who in EXPECTED:
        got[who] = {}
        for action in ("list", "use", "display", "delete"):
            w = await make_world(catalog)
            got[who][action] = await act(catalog, w, who, action)
    assert got == EXPECTED


async def test_display_without_an_ob_needs_the_list_rule(catalog: Harness) -> None:
    w = await make_world(catalog)
    await catalog.fails(
        "NOT_FOUND",
        "AuthorizeDisplay",
        catalog_pb2.AuthorizeDisplayRequest(caller=caller(w.user("d2")), fits_hash=w.hash),
    )
    # D2 may see the OB's selection through GetSelection too (display rule), with the image.
    sel = await catalog.call(
        "GetSelection", catalog_pb2.GetSelectionRequest(caller=caller(w.user("d2")), ob_id=w.obx)
    )
    assert sel.kind == USER_IMAGE and sel.image.fits_hash == w.hash and not sel.image.owned_by_caller
    await catalog.fails(
        "FORBIDDEN", "GetSelection", catalog_pb2.GetSelectionRequest(caller=caller(w.user("t")), ob_id=w.obx)
    )


async def test_use_by_owner_associates_and_by_delegates_not(catalog: Harness) -> None:
    w = await make_world(catalog)
    # d1's use in X (in make_world) added nothing: d2 (delegate of X only) cannot list it.
    assert await act(catalog, w, "delegate_of_delegate", "list") == "not listed"
    image = await catalog.call(
        "GetImage", catalog_pb2.GetImageRequest(caller=caller(w.user("o")), fits_hash=w.hash)
    )
    assert list(image.run_ids) == [w.run("R1")]
    # d3 cannot list it until the owner uses it in R2.
    assert await act(catalog, w, "delegate_of_other_owner_run", "list") == "not listed"
    assert await act(catalog, w, "owner", "use") == "ok"  # the owner, in an OB of R2
    image = await catalog.call(
        "GetImage", catalog_pb2.GetImageRequest(caller=caller(w.user("o")), fits_hash=w.hash)
    )
    assert sorted(image.run_ids) == sorted([w.run("R1"), w.run("R2")])
    assert await act(catalog, w, "delegate_of_other_owner_run", "list") == "listed"
    # Now the owner uses it in X: X is added, and d2 can list it.
    sel = await catalog.call(
        "Select",
        catalog_pb2.SelectRequest(
            caller=caller(w.user("o"), [w.run("X")]),
            ob=ob(next_ob(), w.run("X"), RA, DEC),
            kind=USER_IMAGE,
            value=w.hash,
        ),
    )
    assert w.run("X") in sel.image.run_ids
    assert await act(catalog, w, "delegate_of_delegate", "list") == "listed"


async def test_use_needs_a_compatible_image(catalog: Harness) -> None:
    w = await make_world(catalog)
    err = await catalog.fails(
        "NOT_COMPATIBLE",
        "Select",
        catalog_pb2.SelectRequest(
            caller=caller(w.user("o")),
            ob=ob(next_ob(), w.run("R1"), RA + 1, DEC),
            kind=USER_IMAGE,
            value=w.hash,
        ),
    )
    assert err.details["fits_hash"] == w.hash
    await catalog.fails(
        "NOT_COMPATIBLE",
        "Select",
        catalog_pb2.SelectRequest(
            caller=caller(w.user("o")),
            ob=ob(next_ob(), w.run("R1"), RA, DEC, boa=(RA, DEC + 0.5)),
            kind=USER_IMAGE,
            value=w.hash,
        ),
    )


async def test_other_selections_are_tagged(catalog: Harness) -> None:
    w = await make_world(catalog)
    o, r1 = caller(w.user("o")), w.run("R1")
    for kind, value in [
        (catalog_pb2.SELECTION_KIND_GAIA, ""),
        (catalog_pb2.SELECTION_KIND_SURVEY, "DSS2 colored"),
        (catalog_pb2.SELECTION_KIND_ESO_IMAGE, "ADP.2020-01-01T00:00:00.000"),
        (DEFAULT, ""),
    ]:
        sel = await catalog.call(
            "Select", catalog_pb2.SelectRequest(caller=o, ob=ob(w.ob1, r1, RA, DEC), kind=kind, value=value)
        )
        assert (sel.kind, sel.value) == (kind, value)
        got = await catalog.call(
            "GetSelection", catalog_pb2.GetSelectionRequest(caller=o, ob_id=w.ob1, run_id=r1)
        )
        assert (got.kind, got.value, got.HasField("image")) == (kind, value, False)
    await catalog.fails(
        "INVALID_ARGUMENT",
        "Select",
        catalog_pb2.SelectRequest(
            caller=o, ob=ob(w.ob1, r1, RA, DEC), kind=catalog_pb2.SELECTION_KIND_SURVEY
        ),
    )


async def test_delete_removes_associations_and_falls_back_selections(catalog: Harness) -> None:
    w = await make_world(catalog)
    o = caller(w.user("o"))
    assert await act(catalog, w, "owner", "use") == "ok"  # A(I) = {R1, R2}; three OBs select it
    selecting = [w.ob1, w.obx, *await selecting_obs(catalog, w.hash)]
    assert len(set(selecting)) == 3
    resp = await catalog.call("DeleteImage", catalog_pb2.DeleteImageRequest(caller=o, fits_hash=w.hash))
    assert resp.tombstone.reason == catalog_pb2.REMOVAL_REASON_DELETED
    assert resp.tombstone.owner_id == w.user("o") and resp.tombstone.file_name == f"world-{w.n}.fits"
    assert await catalog.scalar("SELECT count(*) FROM image_runs") == await associations_left(catalog)
    assert await catalog.scalar("SELECT count(*) FROM images WHERE fits_hash = $1", w.hash) == 0
    for ob_id in set(selecting):
        assert await selection_row(catalog, ob_id) == (DEFAULT, "", None)
    assert await catalog.keys(f"content/{w.hash}/") == []
    # The owner, and those who could list it (R1, R2), are told it is gone; others learn nothing.
    for user in ("o", "p", "d1", "d3"):
        err = await catalog.fails(
            "GONE", "GetImage", catalog_pb2.GetImageRequest(caller=caller(w.user(user)), fits_hash=w.hash)
        )
        assert err.details["reason"] == "deleted"
    for user in ("d2", "t"):
        await catalog.fails(
            "NOT_FOUND",
            "GetImage",
            catalog_pb2.GetImageRequest(caller=caller(w.user(user)), fits_hash=w.hash),
        )
    listing = await catalog.call(
        "ListImages", catalog_pb2.ListImagesRequest(caller=o, ob=ob(w.ob1, w.run("R1"), RA, DEC))
    )
    assert not listing.own and listing.selected.kind == DEFAULT
    assert [t.fits_hash for t in listing.tombstones] == [w.hash]
    await catalog.fails("GONE", "DeleteImage", catalog_pb2.DeleteImageRequest(caller=o, fits_hash=w.hash))


async def selecting_obs(catalog: Harness, fits_hash_: str) -> list[int]:
    async with catalog.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT o.ob_id FROM obs o JOIN images i ON i.image_id = o.sel_image_id WHERE i.fits_hash = $1",
            fits_hash_,
        )
    return [r["ob_id"] for r in rows]


async def selection_row(catalog: Harness, ob_id: int) -> tuple[int, str, int | None]:
    async with catalog.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT sel_kind, sel_value, sel_image_id FROM obs WHERE ob_id = $1", ob_id)
    return row["sel_kind"], row["sel_value"], row["sel_image_id"]


async def associations_left(catalog: Harness) -> int:
    return int(
        await catalog.scalar("SELECT count(*) FROM image_runs r JOIN images i ON i.image_id = r.image_id")
    )


async def test_reupload_after_delete_starts_with_one_run(catalog: Harness) -> None:
    w = await make_world(catalog)
    o = caller(w.user("o"))
    assert await act(catalog, w, "owner", "use") == "ok"  # A(I) = {R1, R2}
    first_prefix = w.image.fits_key.removesuffix("original.fits")
    await catalog.call("DeleteImage", catalog_pb2.DeleteImageRequest(caller=o, fits_hash=w.hash))
    again = await catalog.upload(
        w.user("o"), next_ob(), w.run("R2"), f"world-{w.n}", [square(RA, DEC, 0.1)], target=(RA, DEC)
    )
    assert again.fits_hash == w.hash
    assert list(again.run_ids) == [w.run("R2")]
    assert not again.fits_key.startswith(first_prefix)  # a new generation
    # p (R1) no longer lists it until the owner uses it in R1 again.
    assert await act(catalog, w, "pi_of_upload_run", "list") == "not listed"


async def test_bad_requests_change_nothing(catalog: Harness) -> None:
    w = await make_world(catalog)
    o = caller(w.user("o"))
    r1 = w.run("R1")
    before = await snapshot(catalog)
    unknown = fits_hash("never uploaded")
    cases: list[tuple[str, str, object]] = [
        (
            "UNKNOWN_RUN",
            "BeginUpload",
            catalog_pb2.BeginUploadRequest(caller=o, ob=ob(next_ob(), "p2:nope", RA, DEC), fits_hash=unknown),
        ),
        (
            "FORBIDDEN",
            "BeginUpload",
            catalog_pb2.BeginUploadRequest(
                caller=caller(w.user("t")), ob=ob(next_ob(), r1, RA, DEC), fits_hash=unknown
            ),
        ),
        (
            "RUN_MISMATCH",
            "BeginUpload",
            catalog_pb2.BeginUploadRequest(caller=o, ob=ob(w.ob1, w.run("R2"), RA, DEC), fits_hash=unknown),
        ),
        (
            "RUN_MISMATCH",
            "Select",
            catalog_pb2.SelectRequest(
                caller=o, ob=ob(w.ob1, w.run("R2"), RA, DEC), kind=USER_IMAGE, value=w.hash
            ),
        ),
        (
            "INVALID_ARGUMENT",
            "BeginUpload",
            catalog_pb2.BeginUploadRequest(caller=o, ob=ob(next_ob(), r1, RA, DEC), fits_hash="abc"),
        ),
        (
            "INVALID_ARGUMENT",
            "ListImages",
            catalog_pb2.ListImagesRequest(caller=o, ob=ob(w.ob1, r1, RA, 91.0)),
        ),
        (
            "INVALID_ARGUMENT",
            "ListImages",
            catalog_pb2.ListImagesRequest(caller=o, ob=ob(w.ob1, r1, float("nan"), 0.0)),
        ),
        (
            "INVALID_ARGUMENT",
            "Select",
            catalog_pb2.SelectRequest(caller=o, ob=ob(w.ob1, r1, RA, -90.5), kind=USER_IMAGE, value=w.hash),
        ),
        (
            "INVALID_ARGUMENT",
            "ListImages",
            catalog_pb2.ListImagesRequest(caller=o, ob=ob(w.ob1, r1, 400.0, 0.0)),
        ),
        (
            "INVALID_ARGUMENT",
            "ListImages",
            catalog_pb2.ListImagesRequest(caller=catalog_pb2.Caller(), ob=ob(w.ob1, r1, RA, DEC)),
        ),
        ("INVALID_ARGUMENT", "Select", catalog_pb2.SelectRequest(caller=o, ob=ob(w.ob1, r1, RA, DEC))),
        ("NOT_FOUND", "GetImage", catalog_pb2.GetImageRequest(caller=o, fits_hash=unknown)),
        (
            "NOT_FOUND",
            "Select",
            catalog_pb2.SelectRequest(caller=o, ob=ob(w.ob1, r1, RA, DEC), kind=USER_IMAGE, value=unknown),
        ),
        (
            "NOT_FOUND",
            "DeleteImage",
            catalog_pb2.DeleteImageRequest(caller=caller(w.user("t")), fits_hash=w.hash),
        ),
        (
            "FORBIDDEN",
            "DeleteImage",
            catalog_pb2.DeleteImageRequest(caller=caller(w.user("p")), fits_hash=w.hash),
        ),
        (
            "FORBIDDEN",
            "Select",
            catalog_pb2.SelectRequest(
                caller=caller(w.user("t")), ob=ob(w.ob1, r1, RA, DEC), kind=USER_IMAGE, value=w.hash
            ),
        ),
        ("UNKNOWN_RUN", "RemoveRun", catalog_pb2.RemoveRunRequest(run_id="p2:nope")),
        ("INVALID_ARGUMENT", "SetRun", catalog_pb2.SetRunRequest(run_id=r1)),
        (
            "INVALID_ARGUMENT",
            "CompleteUpload",
            catalog_pb2.CompleteUploadRequest(
                caller=o, ob=ob(w.ob1, r1, RA, DEC), lease_id="not-a-lease", fits_hash=unknown
            ),
        ),
        (
            "NOT_FOUND",
            "CompleteUpload",
            catalog_pb2.CompleteUploadRequest(
                caller=o,
                ob=ob(w.ob1, r1, RA, DEC),
                lease_id="0f0e0d0c-0b0a-0908-0706-050403020100",
                fits_hash=unknown,
            ),
        ),
        ("INVALID_ARGUMENT", "RecordDisplays", catalog_pb2.RecordDisplaysRequest(fits_hashes=["x"])),
    ]
    for code, method, request in cases:
        err = await catalog.fails(code, method, request)
        assert err.message
    assert await snapshot(catalog) == before


async def test_completion_checks_the_processor_keys(catalog: Harness) -> None:
    """A completion naming objects outside its lease's prefix is refused and changes nothing."""
    w = await make_world(catalog)
    o = caller(w.user("o"))
    the_ob = ob(next_ob(), w.run("R1"), 10.0, 10.0)
    h = fits_hash("keys")
    begun = await catalog.call(
        "BeginUpload", catalog_pb2.BeginUploadRequest(caller=o, ob=the_ob, fits_hash=h)
    )
    before = await snapshot(catalog)
    base = dict(
        caller=o, ob=the_ob, lease_id=begun.lease_id, fits_hash=h, footprints=[square(10.0, 10.0, 0.1)]
    )
    p = begun.output_prefix
    for bad in [
        dict(fits_key="content/other/original.fits", preview_key=p + "preview.png", hips_prefix=p + "hips/"),
        dict(
            fits_key=p + "original.fits", preview_key=p + "preview.png", hips_prefix=p + "hips/"
        ),  # no bytes
    ]:
        await catalog.fails(
            "INVALID_ARGUMENT", "CompleteUpload", catalog_pb2.CompleteUploadRequest(**base, **bad)
        )
    bad_fp = catalog_pb2.CompleteUploadRequest(**{**base, "footprints": [square(10.0, 10.0, 0.1)]})
    bad_fp.footprints[0].corners[0].dec_deg = 95.0
    await catalog.fails("INVALID_ARGUMENT", "CompleteUpload", bad_fp)
    assert await snapshot(catalog) == before  # the lease is still there: the gateway aborts it


async def snapshot(catalog: Harness) -> dict[str, object]:
    out: dict[str, object] = {}
    async with catalog.pool.acquire() as conn:
        for table in (
            "runs",
            "run_members",
            "obs",
            "contents",
            "footprints",
            "images",
            "image_runs",
            "upload_leases",
            "tombstones",
            "usage",
        ):
            rows = await conn.fetch(f"SELECT * FROM {table}")
            out[table] = sorted(repr(tuple(r.values())) for r in rows)
    out["objects"] = await catalog.keys()
    return out


async def test_set_run_replaces_the_delegates_and_remove_run_forgets_them(catalog: Harness) -> None:
    w = await make_world(catalog)
    d1, r1 = caller(w.user("d1")), w.run("R1")
    assert await act(catalog, w, "delegate_of_upload_run", "list") == "listed"
    run = await catalog.call(
        "SetRun", catalog_pb2.SetRunRequest(run_id=r1, owner_id=w.user("p"), delegate_ids=[w.user("o")])
    )
    assert list(run.delegate_ids) == [w.user("o")]
    # d1 is no delegate of R1 any more: R1's OBs and I (through R1) are out of reach.
    await catalog.fails(
        "FORBIDDEN", "ListImages", catalog_pb2.ListImagesRequest(caller=d1, ob=ob(next_ob(), r1, RA, DEC))
    )
    await catalog.fails("NOT_FOUND", "GetImage", catalog_pb2.GetImageRequest(caller=d1, fits_hash=w.hash))
    # The PI keeps access; after RemoveRun the run is unknown, and the image stays with its owner.
    await catalog.call("RemoveRun", catalog_pb2.RemoveRunRequest(run_id=r1))
    await catalog.fails(
        "UNKNOWN_RUN",
        "ListImages",
        catalog_pb2.ListImagesRequest(caller=caller(w.user("p")), ob=ob(next_ob(), r1, RA, DEC)),
    )
    await catalog.fails(
        "NOT_FOUND", "GetImage", catalog_pb2.GetImageRequest(caller=caller(w.user("p")), fits_hash=w.hash)
    )
    own = await catalog.call(
        "GetImage", catalog_pb2.GetImageRequest(caller=caller(w.user("o")), fits_hash=w.hash)
    )
    assert own.owned_by_caller and list(own.run_ids) == [r1]
