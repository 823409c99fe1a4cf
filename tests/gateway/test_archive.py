"""ESO archive images in the selector over real HTTP, against the four services as processes
and a development archive this module owns (ObsCore through TAP, evaluating the geometry and
the release date of the queries it gets, and a file endpoint serving real small files).

Listed when they hold the target (and the BOA star) and are released; chosen, fetched once
in the background, checked and processed into one system-owned image, then shown; a DP id
with ADQL or a URL in it refused before the archive hears of it; every failure (the archive
down, a file refused by the checks, too large, too slow, redirected elsewhere, an unknown
DP id) leaves the selector answering, the entry saying what happened, nothing stored and
the selection unchanged; culled, it is fetched again when asked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from services import devworld
from services.devarchive import ArchiveFile, DevArchive, demo_archive, product
from services.devrun import Suite
from tests.gateway.harness import Gateway, gateway_env, new_ob, new_user
from tests.gateway.test_gaia import cull_everything

ADP = "ADP.2015-05-11T10:19:53.607"  # FORS2, R, over the demo field (150, 2)
RAW = "HAWKI.2019-05-06T07:08:09.123"  # four chips around (150.5, 2.5), the target in a gap refused
SECRET = "ADP.2026-01-02T03:04:05.678"  # proprietary: released next year
BIG = "ADP.2021-06-07T08:09:10.111"  # larger than the upload limit
BIG_FIELD = (151.0, 3.0)
MID = "ADP.2021-06-07T08:09:10.222"  # under the upload limit, for the faults of the fetch itself
MID_FIELD = (152.0, 3.0)
NOFILTER = "ADP.2022-03-04T05:06:07.333"  # no filter in its header: the archive row's is used
NOFILTER_FIELD = (153.0, 3.0)
FIELD = devworld.FIELD
GAP = devworld.PAW_CENTRE


def archive_files() -> list[ArchiveFile]:
    data, corners = product(BIG, BIG_FIELD, "V", size=1400)  # ~ 23 MB with ERR and CONF
    when = dt.datetime(2021, 6, 7, 8, 9, 10, 111000, tzinfo=dt.UTC)
    big = ArchiveFile(BIG, "FORS2", "V", when, when, 24.0, (500.0, 590.0), tuple(corners), data)
    data, corners = product(MID, MID_FIELD, "V")  # ~ 4 MB
    mid = ArchiveFile(MID, "FORS2", "V", when, when, 24.0, (500.0, 590.0), tuple(corners), data)
    data, corners = product(NOFILTER, NOFILTER_FIELD, "")
    bare = ArchiveFile(NOFILTER, "FORS2", "I", when, when, 23.0, (730.0, 880.0), tuple(corners), data)
    return [*demo_archive(), big, mid, bare]


@pytest.fixture(scope="module")
def archive() -> Iterator[DevArchive]:
    server = DevArchive(archive_files())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def archive_gateway(
    suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory, archive: DevArchive
) -> Gateway:
    env = gateway_env(tmp_path_factory.mktemp("archive"))
    env.update(
        ARCHIVE_TAP_URL=archive.url,
        ARCHIVE_FILE_BASE=archive.file_base,
        ARCHIVE_CACHE_S="1",  # a failure is kept a tenth of it
        ARCHIVE_QUERY_TIMEOUT_S="2",
        ARCHIVE_FETCH_TIMEOUT_S="3",
        STORE_CAPACITY_BYTES="1000",  # a forced cull removes everything (the last test)
        CULL_INTERVAL_S="3600",
    )
    return Gateway(suite_factory(env))


@pytest.fixture
def healthy(archive: DevArchive) -> Iterator[DevArchive]:
    def reset() -> None:
        archive.delay_s, archive.fail_status = 0.0, None
        archive.file_status, archive.file_delay_s, archive.redirect_to = None, 0.0, None

    reset()
    yield archive
    reset()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ob_fields(
    run: str, target: tuple[float, float], boa: tuple[float, float] | None = None
) -> dict[str, str]:
    fields = {
        "run_id": run,
        "target_ra": repr(target[0]),
        "target_dec": repr(target[1]),
        "instrument": "FORS2",
    }
    if boa is not None:
        fields.update(boa_ra=repr(boa[0]), boa_dec=repr(boa[1]))
    return fields


async def listing(
    gw: Gateway,
    http: aiohttp.ClientSession,
    ob: int,
    run: str,
    user: str,
    target: tuple[float, float] = FIELD,
    boa: tuple[float, float] | None = None,
) -> Any:
    async with http.get(
        f"{gw.url}/api/v1/obs/{ob}/background-images",
        params=ob_fields(run, target, boa),
        headers=gw.auth(user),
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def choose(
    gw: Gateway,
    http: aiohttp.ClientSession,
    ob: int,
    run: str,
    user: str,
    selection: str,
    target: tuple[float, float] = FIELD,
) -> tuple[int, Any]:
    body = {**ob_fields(run, target), "selection": selection}
    async with http.put(
        f"{gw.url}/api/v1/obs/{ob}/background-image", json=body, headers=gw.auth(user)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def settled(
    gw: Gateway,
    http: aiohttp.ClientSession,
    ob: int,
    run: str,
    user: str,
    dp_id: str,
    target: tuple[float, float] = FIELD,
) -> dict[str, Any]:
    """The listing's entry of `dp_id` once it is no longer preparing."""
    for _ in range(120):
        entries = (await listing(gw, http, ob, run, user, target))["archive"]["images"]
        entry = next(e for e in entries if e["dp_id"] == dp_id)
        if entry["state"] != "preparing":
            return dict(entry)
        await asyncio.sleep(0.25)
    raise AssertionError(f"{dp_id} still preparing")


