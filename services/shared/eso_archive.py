"""ESO Science Archive images for an OB: the ObsCore query through pyvo, the DP id's form,
and fetching a file from the archive only.

Finding: one ADQL query of the archive's TAP service (`ivoa.ObsCore`, images
whose `s_region` holds the target and, when the OB has one, the BOA star,
released by now), the rows with ESO's own `dp_id` and `filter` columns beside
the standard ones, ranked: images in the OB instrument's wavelength range
first, then the deepest (`abmaglim`), then the newest.

Fetching: a DP id is checked against the form ESO's ids take (`check_dp_id`,
a strict regular expression and a real date) before it goes near ADQL or a
URL; the file's URL is the configured file base plus the DP id, never a URL
from a query row or a client; a redirect is followed only on the same scheme
and host; the size and the time are bounded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import aiohttp

from services.shared.errors import Code, ServiceError
from services.shared.tap import TapClient, unavailable

OBSCORE = "ivoa.ObsCore"
COLUMNS = (
    "dp_id",
    "instrument_name",
    "filter",
    "t_min",
    "obs_release_date",
    "abmaglim",
    "em_min",
    "em_max",
    "s_region",
)
MAX_ROWS = 200
MAX_REDIRECTS = 3
# INSTRUMENT.YYYY-MM-DDThh:mm:ss.sss: raw files ("FORS2.2019-03-04T05:06:07.890") and
# products ("ADP.2015-05-11T10:19:53.607").
_DP_ID = re.compile(r"^([A-Z][A-Z0-9]{1,19})\.(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3})$")
MJD_EPOCH = dt.datetime(1858, 11, 17, tzinfo=dt.UTC)


def check_dp_id(text: str) -> str:
    """`text` when it is an ESO DP id (INSTRUMENT.YYYY-MM-DDThh:mm:ss.sss, a real date);
    INVALID_ARGUMENT otherwise, without repeating what was sent."""
    m = _DP_ID.match(text)
    if m is not None:
        try:
            dt.datetime.strptime(m.group(2), "%Y-%m-%dT%H:%M:%S.%f")
        except ValueError:
            m = None
    if m is None:
        raise ServiceError(
            Code.INVALID_ARGUMENT,
            "not an ESO archive DP id: expected INSTRUMENT.YYYY-MM-DDThh:mm:ss.sss "
            "(e.g. ADP.2015-05-11T10:19:53.607)",
        )
    return text


def file_url(base: str, dp_id: str) -> str:
    """The archive's URL of the file of `dp_id`: the configured base and the checked id."""
    return base.rstrip("/") + "/" + quote(check_dp_id(dp_id), safe=".:-")


def _point(ra: float, dec: float) -> str:
    if not (math.isfinite(ra) and -90.0 <= dec <= 90.0):
        raise ServiceError(Code.INVALID_ARGUMENT, f"not a sky position: ({ra}, {dec})")
    return f"POINT('ICRS', {ra % 360.0:.9f}, {dec:.9f})"


def obscore_query(points: Sequence[tuple[float, float]], now: dt.datetime, top: int = MAX_ROWS) -> str:
    """The ADQL of the images holding every point, released before `now`."""
    if not 0 < top <= MAX_ROWS:
        raise ServiceError(Code.INVALID_ARGUMENT, f"TOP {top} outside [1, {MAX_ROWS}]")
    where = ["dataproduct_type = 'image'"]
    where += [f"CONTAINS({_point(ra, dec)}, s_region) = 1" for ra, dec in points]
    where.append(f"obs_release_date < '{now.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%S}'")
    return f"SELECT TOP {int(top)} {', '.join(COLUMNS)} FROM {OBSCORE} WHERE " + " AND ".join(where)


def dp_id_query(dp_id: str) -> str:
    """The ADQL of the one image row of a (checked) DP id."""
    return (
        f"SELECT TOP 1 {', '.join(COLUMNS)} FROM {OBSCORE} "
        f"WHERE dp_id = '{check_dp_id(dp_id)}' AND dataproduct_type = 'image'"
    )


def _when(text: Any) -> dt.datetime | None:
    value = str(text or "").strip().replace("Z", "+00:00")
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclasses.dataclass(frozen=True)
class ArchiveImage:
    """One archive image as ObsCore lists it."""

    dp_id: str
    instrument: str
    filter: str
    observed: dt.datetime | None  # t_min
    released: dt.datetime | None  # obs_release_date
    depth_abmag: float | None  # abmaglim
    em_min_m: float | None
    em_max_m: float | None

    @classmethod
    def of(cls, row: Any) -> ArchiveImage | None:
        """The image of a result row; None when its DP id is not one."""
        dp_id = str(row["dp_id"]).strip()
        try:
            check_dp_id(dp_id)
        except ServiceError:
            return None
        t_min = _number(row["t_min"])
        return cls(
            dp_id=dp_id,
            instrument=str(row["instrument_name"] or "").strip(),
            filter=str(row["filter"] or "").strip(),
            observed=MJD_EPOCH + dt.timedelta(days=t_min) if t_min is not None else None,
            released=_when(row["obs_release_date"]),
            depth_abmag=_number(row["abmaglim"]),
            em_min_m=_number(row["em_min"]),
            em_max_m=_number(row["em_max"]),
        )

    @property
    def selection(self) -> str:
        return f"eso_im|{self.dp_id}"

    def in_band(self, band_nm: tuple[float, float] | None) -> bool:
        """Whether the image's wavelengths overlap `band_nm` (the OB instrument's)."""
        if band_nm is None or self.em_min_m is None or self.em_max_m is None:
            return False
        return self.em_min_m * 1e9 <= band_nm[1] and self.em_max_m * 1e9 >= band_nm[0]


