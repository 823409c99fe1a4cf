"""The native HTTP API over real HTTP against the four services as processes.

Every endpoint, every error code a user can meet, the token checks, HiPS
serving (CORS, tokens, path traversal), and "a refused request changes
nothing" (object store and images table compared before and after).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yarl
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from services.gateway.app import GATEWAY, create_app
from services.gateway.hips_tokens import HipsTokens
from services.shared.settings import GatewaySettings
from tests.contract import documented, routed
from tests.gateway import harness
from tests.gateway.harness import Gateway, field, new_ob, new_user, sha256

PNG = b"\x89PNG\r\n\x1a\n"
TARGET = (150.0, 2.0)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def assert_problem(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert body["code"] == code, body
    assert body["status"] == expected_status
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    assert "Traceback" not in str(body)


async def get_json(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str, Any]:
    async with http.get(url, **kw) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


# ---- the whole path --------------------------------------------------------------------------


async def test_upload_list_display_select_delete(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    ob = new_ob()
    path = field(tmp_path, "NGC 3115 R.fits")
    fits_hash = sha256(path)

    resp, image = await gateway.upload(http, path, ob, run, TARGET, owner)
    assert resp.status == 201, image
    assert resp.headers["Location"] == f"/api/v1/images/{fits_hash}"
    assert "staging;dur=" in resp.headers["Server-Timing"]
    assert image["fits_hash"] == fits_hash
    assert image["selection"] == f"user_bkg_image|{fits_hash}"
    assert image["file_name"] == "NGC 3115 R.fits"
    assert image["filter"] == "R"
    assert image["owned_by_caller"] is True
    assert image["run_ids"] == [run]
    assert image["footprints"] and len(image["footprints"][0]["corners"]) >= 4
    assert "fits_key" not in image and "hips_prefix" not in image  # store keys stay inside
    # The file's own size, and apart from it all that is kept for it (mosaic, HiPS, preview too).
    assert image["file_bytes"] == path.stat().st_size
    assert image["stored_bytes"] > image["file_bytes"] and "size_bytes" not in image

    listing = await gateway.listing(http, ob, run, TARGET, owner)
    assert [i["fits_hash"] for i in listing["own"]] == [fits_hash]
    assert listing["selected"]["selection"] == f"user_bkg_image|{fits_hash}"
    assert listing["selected"]["image"]["fits_hash"] == fits_hash
    assert listing["default_survey"] == {
        "selection": "default",
        "name": harness.SURVEY_NAME,
        "hips_url": "/surveys/default",
    }

    auth = gateway.auth(owner)
    status, _, got = await get_json(http, f"{gateway.url}/api/v1/images/{fits_hash}", headers=auth)
    assert status == 200 and got["fits_hash"] == fits_hash

    async with http.get(f"{gateway.url}/api/v1/images/{fits_hash}/preview.png", headers=auth) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert (await resp.read()).startswith(PNG)
    async with http.get(f"{gateway.url}/api/v1/images/{fits_hash}/fits", headers=auth) as resp:
        assert resp.status == 200 and resp.content_type == "application/fits"
        assert hashlib.sha256(await resp.read()).hexdigest() == fits_hash  # single HDU: the uploaded bytes

    status, _, hips = await get_json(
        http, f"{gateway.url}/api/v1/images/{fits_hash}/hips", params={"ob_id": str(ob)}, headers=auth
    )
    assert status == 200 and hips["expires_at"] > time.time()
    base = hips["hips_url"]
    assert base.startswith(f"{gateway.url}/api/v1/images/{fits_hash}/hips/")
    async with http.get(f"{base}/properties", headers={"Origin": "http://elsewhere.example"}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert re.match(r"private, max-age=\d+", resp.headers["Cache-Control"])
        properties = await resp.text()
    order = int(re.search(r"^hips_order\s*=\s*(\d+)", properties, re.M).group(1))  # type: ignore[union-attr]
    tile = next(
        k.split("/hips/", 1)[1]
        for k in await gateway.store_keys()
        if k.startswith(f"content/{fits_hash}/")
        and re.search(rf"/hips/Norder{order}/Dir\d+/Npix\d+\.png$", k)
    )
    async with http.get(f"{base}/{tile}") as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert (await resp.read()).startswith(PNG)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with http.options(
        f"{base}/{tile}", headers={"Origin": "http://x.example", "Access-Control-Request-Method": "GET"}
    ) as resp:
        assert resp.status == 204 and "GET" in resp.headers["Access-Control-Allow-Methods"]

    # Back to the default survey, then delete.
    select = {"run_id": run, "target_ra": TARGET[0], "target_dec": TARGET[1], "selection": "default"}
    async with http.put(f"{gateway.url}/api/v1/obs/{ob}/background-image", json=select, headers=auth) as resp:
        assert resp.status == 200
        assert (await resp.json())["selection"] == "default"
    status, _, current = await get_json(
        http, f"{gateway.url}/api/v1/obs/{ob}/background-image", params={"run_id": run}, headers=auth
    )
    assert status == 200 and current["kind"] == "default"
    select["selection"] = f"user_bkg_image|{fits_hash}"
    async with http.put(f"{gateway.url}/api/v1/obs/{ob}/background-image", json=select, headers=auth) as resp:
        assert resp.status == 200 and (await resp.json())["image"]["fits_hash"] == fits_hash

    async with http.delete(f"{gateway.url}/api/v1/images/{fits_hash}", headers=auth) as resp:
        assert resp.status == 200
        tombstone = await resp.json()
    assert tombstone["fits_hash"] == fits_hash and tombstone["reason"] == "deleted"
    listing = await gateway.listing(http, ob, run, TARGET, owner)
    assert listing["own"] == [] and listing["selected"]["selection"] == "default"
    assert [t["fits_hash"] for t in listing["tombstones"]] == [fits_hash]
    assert listing["tombstones"][0]["file_name"] == "NGC 3115 R.fits"
    assert not [k for k in await gateway.store_keys() if k.startswith(f"content/{fits_hash}/")]

    # The image is gone: its tiles, the image itself.
    async with http.get(f"{base}/{tile}") as resp:
        body = await resp.json(content_type=None)
        assert_problem(resp.status, body, 410, "GONE")
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    status, _, body = await get_json(http, f"{gateway.url}/api/v1/images/{fits_hash}", headers=auth)
    assert status in (404, 410) and body["code"] in ("NOT_FOUND", "GONE")


async def test_raw_body_upload_gzip_and_bandpass(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    ob = new_ob()
    path = harness.gzipped(field(tmp_path, "nofilter.fits", filter_name=None))
    params = {"run_id": run, "target_ra": "150", "target_dec": "2", "file_name": path.name}
    url = f"{gateway.url}/api/v1/obs/{ob}/background-images"
    headers = {**gateway.auth(owner), "Content-Type": "application/gzip"}

    async with http.post(url, params=params, data=path.read_bytes(), headers=headers) as resp:
        assert_problem(resp.status, await resp.json(), 422, "NO_FILTER")
    async with http.post(
        url, params={**params, "bandpass": "Ks"}, data=path.read_bytes(), headers=headers
    ) as resp:
        image = await resp.json()
        assert resp.status == 201, image
    assert image["fits_hash"] == sha256(path)  # the hash names the bytes as uploaded
    assert image["filter"] == "Ks"
    assert image["file_name"] == "nofilter.fits.gz"


async def test_same_bytes_again_is_the_same_image(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner, other = new_user(), new_user()
    run, other_run = gateway.new_run(owner), gateway.new_run(other)
    path = field(tmp_path)
    resp, first = await gateway.upload(http, path, new_ob(), run, TARGET, owner)
    assert resp.status == 201 and first["reused_content"] is False
    resp, again = await gateway.upload(http, path, new_ob(), run, TARGET, owner)
    assert resp.status == 201 and again["fits_hash"] == first["fits_hash"]
    resp, theirs = await gateway.upload(http, path, new_ob(), other_run, TARGET, other)
    assert resp.status == 201 and theirs["reused_content"] is True and theirs["owned_by_caller"] is True


# ---- refused files: each code, and nothing changes ---------------------------------------------

BAD_FILES: list[tuple[str, Any, dict[str, Any], str]] = [
    ("NOT_FITS", harness.not_fits, {}, "NOT_FITS"),
    ("TRUNCATED", harness.truncated, {}, "TRUNCATED"),
    ("BAD_HEADER", harness.non_ascii_header, {}, "BAD_HEADER"),
    ("NONSTANDARD_HEADER", harness.simple_false, {}, "NONSTANDARD_HEADER"),
    ("NONSTANDARD_HEADER-BITPIX", harness.bad_bitpix, {}, "NONSTANDARD_HEADER"),
    ("NO_IMAGE_HDU", harness.table_only, {}, "NO_IMAGE_HDU"),
    ("INVALID_WCS", harness.no_wcs, {}, "INVALID_WCS"),
    ("TARGET_OUTSIDE_FIELD", lambda d: field(d, ra=10.0, dec=10.0), {}, "TARGET_OUTSIDE_FIELD"),
    ("BOA_OUTSIDE_FIELD", field, {"boa": (151.0, 2.0)}, "BOA_OUTSIDE_FIELD"),
    ("TARGET_IN_CHIP_GAP", harness.paw_print, {}, "TARGET_IN_CHIP_GAP"),
    ("BOA_IN_CHIP_GAP", harness.paw_print, {"target": (150.02, 2.0), "boa": (150.0, 2.0)}, "BOA_IN_CHIP_GAP"),
    ("NO_FILTER", lambda d: field(d, filter_name=None), {}, "NO_FILTER"),
    ("TOO_MANY_HDUS", lambda d: harness.many_hdus(d, harness.MAX_HDUS + 2), {}, "TOO_MANY_HDUS"),
    ("TOO_MANY_CARDS", lambda d: harness.many_cards(d, harness.MAX_HEADER_CARDS), {}, "TOO_MANY_CARDS"),
    ("UNSUPPORTED_COMPRESSION", harness.bzip2, {}, "UNSUPPORTED_COMPRESSION"),
    ("BAD_COMPRESSION", harness.corrupt_gzip, {}, "BAD_COMPRESSION"),
]


@pytest.mark.parametrize(("name", "make", "kw", "code"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_refused_file_changes_nothing(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    name: str,
    make: Any,
    kw: dict[str, Any],
    code: str,
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    path = make(tmp_path)
    before = (await gateway.store_keys(), await gateway.image_rows())
    resp, body = await gateway.upload(
        http, path, new_ob(), run, kw.get("target", TARGET), owner, boa=kw.get("boa")
    )
    assert resp.content_type == "application/problem+json"
    assert_problem(resp.status, body, 422, code)
    assert body["errors"] and body["errors"][0]["code"] == code
    assert all(e["message"] for e in body["errors"])
    assert (await gateway.store_keys(), await gateway.image_rows()) == before


async def test_free_format_header_is_accepted(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """SIMPLE and BITPIX in free format (not FITS 4.0's fixed format, but what some ESO and Gemini
    writers produce): the validator only warns, the upload succeeds."""
    owner = new_user()
    run = gateway.new_run(owner)
    resp, image = await gateway.upload(http, harness.free_format(tmp_path), new_ob(), run, TARGET, owner)
    assert resp.status == 201, image
    assert image["filter"] == "R"


async def test_size_limit(gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    before = (await gateway.store_keys(), await gateway.image_rows())
    params = {"run_id": run, "target_ra": "150", "target_dec": "2"}
    url = f"{gateway.url}/api/v1/obs/{new_ob()}/background-images"
    headers = {**gateway.auth(owner), "Content-Type": "application/fits"}

    # Declared too large: refused before a byte is stored.
    big = b"\0" * (harness.MAX_UPLOAD + 1)
    async with http.post(url, params=params, data=big, headers=headers) as resp:
        assert_problem(resp.status, await resp.json(), 413, "TOO_LARGE")

    # Streamed without a length: refused when the limit is passed.
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(harness.MAX_UPLOAD // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    async with http.post(url, params=params, data=chunks(), headers=headers) as resp:
        assert_problem(resp.status, await resp.json(), 413, "TOO_LARGE")

    # A multipart body over the limit.
    form = aiohttp.FormData()
    for key, value in params.items():
        form.add_field(key, value)
    form.add_field("file", big, filename="big.fits", content_type="application/fits")
    async with http.post(url, data=form, headers=gateway.auth(owner)) as resp:
        assert_problem(resp.status, await resp.json(), 413, "TOO_LARGE")
    assert (await gateway.store_keys(), await gateway.image_rows()) == before


# ---- request errors -----------------------------------------------------------------------------


async def test_malformed_requests(gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    auth = gateway.auth(owner)
    ob = new_ob()
    url = f"{gateway.url}/api/v1/obs/{ob}/background-images"
    before = (await gateway.store_keys(), await gateway.image_rows())
    path = field(tmp_path)
    cases: list[tuple[str, dict[str, str]]] = [
        ("missing target", {"run_id": run}),
        ("RA out of range", {"run_id": run, "target_ra": "361", "target_dec": "2"}),
        ("Dec not a number", {"run_id": run, "target_ra": "150", "target_dec": "north"}),
        ("half a BOA", {"run_id": run, "target_ra": "150", "target_dec": "2", "boa_ra": "150"}),
        ("no run", {"target_ra": "150", "target_dec": "2"}),
    ]
    for _what, params in cases:
        async with http.get(url, params=params, headers=auth) as resp:
            assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
        form = aiohttp.FormData()
        for key, value in params.items():
            form.add_field(key, value)
        form.add_field("file", path.read_bytes(), filename="f.fits")
        async with http.post(url, data=form, headers=auth) as resp:
            assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    async with http.get(
        f"{gateway.url}/api/v1/obs/not-a-number/background-images",
        params={"run_id": run, "target_ra": "1", "target_dec": "1"},
        headers=auth,
    ) as resp:
        assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")

    form = aiohttp.FormData()
    form.add_field("run_id", run)
    async with http.post(url, data=form, headers=auth) as resp:  # no file part
        assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    async with http.post(url, data=b"{}", headers={**auth, "Content-Type": "application/json"}) as resp:
        assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    for content_type, raw in [
        ("multipart/form-data; boundary=xyz", b"no boundary in here"),
        ("multipart/form-data", b"--x\r\n\r\n"),
    ]:
        async with http.post(url, data=raw, headers={**auth, "Content-Type": content_type}) as resp:
            problem = await resp.json()
            assert_problem(resp.status, problem, 400, "INVALID_ARGUMENT")
            assert "multipart" in problem["detail"]

    put = f"{gateway.url}/api/v1/obs/{ob}/background-image"
    good = {"run_id": run, "target_ra": 150, "target_dec": 2}
    for body in [
        {**good, "selection": "dss"},
        {**good, "selection": "user_bkg_image|xyz"},
        {**good, "selection": "default|x"},
        {**good},
        {"selection": "default"},
    ]:
        async with http.put(put, json=body, headers=auth) as resp:
            assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    async with http.put(put, data=b"not json", headers={**auth, "Content-Type": "application/json"}) as resp:
        assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    for bad_hash in ["abc", "G" * 64, "A" * 64]:
        status, ctype, body = await get_json(http, f"{gateway.url}/api/v1/images/{bad_hash}", headers=auth)
        assert ctype == "application/problem+json"
        assert_problem(status, body, 400, "INVALID_ARGUMENT")
    assert (await gateway.store_keys(), await gateway.image_rows()) == before


async def test_unknown_routes_and_methods(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    status, ctype, body = await get_json(http, f"{gateway.url}/api/v1/nothing-here")
    assert ctype == "application/problem+json"
    assert_problem(status, body, 404, "NOT_FOUND")
    async with http.patch(f"{gateway.url}/api/v1/images/{'a' * 64}") as resp:
        assert resp.status == 405 and "DELETE" in resp.headers["Allow"]
        assert (await resp.json(content_type=None))["code"] == "METHOD_NOT_ALLOWED"


async def test_access_rules_at_the_edge(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner, delegate, stranger = new_user(), new_user(), new_user()
    run = gateway.new_run(owner, (delegate,))
    ob = new_ob()
    resp, image = await gateway.upload(http, field(tmp_path), ob, run, TARGET, owner)
    assert resp.status == 201
    fits_hash = image["fits_hash"]
    url = f"{gateway.url}/api/v1/images/{fits_hash}"

    # The delegate lists and reads it, may not delete it.
    listing = await gateway.listing(http, ob, run, TARGET, delegate)
    assert [i["fits_hash"] for i in listing["shared"]] == [fits_hash]
    assert listing["shared"][0]["owned_by_caller"] is False
    status, _, body = await get_json(http, url, headers=gateway.auth(delegate))
    assert status == 200 and body["owned_by_caller"] is False
    async with http.delete(url, headers=gateway.auth(delegate)) as resp:
        assert_problem(resp.status, await resp.json(), 403, "FORBIDDEN")

    # A stranger is not told the image exists: 404, never 403.
    for path in ["", "/preview.png", "/fits", "/hips"]:
        status, _, body = await get_json(http, url + path, headers=gateway.auth(stranger))
        assert_problem(status, body, 404, "NOT_FOUND")
    async with http.delete(url, headers=gateway.auth(stranger)) as resp:
        assert_problem(resp.status, await resp.json(), 404, "NOT_FOUND")
    status, _, body = await get_json(
        http, f"{gateway.url}/api/v1/images/{'0' * 64}", headers=gateway.auth(owner)
    )
    assert_problem(status, body, 404, "NOT_FOUND")

    # The stranger has no access to the run: no listing, no upload, no selection.
    params = {"run_id": run, "target_ra": "150", "target_dec": "2"}
    status, _, body = await get_json(
        http,
        f"{gateway.url}/api/v1/obs/{ob}/background-images",
        params=params,
        headers=gateway.auth(stranger),
    )
    assert_problem(status, body, 403, "FORBIDDEN")
    before = (await gateway.store_keys(), await gateway.image_rows())
    resp, body = await gateway.upload(http, field(tmp_path, "s.fits"), ob, run, TARGET, stranger)
    assert_problem(resp.status, body, 403, "FORBIDDEN")
    assert (await gateway.store_keys(), await gateway.image_rows()) == before

    # The OB is pinned to its run; unknown runs are named.
    other_run = gateway.new_run(owner)
    resp, body = await gateway.upload(http, field(tmp_path, "o.fits"), ob, other_run, TARGET, owner)
    assert_problem(resp.status, body, 409, "RUN_MISMATCH")
    resp, body = await gateway.upload(
        http, field(tmp_path, "u.fits"), new_ob(), "p2:never-pushed", TARGET, owner
    )
    assert_problem(resp.status, body, 404, "UNKNOWN_RUN")
    assert (await gateway.store_keys(), await gateway.image_rows()) == before

    # An image that does not hold another OB's target cannot be used there.
    far = {"run_id": run, "target_ra": 10.0, "target_dec": 10.0, "selection": f"user_bkg_image|{fits_hash}"}
    async with http.put(
        f"{gateway.url}/api/v1/obs/{new_ob()}/background-image", json=far, headers=gateway.auth(owner)
    ) as resp:
        assert_problem(resp.status, await resp.json(), 409, "NOT_COMPATIBLE")

    # The other sources' selections are stored and given back (archive images: test_archive.py).
    for value in ["gaia", "survey|DEMO-K"]:
        body = {"run_id": run, "target_ra": 150.0, "target_dec": 2.0, "selection": value}
        async with http.put(
            f"{gateway.url}/api/v1/obs/{ob}/background-image", json=body, headers=gateway.auth(delegate)
        ) as resp:
            assert resp.status == 200 and (await resp.json())["selection"] == value
        listing = await gateway.listing(http, ob, run, TARGET, owner)
        assert listing["selected"]["selection"] == value


# ---- authentication -----------------------------------------------------------------------------


def _forged_tokens(gateway: Gateway, user: str) -> dict[str, str]:
    secret = gateway.suite.jwt_secret
    now = int(time.time())
    claims = {"sub": user, "iss": "https://www.eso.org/p2", "aud": "bgimages", "iat": now, "exp": now + 600}

    def enc(payload: dict[str, Any], key: str = secret, kid: str = "dev") -> str:
        return jwt.encode(payload, key, algorithm="HS256", headers={"kid": kid})

    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT","kid":"dev"}').decode()
    body = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    return {
        "expired": enc({**claims, "exp": now - 300}),
        "wrong key": enc(claims, "w" * 64),
        "wrong kid": enc(claims, secret, "other"),
        "wrong aud": enc({**claims, "aud": "someone-else"}),
        "wrong iss": enc({**claims, "iss": "https://evil.example"}),
        "no exp": enc({k: v for k, v in claims.items() if k != "exp"}),
        "alg none": f"{header}.{body}.",
        "garbage": "not-a-token",
    }


async def test_token_checks(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    user = new_user()
    run = gateway.new_run(user)
    url = f"{gateway.url}/api/v1/obs/{new_ob()}/background-images"
    params = {"run_id": run, "target_ra": "150", "target_dec": "2"}
    async with http.get(url, params=params) as resp:  # no token at all
        assert_problem(resp.status, await resp.json(), 401, "UNAUTHENTICATED")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(url, params=params, headers={"X-User": user}) as resp:  # DEV_MODE only
        assert resp.status == 200
    for what, token in _forged_tokens(gateway, user).items():
        async with http.get(url, params=params, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.json()
            assert resp.status == 401, what
            assert_problem(resp.status, body, 401, "UNAUTHENTICATED")
    async with http.get(url, params=params, headers=gateway.auth(user)) as resp:
        assert resp.status == 200


async def test_runs_need_the_admin_scope(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner, delegate = new_user(), new_user()
    run = harness.new_run()
    url = f"{gateway.url}/api/v1/runs/{urllib.parse.quote(run, safe='')}"
    body = {"owner_id": owner, "delegate_ids": [delegate]}
    async with http.put(url, json=body, headers=gateway.auth(owner)) as resp:
        assert_problem(resp.status, await resp.json(), 403, "FORBIDDEN")
    async with http.put(url, json=body) as resp:
        assert_problem(resp.status, await resp.json(), 401, "UNAUTHENTICATED")
    admin = gateway.auth("p2:p2-server", "bgimages:admin")
    async with http.put(url, json={"owner_id": owner, "delegate_ids": "x"}, headers=admin) as resp:
        assert_problem(resp.status, await resp.json(), 400, "INVALID_ARGUMENT")
    async with http.put(url, json=body, headers=admin) as resp:
        assert resp.status == 200
        assert await resp.json() == {"run_id": run, "owner_id": owner, "delegate_ids": [delegate]}

    # The delegate pushed through the API now has access to the run.
    ob = new_ob()
    resp, image = await gateway.upload(http, field(tmp_path), ob, run, TARGET, owner)
    assert resp.status == 201
    listing = await gateway.listing(http, ob, run, TARGET, delegate)
    assert [i["fits_hash"] for i in listing["shared"]] == [image["fits_hash"]]

    async with http.delete(url, headers=gateway.auth(owner)) as resp:
        assert_problem(resp.status, await resp.json(), 403, "FORBIDDEN")
    async with http.delete(url, headers=admin) as resp:
        assert resp.status == 204
    async with http.delete(url, headers=admin) as resp:
        assert_problem(resp.status, await resp.json(), 404, "UNKNOWN_RUN")


# ---- HiPS tokens --------------------------------------------------------------------------------


async def test_hips_tokens(gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    hashes, bases = [], []
    for name in ["a.fits", "b.fits"]:
        resp, image = await gateway.upload(http, field(tmp_path, name), new_ob(), run, TARGET, owner)
        assert resp.status == 201
        status, _, hips = await get_json(
            http, f"{gateway.url}/api/v1/images/{image['fits_hash']}/hips", headers=gateway.auth(owner)
        )
        assert status == 200
        hashes.append(image["fits_hash"])
        bases.append(hips["hips_url"])
    token_a = bases[0].rsplit("/", 1)[1]
    api = f"{gateway.url}/api/v1/images"

    async def tile(url: str) -> tuple[int, Any, str | None]:
        async with http.get(url) as resp:
            body = await resp.json() if resp.content_type == "application/problem+json" else await resp.read()
            return resp.status, body, resp.headers.get("Access-Control-Allow-Origin")

    # A token opens its own image only.
    status, body, cors = await tile(f"{api}/{hashes[1]}/hips/{token_a}/properties")
    assert_problem(status, body, 403, "FORBIDDEN")
    assert cors == "*"
    # Tampered: one character of the payload or of the MAC changed.
    payload, mac = token_a.split(".")
    flipped = "A" if payload[5] != "A" else "B"
    for bad in [f"{payload[:5]}{flipped}{payload[6:]}.{mac}", f"{payload}.{mac[:-3]}xyz", payload, "x.y"]:
        status, body, _ = await tile(f"{api}/{hashes[0]}/hips/{bad}/properties")
        assert_problem(status, body, 403, "FORBIDDEN")
    # Expired: signed with the right key, but its time is over.
    keys = HipsTokens(gateway.suite.env["HIPS_SIGNING_KEY"].encode(), ttl_s=60)
    properties = next(
        k
        for k in await gateway.store_keys()
        if k.startswith(f"content/{hashes[0]}/") and k.endswith("/properties")
    )
    hips_prefix = properties.removesuffix("properties")
    expired, _ = keys.issue(hashes[0], hips_prefix, now=time.time() - 3600)
    status, body, _ = await tile(f"{api}/{hashes[0]}/hips/{expired}/properties")
    assert_problem(status, body, 403, "FORBIDDEN")
    assert "expired" in body["detail"]
    fresh, _ = keys.issue(hashes[0], hips_prefix)
    status, _, _ = await tile(f"{api}/{hashes[0]}/hips/{fresh}/properties")
    assert status == 200

    # No path leaves the image's HiPS, however it is spelled.
    base = bases[0]
    for evil in [
        "../properties",
        "..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/original.fits",
        "Norder3/../../original.fits",
        "Norder3/..%2f..%2foriginal.fits",
        "Norder3/Dir0/..%2f..%2f..%2fpreview.png",
        "original.fits",
        "preview.png",
        "Norder3/Dir0/Npix1.exe",
        "%2fetc%2fpasswd",
        "properties%00.png",
        "Norder99/Dir0/Npix0.png",
    ]:
        # encoded=True: the client sends the path exactly as written (no normalising of "..").
        async with http.get(yarl.URL(f"{base}/{evil}", encoded=True), allow_redirects=False) as resp:
            text = await resp.text()
            assert resp.status in (403, 404), (evil, resp.status)
            assert "SIMPLE  =" not in text and "root:" not in text
    async with http.get(f"{base}/Norder3/Dir0/Npix999999.png") as resp:
        assert_problem(resp.status, await resp.json(content_type=None), 404, "NOT_FOUND")


# ---- service routes -----------------------------------------------------------------------------


async def test_health_ready_metrics_openapi(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from openapi_spec_validator import validate

    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200
    status, _, ready = await get_json(http, f"{gateway.url}/readyz")
    assert status == 200
    assert ready["checks"] == {"validator": True, "processor": True, "catalog": True, "store": True}

    # One refused upload, so the failure counter has a code label.
    owner = new_user()
    run = gateway.new_run(owner)
    resp, _ = await gateway.upload(http, field(tmp_path, ra=10.0, dec=10.0), new_ob(), run, TARGET, owner)
    assert resp.status == 422
    resp, _ = await gateway.upload(http, field(tmp_path, "stored.fits"), new_ob(), run, TARGET, owner)
    assert resp.status == 201
    async with http.get(f"{gateway.url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    assert re.search(r'bgimages_gateway_upload_failures_total\{code="TARGET_OUTSIDE_FIELD"\} [1-9]', text)
    assert re.search(r"bgimages_gateway_upload_bytes_total [1-9]", text)
    assert 'route="/api/v1/obs/{ob_id}/background-images"' in text
    assert "bgimages_gateway_request_seconds_bucket" in text
    assert re.search(r"^bgimages_culled_images_total \d", text, re.M)
    assert re.search(r"^bgimages_store_used_bytes [1-9]", text, re.M)
    assert re.search(r"^bgimages_images [1-9]", text, re.M)

    status, _, doc = await get_json(http, f"{gateway.url}/api/v1/openapi.json")
    assert status == 200
    validate(doc)
    # The running gateway documents the routes its router serves (an app of its settings).
    served = create_app(
        GatewaySettings(
            dev_mode=True,
            hips_signing_key=SecretStr("k" * 32),
            default_survey_dir=gateway.suite.env["DEFAULT_SURVEY_DIR"],
        )
    )
    try:
        assert documented(doc) == routed(served)
    finally:
        await served[GATEWAY].close()
    codes = set(doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert {"TARGET_OUTSIDE_FIELD", "NOT_FOUND", "FORBIDDEN", "TOO_LARGE", "GONE", "UNAUTHENTICATED"} <= codes


async def test_page_and_assets(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        csp = resp.headers["Content-Security-Policy"]
        html = await resp.text()
    assert "default-src 'none'" in csp and "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert "unsafe-inline" not in csp.split("script-src", 1)[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert "<script" in html and "http://" not in html and "https://" not in html  # no CDN
    async with http.get(f"{gateway.url}/vendor/aladin-lite/aladin.js") as resp:
        assert resp.status == 200 and "javascript" in resp.content_type
    async with http.get(f"{gateway.url}/surveys/default/properties") as resp:
        assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    async with http.get(
        yarl.URL(f"{gateway.url}/surveys/default/../../../../etc/passwd", encoded=True)
    ) as resp:
        assert resp.status in (403, 404)


async def test_gzip_body_counts_as_uploaded(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A .fits.gz is stored as sent: its hash is the hash of the gzip bytes, and /fits gives them back."""
    owner = new_user()
    run = gateway.new_run(owner)
    path = harness.gzipped(field(tmp_path))
    resp, image = await gateway.upload(http, path, new_ob(), run, TARGET, owner)
    assert resp.status == 201, image
    async with http.get(
        f"{gateway.url}/api/v1/images/{image['fits_hash']}/fits", headers=gateway.auth(owner)
    ) as r:
        data = await r.read()
    assert r.status == 200
    # Either the uploaded bytes or their decompressed FITS: never anything else.
    assert data in (path.read_bytes(), gzip.decompress(path.read_bytes()))


