"""The hostile corpus through the gateway: each file is refused with its code, and nothing is stored.

The suite runs as processes (gateway, catalog, validator, processor) with the
validator's default limits; the corpus files whose code depends on the small
corpus cap (the streamed gzip bomb) are checked in test_hostile.py instead.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from services.devrun import Suite
from services.shared.errors import http_status_of
from tests.conftest import suite_store
from tests.validator import hostile_corpus

pytestmark = pytest.mark.e2e

RUN = "p2:60.A-9777(B)"
OWNER = "p2:4242"
CAP_DEPENDENT = {"gzip_bomb_streamed"}
CASES = [c for c in hostile_corpus.cases() if c.name not in CAP_DEPENDENT]
_ob_ids = itertools.count(int.from_bytes(os.urandom(3), "big") * 100 + 1)


async def _state(suite: Suite) -> tuple[list[str], int, int]:
    keys = sorted([info.key async for info in suite_store(suite).list("")])
    conn = await asyncpg.connect(suite.env["DATABASE_URL"])
    try:
        images: int = await conn.fetchval("SELECT count(*) FROM images")
        contents: int = await conn.fetchval("SELECT count(*) FROM contents")
    finally:
        await conn.close()
    return keys, images, contents


async def test_hostile_files_are_refused_and_leave_nothing(suite: Suite, tmp_path: Path) -> None:
    suite.set_run(RUN, OWNER)
    built = hostile_corpus.build(tmp_path / "corpus")
    before = await _state(suite)
    headers = {"Authorization": f"Bearer {suite.token(OWNER)}"}
    seen: dict[str, str] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
        for case, path in built:
            if case.name in CAP_DEPENDENT:
                continue
            form = aiohttp.FormData()
            form.add_field("run_id", RUN)
            form.add_field("target_ra", str(hostile_corpus.TARGET[0]))
            form.add_field("target_dec", str(hostile_corpus.TARGET[1]))
            form.add_field("file", path.open("rb"), filename=path.name, content_type="application/fits")
            url = f"{suite.gateway_url}/api/v1/obs/{next(_ob_ids)}/background-images"
            async with http.post(url, data=form, headers=headers) as resp:
                body = await resp.json(content_type=None)
                assert resp.status == http_status_of(case.code), (case.name, resp.status, body)
                assert resp.content_type == "application/problem+json"
                seen[case.name] = body["code"]
    assert seen == {c.name: c.code for c in CASES}
    assert await _state(suite) == before
    assert not [k for k in before[0] if k.startswith("staging/")]
