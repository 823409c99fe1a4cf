"""The selector's Gaia image over real HTTP, against the four services as processes and a
development TAP service this module owns (so it can put stars where it likes and make the
service fail or stall).

Listed without being made; made on selection (the catalogue's cone through pyvo, the
drawing, the processor's HiPS) into one system-owned image per key; a star with a proper
motion drawn where it is at the observation date; the TAP service down or slow leaves the
selector answering with the entry marked unavailable and nothing stored; a culled image is
made again, the same, without a tombstone.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import grpc
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.devrun import Suite
from services.devtap import DevTap, angular_distance_deg, demo_table
from tests.gateway.harness import Gateway, gateway_env, new_ob, new_user

TARGET = (150.0, 2.0)
OBS_DATE = "2030-01-01"  # Julian year 2030.00
EPOCH = 2030.0
# A bright fast mover and a bright star without proper motion, near the target.
MOVER = {"ra": 150.010, "dec": 2.008, "pmra": 2000.0, "pmdec": -1500.0, "g": 9.0}
STILL = {"ra": 149.991, "dec": 1.992, "g": 9.5}


def catalogue() -> Table:
    """Demo sources around the target, none within 40" of the two stars the tests follow."""
    table = demo_table(*TARGET, radius_arcsec=900.0, count=2000)
    for star in (MOVER, STILL):
        near = angular_distance_deg(table["ra"], table["dec"], star["ra"], star["dec"]) < 40.0 / 3600
        table = table[~near]
    extra = Table(
        {
            "source_id": np.array([1, 2], dtype=np.int64),
            "ra": [MOVER["ra"], STILL["ra"]],
            "dec": [MOVER["dec"], STILL["dec"]],
            "pmra": [MOVER["pmra"], np.nan],
            "pmdec": [MOVER["pmdec"], np.nan],
            "phot_g_mean_mag": np.array([MOVER["g"], STILL["g"]], dtype=np.float32),
            "ref_epoch": [2016.0, 2016.0],
        }
    )
    for name in extra.colnames:
        extra[name].unit = table[name].unit
    return vstack([table, extra])


@pytest.fixture(scope="module")
def tap() -> Iterator[DevTap]:
    server = DevTap(catalogue())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gaia_gateway(
    suite_factory: Callable[..., Suite], tmp_path_factory: pytest.TempPathFactory, tap: DevTap
) -> Gateway:
    env = gateway_env(tmp_path_factory.mktemp("gaia"))
    env.update(
        GAIA_TAP_URL=tap.url,
        GAIA_STATUS_TTL_S="0.5",
        GAIA_PROBE_TIMEOUT_S="1",
        GAIA_TIMEOUT_S="4",
        # Tiny, so that a forced cull removes everything; no background round meanwhile.
        STORE_CAPACITY_BYTES="1000",
        CULL_INTERVAL_S="3600",
    )
    return Gateway(suite_factory(env))


@pytest.fixture
def healthy(tap: DevTap) -> Iterator[DevTap]:
    tap.delay_s, tap.fail_status = 0.0, None
    yield tap
    tap.delay_s, tap.fail_status = 0.0, None


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def ob_query(run: str, target: tuple[float, float] = TARGET, **extra: str) -> dict[str, str]:
    return {"run_id": run, "target_ra": repr(target[0]), "target_dec": repr(target[1]), **extra}


