"""The development TAP server: it runs the cone queries it gets and refuses the rest, as TAP says."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import pyvo
import requests
from astropy.io.votable import parse
from astropy.table import Table
from pyvo.dal.exceptions import DALOverflowWarning, DALQueryError

from services.devtap import AdqlError, Comparison, Cone, DevTap, demo_table, evaluate, parse_adql
from services.shared.gaia import DR3_TABLE, cone_query

RA, DEC = 83.8, -5.4
FROM_WHERE = "SELECT ra FROM gaiadr3.gaia_source WHERE "


@pytest.fixture(scope="module")
def table() -> Table:
    return demo_table(RA, DEC, radius_arcsec=600.0, count=2000)


@pytest.fixture(scope="module")
def tap(table: Table) -> Iterator[DevTap]:
    server = DevTap(table)
    server.start()
    yield server
    server.stop()


def test_it_reads_the_query_the_client_writes() -> None:
    q = parse_adql(cone_query(DR3_TABLE, RA, DEC, 120.0, 18.5, 300))
    assert q.table == DR3_TABLE and q.top == 300
    assert q.columns == ("source_id", "ra", "dec", "pmra", "pmdec", "phot_g_mean_mag", "ref_epoch")
    (cone,) = q.cones
    assert (cone.ra_deg, cone.dec_deg) == (RA, DEC) and cone.radius_deg == pytest.approx(120.0 / 3600)
    assert q.comparisons == (Comparison("phot_g_mean_mag", "<", 18.5),)
    assert (q.order_by, q.descending) == ("phot_g_mean_mag", False)


def test_it_reads_other_spellings_of_the_same_query() -> None:
    q = parse_adql(
        "select * from GAIADR3.GAIA_SOURCE where contains(point('icrs', RA, DEC), "
        "circle('ICRS', 83.8, -5.4, 1e-2)) = 1 and phot_g_mean_mag <= 12 and pmra > -5.5 order by ra desc"
    )
    assert q.columns == ("*",) and q.top is None
    assert q.cones == (Cone(83.8, -5.4, 0.01),)
    assert [c.op for c in q.comparisons] == ["<=", ">"]
    assert (q.order_by, q.descending) == ("ra", True)


@pytest.mark.parametrize(
    "adql",
    [
        "SELECT ra FROM gaiadr3.gaia_source WHERE ra < 3 OR dec > 2",
        "SELECT ra FROM gaiadr3.gaia_source LIMIT 5",
        "SELECT ra FROM gaiadr3.gaia_source JOIN other ON x = y",
        "SELECT ra FROM (SELECT * FROM gaiadr3.gaia_source)",
        "SELECT COUNT(*) FROM gaiadr3.gaia_source",
        "SELECT TOP -1 ra FROM gaiadr3.gaia_source",
        "SELECT TOP 2.5 ra FROM gaiadr3.gaia_source",
        "SELECT ra FROM gaiadr3.gaia_source WHERE 1 = CONTAINS(POINT('GALACTIC', ra, dec), "
        "CIRCLE('GALACTIC', 1, 2, 0.1))",
        FROM_WHERE + "1 = CONTAINS(POINT('ICRS', dec, ra), CIRCLE('ICRS', 1, 2, 0.1))",
        FROM_WHERE + "0 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 1, 2, 0.1))",
        FROM_WHERE + "1 = CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 1, 95, 1))",
        "SELECT ra FROM gaiadr3.gaia_source WHERE phot_g_mean_mag < ra",
        "SELECT ra FROM gaiadr3.gaia_source;",
        "SELECT ra, FROM gaiadr3.gaia_source",
        "SELECT ra FROM gaiadr3.gaia_source WHERE",
        "DELETE FROM gaiadr3.gaia_source",
        "SELECT ra FROM gaiadr3.gaia_source WHERE ra <> 3",
    ],
)
def test_anything_else_is_refused(adql: str) -> None:
    with pytest.raises(AdqlError):
        parse_adql(adql)


@pytest.mark.parametrize(
    "adql",
    [
        "SELECT ra FROM gaiadr3.other",
        "SELECT parallax FROM gaiadr3.gaia_source",
        "SELECT ra FROM gaiadr3.gaia_source WHERE parallax > 1",
        "SELECT ra FROM gaiadr3.gaia_source ORDER BY parallax",
    ],
)
def test_unknown_tables_and_columns_are_refused(table: Table, adql: str) -> None:
    with pytest.raises(AdqlError):
        evaluate(parse_adql(adql), table, DR3_TABLE)


def test_order_and_top_are_applied(table: Table) -> None:
    rows = evaluate(
        parse_adql("SELECT TOP 7 source_id, ra FROM gaiadr3.gaia_source ORDER BY ra DESC"), table, DR3_TABLE
    )
    assert rows.colnames == ["source_id", "ra"]
    assert list(rows["ra"]) == sorted(np.asarray(table["ra"]), reverse=True)[:7]


def test_null_never_passes_a_comparison(table: Table) -> None:
    rows = evaluate(parse_adql("SELECT pmra FROM gaiadr3.gaia_source WHERE pmra > -1e9"), table, DR3_TABLE)
    no_pm = int(np.isnan(np.asarray(table["pmra"])).sum())
    assert no_pm > 0 and len(rows) == len(table) - no_pm


def test_the_demo_table_is_deterministic_and_gaia_like(table: Table) -> None:
    again = demo_table(RA, DEC, radius_arcsec=600.0, count=2000)
    for name in table.colnames:
        assert np.array_equal(np.asarray(table[name]), np.asarray(again[name]), equal_nan=True)
    assert not np.array_equal(
        np.asarray(demo_table(RA + 1, DEC, 600.0, 2000)["ra"]) - 1, np.asarray(table["ra"])
    )
    speed = np.hypot(np.asarray(table["pmra"]), np.asarray(table["pmdec"]))
    assert (speed > 100).sum() >= 10  # fast movers
    assert np.isnan(speed).sum() >= 20  # two-parameter solutions
    g = np.asarray(table["phot_g_mean_mag"])
    assert g.min() >= 8 and g.max() <= 21 and (g > 18).sum() > (g < 15).sum()
    assert np.all(table["ref_epoch"] == 2016.0) and table["pmra"].unit == "mas / yr"


# ---- over HTTP, with pyvo -------------------------------------------------------------------------


def test_pyvo_reads_the_vosi_documents(tap: DevTap) -> None:
    service = pyvo.dal.TAPService(tap.url)
    assert service.maxrec == 10_000 and service.hardlimit == 100_000
    assert [t.name for t in service.tables] == [DR3_TABLE]
    assert "phot_g_mean_mag" in [c.name for c in service.tables[DR3_TABLE].columns]
    assert requests.get(tap.url + "/availability", timeout=5).ok


@pytest.mark.parametrize("post", [True, False])
def test_a_query_is_answered_by_get_and_post(tap: DevTap, post: bool) -> None:
    params = {
        "REQUEST": "doQuery",
        "LANG": "ADQL",
        "QUERY": "SELECT TOP 3 source_id FROM gaiadr3.gaia_source",
    }
    r = (
        requests.post(tap.url + "/sync", data=params, timeout=5)
        if post
        else requests.get(tap.url + "/sync", params=params, timeout=5)
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-votable+xml")
    rows = parse(io.BytesIO(r.content)).get_first_table().to_table()
    assert list(rows["source_id"]) == list(table_ids(tap)[:3])


def table_ids(tap: DevTap) -> np.ndarray:
    return np.asarray(tap.table["source_id"])


def test_a_malformed_query_gets_a_tap_error(tap: DevTap) -> None:
    with pytest.raises(DALQueryError, match="query not run"):
        pyvo.dal.TAPService(tap.url).run_sync("SELECT ra FROM gaiadr3.gaia_source WHERE ra < 3 OR dec > 2")
    r = requests.post(
        tap.url + "/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELEC"}, timeout=5
    )
    assert r.status_code == 400
    vot = parse(io.BytesIO(r.content))
    status = [i for i in vot.resources[0].infos if i.name == "QUERY_STATUS"]
    assert status[0].value == "ERROR" and "SELECT" in status[0].content


@pytest.mark.parametrize(
    "params",
    [
        {"REQUEST": "doQuery", "LANG": "PQL", "QUERY": "SELECT ra FROM gaiadr3.gaia_source"},
        {"REQUEST": "getCapabilities", "LANG": "ADQL", "QUERY": "SELECT ra FROM gaiadr3.gaia_source"},
        {"REQUEST": "doQuery", "LANG": "ADQL"},
        {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": "SELECT ra FROM gaiadr3.gaia_source", "MAXREC": "-1"},
        {
            "REQUEST": "doQuery",
            "LANG": "ADQL",
            "QUERY": "SELECT ra FROM gaiadr3.gaia_source",
            "RESPONSEFORMAT": "csv",
        },
    ],
)
def test_requests_other_than_an_adql_query_get_a_tap_error(tap: DevTap, params: dict[str, str]) -> None:
    r = requests.post(tap.url + "/sync", data=params, timeout=5)
    assert r.status_code == 400
    assert b'name="QUERY_STATUS" value="ERROR"' in r.content


def test_maxrec_cuts_with_overflow(tap: DevTap) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = pyvo.dal.TAPService(tap.url).run_sync("SELECT source_id FROM gaiadr3.gaia_source", maxrec=5)
    assert len(result) == 5
    assert not [w for w in seen if issubclass(w.category, DALOverflowWarning)]  # cut where the client asked
    r = requests.post(
        tap.url + "/sync",
        timeout=5,
        data={
            "REQUEST": "doQuery",
            "LANG": "ADQL",
            "QUERY": "SELECT source_id FROM gaiadr3.gaia_source",
            "MAXREC": "5",
        },
    )
    assert b'value="OVERFLOW"' in r.content


def test_every_query_is_recorded(tap: DevTap) -> None:
    pyvo.dal.TAPService(tap.url).run_sync("SELECT TOP 1 ra FROM gaiadr3.gaia_source", maxrec=1)
    assert tap.queries[-1] == {
        "REQUEST": "doQuery",
        "LANG": "ADQL",
        "MAXREC": "1",
        "QUERY": "SELECT TOP 1 ra FROM gaiadr3.gaia_source",
    }


def test_it_evaluates_a_point_in_each_rows_polygon_and_text_comparisons() -> None:
    from services.devtap import region_holds

    square = "POLYGON ICRS 149.9 1.9 150.1 1.9 150.1 2.1 149.9 2.1"
    assert region_holds(square, 150.0, 2.0) and not region_holds(square, 150.2, 2.0)
    assert region_holds("POLYGON 359.9 -0.1 0.1 -0.1 0.1 0.1 359.9 0.1", 0.0, 0.0)  # across RA 0
    table = Table(
        {
            "dp_id": ["A", "B", "C"],
            "dataproduct_type": ["image", "image", "cube"],
            "obs_release_date": ["2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z"],
            "s_region": [square, square, square],
        }
    )
    query = parse_adql(
        "SELECT dp_id FROM ivoa.ObsCore WHERE dataproduct_type = 'image' "
        "AND CONTAINS(POINT('ICRS', 150.05, 2.05), s_region) = 1 AND obs_release_date < '2026-12-03T00:00:00'"
    )
    assert list(evaluate(query, table, "ivoa.ObsCore")["dp_id"]) == ["A"]
    outside = parse_adql(
        "SELECT dp_id FROM ivoa.ObsCore WHERE CONTAINS(POINT('ICRS', 151.0, 2.0), s_region) = 1"
    )
    assert len(evaluate(outside, table, "ivoa.ObsCore")) == 0
