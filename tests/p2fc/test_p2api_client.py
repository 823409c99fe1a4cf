"""ESO's p2api client (PyPI `p2api`, pinned, unmodified) against the gateway's p2api face.

The only changes to the client object are where it points: `p2fc_url` at the
gateway, `apiUrl` at a p2 API stand-in on loopback. The four services run as
processes (the `suite_factory` fixture) with P2_API_BASES naming the stand-in.
Users, runs and OBs live in the stand-in, as p2 would answer them:

- PI owns run R (delegate D1) and uploads; PX owns run X (delegates D1, D2);
  STRANGER owns run S only. OBs of R, X and S all have the same target, so one
  image is compatible with each of them.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import p2api
import pytest
import requests

from services.devrun import Suite
from tests.conftest import suite_store
from tests.fitsgen import write_image
from tests.p2fc.p2_standin import P2StandIn, Trap

pytestmark = pytest.mark.e2e

PI, PX, D1, D2, STRANGER = 70001, 70002, 70003, 70004, 70005
# Tokens as p2 may issue them: base64 with "+", "/" and "=", a JWT with dots. p2api puts them
# unencoded into the query of its GET and DELETE calls, so "+" must stay a "+".
TOKENS = {
    PI: "p2tok+pi/5b1f0c+w==",
    PX: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3MDAwMiJ9.c2ln_bmF0dXJl-cHg",
    D1: "p2tok+d1+93e2bb/Q=",
    D2: "p2tok-d2-0c4d5e+",
    STRANGER: "p2tok-stranger-f00d",
}
R, X, S = 60925201, 60925301, 60925401
TARGET = ("10:00:00.000", "+02:00:00.00")  # (150, 2) degrees
# OB ids, one group per test so the tests do not depend on their order.
OB_FLOW, OB_FLOW_FAR = 2001, 2002
OB_NOFILTER = 2101
OB_DUP = 2201
OB_SHARE_R, OB_SHARE_X, OB_SHARE_S = 2301, 2302, 2303
OB_PI_NOT_OWNER = 2401
OB_BAD = 2501
OB_BOA_IN, OB_BOA_OUT = 2601, 2602
OB_REDIRECT = 2666
OB_SURVEYS = 2701
OB_SOURCES = 2801
OB_CHARTS = 2901


@pytest.fixture(scope="module")
def p2(trap: Trap) -> Iterator[P2StandIn]:
    server = P2StandIn()
    for user, token in TOKENS.items():
        server.add_user(user, token)
    server.add_run(R, "60.A-9252(A)", PI, delegates=(D1,))
    server.add_run(X, "60.A-9253(A)", PX, delegates=(D1, D2))
    server.add_run(S, "60.A-9254(A)", STRANGER)
    for ob in (
        OB_FLOW,
        OB_NOFILTER,
        OB_DUP,
        OB_SHARE_R,
        OB_PI_NOT_OWNER,
        OB_BAD,
        OB_REDIRECT,
        OB_SURVEYS,
        OB_SOURCES,
        OB_CHARTS,
    ):
        server.add_ob(ob, R, *TARGET)
    server.add_ob(OB_FLOW_FAR, R, "10:00:00.000", "+10:00:00.00")
    server.add_ob(OB_SHARE_X, X, *TARGET)
    server.add_ob(OB_SHARE_S, S, *TARGET)
    # Blind offsets: the OB's coordinates are the reference star's; the target is 30" / 360" north.
    server.add_ob(OB_BOA_IN, R, "10:00:00.000", "+01:59:30.00", blind_offset=(0.0, 30.0))
    server.add_ob(OB_BOA_OUT, R, "10:00:00.000", "+01:54:00.00", blind_offset=(0.0, 360.0))
    server.redirect_to[OB_REDIRECT] = f"{trap.url}/cop/api/v1/obsBlocks/{OB_FLOW}"
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(suite_factory: Callable[..., Suite], p2: P2StandIn, tmp_path_factory: pytest.TempPathFactory) -> Suite:
    from services import devrun
    from services.shared.settings import DEFAULT_SURVEYS
    from tests.gateway.harness import build_survey

    # The CDS surveys by name (no internet: never fetched here) and two local ones for charts.
    tmp = tmp_path_factory.mktemp("p2fc-surveys")
    local = devrun.local_surveys(tmp, build_survey(tmp), size=512, scale_arcsec=12.0, order=5)
    env = {
        "P2_API_BASES": f"p2={p2.url}",
        "P2_TIMEOUT_S": "3",
        "SURVEYS": f"{DEFAULT_SURVEYS},{local}",
        "CHART_SURVEY_OPTICAL": "DEMO-R",
        "CHART_SURVEY_INFRARED": "DEMO-K",
    }
    return suite_factory(env=env)


def connect(gw: Suite, p2: P2StandIn, user: int | None = None, token: str = "") -> p2api.ApiConnection:
    """The client as a user builds it from a p2 token; then pointed at the stand-in and the gateway."""
    api = p2api.ApiConnection(
        url="https://www.eso.org/copdemo/api/v1", access_token=token or TOKENS[user or PI]
    )
    api.apiUrl = p2.url
    api.p2fc_url = gw.gateway_url + "/p2fc/"
    return api


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def image(tmp: Path, name: str, seed_dec: float = 2.0, **kwargs: Any) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return write_image(tmp / name, ra=150.0, dec=seed_dec, size=256, scale_arcsec=0.5, **kwargs)


def entries(listing: dict[str, Any], *hashes: str) -> dict[str, dict[str, Any]]:
    """The listed entries of these images (the list holds every compatible image the user may list)."""
    return {key: e for key, e in listing.items() if e["fits_hash"] in hashes}


def images(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The user images of a listing (the other sources follow them with fits_hash null)."""
    return {key: e for key, e in listing.items() if e["fits_hash"] is not None}