async def listing(
    gw: Gateway, http: aiohttp.ClientSession, ob: int, run: str, user: str, **extra: str
) -> Any:
    params = {**ob_query(run), "obs_date": OBS_DATE, **extra}
    async with http.get(
        f"{gw.url}/api/v1/obs/{ob}/background-images", params=params, headers=gw.auth(user)
    ) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def select(
    gw: Gateway,
    http: aiohttp.ClientSession,
    ob: int,
    run: str,
    user: str,
    selection: str = "gaia",
    **extra: Any,
) -> tuple[int, Any]:
    body = {**ob_query(run), "selection": selection, "obs_date": OBS_DATE, **extra}
    async with http.put(
        f"{gw.url}/api/v1/obs/{ob}/background-image", json=body, headers=gw.auth(user)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def gaia_rows(gw: Gateway) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(gw.suite.env["DATABASE_URL"])
    try:
        return await conn.fetch(
            "SELECT owner_id, fits_hash, source_key FROM images WHERE source_key IS NOT NULL"
        )
    finally:
        await conn.close()


def cull_everything(gw: Gateway) -> catalog_pb2.CullResponse:
    with grpc.insecure_channel(gw.suite.address("catalog")) as ch:
        stub = catalog_pb2_grpc.CatalogServiceStub(ch)
        metadata = (("x-service-token", gw.suite.env["SERVICE_TOKEN"]),)
        return stub.Cull(catalog_pb2.CullRequest(force=True), metadata=metadata, timeout=60)


async def fits_of(gw: Gateway, http: aiohttp.ClientSession, fits_hash: str, user: str) -> fits.HDUList:
    async with http.get(f"{gw.url}/api/v1/images/{fits_hash}/fits", headers=gw.auth(user)) as resp:
        assert resp.status == 200, await resp.text()
        return fits.open(io.BytesIO(await resp.read()))


def centroid(hdul: fits.HDUList, ra: float, dec: float, box_arcsec: float = 6.0) -> tuple[float, float]:
    """The light-weighted centre (ra, dec) of the star nearest (ra, dec) in the image."""
    hdu = hdul[0]
    w = WCS(hdu.header)
    x0, y0 = w.world_to_pixel_values(ra, dec)
    scale = abs(hdu.header["CDELT2"]) * 3600 if "CDELT2" in hdu.header else 0.4
    half = int(box_arcsec / scale) + 1
    xi, yi = int(round(float(x0))), int(round(float(y0)))
    cut = hdu.data[yi - half : yi + half + 1, xi - half : xi + half + 1].astype(np.float64)
    peak_y, peak_x = np.unravel_index(np.argmax(cut), cut.shape)
    cy, cx = yi - half + peak_y, xi - half + peak_x
    stamp = hdu.data[cy - 3 : cy + 4, cx - 3 : cx + 4].astype(np.float64)
    stamp = np.clip(stamp - np.median(cut), 0, None)
    yy, xx = np.mgrid[cy - 3 : cy + 4, cx - 3 : cx + 4]
    x, y = (stamp * xx).sum() / stamp.sum(), (stamp * yy).sum() / stamp.sum()
    r, d = w.pixel_to_world_values(x, y)
    return float(r), float(d)


def separation_arcsec(a: tuple[float, float], b: tuple[float, float]) -> float:
    return float(angular_distance_deg(np.array([a[0]]), np.array([a[1]]), b[0], b[1])[0]) * 3600


# ---- listed, made on selection, displayed -------------------------------------------------------


async def test_listed_then_made_on_selection_and_displayed(
    gaia_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevTap
) -> None:
    gw = gaia_gateway
    owner, delegate, stranger = new_user(), new_user(), new_user()
    run = gw.new_run(owner, (delegate,))
    ob = new_ob()
    queries_before = len(healthy.queries)

    listed = await listing(gw, http, ob, run, owner, instrument="FORS2")
    gaia = listed["gaia"]
    assert gaia["selection"] == "gaia"
    assert gaia["name"] == "Gaia DR3 (epoch 2030.00)" and gaia["epoch"] == EPOCH
    assert gaia["available"] is True and gaia["image"] is None  # listed, not made
    # FORS2's 6.8' field (with the MXU/LSS reach) sizes it, not the 5' default.
    assert 240 < gaia["field_radius_arcsec"] < 420
    assert await gaia_rows(gw) == []

    status, chosen = await select(gw, http, ob, run, owner, instrument="FORS2")
    assert status == 200, chosen
    assert chosen["selection"] == "gaia" and chosen["kind"] == "gaia"
    image = chosen["image"]
    assert image["selection"] == "gaia" and image["owner_id"] == "system:gaia"
    assert image["owned_by_caller"] is False and image["filter"] == "G"
    assert image["file_name"] == "Gaia DR3 (epoch 2030.00)"
    assert image["run_ids"] == []  # other programmes' runs on the field are not told
    # The cone the image was made from: the target, TOP and the magnitude limit, as pyvo sent it.
    cone = [q["QUERY"] for q in healthy.queries[queries_before:] if "150.000000000" in q["QUERY"]]
    assert cone and "TOP 5000" in cone[-1] and "phot_g_mean_mag < 21.000" in cone[-1]

    again = await listing(gw, http, ob, run, delegate, instrument="FORS2")
    assert again["gaia"]["image"]["fits_hash"] == image["fits_hash"]
    assert again["selected"]["kind"] == "gaia"
    assert again["selected"]["image"]["fits_hash"] == image["fits_hash"]
    assert [i["fits_hash"] for i in again["own"] + again["shared"]] == []  # not among user images

    # Displayed like any image: the delegate gets a HiPS link and its properties.
    async with http.get(
        f"{gw.url}/api/v1/images/{image['fits_hash']}/hips", headers=gw.auth(delegate)
    ) as resp:
        assert resp.status == 200, await resp.text()
        hips_url = (await resp.json())["hips_url"]
    async with http.get(f"{hips_url}/properties") as resp:
        assert resp.status == 200
        assert "hips_pixel_bitpix" in await resp.text()
    # A stranger may not, and the owner's own images do not include it.
    async with http.get(
        f"{gw.url}/api/v1/images/{image['fits_hash']}/hips", headers=gw.auth(stranger)
    ) as resp:
        assert resp.status == 404
    async with http.delete(f"{gw.url}/api/v1/images/{image['fits_hash']}", headers=gw.auth(owner)) as resp:
        assert resp.status in (403, 404)


async def test_the_same_request_gives_the_same_stored_content(
    gaia_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevTap
) -> None:
    gw = gaia_gateway
    first, second = new_user(), new_user()
    run_a, run_b = gw.new_run(first), gw.new_run(second)
    ob_a, ob_b = new_ob(), new_ob()
    status, a = await select(gw, http, ob_a, run_a, first, instrument="HAWKI")
    assert status == 200, a
    status, b = await select(gw, http, ob_b, run_b, second, instrument="HAWKI")
    assert status == 200, b
    assert a["image"]["fits_hash"] == b["image"]["fits_hash"]
    keys = [r for r in await gaia_rows(gw) if r["fits_hash"] == a["image"]["fits_hash"]]
    assert len(keys) == 1 and keys[0]["owner_id"] == "system:gaia"
    # Another date is another image.
    status, c = await select(gw, http, ob_b, run_b, second, instrument="HAWKI", obs_date="2031-01-01")
    assert status == 200, c
    assert c["image"]["fits_hash"] != a["image"]["fits_hash"]
    assert c["image"]["file_name"] == "Gaia DR3 (epoch 2031.00)"


async def test_proper_motion_carries_a_star_to_the_observation_date(
    gaia_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevTap
) -> None:
    gw = gaia_gateway
    owner = new_user()
    run = gw.new_run(owner)
    status, chosen = await select(gw, http, new_ob(), run, owner)
    assert status == 200, chosen
    hdul = await fits_of(gw, http, chosen["image"]["fits_hash"], owner)
    years = EPOCH - 2016.0
    cos_dec = np.cos(np.radians(MOVER["dec"]))
    expected = (
        MOVER["ra"] + MOVER["pmra"] * years / 3.6e6 / cos_dec,
        MOVER["dec"] + MOVER["pmdec"] * years / 3.6e6,
    )
    moved = centroid(hdul, *expected)
    assert separation_arcsec(moved, expected) < 0.1
    assert separation_arcsec(moved, (MOVER["ra"], MOVER["dec"])) > 30  # it did move (~35")
    still = centroid(hdul, STILL["ra"], STILL["dec"])
    assert separation_arcsec(still, (STILL["ra"], STILL["dec"])) < 0.1


# ---- failure --------------------------------------------------------------------------------------


async def _snapshot(gw: Gateway) -> tuple[list[str], int]:
    return await gw.store_keys(), await gw.image_rows()


@pytest.mark.parametrize("fault", ["down", "slow"])
async def test_tap_down_or_slow_leaves_the_selector_answering_and_nothing_stored(
    gaia_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevTap, fault: str
) -> None:
    gw = gaia_gateway
    owner = new_user()
    run = gw.new_run(owner)
    ob = new_ob()
    target = (150.002, 2.003)  # a field not made yet
    status, chosen = await select(
        gw, http, ob, run, owner, "default", target_ra=target[0], target_dec=target[1]
    )
    assert status == 200, chosen
    before = await _snapshot(gw)
    if fault == "down":
        healthy.fail_status = 500
    else:
        healthy.delay_s = 8.0  # past GAIA_PROBE_TIMEOUT_S and GAIA_TIMEOUT_S
    await asyncio.sleep(0.6)  # past GAIA_STATUS_TTL_S: the listing asks again

    t0 = time.monotonic()
    params = ob_query(run, target, obs_date=OBS_DATE)
    async with http.get(
        f"{gw.url}/api/v1/obs/{ob}/background-images", params=params, headers=gw.auth(owner)
    ) as resp:
        assert resp.status == 200, await resp.text()
        listed = await resp.json()
    assert time.monotonic() - t0 < 3.0  # the probe's short deadline, not the TAP's stall
    assert listed["gaia"]["available"] is False
    assert listed["gaia"]["code"] == "UNAVAILABLE" and "Gaia" in listed["gaia"]["message"]
    assert listed["default_survey"]["selection"] == "default"  # the rest is there

    status, body = await select(gw, http, ob, run, owner, target_ra=target[0], target_dec=target[1])
    assert status == 503, body
    assert body["code"] == "UNAVAILABLE"
    async with http.get(
        f"{gw.url}/api/v1/obs/{ob}/background-image", params={"run_id": run}, headers=gw.auth(owner)
    ) as resp:
        assert (await resp.json())["selection"] == "default"  # unchanged
    assert await _snapshot(gw) == before
    gw.sweep_and_check()


# ---- culled, and made again (keep last: it culls everything) ---------------------------------------


async def test_a_culled_gaia_image_is_made_again_without_a_tombstone(
    gaia_gateway: Gateway, http: aiohttp.ClientSession, healthy: DevTap
) -> None:
    gw = gaia_gateway
    owner = new_user()
    run = gw.new_run(owner)
    ob = new_ob()
    status, first = await select(gw, http, ob, run, owner)
    assert status == 200, first
    fits_hash = first["image"]["fits_hash"]
    culled = cull_everything(gw)
    assert fits_hash not in [t.fits_hash for t in culled.culled]  # no tombstone for it
    assert await gaia_rows(gw) == []

    listed = await listing(gw, http, ob, run, owner)
    assert listed["gaia"]["image"] is None and listed["tombstones"] == []
    assert listed["selected"]["kind"] == "gaia" and listed["selected"]["image"] is None

    status, again = await select(gw, http, ob, run, owner)
    assert status == 200, again
    assert again["image"]["fits_hash"] == fits_hash  # the same bytes, made again
    gw.sweep_and_check()