async def selection_of(gw: Gateway, http: aiohttp.ClientSession, ob: int, run: str, user: str) -> Any:
    async with http.get(
        f"{gw.url}/api/v1/obs/{ob}/background-image", params={"run_id": run}, headers=gw.auth(user)
    ) as resp:
        return await resp.json()


async def archive_rows(gw: Gateway) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(gw.suite.env["DATABASE_URL"])
    try:
        return await conn.fetch(
            "SELECT owner_id, fits_hash, source_key FROM images WHERE owner_id = 'system:eso'"
        )
    finally:
        await conn.close()


# ---- found ----------------------------------------------------------------------------------------


async def test_the_compatible_released_images_are_listed(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive
) -> None:
    gw = archive_gateway
    owner = new_user()
    run = gw.new_run(owner)
    seen = len(healthy.queries)
    listed = await listing(gw, http, new_ob(), run, owner)
    section = listed["archive"]
    assert section["available"] is True
    assert [e["dp_id"] for e in section["images"]] == [ADP]  # not the proprietary one, nor the far one
    (entry,) = section["images"]
    assert entry["selection"] == f"eso_im|{ADP}" and entry["state"] == "available" and entry["image"] is None
    assert (entry["instrument"], entry["filter"], entry["depth_abmag"]) == ("FORS2", "R", 25.1)
    assert entry["observed"].startswith("2015-05-11T10:19:53")
    query = healthy.queries[seen]["QUERY"]
    assert "ivoa.ObsCore" in query and "dataproduct_type = 'image'" in query
    assert "CONTAINS(POINT('ICRS', 150.000000000, 2.000000000), s_region) = 1" in query
    assert "obs_release_date < '" in query

    # The BOA star must be in it too: one far away leaves nothing.
    inside = await listing(gw, http, new_ob(), run, owner, (150.012, 2.006), (150.004, 1.998))
    assert [e["dp_id"] for e in inside["archive"]["images"]] == [ADP]
    outside = await listing(gw, http, new_ob(), run, owner, (150.012, 2.006), (150.3, 2.0))
    assert outside["archive"]["images"] == []
    # Elsewhere, the raw paw-print; nowhere the proprietary one.
    gap = await listing(gw, http, new_ob(), run, owner, GAP)
    assert [e["dp_id"] for e in gap["archive"]["images"]] == [RAW]
    assert SECRET not in str(listed) + str(gap)


# ---- chosen, fetched once, shown ------------------------------------------------------------------


