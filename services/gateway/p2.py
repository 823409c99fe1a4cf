"""The p2 adapter of the p2api face: who the caller is, their runs and the OB, asked of p2.

ESO's p2api client names an OB by its p2 API URL plus the user's access token.
This module turns that pair into what the catalog rules need, by asking the p2
API with the token as Bearer:

- `GET <base>/authenticatedUser`: the user (`userId`);
- `GET <base>/obsRuns`: the runs the user owns or is delegated (`runId` each);
- `GET <base>/obsBlocks/{obId}`: the OB (`runId`, `target.ra`/`target.dec`
  as sexagesimal strings);
- `GET <base>/obsBlocks/{obId}/templates` and `.../templates/{templateId}`:
  the acquisition template, whose blind offset (`TEL.TARG.OFFSETALPHA`,
  `TEL.TARG.OFFSETDELTA`, arcsec) makes the OB a Blind Offset Acquisition.
  p2's convention: the OB's target coordinates are then those of the BOA
  reference star, and the science target lies at that position plus the
  offset.

The `url` comes from the caller, so it is never fetched as given: it is parsed,
must carry no user-info, must match a configured base exactly (scheme, host,
port, path prefix) followed by `/obsBlocks/<integer>`, and every request is
rebuilt from the configured base and the integer OB id. Redirects are not
followed, each request has a timeout, answers have a size cap, and the token
appears only in the Authorization header (never in a URL or a log line).

Identifiers are namespaced by the p2 instance the base belongs to: user
`p2:52052`, run `p2:60925201`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from services.shared.errors import Code, ServiceError

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
MAX_TOKEN_LENGTH = 8192
MAX_ANSWER_BYTES = 4 << 20
MAX_OB_ID = (1 << 62) - 1  # as the native API bounds ob_id
# Instance names become id prefixes ("p2:52052"): keep them plain.
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Printable ASCII except space: anything else in a URL or a token is refused
# before parsing (no whitespace, control characters or look-alike letters).
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
BOA_OFFSET_RA = "TEL.TARG.OFFSETALPHA"
BOA_OFFSET_DEC = "TEL.TARG.OFFSETDELTA"


@dataclasses.dataclass(frozen=True)
class P2Base:
    """One configured p2 API base, e.g. `p2=https://www.eso.org/cop/api/v1`."""

    name: str
    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash

    @property
    def url(self) -> str:
        default = DEFAULT_PORTS[self.scheme] == self.port
        netloc = self.host if default else f"{self.host}:{self.port}"
        if ":" in self.host:  # IPv6 literal
            netloc = f"[{self.host}]" if default else f"[{self.host}]:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"

    def endpoint(self, path: str) -> URL:
        """The URL of `path` (which starts with "/") under this base."""
        return URL(self.url + path, encoded=True)


@dataclasses.dataclass(frozen=True)
class ObRef:
    """An OB named through an allowed base: where to ask, and which OB."""

    base: P2Base
    ob_id: int


@dataclasses.dataclass(frozen=True)
class SkyPoint:
    ra_deg: float
    dec_deg: float


@dataclasses.dataclass(frozen=True)
class P2Context:
    """What p2 said for one request: the user, their runs and the OB."""

    instance: str
    user_id: str
    run_ids: tuple[str, ...]
    ob_id: int
    run_id: str
    target: SkyPoint
    boa_star: SkyPoint | None
    ob_name: str = ""
    instrument: str = ""  # of the OB's run, as p2 names it ("FORS2"); empty when p2 does not say
    ob_status: str = ""  # p2's obStatus ("-", "P", ...)
    target_name: str = ""
    prog_id: str = ""  # the run's programme ID, e.g. 60.A-9252(A)
    pi_name: str = ""


def parse_bases(raw: str) -> list[P2Base]:
    """Parses P2_API_BASES: comma-separated `[name=]url` entries.

    An entry without a name is instance `p2`; names must be unique, so a second
    instance (La Silla beside Paranal) needs its own name, e.g.
    `p2=https://www.eso.org/cop/api/v1,p2ls=https://www.eso.org/copls/api/v1`.
    """
    bases: list[P2Base] = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, url = entry.partition("=")
        if not sep or "://" in name:
            name, url = "p2", entry
        name = name.strip()
        url = url.strip()
        if not _NAME.match(name):
            raise ValueError(f"P2_API_BASES: instance name {name!r} must match {_NAME.pattern}")
        if any(b.name == name for b in bases):
            raise ValueError(f"P2_API_BASES: instance name {name!r} given twice; name each base")
        bases.append(_parse_base(name, url))
    if not bases:
        raise ValueError("P2_API_BASES: no p2 API base configured")
    return bases


def _parse_base(name: str, url: str) -> P2Base:
    if not _PRINTABLE.match(url) or "\\" in url:
        raise ValueError(f"P2_API_BASES: {url!r} has characters a URL cannot have")
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"P2_API_BASES: {url!r} is not an http(s) URL")
    if "@" in parts.netloc or parts.query or parts.fragment or not parts.hostname:
        raise ValueError(f"P2_API_BASES: {url!r} must be scheme://host[:port]/path, nothing else")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"P2_API_BASES: {url!r} has a bad port") from None
    path = parts.path.rstrip("/")
    if "%" in path or "/." in path or "//" in path:
        raise ValueError(f"P2_API_BASES: {url!r} has an unusual path")
    return P2Base(name=name, scheme=parts.scheme, host=parts.hostname, port=port, path=path)


def match_ob_url(url: str, bases: Sequence[P2Base]) -> ObRef:
    """The OB a caller's `url` names, if it names one under a configured base.

    Raises FORBIDDEN (a URL we will not contact) or INVALID_ARGUMENT (not a URL
    of an OB at all); never contacts anything.
    """
    if not url:
        raise ServiceError(Code.INVALID_ARGUMENT, "url is missing: give the OB's p2 API URL")
    if len(url) > MAX_URL_LENGTH or not _PRINTABLE.match(url) or "\\" in url:
        raise ServiceError(Code.INVALID_ARGUMENT, "url is not a plain URL (length or characters)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ServiceError(Code.INVALID_ARGUMENT, "url cannot be parsed") from None
    if "@" in parts.netloc:
        raise ServiceError(Code.FORBIDDEN, "url must not carry user information (user@host)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ServiceError(Code.INVALID_ARGUMENT, "url must not have a query or fragment")
    host = parts.hostname or ""
    scheme = parts.scheme.lower()
    if port is None and scheme in DEFAULT_PORTS:
        port = DEFAULT_PORTS[scheme]
    for base in bases:
        # Exact comparison, character for character; a look-alike host, another
        # port or scheme, or a longer path prefix ("/api/v1x") is another server.
        if (parts.scheme, host, port) != (base.scheme, base.host, base.port):
            continue
        prefix = base.path + "/obsBlocks/"
        if not parts.path.startswith(prefix):
            continue
        ob_text = parts.path[len(prefix) :]
        if not re.fullmatch(r"[1-9][0-9]{0,18}", ob_text) or int(ob_text) > MAX_OB_ID:
            raise ServiceError(
                Code.INVALID_ARGUMENT, "url must end in /obsBlocks/<OB id>, a positive integer"
            )
        return ObRef(base, int(ob_text))
    raise ServiceError(
        Code.FORBIDDEN,
        "url is not an OB of a p2 API this service trusts (scheme, host, port and path must match)",
    )


def check_token(token: str) -> str:
    if not token:
        raise ServiceError(Code.UNAUTHENTICATED, "access_token is missing: give your p2 access token")
    if len(token) > MAX_TOKEN_LENGTH or not _PRINTABLE.match(token):
        raise ServiceError(Code.UNAUTHENTICATED, "access_token is not a token p2 could have issued")
    return token


def parse_ra(text: Any) -> float:
    """Right ascension in degrees from p2's "HH:MM:SS.sss"."""
    parts = _sexagesimal(text, "ra")
    h, m, s = parts
    if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
        raise ServiceError(Code.INVALID_ARGUMENT, f"OB target ra {text!r} is out of range")
    return (h + m / 60 + s / 3600) * 15.0


