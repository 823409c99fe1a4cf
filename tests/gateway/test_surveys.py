"""Named surveys (`survey|NAME`): the SURVEYS setting, listed and selected over the native API
against the services as processes, an unknown name refused with the known ones, and the local
surveys' HiPS served by the gateway (the harness configures them as `make run` does)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl

from services.gateway.surveys import Surveys, parse
from services.shared.errors import Code, ServiceError
from services.shared.settings import GatewaySettings
from tests.gateway.harness import Gateway, new_ob, new_user

TARGET = (150.0, 2.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# ---- the setting ------------------------------------------------------------------------------


def test_the_default_surveys_are_cds_hips() -> None:
    surveys = Surveys.from_setting(GatewaySettings().surveys)
    assert {"2MASS-J", "2MASS-H", "2MASS-K", "DSS2-red", "DSS2-blue", "DSS2-colour"} <= set(surveys.names)
    k = surveys.lookup("2MASS-K")
    assert (k.hips_url, k.fits_tiles, k.band) == ("https://alasky.cds.unistra.fr/2MASS/K", True, "Ks")
    assert surveys.lookup("dss2-RED").hips_url == "https://alasky.cds.unistra.fr/DSS/DSS2Merged"
    assert surveys.lookup("DSS2-colour").fits_tiles is False  # the colour HiPS has JPEG tiles only
    assert surveys.origins() == ["https://alasky.cds.unistra.fr"]


def test_parse_local_and_remote() -> None:
    (local, remote) = parse(" DEMO-K=/srv/k;fits;band=Ks , X=https://h.example/x/ ")
    assert (local.name, local.hips_url, local.fits_tiles, local.band) == (
        "DEMO-K",
        "/surveys/DEMO-K",
        True,
        "Ks",
    )
    assert str(local.folder) == "/srv/k" and remote.folder is None and remote.fits_tiles is False
    assert parse("") == ()


@pytest.mark.parametrize(
    "text",
    [
        "2MASS-K",  # no location
        "<b>=https://h.example/",  # a name that is markup
        "default=https://h.example/",  # the default survey's path
        "A=https://h.example/,a=https://h.example/b",  # twice
        "A=relative/folder",
        "A=ftp://h.example/",
        "A=https://h.example/;png",
    ],
)
def test_bad_surveys_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)


def test_unknown_name_lists_the_known_ones() -> None:
    surveys = Surveys(parse("A=https://h.example/a,B=https://h.example/b"))
    with pytest.raises(ServiceError) as info:
        surveys.lookup("C")
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "A, B" in info.value.message and info.value.details["known_surveys"] == ["A", "B"]


# ---- against the running suite ------------------------------------------------------------------


async def _select(
    http: aiohttp.ClientSession, gateway: Gateway, user: str, ob: int, run: str, sel: str
) -> Any:
    body = {"run_id": run, "target_ra": TARGET[0], "target_dec": TARGET[1], "selection": sel}
    url = f"{gateway.url}/api/v1/obs/{ob}/background-image"
    async with http.put(url, json=body, headers=gateway.auth(user)) as resp:
        return resp.status, await resp.json(content_type=None)


async def _selection(http: aiohttp.ClientSession, gateway: Gateway, user: str, ob: int, run: str) -> Any:
    url = f"{gateway.url}/api/v1/obs/{ob}/background-image"
    async with http.get(url, params={"run_id": run}, headers=gateway.auth(user)) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_listed_selected_and_unknown_refused(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    user = new_user()
    run = gateway.new_run(user)
    ob = new_ob()
    listing = await gateway.listing(http, ob, run, TARGET, user)
    by_name = {s["name"]: s for s in listing["surveys"]}
    assert list(by_name) == ["DEMO-R", "DEMO-K"]
    assert by_name["DEMO-K"] == {
        "selection": "survey|DEMO-K",
        "name": "DEMO-K",
        "hips_url": "/surveys/DEMO-K",
        "fits_tiles": True,
        "band": "Ks",
        "selected": False,
    }

    # A known name (in any case) is stored as configured, and the selection tells its HiPS.
    status, chosen = await _select(http, gateway, user, ob, run, "survey|demo-k")
    assert status == 200, chosen
    assert (chosen["selection"], chosen["kind"], chosen["value"]) == ("survey|DEMO-K", "survey", "DEMO-K")
    assert chosen["survey"]["hips_url"] == "/surveys/DEMO-K"
    got = await _selection(http, gateway, user, ob, run)
    assert got["selection"] == "survey|DEMO-K" and got["survey"]["name"] == "DEMO-K"
    listing = await gateway.listing(http, ob, run, TARGET, user)
    assert [s["name"] for s in listing["surveys"] if s["selected"]] == ["DEMO-K"]
    assert listing["selected"]["survey"]["selected"] is True

    # An unknown name: 400 naming the known ones, and the selection stays.
    status, problem = await _select(http, gateway, user, ob, run, "survey|2MASS-Q")
    assert status == 400 and problem["code"] == "INVALID_ARGUMENT", problem
    assert "DEMO-R, DEMO-K" in problem["detail"] and problem["known_surveys"] == ["DEMO-R", "DEMO-K"]
    assert (await _selection(http, gateway, user, ob, run))["selection"] == "survey|DEMO-K"

    # Any other selection carries no survey.
    status, chosen = await _select(http, gateway, user, ob, run, "default")
    assert status == 200 and "survey" not in chosen


async def test_unknown_survey_for_a_new_ob_stores_nothing(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    # Refused before the catalog is called: the OB is not even pinned to the run.
    user = new_user()
    run, other = gateway.new_run(user), gateway.new_run(user)
    ob = new_ob()
    status, problem = await _select(http, gateway, user, ob, run, "survey|nope")
    assert status == 400 and "DEMO-K" in problem["detail"]
    status, chosen = await _select(http, gateway, user, ob, other, "survey|DEMO-R")
    assert status == 200, chosen


async def test_local_survey_hips_is_served(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/surveys/DEMO-K/properties") as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "hips_order" in await resp.text()
    async with http.get(f"{gateway.url}/surveys/DEMO-K/Norder3/Allsky.png") as resp:
        assert resp.status == 200
    for path in ("DEMO-K/../../../../etc/passwd", "DEMO-K/%2e%2e/%2e%2e/etc/passwd", "NOPE/properties"):
        async with http.get(yarl.URL(f"{gateway.url}/surveys/{path}", encoded=True)) as resp:
            assert resp.status in (403, 404), path
