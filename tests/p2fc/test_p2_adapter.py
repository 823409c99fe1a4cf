"""The p2 adapter against a p2 stand-in on loopback: what it asks, what it refuses to contact."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from services.gateway.p2 import (
    P2Client,
    SkyPoint,
    match_ob_url,
    offset_position,
    parse_bases,
    parse_dec,
    parse_ra,
)
from services.shared.errors import ServiceError
from tests.p2fc.p2_standin import P2StandIn, Trap

PI, DELEGATE, STRANGER = 52052, 52053, 52099
RUN, OTHER_RUN = 60925201, 60925202
PI_TOKEN, DELEGATE_TOKEN, STRANGER_TOKEN = "tok-pi-9f8e7d", "tok-delegate-1a2b3c", "tok-stranger-4d5e6f"


@pytest.fixture(scope="module")
def p2(trap: Trap) -> Iterator[P2StandIn]:
    server = P2StandIn()
    server.add_user(PI, PI_TOKEN)
    server.add_user(DELEGATE, DELEGATE_TOKEN, "Dee", "Legate")
    server.add_user(STRANGER, STRANGER_TOKEN, "Stan", "Ger")
    server.add_run(RUN, "60.A-9252(A)", PI, delegates=(DELEGATE,))
    server.add_run(OTHER_RUN, "60.A-9252(B)", PI)
    server.add_ob(1001, RUN, "10:00:00.000", "+02:00:00.00")
    server.add_ob(1002, RUN, "10:00:00.000", "-00:30:00.00", blind_offset=(36.0, -18.0))
    server.add_ob(1003, OTHER_RUN, "23:59:59.999", "-89:59:59.99")
    server.add_ob(1004, RUN, "10:00:00.000", "+02:00:00.00", item_type="CB")
    server.add_ob(1666, RUN, "10:00:00.000", "+02:00:00.00")
    server.redirect_to[1666] = trap.url + "/cop/api/v1/obsBlocks/1001"
    server.add_ob(1777, RUN, "10:00:00.000", "+02:00:00.00")
    server.slow[1777] = 5.0
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(p2: P2StandIn) -> AsyncIterator[P2Client]:
    c = P2Client(parse_bases(f"p2={p2.url}"), timeout_s=1.0)
    await c.start()
    yield c
    await c.close()


def test_bases_parse_and_name_instances() -> None:
    (only,) = parse_bases("https://www.eso.org/cop/api/v1")
    assert (only.name, only.scheme, only.host, only.port, only.path) == (
        "p2",
        "https",
        "www.eso.org",
        443,
        "/cop/api/v1",
    )
    assert only.url == "https://www.eso.org/cop/api/v1"
    two = parse_bases("p2=https://www.eso.org/cop/api/v1/, p2ls=https://www.eso.org/copls/api/v1")
    assert [b.name for b in two] == ["p2", "p2ls"]
    assert two[0].path == "/cop/api/v1"
    assert parse_bases("p2=http://127.0.0.1:8123/x")[0].url == "http://127.0.0.1:8123/x"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "https://a.example/api,https://b.example/api",  # two instances both called p2
        "p2=https://user@a.example/api",
        "p2=https://a.example/api?x=1",
        "p2=ftp://a.example/api",
        "P2 X=https://a.example/api",
    ],
)
def test_bad_bases_are_refused_at_start(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_bases(raw)


BASES = parse_bases("p2=https://www.eso.org/cop/api/v1,p2ls=http://127.0.0.1:8123/copls/api/v1")


def test_ob_url_matching_an_allowed_base() -> None:
    ref = match_ob_url("https://www.eso.org/cop/api/v1/obsBlocks/2141066", BASES)
    assert (ref.base.name, ref.ob_id) == ("p2", 2141066)
    ref = match_ob_url("http://127.0.0.1:8123/copls/api/v1/obsBlocks/7", BASES)
    assert (ref.base.name, ref.ob_id) == ("p2ls", 7)
    # The default port written out is the same server.
    assert match_ob_url("https://www.eso.org:443/cop/api/v1/obsBlocks/5", BASES).ob_id == 5


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://user@www.eso.org/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://user:pw@www.eso.org/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org@evil.example/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org.evil.example/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org./cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://eso.org/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org:8443/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("http://www.eso.org/cop/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org/cop/api/v1x/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org/copdemo/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("https://www.eso.org/cop/api/v1/../../evil/obsBlocks/1", "FORBIDDEN"),
        ("http://localhost:8123/copls/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("http://127.0.0.1:8124/copls/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("http://[::1]:8123/copls/api/v1/obsBlocks/1", "FORBIDDEN"),
        ("file:///etc/passwd", "FORBIDDEN"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/1/../../../x", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/%31", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/01", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/-1", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/1e3", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/99999999999999999999", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/1?x=y", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/1#frag", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/1 ", "INVALID_ARGUMENT"),
        ("https://www.eso.org/cop/api/v1/obsBlocks/1\r\nHost: evil", "INVALID_ARGUMENT"),
        ("https://www.eso.org\\@evil.example/cop/api/v1/obsBlocks/1", "INVALID_ARGUMENT"),
        ("https://www.eѕo.org/cop/api/v1/obsBlocks/1", "INVALID_ARGUMENT"),  # Cyrillic "ѕ"
        ("https://www.eso.org:99999/cop/api/v1/obsBlocks/1", "INVALID_ARGUMENT"),
        ("", "INVALID_ARGUMENT"),
    ],
)
def test_ob_urls_off_the_allow_list_are_refused(url: str, code: str) -> None:
    with pytest.raises(ServiceError) as info:
        match_ob_url(url, BASES)
    assert info.value.code == code


def test_sexagesimal_coordinates() -> None:
    assert parse_ra("10:00:00.000") == pytest.approx(150.0)
    assert parse_ra("00:00:00") == 0.0
    assert parse_dec("+02:00:00.00") == pytest.approx(2.0)
    assert parse_dec("-00:30:00.00") == pytest.approx(-0.5)
    assert parse_dec("-89:59:59.99") == pytest.approx(-(89 + 59 / 60 + 59.99 / 3600))
    for bad_ra in ("24:00:00", "10:60:00", "150.0", "", None, "10:00"):
        with pytest.raises(ServiceError):
            parse_ra(bad_ra)
    for bad_dec in ("+91:00:00", "+02:61:00", "2.0", "nan"):
        with pytest.raises(ServiceError):
            parse_dec(bad_dec)


def test_blind_offset_moves_east_and_north() -> None:
    moved = offset_position(SkyPoint(150.0, 60.0), 36.0, -18.0)
    assert moved.dec_deg == pytest.approx(60.0 - 0.005)
    assert moved.ra_deg == pytest.approx(150.0 + 0.01 / 0.5)


async def test_owner_gets_user_runs_and_ob(client: P2Client, p2: P2StandIn) -> None:
    before = len(p2.seen)
    ctx = await client.resolve(f"{p2.url}/obsBlocks/1001", PI_TOKEN)
    assert ctx.instance == "p2"
    assert ctx.user_id == f"p2:{PI}"
    assert ctx.run_ids == (f"p2:{RUN}", f"p2:{OTHER_RUN}")
    assert (ctx.ob_id, ctx.run_id) == (1001, f"p2:{RUN}")
    assert ctx.target.ra_deg == pytest.approx(150.0)
    assert ctx.target.dec_deg == pytest.approx(2.0)
    assert ctx.boa_star is None
    asked = p2.seen[before:]
    assert {s.path for s in asked} == {
        "/cop/api/v1/authenticatedUser",
        "/cop/api/v1/obsRuns",
        "/cop/api/v1/obsBlocks/1001",
        "/cop/api/v1/obsBlocks/1001/templates",
        f"/cop/api/v1/obsBlocks/1001/templates/{p2.templates[1001][0]['templateId']}",
    }
    assert all(s.authorization == f"Bearer {PI_TOKEN}" and s.query == "" for s in asked)


async def test_blind_offset_acquisition_gives_boa_star(client: P2Client, p2: P2StandIn) -> None:
    ctx = await client.resolve(f"{p2.url}/obsBlocks/1002", PI_TOKEN)
    assert ctx.boa_star is not None
    # p2 keeps the reference star in the OB's target; the science target is offset from it.
    assert (ctx.boa_star.ra_deg, ctx.boa_star.dec_deg) == pytest.approx((150.0, -0.5))
    assert ctx.target.dec_deg == pytest.approx(-0.5 - 18.0 / 3600)
    assert ctx.target.ra_deg == pytest.approx(150.0 + 36.0 / 3600 / 0.9999619)


async def test_delegate_sees_the_run_stranger_does_not(client: P2Client, p2: P2StandIn) -> None:
    ctx = await client.resolve(f"{p2.url}/obsBlocks/1001", DELEGATE_TOKEN)
    assert (ctx.user_id, ctx.run_ids, ctx.run_id) == (f"p2:{DELEGATE}", (f"p2:{RUN}",), f"p2:{RUN}")
    with pytest.raises(ServiceError) as info:
        await client.resolve(f"{p2.url}/obsBlocks/1001", STRANGER_TOKEN)
    assert info.value.code == "FORBIDDEN"
    with pytest.raises(ServiceError) as info:
        await client.resolve(f"{p2.url}/obsBlocks/1003", DELEGATE_TOKEN)
    assert info.value.code == "FORBIDDEN"


@pytest.mark.parametrize(
    ("ob", "token", "code", "words"),
    [
        (1001, "not-a-token", "UNAUTHENTICATED", "access token"),
        (1001, "", "UNAUTHENTICATED", "access_token"),
        (1001, "tok with space", "UNAUTHENTICATED", "access_token"),
        (4242, PI_TOKEN, "NOT_FOUND", "OB 4242"),
        (1004, PI_TOKEN, "INVALID_ARGUMENT", "not an OB"),
    ],
)
async def test_p2_refusals_become_clear_errors(
    client: P2Client, p2: P2StandIn, ob: int, token: str, code: str, words: str
) -> None:
    with pytest.raises(ServiceError) as info:
        await client.resolve(f"{p2.url}/obsBlocks/{ob}", token)
    assert info.value.code == code
    assert words in info.value.message


async def test_redirect_from_p2_is_not_followed(client: P2Client, p2: P2StandIn, trap: Trap) -> None:
    with pytest.raises(ServiceError) as info:
        await client.resolve(f"{p2.url}/obsBlocks/1666", PI_TOKEN)
    assert info.value.code == "UNAVAILABLE"
    assert "redirect" in info.value.message
    assert trap.seen == []


async def test_slow_p2_times_out(client: P2Client, p2: P2StandIn) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceError) as info:
        await client.resolve(f"{p2.url}/obsBlocks/1777", PI_TOKEN)
    assert info.value.code == "UNAVAILABLE"
    assert "did not answer" in info.value.message
    assert time.monotonic() - started < 3.0


async def test_ssrf_urls_contact_nothing(client: P2Client, p2: P2StandIn, trap: Trap) -> None:
    port = p2.port
    attempts = [
        f"http://{PI}@127.0.0.1:{port}/cop/api/v1/obsBlocks/1001",
        f"http://127.0.0.1:{port}@127.0.0.1:{trap.port}/cop/api/v1/obsBlocks/1001",
        f"http://localhost:{port}/cop/api/v1/obsBlocks/1001",
        f"http://127.0.0.1:{trap.port}/cop/api/v1/obsBlocks/1001",
        f"http://127.0.0.2:{port}/cop/api/v1/obsBlocks/1001",
        f"http://127.0.0.1:{port}/cop/api/v1/../../obsBlocks/1001",
        f"http://127.0.0.1:{port}/cop/api/v1/obsBlocks/1001/../../authenticatedUser",
        f"http://127.0.0.1:{port}/cop/api/v1/obsBlocks/1001?redirect={trap.url}",
        f"https://127.0.0.1:{port}/cop/api/v1/obsBlocks/1001",
        f"http://0x7f000001:{port}/cop/api/v1/obsBlocks/1001",
        f"http://2130706433:{port}/cop/api/v1/obsBlocks/1001",
    ]
    before = len(p2.seen)
    for url in attempts:
        with pytest.raises(ServiceError) as info:
            await client.resolve(url, PI_TOKEN)
        assert info.value.code in ("FORBIDDEN", "INVALID_ARGUMENT"), url
    assert p2.seen[before:] == []
    assert trap.seen == []


async def test_tokens_stay_out_of_logs(
    client: P2Client, p2: P2StandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await client.resolve(f"{p2.url}/obsBlocks/1001", PI_TOKEN)
    for ob in (1666, 4242):
        with pytest.raises(ServiceError):
            await client.resolve(f"{p2.url}/obsBlocks/{ob}", PI_TOKEN)
    with pytest.raises(ServiceError):
        await client.resolve(f"{p2.url}/obsBlocks/1001", "tok-unknown-secret")
    assert caplog.records, "the adapter logs its requests to p2"
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "obsBlocks/1001" in text
    assert PI_TOKEN not in text
    assert "tok-unknown-secret" not in text
