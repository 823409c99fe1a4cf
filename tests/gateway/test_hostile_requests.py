"""Hostile requests over real HTTP against the suite's processes (issue 11): huge
multipart part headers and top-level headers. Each answers a clean 4xx with a stable
code, in the format of the face that was called, logs no traceback, and
changes nothing (no object, no row)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.gateway.harness import Gateway, new_ob, new_user

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
