"""The native API's finding charts over real HTTP against the four services as processes:
the set (the default chart survey, the Gaia image, the custom image), rendered by the
processor's worker, nothing stored, the same access rules as the selector."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.gateway.harness import Gateway, field, new_ob, new_user

TARGET = (150.0, 2.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def charts(
    gateway: Gateway, http: aiohttp.ClientSession, ob: int, run: str, user: str, **extra: Any
) -> tuple[int, Any]:
    body = {
        "run_id": run,
        "target_ra": TARGET[0],
        "target_dec": TARGET[1],
        "instrument": "FORS2",
        "position_angle": 30,
        "prog_id": "60.A-9252(A)",
        "pi_name": "Alice Smith",
        "ob_name": "OB $1$ <i>x</i>",
        "target_name": "$\\alpha$ <b>Cen</b>",
        "obs_date": "2027-03-01",
        **extra,
    }
    async with http.post(
        f"{gateway.url}/api/v1/obs/{ob}/finding-charts", json=body, headers=gateway.auth(user)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def jpeg_of(chart: dict[str, Any]) -> Image.Image:
    data = base64.b64decode(chart["jpeg_base64"])
    assert len(data) == chart["bytes"] < 1 << 20 and data[:2] == b"\xff\xd8"
    return Image.open(io.BytesIO(data))


async def test_two_charts_then_three_with_the_selected_image(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner, stranger = new_user(), new_user()
    run = gateway.new_run(owner)
    ob = new_ob()
    before = await gateway.image_rows()

    status, body = await charts(gateway, http, ob, run, owner)
    assert status == 200, body
    assert [c["kind"] for c in body["charts"]] == ["default", "gaia"]
    assert body["charts"][0]["title"] == "DEMO-R"  # FORS2 is optical: the optical chart survey
    assert body["charts"][1]["title"] == "Gaia DR3 (epoch 2027.16)"
    for chart in body["charts"]:
        assert jpeg_of(chart).size == (800, 880)
    assert await gateway.image_rows() == before + 1  # the Gaia image, stored as any made image

    resp, image = await gateway.upload(http, field(tmp_path, "my field.fits"), ob, run, TARGET, owner)
    assert resp.status == 201, image
    status, body = await charts(gateway, http, ob, run, owner)
    assert status == 200, body
    assert [(c["kind"], c["title"]) for c in body["charts"]][2] == ("custom", "my field.fits")
    jpeg_of(body["charts"][2])

    # Infrared: the infrared chart survey; a named survey as the custom chart.
    status, body = await charts(gateway, http, ob, run, owner, instrument="HAWKI", image="survey|DEMO-K")
    assert status == 200, body
    assert [c["title"] for c in body["charts"]][0::2] == ["DEMO-K", "DEMO-K"]

    status, body = await charts(gateway, http, ob, run, stranger)
    assert status == 403 and body["code"] == "FORBIDDEN", body
    status, body = await charts(gateway, http, ob, run, owner, stretch="sideways")
    assert status == 400 and body["code"] == "INVALID_ARGUMENT", body


async def test_the_command_line_writes_the_charts(gateway: Gateway, tmp_path: Path) -> None:
    import asyncio

    from tests.gateway.test_client import _cli

    owner = new_user()
    run = gateway.new_run(owner)
    ob = new_ob()
    args = ["--ob", str(ob), "--run", run, "--target", "150", "2", "--instrument", "FORS2"]
    out = tmp_path / "charts"
    done = await asyncio.to_thread(
        _cli, gateway, owner, "fc", *args, "--out", str(out), "--target-name", "$x$", "--pa", "45"
    )
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == [f"ob{ob}_fc1_default.jpg", f"ob{ob}_fc2_gaia.jpg"], written
    for path in out.iterdir():
        assert Image.open(path).format == "JPEG"
