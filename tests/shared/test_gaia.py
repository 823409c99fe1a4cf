"""The Gaia catalogue client: the real pyvo client against the development TAP server."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time
from erfa import ErfaWarning

from services.devp2 import free_port
from services.devtap import DevTap, demo_table
from services.shared.errors import Code, ServiceError
from services.shared.gaia import COLUMNS, DR3_TABLE, GaiaCatalogue, GaiaSources, cone_query

RA, DEC = 150.0, 2.0


@pytest.fixture(scope="module")
def table() -> Table:
    return demo_table(RA, DEC, radius_arcsec=900.0, count=4000)


@pytest.fixture
def tap(table: Table) -> Iterator[DevTap]:
    server = DevTap(table)
    server.start()
    yield server
    server.stop()


def expected(table: Table, ra: float, dec: float, radius_arcsec: float, mag: float, top: int) -> np.ndarray:
    """The source_ids the cone query should return, computed on the table directly."""
    sep = SkyCoord(table["ra"], table["dec"], unit="deg").separation(SkyCoord(ra * u.deg, dec * u.deg))
    g = np.asarray(table["phot_g_mean_mag"], dtype=float)
    keep = (sep.arcsec <= radius_arcsec) & (g < mag)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(g[rows], kind="stable")][:top]
    return np.asarray(table["source_id"][rows])


def test_the_query_is_one_cone_with_a_magnitude_limit_and_top() -> None:
    assert cone_query(DR3_TABLE, 269.5, -4.25, 90.0, 19.5, 2000) == (
        "SELECT TOP 2000 source_id, ra, dec, pmra, pmdec, phot_g_mean_mag, ref_epoch "
        "FROM gaiadr3.gaia_source "
        "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
        "CIRCLE('ICRS', 269.500000000, -4.250000000, 0.025000000)) "
        "AND phot_g_mean_mag < 19.500 ORDER BY phot_g_mean_mag ASC"
    )


@pytest.mark.parametrize(
    ("table_name", "ra", "dec", "radius", "mag", "top"),
    [
        ("gaia; DROP TABLE x", RA, DEC, 60.0, 19.0, 10),
        (DR3_TABLE, RA, 91.0, 60.0, 19.0, 10),
        (DR3_TABLE, float("nan"), DEC, 60.0, 19.0, 10),
        (DR3_TABLE, RA, DEC, 0.0, 19.0, 10),
        (DR3_TABLE, RA, DEC, 60.0, float("inf"), 10),
        (DR3_TABLE, RA, DEC, 60.0, 19.0, 0),
    ],
)
def test_bad_arguments_are_invalid_not_a_failure_of_the_service(
    table_name: str, ra: float, dec: float, radius: float, mag: float, top: int
) -> None:
    with pytest.raises(ServiceError) as err:
        cone_query(table_name, ra, dec, radius, mag, top)
    assert err.value.code is Code.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("ra", "dec", "radius", "mag", "top"),
    [
        (RA, DEC, 300.0, 19.0, 5000),  # the cone and the magnitude cut
        (RA, DEC, 600.0, 21.0, 25),  # TOP keeps the brightest
        (RA + 0.1, DEC - 0.05, 200.0, 17.5, 5000),  # off-centre
    ],
)
def test_cone_magnitude_cut_and_top_are_honoured(
    tap: DevTap, table: Table, ra: float, dec: float, radius: float, mag: float, top: int
) -> None:
    catalogue = GaiaCatalogue(tap.url)
    sources = catalogue.cone(ra, dec, radius, mag_limit=mag, top=top)
    want = expected(table, ra, dec, radius, mag, top)
    assert len(want) > 0
    assert list(sources.source_id) == list(want)
    assert np.all(sources.g_mag < mag)
    assert np.all(np.diff(sources.g_mag) >= 0)
    # MAXREC = TOP, so a lower default limit of the service does not cut the answer.
    assert tap.queries[-1]["MAXREC"] == str(top)
    assert tap.queries[-1]["LANG"] == "ADQL"
    catalogue.close()


def test_rows_keep_their_values_and_no_proper_motion_stays_nan(tap: DevTap, table: Table) -> None:
    sources = GaiaCatalogue(tap.url).cone(RA, DEC, 900.0, mag_limit=22.0, top=100_000)
    assert len(sources) == len(table)
    by_id = {int(s): i for i, s in enumerate(table["source_id"])}
    rows = [by_id[int(s)] for s in sources.source_id]
    assert np.array_equal(sources.ra_deg, np.asarray(table["ra"])[rows])
    assert np.array_equal(sources.pmdec_mas_yr, np.asarray(table["pmdec"])[rows], equal_nan=True)
    assert np.isnan(sources.pmra_mas_yr).sum() == np.isnan(np.asarray(table["pmra"])).sum() > 0
    assert sources.source_id.dtype == np.int64 and np.all(sources.ref_epoch == 2016.0)


def unavailable(call: object) -> tuple[ServiceError, float]:
    start = time.perf_counter()
    with pytest.raises(ServiceError) as err:
        call()  # type: ignore[operator]
    return err.value, time.perf_counter() - start


def test_a_server_that_is_down_is_unavailable_quickly() -> None:
    catalogue = GaiaCatalogue(f"http://127.0.0.1:{free_port()}/tap")
    err, took = unavailable(lambda: catalogue.cone(RA, DEC, 60.0))
    assert err.code is Code.UNAVAILABLE and err.details["reason"] == "unreachable"
    assert took < 2.0


def test_a_slow_server_times_out_as_unavailable(tap: DevTap) -> None:
    tap.delay_s = 1.5
    catalogue = GaiaCatalogue(tap.url, read_timeout_s=0.3)
    err, took = unavailable(lambda: catalogue.cone(RA, DEC, 60.0))
    assert err.code is Code.UNAVAILABLE and err.details["reason"] == "timeout"
    assert took < 1.5
    assert "in time" in err.message


async def test_the_async_call_answers_by_its_deadline(tap: DevTap) -> None:
    tap.delay_s = 1.5
    catalogue = GaiaCatalogue(tap.url, read_timeout_s=30.0)
    start = time.perf_counter()
    with pytest.raises(ServiceError) as err:
        await catalogue.cone_async(RA, DEC, 60.0, deadline_s=0.3)
    assert err.value.code is Code.UNAVAILABLE and err.value.details["reason"] == "timeout"
    assert time.perf_counter() - start < 1.0
    tap.delay_s = 0.0
    await asyncio.sleep(1.5)  # let the abandoned thread finish before the server stops


async def test_the_async_call_returns_the_sources(tap: DevTap, table: Table) -> None:
    sources = await GaiaCatalogue(tap.url).cone_async(RA, DEC, 300.0, mag_limit=19.0)
    assert list(sources.source_id) == list(expected(table, RA, DEC, 300.0, 19.0, 5000))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("fail_status", "http_error"), ("garbage", "malformed"), ("other_table", "refused")],
)
def test_failures_of_the_service_are_unavailable_with_a_reason(tap: DevTap, fault: str, reason: str) -> None:
    table = DR3_TABLE
    if fault == "fail_status":
        tap.fail_status = 500
    elif fault == "garbage":
        tap.garbage = True
    else:
        table = "gaiadr3.not_there"  # the service refuses the query with a TAP error
    err, _ = unavailable(lambda: GaiaCatalogue(tap.url, table=table).cone(RA, DEC, 60.0))
    assert err.code is Code.UNAVAILABLE and err.details["reason"] == reason
    assert err.details["url"] == tap.url


def test_a_table_without_the_columns_refuses_the_query(tap: DevTap, table: Table) -> None:
    tap.table = table[["source_id", "ra", "dec", "phot_g_mean_mag"]]  # a poorer table: no pmra ...
    err, _ = unavailable(lambda: GaiaCatalogue(tap.url).cone(RA, DEC, 60.0))
    assert err.code is Code.UNAVAILABLE and err.details["reason"] == "refused"
    assert "pmra" in err.message


def test_the_columns_asked_are_the_columns_named() -> None:
    assert COLUMNS == ("source_id", "ra", "dec", "pmra", "pmdec", "phot_g_mean_mag", "ref_epoch")


# ---- proper motion ------------------------------------------------------------------------------


def astropy_positions(sources: GaiaSources, epoch: float) -> SkyCoord:
    coords = SkyCoord(
        sources.ra_deg * u.deg,
        sources.dec_deg * u.deg,
        pm_ra_cosdec=np.nan_to_num(sources.pmra_mas_yr) * u.mas / u.yr,
        pm_dec=np.nan_to_num(sources.pmdec_mas_yr) * u.mas / u.yr,
        obstime=Time(2016.0, format="jyear", scale="tcb"),
    )
    with warnings.catch_warnings():
        # Without a distance astropy puts the stars far away, and says so.
        warnings.filterwarnings("ignore", 'ERFA function "pmsafe" yielded', ErfaWarning)
        return coords.apply_space_motion(new_obstime=Time(epoch, format="jyear", scale="tcb"))


@pytest.mark.parametrize("epoch", [1990.0, 2016.0, 2024.37, 2040.5])
def test_positions_at_an_epoch_are_astropys(epoch: float) -> None:
    rng = np.random.default_rng(7)
    n = 500
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    dec[:3] = [89.99, -89.95, 0.0]  # near the poles too
    sources = GaiaSources.of(
        rng.uniform(0, 360, n), dec, np.full(n, 15.0), rng.normal(0, 2000, n), rng.normal(0, 2000, n)
    )
    ra_t, dec_t = sources.positions_at(epoch)
    want = astropy_positions(sources, epoch)
    sep = SkyCoord(ra_t * u.deg, dec_t * u.deg).separation(want).to(u.mas).value
    assert sep.max() < 1.0  # mas, over up to 50 years at up to ~8"/yr


def test_a_source_without_proper_motion_stays_at_its_catalogue_place() -> None:
    sources = GaiaSources.of([10.0, 20.0], [-30.0, 45.0], [12.0, 13.0], [np.nan, 0.0], [np.nan, 0.0])
    ra, dec = sources.positions_at(2031.25)
    assert np.allclose(ra, [10.0, 20.0], atol=1e-12) and np.allclose(dec, [-30.0, 45.0], atol=1e-12)


def test_null_values_of_a_table_become_nan() -> None:
    t = Table(
        {name: np.ma.masked_array([1.0, 2.0], mask=[False, name == "pmra"]) for name in COLUMNS},
    )
    t["source_id"] = np.array([5, 6], dtype=np.int64)
    sources = GaiaSources.from_table(t)
    assert np.isnan(sources.pmra_mas_yr[1]) and sources.pmra_mas_yr[0] == 1.0
    assert list(sources.source_id) == [5, 6]
    with pytest.raises(ValueError, match="pmdec"):
        GaiaSources.from_table(t[["source_id", "ra", "dec", "pmra", "phot_g_mean_mag", "ref_epoch"]])
