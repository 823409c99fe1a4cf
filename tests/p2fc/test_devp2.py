"""The development p2 (services/devp2.py) behaves as p2 does for what the suite and p2api use:
login, and finding charts (numbered from 1, sliding down on delete, at most 5, at most 1 MB,
JPEG only, only while the OB may change), driven by ESO's unmodified p2api client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import p2api
import pytest
from p2api import p2api as environments

from services.devp2 import DevP2

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 1000 + b"\xff\xd9"


@pytest.fixture
def p2() -> Iterator[DevP2]:
    server = DevP2()
    server.add_user(52052, "tok+en/=", "Ada", "Lovelace", username="ada", password="secret")
    server.add_run(60925201, "60.A-9252(A)", 52052)
    server.add_ob(1001, 60925201, "10:00:00.000", "+02:00:00.00", name="field")
    server.add_ob(1002, 60925201, "10:00:00.000", "+02:00:00.00", name="executed", status="C")
    server.start()
    name = f"devp2-{server.port}"
    environments.API_URL[name] = server.url
    environments.LOGIN_URL[name] = server.login_url
    environments.P2FC_URL[name] = "http://127.0.0.1:9/p2fc/"
    environments.GRRMAPI_URL[name] = ""
    yield server
    server.stop()
    for table in (environments.API_URL, environments.LOGIN_URL, environments.P2FC_URL):
        table.pop(name, None)
    environments.GRRMAPI_URL.pop(name, None)


def _login(p2: DevP2, user: str = "ada", password: str = "secret") -> p2api.ApiConnection:
    return p2api.ApiConnection(f"devp2-{p2.port}", user, password)


def test_login_by_name_or_id_gives_the_users_token(p2: DevP2) -> None:
    assert _login(p2).access_token == "tok+en/="
    assert _login(p2, "52052").getUser()[0]["userId"] == 52052
    with pytest.raises(p2api.P2Error):
        _login(p2, "ada", "wrong")


def test_finding_charts_as_p2_numbers_them(p2: DevP2, tmp_path: Path) -> None:
    api = _login(p2)
    for n in range(1, 6):
        chart = tmp_path / f"fc{n}.jpg"
        chart.write_bytes(JPEG + bytes([n]))
        api.addFindingChart(1001, str(chart))
    names, _ = api.getFindingChartNames(1001)
    assert names == [f"fc{n}.jpg" for n in range(1, 6)]
    sixth = tmp_path / "fc6.jpg"
    sixth.write_bytes(JPEG)
    with pytest.raises(p2api.P2Error, match="at most 5"):
        api.addFindingChart(1001, str(sixth))
    api.deleteFindingChart(1001, 2)  # the later ones slide down
    assert api.getFindingChartNames(1001)[0] == ["fc1.jpg", "fc3.jpg", "fc4.jpg", "fc5.jpg"]
    api.getFindingChart(1001, 2, str(tmp_path / "back.jpg"))
    assert (tmp_path / "back.jpg").read_bytes() == JPEG + bytes([3])
    with pytest.raises(p2api.P2Error):
        api.deleteFindingChart(1001, 5)


def test_finding_charts_p2_refuses(p2: DevP2, tmp_path: Path) -> None:
    api = _login(p2)
    big = tmp_path / "big.jpg"
    big.write_bytes(JPEG + b"\x00" * (1 << 20))
    with pytest.raises(p2api.P2Error, match="1 MB"):
        api.addFindingChart(1001, str(big))
    png = tmp_path / "chart.jpg"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(p2api.P2Error, match="not a JPEG"):
        api.addFindingChart(1001, str(png))
    small = tmp_path / "fc.jpg"
    small.write_bytes(JPEG)
    with pytest.raises(p2api.P2Error, match="does not allow"):
        api.addFindingChart(1002, str(small))  # an executed OB (status C) does not change
    assert api.getFindingChartNames(1001)[0] == []