def p2error(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(p2api.P2Error) as info:
        call()
    status, _method, _url, message = info.value.args
    assert isinstance(message, str)
    return status, message


async def _keys(gw: Suite) -> list[str]:
    return sorted([info.key async for info in suite_store(gw).list("")])


def store_keys(gw: Suite) -> list[str]:
    import asyncio

    return asyncio.run(_keys(gw))


def test_upload_list_select_read_back_delete(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    api = connect(gw, p2, PI)
    fits = image(tmp_path, "ngc3115_R.fits")
    fits_hash = sha256(fits)

    info = api.bkg_image_upload(OB_FLOW, str(fits))
    assert info["bkg_image"] == f"user_bkg_image|{fits_hash}"
    assert info["fits_hash"] == fits_hash
    assert info["image"]["file_name"] == "ngc3115_R.fits"
    assert info["image"]["filter"] == "R"
    assert info["run_id"] == f"p2:{R}"
    assert any(k.startswith(f"content/{fits_hash}/") for k in store_keys(gw))

    # As p2api's docstring does it: the first key's fits_hash.
    listing = api.bkg_image_get_ob_image_list(OB_FLOW)
    first = list(listing.keys())[0]
    assert first == "ngc3115_R.fits"
    assert listing[first]["fits_hash"] == fits_hash
    assert listing[first]["owned_by_you"] is True
    assert listing[first]["selected"] is True
    assert listing[first]["file_bytes"] == fits.stat().st_size
    assert listing[first]["stored_bytes"] > listing[first]["file_bytes"]

    assert api.bkg_image_set_ob_info(OB_FLOW, "default")["bkg_image"] == "default"
    assert api.bkg_image_get_ob_info(OB_FLOW)["bkg_image"] == "default"

    info = api.bkg_image_set_ob_info(OB_FLOW, f"user_bkg_image|{listing[first]['fits_hash']}")
    assert info["bkg_image"] == f"user_bkg_image|{fits_hash}"
    got = api.bkg_image_get_ob_info(OB_FLOW)
    assert got["bkg_image"] == f"user_bkg_image|{fits_hash}"
    assert got["image"]["fits_hash"] == fits_hash
    assert got["target"] == pytest.approx({"ra_deg": 150.0, "dec_deg": 2.0})
    # The selection can be displayed: its HiPS answers.
    with urllib.request.urlopen(got["hips_url"] + "/properties", timeout=10) as resp:
        assert resp.status == 200
        assert b"hips_order" in resp.read()

    # The other sources' selections are stored and read back as given (archive images: their own test).
    for value in ("gaia", "survey|2MASS-K"):
        assert api.bkg_image_set_ob_info(OB_FLOW, value)["bkg_image"] == value
        assert api.bkg_image_get_ob_info(OB_FLOW)["bkg_image"] == value

    # Delete the selected image: the OB falls back to the default, the list and store forget it.
    api.bkg_image_set_ob_info(OB_FLOW, f"user_bkg_image|{fits_hash}")
    after = api.bkg_image_delete(OB_FLOW, f"user_bkg_image|{fits_hash}")
    assert all(entry["fits_hash"] != fits_hash for entry in after.values())
    assert api.bkg_image_get_ob_info(OB_FLOW)["bkg_image"] == "default"
    assert fits_hash not in json.dumps(api.bkg_image_get_ob_image_list(OB_FLOW))
    assert not any(k.startswith(f"content/{fits_hash}/") for k in store_keys(gw))
    status, message = p2error(lambda: api.bkg_image_delete(OB_FLOW, f"user_bkg_image|{fits_hash}"))
    assert status == 410, message


def test_image_list_has_images_first_then_the_surveys(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    api = connect(gw, p2, PI)
    fits = image(tmp_path, "first.fits")
    api.bkg_image_upload(OB_SURVEYS, str(fits))
    listing = api.bkg_image_get_ob_image_list(OB_SURVEYS)
    # p2api's docstring example, as written: the first key, then its fits_hash.
    assert listing[list(listing.keys())[0]]["fits_hash"] == sha256(fits)
    keys = list(listing)
    user = [k for k in keys if listing[k]["fits_hash"] is not None]
    assert keys[: len(user)] == user, "user images come first"
    sources = {k: listing[k] for k in keys[len(user) :]}
    assert sources["default"] == {
        "fits_hash": None,
        "value": "default",
        "name": "DSS2 colour",
        "kind": "default",
        "selected": False,
        "available": True,
    }
    surveys = [e for e in sources.values() if e["kind"] == "survey"]
    assert {"2MASS-K", "2MASS-J", "2MASS-H", "DSS2-red", "DSS2-blue"} <= {e["name"] for e in surveys}
    assert all(e["value"] == f"survey|{e['name']}" and e["fits_hash"] is None for e in surveys)
    assert all(e["value"] for e in listing.values())

    # Each entry's value selects it, with the unmodified client.
    info = api.bkg_image_set_ob_info(OB_SURVEYS, sources["survey|2MASS-K"]["value"])
    assert (info["bkg_image"], info["kind"], info["value"]) == ("survey|2MASS-K", "survey", "2MASS-K")
    assert api.bkg_image_get_ob_info(OB_SURVEYS)["bkg_image"] == "survey|2MASS-K"
    after = api.bkg_image_get_ob_image_list(OB_SURVEYS)
    assert [k for k, e in after.items() if e["selected"]] == ["survey|2MASS-K"]

    # An unknown name: 400 naming the known ones, before p2 is asked; the selection stays.
    asked = len(p2.seen)
    status, message = p2error(lambda: api.bkg_image_set_ob_info(OB_SURVEYS, "survey|2MASS-Q"))
    assert status == 400 and "2MASS-K" in message and "DSS2-red" in message, message
    assert p2.seen[asked:] == []
    assert api.bkg_image_get_ob_info(OB_SURVEYS)["bkg_image"] == "survey|2MASS-K"


def test_upload_refused_changes_nothing(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    api = connect(gw, p2, PI)
    before_keys = store_keys(gw)
    before_info = api.bkg_image_get_ob_info(OB_FLOW_FAR)
    fits = image(tmp_path, "elsewhere.fits")
    status, message = p2error(lambda: api.bkg_image_upload(OB_FLOW_FAR, str(fits)))
    assert status == 422
    assert "target" in message.lower()
    assert api.bkg_image_get_ob_info(OB_FLOW_FAR) == before_info
    assert images(api.bkg_image_get_ob_image_list(OB_FLOW_FAR)) == {}
    assert store_keys(gw) == before_keys


def test_file_without_filter_with_and_without_bkg_lam(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    api = connect(gw, p2, PI)
    fits = image(tmp_path, "nofilter.fits", filter_name=None)
    before_keys = store_keys(gw)
    status, message = p2error(lambda: api.bkg_image_upload(OB_NOFILTER, str(fits)))
    assert status == 422
    assert "filter" in message.lower()
    assert entries(api.bkg_image_get_ob_image_list(OB_NOFILTER), sha256(fits)) == {}
    assert store_keys(gw) == before_keys

    info = api.bkg_image_upload(OB_NOFILTER, str(fits), bkg_lam="my_special_filter:")
    assert info["fits_hash"] == sha256(fits)
    assert info["image"]["filter"] == "my_special_filter:"
    listing = entries(api.bkg_image_get_ob_image_list(OB_NOFILTER), sha256(fits))
    assert [e["filter"] for e in listing.values()] == ["my_special_filter:"]


def test_image_list_keys_unique_when_names_repeat(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    api = connect(gw, p2, PI)
    a = image(tmp_path / "a", "field.fits", stars=[(150.0, 2.0, 1000.0)])
    b = image(tmp_path / "b", "field.fits", stars=[(150.001, 2.001, 3000.0)])
    assert sha256(a) != sha256(b)
    api.bkg_image_upload(OB_DUP, str(a))
    api.bkg_image_upload(OB_DUP, str(b))
    listing = entries(api.bkg_image_get_ob_image_list(OB_DUP), sha256(a), sha256(b))
    assert sorted(e["fits_hash"] for e in listing.values()) == sorted([sha256(a), sha256(b)])
    assert all(key.startswith("field.fits") for key in listing)
    assert {e["file_name"] for e in listing.values()} == {"field.fits"}


def test_delegate_and_stranger_answers(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    """DESIGN.md's delegate-of-a-delegate case, and a stranger with a run of their own."""
    pi, d1, d2, stranger = (connect(gw, p2, u) for u in (PI, D1, D2, STRANGER))
    fits = image(tmp_path, "shared.fits")
    h = sha256(fits)
    pi.bkg_image_upload(OB_SHARE_R, str(fits))

    # D1, delegate of R (in A(I)) and of X: lists I, uses it for an OB of X.
    listed = entries(d1.bkg_image_get_ob_image_list(OB_SHARE_R), h)
    assert [(e["fits_hash"], e["owned_by_you"]) for e in listed.values()] == [(h, False)]
    assert h in json.dumps(d1.bkg_image_get_ob_image_list(OB_SHARE_X))
    assert d1.bkg_image_set_ob_info(OB_SHARE_X, f"user_bkg_image|{h}")["bkg_image"] == f"user_bkg_image|{h}"
    # D1 may not delete what PI owns.
    status, message = p2error(lambda: d1.bkg_image_delete(OB_SHARE_R, f"user_bkg_image|{h}"))
    assert status == 403, message

    # D2, delegate of X only: display yes (in that OB), list no, use no, delete no.
    shown = d2.bkg_image_get_ob_info(OB_SHARE_X)
    assert shown["bkg_image"] == f"user_bkg_image|{h}"
    with urllib.request.urlopen(shown["hips_url"] + "/properties", timeout=10) as resp:
        assert resp.status == 200
    assert images(d2.bkg_image_get_ob_image_list(OB_SHARE_X)) == {}
    status, message = p2error(lambda: d2.bkg_image_set_ob_info(OB_SHARE_X, f"user_bkg_image|{h}"))
    assert status == 404
    status, _ = p2error(lambda: d2.bkg_image_delete(OB_SHARE_X, f"user_bkg_image|{h}"))
    assert status == 404
    # D1's use added nothing to A(I): D2 still cannot list it anywhere in X.
    assert h not in json.dumps(d2.bkg_image_get_ob_image_list(OB_SHARE_X))

    # A stranger, on an OB of their own run with the same target: no list, no use, no delete.
    assert images(stranger.bkg_image_get_ob_image_list(OB_SHARE_S)) == {}
    status, _ = p2error(lambda: stranger.bkg_image_set_ob_info(OB_SHARE_S, f"user_bkg_image|{h}"))
    assert status == 404
    status, _ = p2error(lambda: stranger.bkg_image_delete(OB_SHARE_S, f"user_bkg_image|{h}"))
    assert status == 404
    # ... and p2 itself keeps them out of the OBs of runs they have no part in.
    for call in (
        lambda: stranger.bkg_image_get_ob_info(OB_SHARE_R),
        lambda: stranger.bkg_image_get_ob_image_list(OB_SHARE_R),
        lambda: stranger.bkg_image_set_ob_info(OB_SHARE_R, "default"),
        lambda: stranger.bkg_image_upload(OB_SHARE_R, str(fits)),
    ):
        status, message = p2error(call)
        assert status == 403
        assert "p2 does not let this user see OB" in message

    # Nothing the others tried changed PI's image or the OBs' selections.
    assert pi.bkg_image_get_ob_info(OB_SHARE_R)["bkg_image"] == f"user_bkg_image|{h}"
    assert h in json.dumps(pi.bkg_image_get_ob_image_list(OB_SHARE_R))


def test_pi_who_did_not_upload_uses_but_may_not_delete(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    pi, d1 = connect(gw, p2, PI), connect(gw, p2, D1)
    fits = image(tmp_path, "by_delegate.fits", stars=[(150.0, 2.0, 5000.0)])
    h = sha256(fits)
    d1.bkg_image_upload(OB_PI_NOT_OWNER, str(fits))
    pi.bkg_image_set_ob_info(OB_PI_NOT_OWNER, "default")
    listed = entries(pi.bkg_image_get_ob_image_list(OB_PI_NOT_OWNER), h)
    assert [(e["fits_hash"], e["owned_by_you"]) for e in listed.values()] == [(h, False)]
    assert pi.bkg_image_set_ob_info(OB_PI_NOT_OWNER, f"user_bkg_image|{h}")["fits_hash"] == h
    status, message = p2error(lambda: pi.bkg_image_delete(OB_PI_NOT_OWNER, f"user_bkg_image|{h}"))
    assert status == 403, message
    assert h in json.dumps(d1.bkg_image_get_ob_image_list(OB_PI_NOT_OWNER))
    d1.bkg_image_delete(OB_PI_NOT_OWNER, f"user_bkg_image|{h}")
    assert pi.bkg_image_get_ob_info(OB_PI_NOT_OWNER)["bkg_image"] == "default"


def test_bad_token_bad_url_bad_value_change_nothing(
    gw: Suite, p2: P2StandIn, trap: Trap, tmp_path: Path
) -> None:
    api = connect(gw, p2, PI)
    api.bkg_image_set_ob_info(OB_BAD, "survey|DSS2-red")
    before = api.bkg_image_get_ob_info(OB_BAD)

    bad = connect(gw, p2, token="p2tok-expired-000")
    status, message = p2error(lambda: bad.bkg_image_get_ob_info(OB_BAD))
    assert (status, message) == (401, "p2 did not accept the access token (expired or wrong?)")
    status, _ = p2error(lambda: bad.bkg_image_set_ob_info(OB_BAD, "default"))
    assert status == 401

    for value in (
        "bogus",
        "user_bkg_image|nothex",
        "user_bkg_image|",
        "survey|",
        "default|x",
        "eso_im|<script>",
    ):
        asked = len(p2.seen)
        status, message = p2error(lambda v=value: api.bkg_image_set_ob_info(OB_BAD, v))  # type: ignore[misc]
        assert status == 400, value
        assert message, value
        assert len(p2.seen) == asked, "a malformed value is refused before p2 is asked"
    status, message = p2error(lambda: api.bkg_image_set_ob_info(OB_BAD, "user_bkg_image|" + "0" * 64))
    assert status == 404

    off_list = connect(gw, p2, PI)
    off_list.apiUrl = f"{trap.url}/cop/api/v1"
    status, message = p2error(lambda: off_list.bkg_image_get_ob_info(OB_BAD))
    assert status == 403
    assert "not an OB of a p2 API this service trusts" in message
    assert api.bkg_image_get_ob_info(OB_BAD) == before
    assert trap.seen == []


def jpeg_of_mine() -> bytes:
    """A chart the user attached in p2 themselves (a small real JPEG)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


def test_generate_finding_chart_attaches_the_set_and_never_loses_a_chart(
    gw: Suite, p2: P2StandIn, tmp_path: Path
) -> None:
    api = connect(gw, p2, PI)
    ob = OB_CHARTS
    own = jpeg_of_mine()
    p2.charts[ob] = [("my own chart.jpg", own)]

    # 2 charts: the default survey and the Gaia image, after the user's own.
    api.generateFindingChart(ob, obs_date="2027-03-01 02:03:04 UTC")
    names, _ = api.getFindingChartNames(ob)
    assert names[0] == "my own chart.jpg" and len(names) == 3
    assert [n.split("_")[-1] for n in names[1:]] == ["default.jpg", "gaia.jpg"]
    # 3 with a bkg_image; ours replaced, the user's own kept; the OB's selection unchanged.
    before = api.bkg_image_get_ob_info(ob)["bkg_image"]
    fits = image(tmp_path, "fc.fits")
    answer = api.generateFindingChart(ob, bkg_image=str(fits), pmin=1.0, pmax=99.5)
    names, _ = api.getFindingChartNames(ob)
    assert names[0] == "my own chart.jpg" and [n.split("_")[-1] for n in names[1:]] == [
        "default.jpg",
        "gaia.jpg",
        "custom.jpg",
    ]
    assert answer["charts"] == names[1:] and answer["finding_charts"] == names
    assert api.bkg_image_get_ob_info(ob)["bkg_image"] == before
    assert sha256(fits) in json.dumps(api.bkg_image_get_ob_image_list(ob))  # stored as the user's image
    attached = {n: c for n, c in p2.charts[ob]}
    assert attached["my own chart.jpg"] == own and all(c[:2] == b"\xff\xd8" for c in attached.values())

    # p2 failing between the delete and the add (its 2nd add): the charts are as they were.
    charts_before = list(p2.charts[ob])
    p2.fail_chart_add_at = 2
    status, message = p2error(lambda: api.generateFindingChart(ob))
    assert status == 503 and "as they were" in message, message
    assert p2.charts[ob] == charts_before

    # 4 charts of the user's own: a clear error, nothing changed.
    p2.charts[ob] = [(f"mine{n}.jpg", own) for n in range(4)]
    status, message = p2error(lambda: api.generateFindingChart(ob))
    assert status == 409 and "limit of 5" in message, message
    assert [n for n, _ in p2.charts[ob]] == [f"mine{n}.jpg" for n in range(4)]

    # An OB p2 takes no changes to; a stranger: nothing changes.
    p2.obs[ob]["obStatus"] = "C"
    status, message = p2error(lambda: api.generateFindingChart(ob))
    assert status == 409 and "status" in message
    p2.obs[ob]["obStatus"] = "-"
    stranger = connect(gw, p2, STRANGER)
    status, _ = p2error(lambda: stranger.generateFindingChart(ob))
    assert status in (403, 404)
    assert [n for n, _ in p2.charts[ob]] == [f"mine{n}.jpg" for n in range(4)]
    # An unknown survey: the known names.
    status, message = p2error(lambda: api.generateFindingChart(ob, survey="NOPE"))
    assert status == 400 and "DSS2-red" in message


def test_blind_offset_acquisition(gw: Suite, p2: P2StandIn, tmp_path: Path) -> None:
    api = connect(gw, p2, PI)
    fits = image(tmp_path, "boa.fits")
    info = api.bkg_image_upload(OB_BOA_IN, str(fits))
    assert info["boa_star"] == pytest.approx({"ra_deg": 150.0, "dec_deg": 2.0 - 30 / 3600})
    assert info["target"] == pytest.approx({"ra_deg": 150.0, "dec_deg": 2.0})
    # Target inside the image, the reference star 6' south of it, outside.
    status, message = p2error(lambda: api.bkg_image_upload(OB_BOA_OUT, str(fits)))
    assert status == 422
    assert "boa" in message.lower() or "reference" in message.lower()
    # The image uploaded for OB_BOA_IN does not hold this OB's reference star: not offered.
    assert entries(api.bkg_image_get_ob_image_list(OB_BOA_OUT), sha256(fits)) == {}
    assert sha256(fits) in json.dumps(api.bkg_image_get_ob_image_list(OB_BOA_IN))
    assert api.bkg_image_get_ob_info(OB_BOA_OUT)["bkg_image"] == "default"


def test_ssrf_through_url_contacts_only_the_configured_p2(gw: Suite, p2: P2StandIn, trap: Trap) -> None:
    port = p2.port
    evil_bases = [
        f"http://{PI}@127.0.0.1:{port}/cop/api/v1",
        f"http://127.0.0.1:{port}@127.0.0.1:{trap.port}/cop/api/v1",
        f"http://localhost:{port}/cop/api/v1",
        f"http://127.0.0.1:{trap.port}/cop/api/v1",
        f"http://127.0.0.1:{port}/cop/api/v1x",
        f"http://127.0.0.1:{port}/cop/api/v1/../../cop/api/v1",
        f"https://127.0.0.1:{port}/cop/api/v1",
    ]
    asked = len(p2.seen)
    for base in evil_bases:
        api = connect(gw, p2, PI)
        api.apiUrl = base
        status, _ = p2error(lambda a=api: a.bkg_image_get_ob_info(OB_BAD))  # type: ignore[misc]
        assert status in (400, 403), base
    # Values p2api would never send, straight over HTTP.
    for url in (
        f"http://127.0.0.1:{port}/cop/api/v1/obsBlocks/{OB_BAD}%0d%0aHost:evil",
        f"http://127.0.0.1:{port}/cop/api/v1/obsBlocks/{OB_BAD}?x=1",
        f"http://127.0.0.1:{port}/cop/api/v1/obsBlocks/0x{OB_BAD:x}",
        f"gopher://127.0.0.1:{port}/cop/api/v1/obsBlocks/{OB_BAD}",
    ):
        resp = requests.get(
            f"{gw.gateway_url}/p2fc/bkg_image",
            params={"url": url, "access_token": TOKENS[PI], "mode": "get_ob"},
            timeout=10,
        )
        assert resp.status_code in (400, 403), url
        assert resp.json()["error"]
    assert p2.seen[asked:] == []
    # A p2 that redirects is not followed.
    api = connect(gw, p2, PI)
    status, message = p2error(lambda: api.bkg_image_get_ob_info(OB_REDIRECT))
    assert status == 503
    assert "redirect" in message
    assert trap.seen == []


def test_routes_as_p2api_builds_them(gw: Suite, p2: P2StandIn) -> None:
    """The doubled slash p2api produces, a single slash, and JSON errors elsewhere under the prefix."""
    url = f"{p2.url}/obsBlocks/{OB_BAD}"
    for path in ("/p2fc//bkg_image", "/p2fc/bkg_image"):
        resp = requests.get(
            f"{gw.gateway_url}{path}?url={url}&access_token={TOKENS[PI]}&mode=get_ob", timeout=10
        )
        assert resp.status_code == 200, path
        assert resp.headers["Content-Type"].startswith("application/json")
    resp = requests.get(
        f"{gw.gateway_url}/p2fc//bkg_image?url={url}&access_token={TOKENS[PI]}&mode=x", timeout=10
    )
    assert (resp.status_code, resp.json()["code"]) == (400, "INVALID_ARGUMENT")
    resp = requests.get(f"{gw.gateway_url}/p2fc//", timeout=10)
    assert (resp.status_code, resp.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    resp = requests.get(f"{gw.gateway_url}/p2fc//nothing", timeout=10)
    assert (resp.status_code, resp.json()["code"]) == (404, "NOT_FOUND")


def test_tokens_never_reach_the_logs(gw: Suite, p2: P2StandIn) -> None:
    # Runs after the others in this module: every token has been used by now.
    api = connect(gw, p2, D2)
    api.bkg_image_get_ob_info(OB_SHARE_X)
    log_text = gw.log_path("gateway").read_text(errors="replace")
    assert "p2fc" in log_text or "p2 request" in log_text
    for token in [*TOKENS.values(), "p2tok-expired-000"]:
        assert token not in log_text


def test_the_docstring_example_and_the_gaia_and_archive_sources(
    gw: Suite, p2: P2StandIn, tmp_path: Path
) -> None:
    """p2api 1.2.1's `bkg_image_set_ob_info` usage, line by line with the unmodified client
    (its literal `user_bkg_image|00c98a...` names an image nobody has: left out; its last
    three lines take a hash from the list instead). The development archive holds the DP id
    the docstring names, over the demo field."""
    api = connect(gw, p2, PI)
    obId = OB_SOURCES  # noqa: N806 - the docstring's name
    fits = image(tmp_path, "docstring.fits")
    api.bkg_image_upload(obId, str(fits))

    bkg_image_info = api.bkg_image_set_ob_info(obId, "default")
    assert bkg_image_info["bkg_image"] == "default"
    bkg_image_info = api.bkg_image_set_ob_info(obId, "gaia")
    assert bkg_image_info["bkg_image"] == "gaia" and bkg_image_info["name"].startswith("Gaia DR3 (epoch ")
    with urllib.request.urlopen(bkg_image_info["hips_url"] + "/properties", timeout=10) as resp:
        assert resp.status == 200  # the Gaia image is displayable
    bkg_image_info = api.bkg_image_set_ob_info(obId, "survey|2MASS-K")
    assert bkg_image_info["bkg_image"] == "survey|2MASS-K"
    bkg_image_info = api.bkg_image_set_ob_info(obId, "eso_im|ADP.2015-05-11T10:19:53.607")
    # Fetched in the background (202): the OB keeps its background meanwhile, and is told so.
    assert bkg_image_info["bkg_image"] == "survey|2MASS-K"
    assert any("being fetched" in w for w in bkg_image_info["warnings"]), bkg_image_info

    bkg_image_list = api.bkg_image_get_ob_image_list(obId)
    first_image = list(bkg_image_list.keys())[0]
    fits_hash = bkg_image_list[first_image]["fits_hash"]
    bkg_image_info = api.bkg_image_set_ob_info(obId, "user_bkg_image|%s" % (fits_hash))  # noqa: UP031
    assert fits_hash == sha256(fits) and bkg_image_info["bkg_image"] == f"user_bkg_image|{fits_hash}"

    # The other sources follow the user's images, each with its value and fits_hash null.
    entries_ = list(bkg_image_list.values())
    users = [e for e in entries_ if e["fits_hash"] is not None]
    assert entries_[: len(users)] == users
    by_value = {e["value"]: e for e in entries_ if e["fits_hash"] is None}
    assert by_value["gaia"]["kind"] == "gaia" and by_value["gaia"]["available"] is True
    eso = by_value["eso_im|ADP.2015-05-11T10:19:53.607"]
    assert eso["kind"] == "eso_image" and eso["fits_hash"] is None
    # Once stored, choosing it selects it at once, with its HiPS.
    for _ in range(120):
        listed = api.bkg_image_get_ob_image_list(obId)["eso_im|ADP.2015-05-11T10:19:53.607"]
        if listed["available"]:
            break
        time.sleep(0.25)
    bkg_image_info = api.bkg_image_set_ob_info(obId, "eso_im|ADP.2015-05-11T10:19:53.607")
    assert bkg_image_info["bkg_image"] == "eso_im|ADP.2015-05-11T10:19:53.607", bkg_image_info
    assert bkg_image_info["kind"] == "eso_image" and bkg_image_info["hips_url"]
    assert api.bkg_image_get_ob_info(obId)["bkg_image"] == "eso_im|ADP.2015-05-11T10:19:53.607"
    # A DP id that is not one is refused with the face's JSON error.
    status, message = p2error(lambda: api.bkg_image_set_ob_info(obId, "eso_im|ADP.2015' OR 1=1"))
    assert status == 400, message
