"""Hostile requests over real HTTP against the suite's processes (issue 11): huge
multipart part headers and top-level headers, numbers in non-ASCII digits,
JWT numeric claims that are strings. Each answers a clean 4xx with a stable
code, in the format of the face that was called, logs no traceback, and
changes nothing (no object, no row)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from tests.gateway.harness import Gateway, field, new_ob, new_user

TARGET = (150.0, 2.0)
BOUNDARY = "hostile-7f3a"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def log_size(gateway: Gateway) -> int:
    return gateway.suite.log_path("gateway").stat().st_size


def log_since(gateway: Gateway, offset: int) -> str:
    with gateway.suite.log_path("gateway").open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


async def raw_exchange(gateway: Gateway, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes as they are on a fresh connection; the status, headers and body answered."""
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(reader.readexactly(length), 30) if length else b""
        return status, headers, body
    finally:
        writer.close()


def multipart_with(part_headers: list[str], file_part_headers: list[str] | None = None) -> bytes:
    """A form whose first part carries the given headers, then a small file part."""
    crlf = "\r\n"
    first = crlf.join(['Content-Disposition: form-data; name="run_id"', *part_headers])
    file_headers = crlf.join(
        [
            'Content-Disposition: form-data; name="bkg_image_fits_file"; filename="f.fits"',
            "Content-Type: application/fits",
            *(file_part_headers or []),
        ]
    )
    return (
        f"--{BOUNDARY}\r\n{first}\r\n\r\np2:60.A-0000(A)\r\n"
        f"--{BOUNDARY}\r\n{file_headers}\r\n\r\nSIMPLE  =                    T\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()


HUGE_PART_HEADERS = {
    "a line over 8190 bytes": ["X-Padding: " + "a" * 9000],
    "20000 headers": [f"X-H{i}: v" for i in range(20000)],
}


@pytest.mark.parametrize("shape", list(HUGE_PART_HEADERS), ids=["long-line", "many-headers"])
@pytest.mark.parametrize("face", ["native", "p2fc"])
async def test_huge_part_headers_answer_400_in_the_face_format(
    gateway: Gateway, http: aiohttp.ClientSession, face: str, shape: str
) -> None:
    owner = new_user()
    before = (await gateway.store_keys(), await gateway.image_rows())
    offset = log_size(gateway)
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if face == "native":
        url = f"{gateway.url}/api/v1/obs/{new_ob()}/background-images?target_ra=150&target_dec=2"
        headers.update(gateway.auth(owner))
        body = multipart_with(HUGE_PART_HEADERS[shape])
    else:
        url = f"{gateway.url}/p2fc//"
        # p2api sends its fields as headers of the file part: the huge headers go there.
        body = multipart_with([], ["mode: upload_bkg_image", *HUGE_PART_HEADERS[shape]])
    async with http.post(url, data=body, headers=headers) as resp:
        status, content_type, answer = resp.status, resp.content_type, await resp.json(content_type=None)
    assert status == 400, answer
    if face == "native":
        assert content_type == "application/problem+json"
        assert answer["code"] == "INVALID_ARGUMENT" and answer["status"] == 400
        text = answer["detail"]
    else:
        assert content_type == "application/json"  # what p2api reads its P2Error from
        assert answer["code"] == "INVALID_ARGUMENT" and answer["status"] == 400
        text = answer["error"]
    assert "header" in text
    assert "aaaa" not in text  # the client's bytes are not echoed
    await asyncio.sleep(0.2)
    logged = log_since(gateway, offset)
    assert "Traceback" not in logged and '"level": "ERROR"' not in logged, logged[-2000:]
    assert (await gateway.store_keys(), await gateway.image_rows()) == before


TOP_LEVEL = {
    "request line": b"GET /api/v1/images/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header line": b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 9000 + b"\r\n\r\n",
    "20000 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(20000))
    + b"\r\n",
}


@pytest.mark.parametrize("what", list(TOP_LEVEL), ids=["request-line", "header-line", "many-headers"])
async def test_huge_request_line_and_headers_answer_4xx(
    gateway: Gateway, http: aiohttp.ClientSession, what: str
) -> None:
    offset = log_size(gateway)
    status, _, body = await raw_exchange(gateway, TOP_LEVEL[what])
    # aiohttp answers these itself, before any route (a plain-text 400).
    assert 400 <= status < 500, (status, body[:300])
    await asyncio.sleep(0.2)
    logged = log_since(gateway, offset)
    # A bad request is the client's fault: one line of warning, no traceback, no token bytes.
    assert "Traceback" not in logged and '"level": "ERROR"' not in logged, logged[-2000:]
    assert "aaaa" not in logged
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200  # and the gateway goes on serving


# ---- numbers: ASCII decimal only -----------------------------------------------------------------

ARABIC_150 = "\u0661\u0665\u0660"  # "١٥٠", which Python's float() reads as 150
NOT_ASCII_DECIMAL = [ARABIC_150, "\uff11\uff15\uff10", "1_50", " 150", "150\u00a0", "0x96", "\u0661e2"]


@pytest.mark.parametrize("ra", NOT_ASCII_DECIMAL, ids=lambda s: s.encode("unicode_escape").decode())
async def test_coordinates_in_non_ascii_digits_are_refused(
    gateway: Gateway, http: aiohttp.ClientSession, tmp_path: Path, ra: str
) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    ob = new_ob()
    auth = gateway.auth(owner)
    url = f"{gateway.url}/api/v1/obs/{ob}/background-images"
    before = (await gateway.store_keys(), await gateway.image_rows())
    query = {"run_id": run, "target_ra": ra, "target_dec": "2"}
    async with http.get(url, params=query, headers=auth) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 400 and body["code"] == "INVALID_ARGUMENT", body
    assert "target_ra" in body["detail"]

    boa = {"run_id": run, "target_ra": "150", "target_dec": "2", "boa_ra": ra, "boa_dec": "2"}
    async with http.get(url, params=boa, headers=auth) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 400 and body["code"] == "INVALID_ARGUMENT", body

    # The same in an upload's query string: refused before anything is stored.
    path = field(tmp_path)
    params = {"run_id": run, "target_ra": ra, "target_dec": "2"}
    headers = {**auth, "Content-Type": "application/fits"}
    async with http.post(url, params=params, data=path.read_bytes(), headers=headers) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 400 and body["code"] == "INVALID_ARGUMENT", body
    assert (await gateway.store_keys(), await gateway.image_rows()) == before


async def test_numbers_in_json_bodies_must_be_numbers(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    put = f"{gateway.url}/api/v1/obs/{new_ob()}/background-image"
    for ra in [ARABIC_150, True, [150], {"deg": 150}]:
        body = {"run_id": run, "target_ra": ra, "target_dec": 2, "selection": "default"}
        async with http.put(put, json=body, headers=gateway.auth(owner)) as resp:
            answer = await resp.json(content_type=None)
        assert resp.status == 400 and answer["code"] == "INVALID_ARGUMENT", (ra, answer)
    body = {"run_id": run, "target_ra": 150, "target_dec": "2.0", "selection": "default"}
    async with http.put(put, json=body, headers=gateway.auth(owner)) as resp:
        assert resp.status == 200, await resp.text()


async def test_ob_ids_in_non_ascii_digits_are_refused(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    owner = new_user()
    run = gateway.new_run(owner)
    auth = gateway.auth(owner)
    arabic_ob = "\u0661\u0662\u0663"  # "١٢٣", which int() reads as 123
    query = {"run_id": run, "target_ra": "150", "target_dec": "2"}
    for ob in [arabic_ob, "1_23", "+123", " 123"]:
        path_ob = quote(ob)
        async with http.get(
            f"{gateway.url}/api/v1/obs/{path_ob}/background-images", params=query, headers=auth
        ) as resp:
            body = await resp.json(content_type=None)
        assert resp.status == 400 and body["code"] == "INVALID_ARGUMENT", (ob, body)
        async with http.get(
            f"{gateway.url}/api/v1/obs/{path_ob}/background-image", params={"run_id": run}, headers=auth
        ) as resp:
            body = await resp.json(content_type=None)
        assert resp.status == 400 and body["code"] == "INVALID_ARGUMENT", (ob, body)
        async with http.get(
            f"{gateway.url}/api/v1/images/{'0' * 64}/hips", params={"ob_id": ob}, headers=auth
        ) as resp:
            body = await resp.json(content_type=None)
        assert resp.status == 400 and body["code"] == "INVALID_ARGUMENT", (ob, body)


# ---- JWT numeric claims ---------------------------------------------------------------------------


def _claims_cases() -> list[tuple[str, dict[str, Any]]]:
    now = int(time.time())
    return [
        ("exp as a string", {"exp": str(now + 3600)}),
        ("exp as a boolean", {"exp": True}),
        ("iat as a string", {"iat": str(now)}),
        ("nbf as a string", {"nbf": str(now - 60)}),
        ("exp as a float string", {"exp": f"{now + 3600}.0"}),
    ]


@pytest.mark.parametrize(("what", "claims"), _claims_cases(), ids=[c[0] for c in _claims_cases()])
async def test_jwt_numeric_claims_must_be_json_numbers(
    gateway: Gateway, http: aiohttp.ClientSession, what: str, claims: dict[str, Any]
) -> None:
    user = new_user()
    token = gateway.token(user, **claims)
    url = f"{gateway.url}/api/v1/images/{'0' * 64}"
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        body = await resp.json(content_type=None)
    assert resp.status == 401 and body["code"] == "UNAUTHENTICATED", (what, body)
    # The same token with numbers is accepted (the image is unknown: 404).
    fixed: dict[str, Any] = {k: (int(float(v)) if isinstance(v, str) else v) for k, v in claims.items()}
    fixed.pop("exp", None)
    token = gateway.token(user, **fixed)
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 404, await resp.text()
