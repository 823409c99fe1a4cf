"""Development TAP service: a Gaia-like catalogue on loopback, for `make run` and the tests.

ESA's Gaia archive cannot be reached here. This DEVELOPMENT SERVER answers,
for a small table it is given (`demo_table` makes one around a position), what
pyvo's `TAPService(url).run_sync(...)` sends, in the shapes TAP 1.1 and VOSI
define:

- `GET|POST <url>/sync` with `REQUEST=doQuery`, `LANG=ADQL`, `QUERY=...`
  (and `MAXREC`, `RESPONSEFORMAT`): a VOTable (BINARY2) with
  `QUERY_STATUS` OK, or OVERFLOW when MAXREC cut the rows;
- `GET <url>/availability`, `/capabilities`, `/tables`: the VOSI documents;
- a query it cannot run: HTTP 400 with a VOTable whose `QUERY_STATUS` is
  ERROR and says why, as TAP asks.

It EVALUATES the query it gets, for the ADQL that `services/shared/gaia.py`
writes: `SELECT [TOP n] cols|* FROM table [WHERE cond AND ...] [ORDER BY col
[ASC|DESC]]`, a condition being `1 = CONTAINS(POINT('ICRS', ra, dec),
CIRCLE('ICRS', ra0, dec0, r))` (great-circle distance <= r) or `col OP number`
(OP one of < <= > >= =; a NULL never passes). Anything else is refused: a
stand-in that ignored the query would hide the client's mistakes.

Faults for the tests: `delay_s` (seconds before /sync answers), `fail_status`
(an HTTP status /sync answers with, plain text), `garbage` (200 with a body
that is no VOTable). It runs in a thread with an event loop of its own and
records the parameters of every query. It is never part of a service:
services reach a TAP service through its configured URL only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import io
import math
import re
import sys
import time
from xml.sax.saxutils import escape

import numpy as np
from aiohttp import web
from astropy.io.votable import from_table
from astropy.io.votable.tree import Info, Resource, VOTableFile
from astropy.table import Table

from services.devp2 import LoopThread

VOTABLE = "application/x-votable+xml"
FORMATS = {
    "votable",
    "application/x-votable+xml",
    "text/xml",
    "votable/b2",
    "application/x-votable+xml;serialization=binary2",
}
DEFAULT_MAXREC = 10_000
HARD_MAXREC = 100_000


class AdqlError(ValueError):
    """A query the development server does not run; the message says why."""


# ---- ADQL: the subset the Gaia client writes ------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^']|'')*')
     |(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
     |(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
     |(?P<op><=|>=|[(),*=<>])
    )""",
    re.VERBOSE,
)
_KEYWORDS = {
    "SELECT",
    "TOP",
    "FROM",
    "WHERE",
    "AND",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "CONTAINS",
    "POINT",
    "CIRCLE",
}
_FRAMES = {"ICRS", ""}


@dataclasses.dataclass(frozen=True)
class Token:
    kind: str  # str, num, name, op
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper()


