"""The check before sending, against the running suite: the headers alone go to the gateway,
which answers what the upload would; the Python client and the CLI check first by default."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bgimages_client import BackgroundImages, BgImagesError
from bgimages_client._fits_headers import read_headers

from tests.gateway import harness
from tests.gateway.harness import Gateway, field, new_ob, new_user, paw_print

TARGET = (150.0, 2.0)
UPLOAD_ROUTE = "/api/v1/obs/{ob_id}/background-images"
CHECK_ROUTE = "/api/v1/obs/{ob_id}/background-images/check"


async def body_bytes(http: aiohttp.ClientSession, gateway: Gateway, route: str) -> float:
    """What the gateway has read of request bodies on a route (its Prometheus counter)."""
    async with http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    m = re.search(
        r'^bgimages_gateway_request_body_bytes_total\{route="' + re.escape(route) + r'"\} (\S+)$', text, re.M
    )
    return float(m.group(1)) if m else 0.0


def check_form(path: Path, run: str, target: tuple[float, float], **extra: str) -> aiohttp.FormData:
    """The check's body as the page and the client send it."""
    with path.open("rb") as f:
        read = read_headers(f, path.stat().st_size, 16 << 20, 1000)
    form = aiohttp.FormData()
    for key, value in {
        "run_id": run,
        "target_ra": repr(target[0]),
        "target_dec": repr(target[1]),
        "file_size": str(read.size),
        "layout": json.dumps(
            [
                {"offset": s.offset, "header_bytes": len(s.header), "data_bytes": s.data_bytes}
                for s in read.segments
            ]
        ),
        **extra,
    }.items():
        form.add_field(key, value)
    form.add_field(
        "headers",
        b"".join(s.header for s in read.segments),
        filename="headers",
        content_type="application/octet-stream",
    )
    return form