def rank(images: Sequence[ArchiveImage], band_nm: tuple[float, float] | None) -> list[ArchiveImage]:
    """Most useful first: in the OB's band, then the deepest, then the newest; ties by DP id."""

    def key(image: ArchiveImage) -> tuple[int, float, float, str]:
        depth = image.depth_abmag if image.depth_abmag is not None else -math.inf
        observed = image.observed.timestamp() if image.observed else -math.inf
        return (0 if image.in_band(band_nm) else 1, -depth, -observed, image.dp_id)

    return sorted(images, key=key)


class EsoArchive:
    """The archive's ObsCore through TAP, and its files."""

    def __init__(
        self,
        tap_url: str,
        file_base: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self.tap = TapClient(
            tap_url, "ESO archive", connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s
        )
        self.file_base = file_base

    def _images(self, table: Any, now: dt.datetime) -> list[ArchiveImage]:
        try:
            found = [ArchiveImage.of(row) for row in table]
        except (KeyError, TypeError, ValueError) as err:
            raise unavailable(err, self.tap.label, self.tap.url) from err
        # Proprietary data stays out even if the service let a row through.
        return [i for i in found if i is not None and i.released is not None and i.released <= now]

    async def find(
        self, points: Sequence[tuple[float, float]], deadline_s: float, now: dt.datetime | None = None
    ) -> list[ArchiveImage]:
        """The released images holding every point (the target, the BOA star)."""
        now = now or dt.datetime.now(dt.UTC)
        table = await self.tap.query_async(obscore_query(points, now), MAX_ROWS, deadline_s)
        return self._images(table, now)

    async def image(self, dp_id: str, deadline_s: float, now: dt.datetime | None = None) -> ArchiveImage:
        """The archive's row of one DP id; NOT_FOUND when it has no released image of it."""
        now = now or dt.datetime.now(dt.UTC)
        table = await self.tap.query_async(dp_id_query(dp_id), 1, deadline_s)
        found = self._images(table, now)
        if not found:
            raise ServiceError(Code.NOT_FOUND, f"the ESO archive has no released image {dp_id}", dp_id=dp_id)
        return found[0]

    def close(self) -> None:
        self.tap.close()


async def fetch(
    session: aiohttp.ClientSession, url: str, max_bytes: int, timeout_s: float
) -> AsyncIterator[bytes]:
    """The bytes at `url`, streamed: redirects followed on the same scheme and host only
    (at most MAX_REDIRECTS), at most `max_bytes` (TOO_LARGE past them), all within
    `timeout_s` (UNAVAILABLE past it); the archive's 404 is NOT_FOUND, its other
    failures UNAVAILABLE."""
    deadline = time.monotonic() + timeout_s
    origin = urlsplit(url)

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceError(
                Code.UNAVAILABLE, "ESO archive: the file did not come in time", reason="timeout"
            )
        return remaining

    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(
                url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=left())
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308):
                    target = urljoin(url, resp.headers.get("Location", ""))
                    there = urlsplit(target)
                    if (there.scheme, there.netloc) != (origin.scheme, origin.netloc):
                        raise ServiceError(
                            Code.UNAVAILABLE,
                            "ESO archive: the file's URL redirects to another host; not followed",
                            reason="redirect",
                        )
                    url = target
                    continue
                if resp.status == 404:
                    raise ServiceError(Code.NOT_FOUND, "the ESO archive has no such file")
                if resp.status != 200:
                    raise ServiceError(
                        Code.UNAVAILABLE,
                        f"ESO archive: the file answered HTTP {resp.status}",
                        reason="http_error",
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise ServiceError(
                        Code.TOO_LARGE, f"the archive file has {resp.content_length} bytes, over {max_bytes}"
                    )
                total = 0
                async for chunk in resp.content.iter_chunked(1 << 20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise ServiceError(
                            Code.TOO_LARGE, f"the archive file is larger than {max_bytes} bytes"
                        )
                    left()
                    yield chunk
                return
        raise ServiceError(Code.UNAVAILABLE, "ESO archive: too many redirects", reason="redirect")
    except (aiohttp.ClientError, TimeoutError) as err:
        reason = "timeout" if isinstance(err, TimeoutError) else "unreachable"
        raise ServiceError(
            Code.UNAVAILABLE, f"ESO archive: the file could not be fetched ({reason})", reason=reason
        ) from err