def tokens(adql: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    text = adql.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise AdqlError(f"unexpected text at character {pos + 1}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        out.append(Token(kind, m.group(kind)))
        pos = m.end()
    return out


@dataclasses.dataclass(frozen=True)
class Cone:
    ra_deg: float
    dec_deg: float
    radius_deg: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    column: str
    op: str
    value: float | str  # a string compares as text (ISO dates compare in time order)


@dataclasses.dataclass(frozen=True)
class PointIn:
    """CONTAINS(POINT('ICRS', ra, dec), <region column>) = 1: the point lies in the row's region."""

    ra_deg: float
    dec_deg: float
    column: str


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed query: column names as the client wrote them (`*` for all)."""

    columns: tuple[str, ...]
    table: str
    top: int | None = None
    cones: tuple[Cone, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    order_by: str | None = None
    descending: bool = False
    points: tuple[PointIn, ...] = ()


class _Parser:
    def __init__(self, adql: str) -> None:
        self.toks = tokens(adql)
        self.pos = 0

    def peek(self) -> Token | None:
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def next(self, what: str) -> Token:
        tok = self.peek()
        if tok is None:
            raise AdqlError(f"the query ends where {what} was expected")
        self.pos += 1
        return tok

    def keyword(self, word: str) -> None:
        tok = self.next(word)
        if tok.kind != "name" or tok.upper != word:
            raise AdqlError(f"expected {word}, found {tok.text!r}")

    def at_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "name" and tok.upper == word

    def op(self, symbol: str) -> None:
        tok = self.next(repr(symbol))
        if tok.kind != "op" or tok.text != symbol:
            raise AdqlError(f"expected {symbol!r}, found {tok.text!r}")

    def name(self, what: str) -> str:
        tok = self.next(what)
        if tok.kind != "name" or tok.upper in _KEYWORDS:
            raise AdqlError(f"expected {what}, found {tok.text!r}")
        return tok.text

    def number(self, what: str) -> float:
        tok = self.next(what)
        if tok.kind != "num":
            raise AdqlError(f"expected {what} (a number), found {tok.text!r}")
        return float(tok.text)

    def frame(self) -> None:
        tok = self.next("a coordinate system")
        if tok.kind != "str" or tok.text[1:-1].upper() not in _FRAMES:
            raise AdqlError(f"only ICRS coordinates, not {tok.text}")

    def query(self) -> Query:
        self.keyword("SELECT")
        top = None
        if self.at_keyword("TOP"):
            self.pos += 1
            value = self.number("the TOP count")
            if value != int(value) or value < 0:
                raise AdqlError(f"TOP takes a whole number, not {value:g}")
            top = int(value)
        columns = self.columns()
        self.keyword("FROM")
        table = self.name("a table name")
        cones: list[Cone | PointIn] = []
        comparisons: list[Comparison] = []
        if self.at_keyword("WHERE"):
            self.pos += 1
            while True:
                self.condition(cones, comparisons)
                if not self.at_keyword("AND"):
                    break
                self.pos += 1
        order_by, descending = None, False
        if self.at_keyword("ORDER"):
            self.pos += 1
            self.keyword("BY")
            order_by = self.name("a column to order by")
            if self.at_keyword("ASC") or self.at_keyword("DESC"):
                descending = self.next("ASC or DESC").upper == "DESC"
        tok = self.peek()
        if tok is not None:
            raise AdqlError(f"not understood from {tok.text!r} on (this server runs cone queries only)")
        circles = tuple(c for c in cones if isinstance(c, Cone))
        points = tuple(c for c in cones if isinstance(c, PointIn))
        return Query(tuple(columns), table, top, circles, tuple(comparisons), order_by, descending, points)

    def columns(self) -> list[str]:
        tok = self.peek()
        if tok is not None and tok.kind == "op" and tok.text == "*":
            self.pos += 1
            return ["*"]
        columns = [self.name("a column name")]
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text == ",":
            self.pos += 1
            columns.append(self.name("a column name"))
        return columns

    def condition(self, cones: list[Cone | PointIn], comparisons: list[Comparison]) -> None:
        tok = self.peek()
        if tok is not None and tok.kind == "num":  # 1 = CONTAINS(...)
            if self.number("1") != 1:
                raise AdqlError("a CONTAINS condition reads 1 = CONTAINS(...)")
            self.op("=")
            cones.append(self.contains())
        elif self.at_keyword("CONTAINS"):  # CONTAINS(...) = 1
            cones.append(self.contains())
            self.op("=")
            if self.number("1") != 1:
                raise AdqlError("a CONTAINS condition reads CONTAINS(...) = 1")
        else:
            column = self.name("a column or CONTAINS")
            op = self.next("a comparison")
            if op.kind != "op" or op.text not in ("<", "<=", ">", ">=", "="):
                raise AdqlError(f"expected a comparison after {column}, found {op.text!r}")
            value = self.next(f"a value for {column}")
            if value.kind == "str":
                comparisons.append(Comparison(column, op.text, value.text[1:-1].replace("''", "'")))
            elif value.kind == "num":
                comparisons.append(Comparison(column, op.text, float(value.text)))
            else:
                raise AdqlError(f"expected a number or a string for {column}, found {value.text!r}")

    def contains(self) -> Cone | PointIn:
        self.keyword("CONTAINS")
        self.op("(")
        self.keyword("POINT")
        self.op("(")
        self.frame()
        self.op(",")
        tok = self.peek()
        if tok is not None and tok.kind == "num":  # a point given, in a region column
            ra0 = self.number("the point's RA")
            self.op(",")
            dec0 = self.number("the point's Dec")
            self.op(")")
            self.op(",")
            column = self.name("a region column")
            self.op(")")
            if not -90.0 <= dec0 <= 90.0:
                raise AdqlError(f"not a point on the sky: ({ra0}, {dec0})")
            return PointIn(ra0 % 360.0, dec0, column)
        ra, dec = self.name("the RA column"), None
        self.op(",")
        dec = self.name("the Dec column")
        self.op(")")
        if (ra.lower(), dec.lower()) != ("ra", "dec"):
            raise AdqlError(f"POINT takes the position columns (ra, dec), not ({ra}, {dec})")
        self.op(",")
        self.keyword("CIRCLE")
        self.op("(")
        self.frame()
        self.op(",")
        ra0 = self.number("the circle's RA")
        self.op(",")
        dec0 = self.number("the circle's Dec")
        self.op(",")
        radius = self.number("the circle's radius")
        self.op(")")
        self.op(")")
        if not -90.0 <= dec0 <= 90.0 or not 0.0 <= radius <= 180.0:
            raise AdqlError(f"not a circle on the sky: ({ra0}, {dec0}, {radius})")
        return Cone(ra0, dec0, radius)


def parse_adql(adql: str) -> Query:
    return _Parser(adql).query()


def angular_distance_deg(ra_deg: np.ndarray, dec_deg: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Great-circle distance (haversine: exact at small distances too)."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    h = np.sin((dec - d0) / 2) ** 2 + np.cos(dec) * math.cos(d0) * np.sin((ra - a0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def region_holds(region: str, ra_deg: float, dec_deg: float) -> bool:
    """Whether an STC-S `POLYGON ICRS ra1 dec1 ra2 dec2 ...` (great-circle edges, smaller
    than a hemisphere) holds the point: the polygon projected on the plane tangent at the
    point (gnomonic: great circles become straight lines), then its winding number."""
    words = region.split()
    if len(words) < 8 or words[0].upper() != "POLYGON":
        return False
    start = 2 if not _is_number(words[1]) else 1
    try:
        values = [float(w) for w in words[start:]]
    except ValueError:
        return False
    if len(values) % 2 or len(values) < 6:
        return False
    a0, d0 = math.radians(ra_deg), math.radians(dec_deg)
    xs, ys = [], []
    for k in range(0, len(values), 2):
        a, d = math.radians(values[k]), math.radians(values[k + 1])
        cos_c = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a - a0)
        if cos_c <= 0:
            return False  # a corner 90 degrees or more away: the point is not inside
        xs.append(math.cos(d) * math.sin(a - a0) / cos_c)
        ys.append((math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a - a0)) / cos_c)
    winding = 0.0
    for k in range(len(xs)):
        x1, y1, x2, y2 = xs[k], ys[k], xs[(k + 1) % len(xs)], ys[(k + 1) % len(xs)]
        winding += math.atan2(x1 * y2 - x2 * y1, x1 * x2 + y1 * y2)
    return abs(winding) > math.pi


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "=": np.equal}


def evaluate(query: Query, table: Table, table_name: str) -> Table:
    """The rows (and columns) of `table` that `query` asks for."""
    if query.table.lower() != table_name.lower():
        raise AdqlError(f"no table {query.table} (this service has {table_name})")
    names = {n.lower(): n for n in table.colnames}

    def column(name: str) -> str:
        try:
            return names[name.lower()]
        except KeyError:
            raise AdqlError(f"no column {name} in {table_name}") from None

    def numbers(name: str) -> np.ndarray:
        return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=float), np.nan))

    selected = list(table.colnames) if query.columns == ("*",) else [column(c) for c in query.columns]
    keep = np.ones(len(table), dtype=bool)
    for cone in query.cones:
        distance = angular_distance_deg(
            np.asarray(table["ra"], float), np.asarray(table["dec"], float), cone.ra_deg, cone.dec_deg
        )
        keep &= distance <= cone.radius_deg
    for point in query.points:
        regions = table[column(point.column)]
        keep &= np.array([region_holds(str(r), point.ra_deg, point.dec_deg) for r in regions], dtype=bool)
    for cmp in query.comparisons:
        if isinstance(cmp.value, str):
            texts = np.asarray(table[column(cmp.column)]).astype(str)
            keep &= _OPS[cmp.op](texts, cmp.value)
            continue
        with np.errstate(invalid="ignore"):
            keep &= _OPS[cmp.op](numbers(column(cmp.column)), cmp.value)  # NaN (NULL) compares false
    rows = np.flatnonzero(keep)
    if query.order_by is not None:
        values = numbers(column(query.order_by))[rows]
        rows = rows[np.argsort(-values if query.descending else values, kind="stable")]  # NULLs (NaN) last
    if query.top is not None:
        rows = rows[: query.top]
    return table[selected][rows]


# ---- the documents --------------------------------------------------------------------------------


def votable_bytes(rows: Table, status: str = "OK") -> bytes:
    vot = from_table(rows)
    vot.resources[0].type = "results"
    vot.resources[0].infos.append(Info(name="QUERY_STATUS", value=status))
    out = io.BytesIO()
    vot.to_xml(out, tabledata_format="binary2")
    return out.getvalue()


def error_votable(message: str) -> bytes:
    vot = VOTableFile()
    resource = Resource(type="results")
    info = Info(name="QUERY_STATUS", value="ERROR")
    info.content = message
    resource.infos.append(info)
    vot.resources.append(resource)
    out = io.BytesIO()
    vot.to_xml(out)
    return out.getvalue()


_VO_TYPES = {"i": "long", "u": "long", "f": "double", "b": "boolean"}


def tableset_xml(table: Table, table_name: str) -> str:
    schema = table_name.split(".")[0] if "." in table_name else "public"
    columns = "".join(
        f"<column><name>{escape(name)}</name>"
        + (f"<unit>{escape(table[name].unit.to_string('vounit'))}</unit>" if table[name].unit else "")
        + f'<dataType xsi:type="vs:VOTableType">{_VO_TYPES.get(table[name].dtype.kind, "char")}</dataType>'
        + "</column>"
        for name in table.colnames
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<vosi:tableset xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<schema><name>{escape(schema)}</name><table><name>{escape(table_name)}</name>{columns}</table>"
        "</schema></vosi:tableset>"
    )


def capabilities_xml(url: str) -> str:
    def vosi(kind: str) -> str:
        return (
            f'<capability standardID="ivo://ivoa.net/std/VOSI#{kind}">'
            f'<interface xsi:type="vs:ParamHTTP"><accessURL use="full">{escape(url)}/{kind}</accessURL>'
            "</interface></capability>"
        )

    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">'
        + vosi("capabilities")
        + vosi("availability")
        + vosi("tables")
        + '<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">'
        f'<interface xsi:type="vs:ParamHTTP" role="std"><accessURL use="base">{escape(url)}</accessURL>'
        "</interface>"
        '<language><name>ADQL</name><version ivo-id="ivo://ivoa.net/std/ADQL#v2.0">2.0</version>'
        "<description>cone queries only (development server)</description></language>"
        f"<outputFormat><mime>{VOTABLE}</mime><alias>votable</alias></outputFormat>"
        f'<outputLimit><default unit="row">{DEFAULT_MAXREC}</default>'
        f'<hard unit="row">{HARD_MAXREC}</hard></outputLimit>'
        "</capability></vosi:capabilities>"
    )


AVAILABILITY_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
    "<vosi:available>true</vosi:available></vosi:availability>"
)


# ---- a demo catalogue -----------------------------------------------------------------------------


def demo_table(
    ra_deg: float, dec_deg: float, radius_arcsec: float = 900.0, count: int = 3000, seed: int | None = None
) -> Table:
    """A Gaia-like `gaia_source` around (ra, dec): `count` sources spread evenly on the sky
    within `radius_arcsec`, G from 8 to 21 (more faint than bright), ref_epoch 2016.0, small
    proper motions, about 2 % fast movers (0.1-3"/yr), about 5 % without proper motion.
    The same arguments give the same table."""
    if seed is None:
        key = f"{ra_deg:.6f} {dec_deg:.6f} {radius_arcsec:.3f} {count}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    # Uniform in solid angle within the cap, then turned to (ra, dec) around the centre.
    cos_r = math.cos(math.radians(radius_arcsec / 3600))
    rho = np.arccos(1 - rng.random(count) * (1 - cos_r))
    theta = rng.random(count) * 2 * math.pi
    a0, d0 = math.radians(ra_deg), math.radians(dec_deg)
    dec = np.arcsin(math.sin(d0) * np.cos(rho) + math.cos(d0) * np.sin(rho) * np.cos(theta))
    ra = a0 + np.arctan2(np.sin(theta) * np.sin(rho) * math.cos(d0), np.cos(rho) - math.sin(d0) * np.sin(dec))
    # Counts rising by 10^0.3 (x2) per magnitude up to G = 21; the rare brighter than 8 are 8.
    g = np.clip(21.0 + np.log10(rng.random(count)) / 0.3, 8.0, 21.0)
    pmra = rng.normal(0.0, 6.0, count)
    pmdec = rng.normal(-3.0, 6.0, count)
    fast = rng.random(count) < 0.02
    speed = rng.uniform(100.0, 3000.0, count)
    angle = rng.uniform(0.0, 2 * math.pi, count)
    pmra = np.where(fast, speed * np.sin(angle), pmra)
    pmdec = np.where(fast, speed * np.cos(angle), pmdec)
    no_pm = (rng.random(count) < 0.05) & ~fast
    pmra[no_pm] = np.nan
    pmdec[no_pm] = np.nan
    table = Table(
        {
            "source_id": np.asarray(seed % (1 << 40) * 1000 + np.arange(count), dtype=np.int64),
            "ra": np.degrees(ra) % 360.0,
            "dec": np.degrees(dec),
            "pmra": pmra,
            "pmdec": pmdec,
            "phot_g_mean_mag": g.astype(np.float32),
            "ref_epoch": np.full(count, 2016.0),
        }
    )
    for name, unit in (
        ("ra", "deg"),
        ("dec", "deg"),
        ("pmra", "mas / yr"),
        ("pmdec", "mas / yr"),
        ("phot_g_mean_mag", "mag"),
        ("ref_epoch", "yr"),
    ):
        table[name].unit = unit
    return table


# ---- the server -----------------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=error_votable(message), content_type=VOTABLE)


class DevTap(LoopThread):
    """A TAP service under `url` = http://127.0.0.1:<port><prefix> holding one table."""

    def __init__(
        self, table: Table, table_name: str = "gaiadr3.gaia_source", prefix: str = "/tap", port: int = 0
    ) -> None:
        self.table = table
        self.table_name = table_name
        self.prefix = prefix
        self.delay_s = 0.0
        self.fail_status: int | None = None
        self.garbage = False
        self.queries: list[dict[str, str]] = []
        app = web.Application()
        r = app.router
        r.add_route("GET", prefix + "/sync", self._sync)
        r.add_route("POST", prefix + "/sync", self._sync)
        r.add_get(prefix + "/availability", self._availability)
        r.add_get(prefix + "/capabilities", self._capabilities)
        r.add_get(prefix + "/tables", self._tables)
        super().__init__(app, port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    async def _sync(self, request: web.Request) -> web.Response:
        params: dict[str, str] = {k.upper(): str(v) for k, v in request.query.items()}
        if request.method == "POST":
            params.update({k.upper(): str(v) for k, v in (await request.post()).items()})
        self.queries.append(params)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="development TAP: failing as asked")
        if self.garbage:
            return web.Response(text="<html>not a VOTable</html>", content_type="text/html")
        return self.answer(params)

    def answer(self, params: dict[str, str]) -> web.Response:
        if params.get("REQUEST", "doQuery").lower() != "doquery":
            return _error(400, f"unknown REQUEST {params['REQUEST']!r} (doQuery only)")
        if params.get("LANG", "").upper() not in ("ADQL", "ADQL-2.0", "ADQL-2.1"):
            return _error(400, f"unsupported LANG {params.get('LANG', '')!r} (ADQL only)")
        if params.get("RESPONSEFORMAT", params.get("FORMAT", "votable")).lower() not in FORMATS:
            return _error(400, "only VOTable answers")
        if "UPLOAD" in params:
            return _error(400, "no table uploads here")
        try:
            maxrec = min(int(params.get("MAXREC", DEFAULT_MAXREC)), HARD_MAXREC)
            if maxrec < 0:
                raise ValueError(maxrec)
        except ValueError:
            return _error(400, f"MAXREC must be a whole number >= 0, not {params.get('MAXREC')!r}")
        query = params.get("QUERY", "")
        if not query.strip():
            return _error(400, "no QUERY")
        try:
            rows = evaluate(parse_adql(query), self.table, self.table_name)
        except AdqlError as err:
            return _error(400, f"query not run: {err}")
        status = "OK"
        if len(rows) > maxrec:
            rows, status = rows[:maxrec], "OVERFLOW"
        return web.Response(body=votable_bytes(rows, status), content_type=VOTABLE)

    async def _availability(self, request: web.Request) -> web.Response:
        return web.Response(text=AVAILABILITY_XML, content_type="text/xml")

    async def _capabilities(self, request: web.Request) -> web.Response:
        return web.Response(text=capabilities_xml(self.url), content_type="text/xml")

    async def _tables(self, request: web.Request) -> web.Response:
        return web.Response(text=tableset_xml(self.table, self.table_name), content_type="text/xml")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.devtap", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ra", type=float, default=150.0, help="the demo catalogue's centre (deg)")
    parser.add_argument("--dec", type=float, default=2.0)
    parser.add_argument("--radius", type=float, default=900.0, help="its radius (arcsec)")
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args(argv)
    tap = DevTap(demo_table(args.ra, args.dec, args.radius, args.count), port=args.port)
    tap.start()
    print(f"development TAP service (not for production): {tap.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        tap.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