async def test_display_rule_and_display_records(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The seed's delegate of a delegate: D2 may display, in that OB only, the image D1 selected."""
    owner, d1, d2 = new_user(), new_user(), new_user()
    run_r = gateway.new_run(owner, (d1,))
    run_x = gateway.new_run(new_user(), (d1, d2))
    resp, image = await gateway.upload(http, field(tmp_path), new_ob(), run_r, TARGET, owner)
    assert resp.status == 201
    fits_hash = image["fits_hash"]
    ob_x = new_ob()
    body = {
        "run_id": run_x,
        "target_ra": 150.0,
        "target_dec": 2.0,
        "selection": f"user_bkg_image|{fits_hash}",
    }
    async with http.put(
        f"{gateway.url}/api/v1/obs/{ob_x}/background-image", json=body, headers=gateway.auth(d1)
    ) as resp:
        assert resp.status == 200

    hips = f"{gateway.url}/api/v1/images/{fits_hash}/hips"
    status, _, problem = await get_json(http, hips, headers=gateway.auth(d2))
    assert_problem(status, problem, 404, "NOT_FOUND")  # D2 may not list it
    status, _, access = await get_json(http, hips, params={"ob_id": str(ob_x)}, headers=gateway.auth(d2))
    assert status == 200  # ... but may display it as OB X's selection
    async with http.get(
        f"{gateway.url}/api/v1/images/{fits_hash}/preview.png",
        params={"ob_id": str(ob_x)},
        headers=gateway.auth(d2),
    ) as resp:
        assert resp.status == 200
    listing = await gateway.listing(http, ob_x, run_x, TARGET, d2)
    assert listing["shared"] == [] and listing["selected"]["value"] == fits_hash

    # Displays reach the catalog in batches (DISPLAY_FLUSH_S=1 here) as uses of the content.
    import asyncpg

    conn = await asyncpg.connect(gateway.suite.env["DATABASE_URL"])
    try:
        query = "SELECT last_used_at FROM contents WHERE fits_hash = $1"
        before = await conn.fetchval(query, fits_hash)
        async with http.get(f"{access['hips_url']}/properties") as resp:
            assert resp.status == 200
        for _ in range(50):
            await asyncio.sleep(0.2)
            after = await conn.fetchval(query, fits_hash)
            if after != before:
                break
        assert after > before
    finally:
        await conn.close()


async def test_fields_after_the_file_part(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    path = field(tmp_path, "late fields.fits")
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("file", path.read_bytes(), filename=path.name, content_type="application/fits")
    form.add_field("run_id", run)
    form.add_field("target_ra", "150")
    form.add_field("target_dec", "2")
    async with http.post(
        f"{gateway.url}/api/v1/obs/{new_ob()}/background-images", data=form, headers=gateway.auth(owner)
    ) as resp:
        image = await resp.json()
        assert resp.status == 201, image
    assert image["file_name"] == "late fields.fits" and image["fits_hash"] == sha256(path)


async def test_interrupted_upload_leaves_nothing(gateway: Gateway, tmp_path: Path) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    before = (await gateway.store_keys(), await gateway.image_rows())
    host, port = gateway.url.removeprefix("http://").split(":")
    query = urllib.parse.urlencode({"run_id": run, "target_ra": "150", "target_dec": "2"})
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"POST /api/v1/obs/{new_ob()}/background-images?{query} HTTP/1.1\r\n"
            f"Host: {host}\r\nAuthorization: Bearer {gateway.token(owner)}\r\n"
            "Content-Type: application/fits\r\nContent-Length: 5000000\r\n\r\n"
        ).encode()
        + b"SIMPLE  =                    T"
        + b" " * 2_000_000
    )
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.close()  # the client goes away with 3 MB still to send
    await writer.wait_closed()
    for _ in range(50):
        if (await gateway.store_keys(), await gateway.image_rows()) == before:
            break
        await asyncio.sleep(0.1)
    assert (await gateway.store_keys(), await gateway.image_rows()) == before
    del reader


async def test_the_sign_in_link_leads_where_set(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    # Not configured (the harness's gateway): a problem, no redirect anywhere.
    async with http.get(f"{gateway.url}/sign-in", allow_redirects=False) as resp:
        assert resp.status == 404 and (await resp.json())["code"] == "NOT_FOUND"
    # Configured: a redirect to p2's sign-on (make run: the development sign-in). No token is minted here.
    settings = GatewaySettings(
        dev_mode=True, hips_signing_key=SecretStr("k" * 32), sign_in_url="https://sso.example.org/login"
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.get("/sign-in", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == "https://sso.example.org/login"