async def test_chosen_fetched_once_stored_and_shown(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive
) -> None:
    gw = archive_gateway
    first, second, delegate, stranger = new_user(), new_user(), new_user(), new_user()
    run_a, run_b = gw.new_run(first, (delegate,)), gw.new_run(second)
    ob_a, ob_b = new_ob(), new_ob()
    fetched = healthy.file_requests.count(ADP)
    healthy.file_delay_s = 0.3  # slow enough for the second user to ask while it is fetched

    (status_a, body_a), (status_b, body_b) = await asyncio.gather(
        choose(gw, http, ob_a, run_a, first, f"eso_im|{ADP}"),
        choose(gw, http, ob_b, run_b, second, f"eso_im|{ADP}"),
    )
    assert (status_a, status_b) == (202, 202), (body_a, body_b)
    assert body_a["state"] == "preparing" and body_a["selection"] == f"eso_im|{ADP}"
    during = await listing(gw, http, ob_a, run_a, first)
    assert during["archive"]["images"][0]["state"] == "preparing"
    assert during["selected"]["selection"] == "default"  # unchanged until it is stored

    entry = await settled(gw, http, ob_a, run_a, first, ADP)
    assert entry["state"] == "ready", entry
    image = entry["image"]
    assert image["owner_id"] == "system:eso" and image["selection"] == f"eso_im|{ADP}"
    assert image["filter"] == "R" and image["file_name"] == f"{ADP}.fits"
    assert len(image["footprints"]) == 1  # the image; its ERR and CONF planes are not shown
    assert healthy.file_requests.count(ADP) == fetched + 1  # one fetch for both users
    for ob, run, user in ((ob_a, run_a, first), (ob_b, run_b, second)):
        for _ in range(40):
            chosen = await selection_of(gw, http, ob, run, user)
            if chosen["selection"] == f"eso_im|{ADP}":
                break
            await asyncio.sleep(0.25)
        assert chosen["kind"] == "eso_image" and chosen["image"]["fits_hash"] == image["fits_hash"], chosen
    assert len(await archive_rows(gw)) == 1

    # Shown like any image to those who may see the OB; not to a stranger.
    async with http.get(
        f"{gw.url}/api/v1/images/{image['fits_hash']}/hips", headers=gw.auth(delegate)
    ) as resp:
        assert resp.status == 200
        hips_url = (await resp.json())["hips_url"]
    async with http.get(f"{hips_url}/properties") as resp:
        assert resp.status == 200
    async with http.get(
        f"{gw.url}/api/v1/images/{image['fits_hash']}/hips", headers=gw.auth(stranger)
    ) as resp:
        assert resp.status == 404
    # Chosen again: selected at once (200), nothing fetched.
    status, again = await choose(gw, http, new_ob(), run_a, delegate, f"eso_im|{ADP}")
    assert status == 200 and again["image"]["fits_hash"] == image["fits_hash"]
    assert healthy.file_requests.count(ADP) == fetched + 1


async def test_the_archive_row_gives_the_filter_a_header_lacks(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive
) -> None:
    gw = archive_gateway
    owner = new_user()
    run, ob = gw.new_run(owner), new_ob()
    status, body = await choose(gw, http, ob, run, owner, f"eso_im|{NOFILTER}", NOFILTER_FIELD)
    assert status == 202, body
    entry = await settled(gw, http, ob, run, owner, NOFILTER, NOFILTER_FIELD)
    assert entry["state"] == "ready" and entry["image"]["filter"] == "I", entry


@pytest.mark.parametrize(
    "bad",
    [
        "ADP.2015-05-11T10:19:53.607' OR 1=1 --",
        "ADP.2015-05-11T10:19:53.607%27%20OR%201=1",
        "http://evil.example.org/file.fits",
        "ADP.2015-02-30T10:19:53.607",  # no such day
        "../../etc/passwd",
    ],
)
async def test_a_dp_id_with_adql_or_a_url_never_reaches_the_archive(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive, bad: str
) -> None:
    gw = archive_gateway
    owner = new_user()
    run = gw.new_run(owner)
    queries, files = len(healthy.queries), len(healthy.file_requests)
    status, body = await choose(gw, http, new_ob(), run, owner, f"eso_im|{bad}")
    assert status == 400 and body["code"] == "INVALID_ARGUMENT", body
    assert bad not in body["detail"]
    assert (len(healthy.queries), len(healthy.file_requests)) == (queries, files)


# ---- failure --------------------------------------------------------------------------------------


async def _nothing_changed(
    gw: Gateway, http: aiohttp.ClientSession, ob: int, run: str, user: str, before: tuple[list[str], int]
) -> None:
    assert (await selection_of(gw, http, ob, run, user))["selection"] == "default"
    assert (await gw.store_keys(), await gw.image_rows()) == before
    gw.sweep_and_check()


async def test_an_unknown_dp_id_is_not_found_at_once(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive
) -> None:
    gw = archive_gateway
    owner = new_user()
    run, ob = gw.new_run(owner), new_ob()
    await choose(gw, http, ob, run, owner, "default")
    before = (await gw.store_keys(), await gw.image_rows())
    status, body = await choose(gw, http, ob, run, owner, "eso_im|ADP.2011-11-11T11:11:11.111")
    assert status == 404 and body["code"] == "NOT_FOUND", body
    status, body = await choose(gw, http, ob, run, owner, f"eso_im|{SECRET}")  # proprietary
    assert status == 404 and body["code"] == "NOT_FOUND", body
    assert SECRET not in healthy.file_requests
    await _nothing_changed(gw, http, ob, run, owner, before)