def parse_dec(text: Any) -> float:
    """Declination in degrees from p2's "[+-]DD:MM:SS.ss"."""
    parts = _sexagesimal(text, "dec")
    d, m, s = parts
    negative = str(text).strip().startswith("-")
    d = abs(d)
    if not (0 <= m < 60 and 0 <= s < 60):
        raise ServiceError(Code.INVALID_ARGUMENT, f"OB target dec {text!r} is out of range")
    value = d + m / 60 + s / 3600
    if value > 90:
        raise ServiceError(Code.INVALID_ARGUMENT, f"OB target dec {text!r} is out of range")
    return -value if negative else value


# ASCII digits only: \d would take any script's digits, which float() reads too.
_SEXAGESIMAL = re.compile(r"\s*[+-]?[0-9]{1,3}:[0-9]{1,2}:[0-9]{1,2}(\.[0-9]*)?\s*")


def _sexagesimal(text: Any, what: str) -> tuple[float, float, float]:
    if not isinstance(text, str) or not _SEXAGESIMAL.fullmatch(text):
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"OB target {what} {text!r} is not sexagesimal (DD:MM:SS.s)"
        )
    a, b, c = text.strip().split(":")
    return float(a), float(b), float(c)


def offset_position(start: SkyPoint, east_arcsec: float, north_arcsec: float) -> SkyPoint:
    """`start` moved by a blind offset (arcsec on the sky, east and north)."""
    dec = start.dec_deg + north_arcsec / 3600.0
    cos_dec = math.cos(math.radians(start.dec_deg))
    ra = start.ra_deg + (east_arcsec / 3600.0) / max(cos_dec, 1e-9)
    if dec > 90 or dec < -90:
        raise ServiceError(Code.INVALID_ARGUMENT, "the OB's blind offset moves the target past a pole")
    return SkyPoint(ra % 360.0, dec)