async def check(
    http: aiohttp.ClientSession, gateway: Gateway, ob: int, form: aiohttp.FormData, user: str
) -> tuple[int, Any]:
    async with http.post(
        f"{gateway.url}/api/v1/obs/{ob}/background-images/check", data=form, headers=gateway.auth(user)
    ) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture()
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_headers_that_refuse_the_file_are_answered_before_its_data(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    keys, rows = await gateway.store_keys(), await gateway.image_rows()
    far = field(tmp_path, "far.fits", ra=10.0, dec=10.0)
    read_before = await body_bytes(http, gateway, CHECK_ROUTE)
    status, problem = await check(http, gateway, new_ob(), check_form(far, run, TARGET), owner)
    assert status == 422, problem
    assert (
        problem["code"] == "TARGET_OUTSIDE_FIELD" and problem["errors"][0]["code"] == "TARGET_OUTSIDE_FIELD"
    )
    assert "outside the field" in problem["detail"]
    # The gateway read the headers (and the form), not the pixels.
    read = await body_bytes(http, gateway, CHECK_ROUTE) - read_before
    assert 2880 <= read < 8000 < far.stat().st_size

    status, problem = await check(
        http, gateway, new_ob(), check_form(paw_print(tmp_path), run, (150.0, 2.0)), owner
    )
    assert status == 422 and problem["code"] == "TARGET_IN_CHIP_GAP", problem
    assert (await gateway.store_keys(), await gateway.image_rows()) == (keys, rows)


async def test_the_same_report_as_the_upload(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    for path in (
        harness.no_wcs(tmp_path),
        field(tmp_path, "nofilter.fits", filter_name=None),
        harness.table_only(tmp_path),
    ):
        status, before = await check(http, gateway, new_ob(), check_form(path, run, TARGET), owner)
        resp, after = await gateway.upload(http, path, new_ob(), run, TARGET, owner)
        assert (status, before["code"], before["errors"]) == (resp.status, after["code"], after["errors"])


async def test_good_headers_pass_and_the_upload_goes_as_before(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run, ob = gateway.new_run(owner), new_ob()
    path = field(tmp_path, "good.fits")
    status, passed = await check(http, gateway, ob, check_form(path, run, TARGET), owner)
    assert status == 200, passed
    assert passed["ok"] and passed["filter"] == "R" and passed["hdus"][0]["contains_target"] is True
    assert [a["codes"] for a in passed["after_upload"]] == [["TARGET_OUTSIDE_FIELD"]]
    resp, image = await gateway.upload(http, path, ob, run, TARGET, owner)
    assert resp.status == 201 and image["fits_hash"] == harness.sha256(path)


async def test_forged_headers_do_not_get_a_bad_file_stored(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The check is advice: a client that sends a good file's headers, then a bad file, is refused."""
    owner = new_user()
    run, ob = gateway.new_run(owner), new_ob()
    good, bad = field(tmp_path, "good.fits"), field(tmp_path, "bad.fits", ra=10.0, dec=10.0)
    status, _ = await check(http, gateway, ob, check_form(good, run, TARGET), owner)
    assert status == 200
    keys, rows = await gateway.store_keys(), await gateway.image_rows()
    resp, problem = await gateway.upload(http, bad, ob, run, TARGET, owner)
    assert resp.status == 422 and problem["code"] == "TARGET_OUTSIDE_FIELD"
    assert (await gateway.store_keys(), await gateway.image_rows()) == (keys, rows)
    gateway.sweep_and_check()


async def test_the_upload_rules_apply(gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner, stranger = new_user(), new_user()
    run = gateway.new_run(owner)
    path = field(tmp_path, "f.fits")
    status, problem = await check(http, gateway, new_ob(), check_form(path, run, TARGET), stranger)
    assert (status, problem["code"]) == (403, "FORBIDDEN")
    async with http.post(
        f"{gateway.url}/api/v1/obs/{new_ob()}/background-images/check", data=check_form(path, run, TARGET)
    ) as resp:
        assert resp.status == 401
    status, problem = await check(
        http, gateway, new_ob(), check_form(path, run, TARGET, file_size=str(harness.MAX_UPLOAD + 1)), owner
    )
    assert (status, problem["code"], problem["limit"]) == (413, "TOO_LARGE", harness.MAX_UPLOAD)
    for layout, why in (("[]", "layout"), ('[{"offset": 0}]', "header_bytes"), ("nope", "layout")):
        status, problem = await check(
            http, gateway, new_ob(), check_form(path, run, TARGET, layout=layout), owner
        )
        assert (status, problem["code"]) == (400, "INVALID_ARGUMENT") and why in problem["detail"], problem
    status, problem = await check(http, gateway, new_ob(), check_form(path, run, (400.0, 2.0)), owner)
    assert (status, problem["code"]) == (400, "INVALID_ARGUMENT")
    async with http.post(
        f"{gateway.url}/api/v1/obs/{new_ob()}/background-images/check", json={}, headers=gateway.auth(owner)
    ) as resp:
        assert resp.status == 415


async def test_more_headers_than_the_route_takes(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Over CHECK_MAX_HEADER_BYTES: 413 with part=headers; the client then uploads, and the
    full check judges the file."""
    owner = new_user()
    run = gateway.new_run(owner)
    path = harness.many_cards(tmp_path, 1_000)  # 80 KB of header
    with path.open("rb") as f:
        first = read_headers(f, path.stat().st_size, 1 << 20, 10).segments[0]
    assert len(first.header) > (harness.CHECK_MAX_HEADER_BYTES)
    status, problem = await check(http, gateway, new_ob(), check_form(path, run, TARGET), owner)
    assert (status, problem["code"], problem["part"]) == (413, "TOO_LARGE", "headers")
    api = _client(gateway, owner)
    assert not api.check_headers(path, new_ob(), run, TARGET).checked
    assert api.upload(path, new_ob(), run, TARGET).filter == "R"


def _client(gateway: Gateway, user: str) -> BackgroundImages:
    return BackgroundImages(gateway.url, gateway.token(user))


async def test_the_client_checks_first(gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    api = _client(gateway, owner)
    far = field(tmp_path, "far.fits", ra=10.0, dec=10.0)
    sent = await body_bytes(http, gateway, UPLOAD_ROUTE)
    with pytest.raises(BgImagesError) as err:
        api.upload(far, new_ob(), run, TARGET)
    assert err.value.code == "TARGET_OUTSIDE_FIELD" and err.value.status == 422
    assert "/check" in err.value.url
    assert await body_bytes(http, gateway, UPLOAD_ROUTE) == sent  # no byte of the file was sent
    with pytest.raises(BgImagesError) as err:
        api.upload(far, new_ob(), run, TARGET, check_first=False)
    assert err.value.code == "TARGET_OUTSIDE_FIELD" and "/check" not in err.value.url
    assert await body_bytes(http, gateway, UPLOAD_ROUTE) >= sent + far.stat().st_size

    good = field(tmp_path, "good.fits")
    checked = api.check_headers(good, new_ob(), run, TARGET)
    assert checked.checked and checked.filter == "R" and checked.after_upload
    assert api.upload(good, new_ob(), run, TARGET).fits_hash == hashlib.sha256(good.read_bytes()).hexdigest()
    gz = harness.gzipped(field(tmp_path, "z.fits"))
    assert not api.check_headers(gz, new_ob(), run, TARGET).checked  # compressed: checked after upload
    assert api.upload(gz, new_ob(), run, TARGET).filter == "R"


def test_the_cli_checks_first_unless_told(gateway: Gateway, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    far = field(tmp_path, "far.fits", ra=10.0, dec=10.0)
    env = {**os.environ, "BGIMAGES_TOKEN": gateway.token(owner)}
    base = [sys.executable, "-m", "bgimages_client", "--url", gateway.url, "upload", str(far)]
    where = ["--ob", str(new_ob()), "--run", run, "--target", "150.0", "2.0", "--no-progress"]
    done = subprocess.run([*base, *where], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "TARGET_OUTSIDE_FIELD" in done.stderr, done.stderr
    assert "nothing was sent" in done.stderr
    done = subprocess.run(
        [*base, *where, "--no-check-first"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1 and "TARGET_OUTSIDE_FIELD" in done.stderr
    assert "nothing was sent" not in done.stderr