async def test_the_archive_down_leaves_the_selector_answering(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive
) -> None:
    gw = archive_gateway
    owner = new_user()
    run, ob = gw.new_run(owner), new_ob()
    target = (150.001, 2.001)  # a field not asked yet
    await choose(gw, http, ob, run, owner, "default", target)
    before = (await gw.store_keys(), await gw.image_rows())
    healthy.fail_status = 500
    listed = await listing(gw, http, ob, run, owner, target)
    assert listed["archive"] == {
        "available": False,
        "code": "UNAVAILABLE",
        "message": "ESO archive: the TAP service answered HTTP 500",
        "images": [],
    }
    assert listed["gaia"]["selection"] == "gaia" and listed["default_survey"]  # the rest is there
    status, body = await choose(gw, http, ob, run, owner, f"eso_im|{ADP}", target)
    assert status in (200, 503), body  # 200 only if another test stored it already
    if status == 503:
        assert body["code"] == "UNAVAILABLE"
        await _nothing_changed(gw, http, ob, run, owner, before)


@pytest.mark.parametrize(
    ("fault", "target", "dp_id", "code"),
    [
        ("checks", GAP, RAW, "TARGET_IN_CHIP_GAP"),
        ("size", BIG_FIELD, BIG, "TOO_LARGE"),
        ("slow", MID_FIELD, MID, "UNAVAILABLE"),
        ("redirect", MID_FIELD, MID, "UNAVAILABLE"),
        ("http", MID_FIELD, MID, "UNAVAILABLE"),
    ],
)
async def test_a_fetch_that_fails_says_why_and_leaves_nothing(
    archive_gateway: Gateway,
    http: aiohttp.ClientSession,
    healthy: DevArchive,
    fault: str,
    target: tuple[float, float],
    dp_id: str,
    code: str,
) -> None:
    gw = archive_gateway
    owner = new_user()
    run, ob = gw.new_run(owner), new_ob()
    await choose(gw, http, ob, run, owner, "default", target)
    before = (await gw.store_keys(), await gw.image_rows())
    if fault == "slow":
        healthy.file_delay_s = 2.0  # 4 MB at 1 MB per 2 s: past ARCHIVE_FETCH_TIMEOUT_S (3 s)
    elif fault == "redirect":
        healthy.redirect_to = "http://127.0.0.2:9/elsewhere.fits"
    elif fault == "http":
        healthy.file_status = 503
    assert (len(healthy.files[dp_id]) > int(gw.suite.env["MAX_UPLOAD_BYTES"])) == (fault == "size")
    status, body = await choose(gw, http, ob, run, owner, f"eso_im|{dp_id}", target)
    assert status == 202, body
    entry = await settled(gw, http, ob, run, owner, dp_id, target)
    assert entry["state"] == "failed" and entry["image"] is None, entry
    assert entry["code"] == code and entry["message"], entry
    if fault == "redirect":
        assert "another host" in entry["message"]
    await _nothing_changed(gw, http, ob, run, owner, before)


# ---- culled, and fetched again (keep last: it culls everything) -----------------------------------


async def test_a_culled_archive_image_is_fetched_again(
    archive_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevArchive
) -> None:
    gw = archive_gateway
    owner = new_user()
    run, ob = gw.new_run(owner), new_ob()
    status, body = await choose(gw, http, ob, run, owner, f"eso_im|{ADP}")
    if status == 202:
        await settled(gw, http, ob, run, owner, ADP)
        status, body = await choose(gw, http, ob, run, owner, f"eso_im|{ADP}")
    assert status == 200, body
    fits_hash = body["image"]["fits_hash"]
    culled = cull_everything(gw)
    assert fits_hash not in [t.fits_hash for t in culled.culled]  # no tombstone
    listed = await listing(gw, http, ob, run, owner)
    assert listed["archive"]["images"][0]["state"] == "available" and listed["tombstones"] == []
    assert listed["selected"]["selection"] == f"eso_im|{ADP}" and listed["selected"]["image"] is None
    fetched = healthy.file_requests.count(ADP)
    status, body = await choose(gw, http, ob, run, owner, f"eso_im|{ADP}")
    assert status == 202
    entry = await settled(gw, http, ob, run, owner, ADP)
    assert entry["image"]["fits_hash"] == fits_hash and healthy.file_requests.count(ADP) == fetched + 1
    gw.sweep_and_check()