class P2Client:
    """Asks the configured p2 APIs about one request's user and OB."""

    def __init__(
        self, bases: Sequence[P2Base], timeout_s: float, max_answer_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self.bases = list(bases)
        self.timeout_s = timeout_s
        self.max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s, connect=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=64),
                trust_env=False,  # no proxy from the environment: p2 is contacted directly
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def resolve(self, url: str, token: str) -> P2Context:
        """The user, their runs and the OB that `url` names, as p2 answers to `token`."""
        ref = match_ob_url(url, self.bases)
        check_token(token)
        base, ob_id = ref.base, ref.ob_id
        user_t = asyncio.ensure_future(self._get(base, "/authenticatedUser", token, "your user"))
        runs_t = asyncio.ensure_future(self._get(base, "/obsRuns", token, "your runs"))
        ob_t = asyncio.ensure_future(self._get(base, f"/obsBlocks/{ob_id}", token, f"OB {ob_id}"))
        tpl_t = asyncio.ensure_future(self._get(base, f"/obsBlocks/{ob_id}/templates", token, f"OB {ob_id}"))
        results = await asyncio.gather(user_t, runs_t, ob_t, tpl_t, return_exceptions=True)
        # The most telling error first: a bad token explains every other failure.
        for result in results:
            if isinstance(result, ServiceError) and result.code == Code.UNAUTHENTICATED:
                raise result
        for result in results:
            if isinstance(result, BaseException):
                raise result
        user, runs, ob, templates = results
        ob_json: dict[str, Any] = ob if isinstance(ob, dict) else {}
        user_id = _user_id(user)
        run_ids = _run_ids(runs, base.name)
        run_id, target, name = _ob_fields(ob, ob_id, base.name)
        offset = await self._blind_offset(base, ob_id, token, templates)
        boa_star: SkyPoint | None = None
        if offset is not None:
            boa_star = target
            target = offset_position(boa_star, *offset)
        return P2Context(
            instance=base.name,
            user_id=f"{base.name}:{user_id}",
            run_ids=run_ids,
            ob_id=ob_id,
            run_id=run_id,
            target=target,
            boa_star=boa_star,
            ob_name=name,
            instrument=_instrument_of(runs, run_id, base.name),
            ob_status=str(ob_json.get("obStatus") or ""),
            target_name=str((ob_json.get("target") or {}).get("name") or "")[:200],
            **_run_names(runs, run_id, base.name),
        )

    async def _blind_offset(
        self, base: P2Base, ob_id: int, token: str, templates: Any
    ) -> tuple[float, float] | None:
        if not isinstance(templates, list):
            raise _unexpected(f"the templates of OB {ob_id}")
        acquisitions = [t for t in templates if isinstance(t, dict) and t.get("type") == "acquisition"]
        if not acquisitions:
            return None
        tid = acquisitions[0].get("templateId")
        if not isinstance(tid, int) or isinstance(tid, bool) or tid < 0:
            raise _unexpected(f"the acquisition template of OB {ob_id}")
        tpl = await self._get(base, f"/obsBlocks/{ob_id}/templates/{tid}", token, f"OB {ob_id}")
        params = tpl.get("parameters") if isinstance(tpl, dict) else None
        if not isinstance(params, list):
            raise _unexpected(f"the acquisition template of OB {ob_id}")
        values = {p.get("name"): p.get("value") for p in params if isinstance(p, dict)}
        east, north = values.get(BOA_OFFSET_RA), values.get(BOA_OFFSET_DEC)
        if east is None and north is None:
            return None
        try:
            e, n = float(east or 0.0), float(north or 0.0)
        except (TypeError, ValueError):
            raise _unexpected(f"the blind offset of OB {ob_id}") from None
        if not (math.isfinite(e) and math.isfinite(n)):
            raise _unexpected(f"the blind offset of OB {ob_id}")
        if e == 0.0 and n == 0.0:
            return None
        return e, n

    async def _request(
        self,
        method: str,
        base: P2Base,
        path: str,
        token: str,
        what: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        """One request to p2: (status, content type, body); redirects, 401, 403 and 404 as codes."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = base.endpoint(path)
        started = time.monotonic()
        status = 0
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})},
                allow_redirects=False,
            ) as resp:
                status = resp.status
                body = await self._read(resp, what)
                content_type = resp.content_type
        except TimeoutError:
            raise ServiceError(
                Code.UNAVAILABLE, f"p2 did not answer about {what} within {self.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise ServiceError(Code.UNAVAILABLE, f"p2 could not be reached ({type(exc).__name__})") from None
        finally:
            # Path only: the token is in a header and never logged.
            log.info(
                "p2 request",
                extra={
                    "p2_instance": base.name,
                    "p2_method": method,
                    "p2_path": path,
                    "status": status,
                    "ms": round((time.monotonic() - started) * 1000, 1),
                },
            )
        if 300 <= status < 400:
            raise ServiceError(
                Code.UNAVAILABLE, f"p2 answered a redirect for {what}; redirects are not followed"
            )
        if status == 401:
            raise ServiceError(Code.UNAUTHENTICATED, "p2 did not accept the access token (expired or wrong?)")
        if status == 403:
            raise ServiceError(Code.FORBIDDEN, f"p2 does not let this user see {what}")
        if status == 404:
            raise ServiceError(Code.NOT_FOUND, f"p2 knows no {what}")
        return status, content_type, body

    async def _get(self, base: P2Base, path: str, token: str, what: str) -> Any:
        status, content_type, body = await self._request("GET", base, path, token, what)
        if status != 200:
            raise ServiceError(Code.UNAVAILABLE, f"p2 answered HTTP {status} for {what}")
        if content_type != "application/json":
            raise _unexpected(what)
        try:
            return json.loads(body)
        except ValueError:
            raise _unexpected(what) from None

    # ---- finding charts of an OB (p2 numbers them from 1; the later ones slide down) -------

    def _base(self, ctx: P2Context) -> P2Base:
        return next(b for b in self.bases if b.name == ctx.instance)

    async def chart_names(self, ctx: P2Context, token: str) -> list[str]:
        names = await self._get(
            self._base(ctx), f"/obsBlocks/{ctx.ob_id}/findingCharts", token, "the OB's charts"
        )
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _unexpected("the OB's finding charts")
        return names

    async def chart(self, ctx: P2Context, token: str, index: int) -> bytes:
        path = f"/obsBlocks/{ctx.ob_id}/findingCharts/{index}"
        status, _, body = await self._request("GET", self._base(ctx), path, token, f"finding chart {index}")
        if status != 200:
            raise ServiceError(Code.UNAVAILABLE, f"p2 answered HTTP {status} for finding chart {index}")
        return body

    async def add_chart(self, ctx: P2Context, token: str, name: str, jpeg: bytes) -> None:
        headers = {"Content-Type": "image/jpeg", "Content-Disposition": f'inline; filename="{name}"'}
        path = f"/obsBlocks/{ctx.ob_id}/findingCharts"
        status, _, body = await self._request(
            "POST", self._base(ctx), path, token, "the OB's charts", data=jpeg, headers=headers
        )
        if status not in (200, 201):
            raise ServiceError(Code.UNAVAILABLE, f"p2 refused a finding chart: HTTP {status} {body[:200]!r}")

    async def delete_chart(self, ctx: P2Context, token: str, index: int) -> None:
        path = f"/obsBlocks/{ctx.ob_id}/findingCharts/{index}"
        status, _, _ = await self._request("DELETE", self._base(ctx), path, token, f"finding chart {index}")
        if status not in (200, 204):
            raise ServiceError(Code.UNAVAILABLE, f"p2 answered HTTP {status} deleting finding chart {index}")

    async def _read(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_answer_bytes:
                raise ServiceError(Code.UNAVAILABLE, f"p2's answer about {what} is too large")
            chunks.append(chunk)
        return b"".join(chunks)


def _unexpected(what: str) -> ServiceError:
    return ServiceError(Code.UNAVAILABLE, f"p2 answered something unexpected about {what}")


def _int_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,19}", value):
        return int(value)
    return None


def _user_id(user: Any) -> int:
    uid = _int_id(user.get("userId")) if isinstance(user, dict) else None
    if uid is None:
        raise _unexpected("your user")
    return uid


def _run_ids(runs: Any, instance: str) -> tuple[str, ...]:
    if not isinstance(runs, list):
        raise _unexpected("your runs")
    ids: list[str] = []
    for run in runs:
        rid = _int_id(run.get("runId")) if isinstance(run, dict) else None
        if rid is None:
            raise _unexpected("your runs")
        ids.append(f"{instance}:{rid}")
    return tuple(sorted(set(ids)))


def _run_names(runs: Any, run_id: str, instance: str) -> dict[str, str]:
    """The run's programme ID and PI name, as p2 lists them ("" when it does not say)."""
    for run in runs:
        if f"{instance}:{_int_id(run.get('runId'))}" == run_id:
            pi = run.get("pi") if isinstance(run.get("pi"), dict) else {}
            name = f"{pi.get('firstName') or ''} {pi.get('lastName') or ''}".strip()
            return {"prog_id": str(run.get("progId") or "")[:100], "pi_name": name[:200]}
    return {"prog_id": "", "pi_name": ""}


def _instrument_of(runs: Any, run_id: str, instance: str) -> str:
    """The instrument p2 names for the OB's run among the user's runs ("" if none)."""
    for run in runs:
        if f"{instance}:{_int_id(run.get('runId'))}" == run_id:
            name = run.get("instrument")
            if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_+-]{1,40}", name):
                return name.upper()
    return ""


def _ob_fields(ob: Any, ob_id: int, instance: str) -> tuple[str, SkyPoint, str]:
    if not isinstance(ob, dict) or _int_id(ob.get("obId")) != ob_id:
        raise _unexpected(f"OB {ob_id}")
    if ob.get("itemType", "OB") != "OB":
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"item {ob_id} is a {ob.get('itemType')}, not an OB with a target"
        )
    run = _int_id(ob.get("runId"))
    if run is None:
        raise _unexpected(f"OB {ob_id}")
    target = ob.get("target")
    if not isinstance(target, dict) or not target.get("ra") or not target.get("dec"):
        raise ServiceError(Code.INVALID_ARGUMENT, f"OB {ob_id} has no target coordinates yet")
    point = SkyPoint(parse_ra(target["ra"]), parse_dec(target["dec"]))
    name = ob.get("name")
    return f"{instance}:{run}", point, name if isinstance(name, str) else ""
