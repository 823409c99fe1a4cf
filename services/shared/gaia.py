"""Gaia DR3 sources around a position: the one ADQL cone query, run through pyvo's TAP client.

A TAP service is reached at a configured URL (ESA's Gaia archive in production,
table `gaiadr3.gaia_source`; `services/devtap.py` on loopback in development
and tests). Every failure of the service - unreachable, too slow, an HTTP
error, a refusal of the query, an answer that is no usable VOTable - is a
`ServiceError` with `Code.UNAVAILABLE` (and a `reason` detail), never a bare
exception: the selector then marks the Gaia source unavailable and goes on.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import numpy as np
import requests

from services.shared.errors import Code, ServiceError
from services.shared.tap import TapClient, unavailable

DR3_TABLE = "gaiadr3.gaia_source"
# The reference epoch of Gaia DR3's astrometry (Julian year, TCB); `ref_epoch` says it per row.
DR3_EPOCH = 2016.0
COLUMNS = ("source_id", "ra", "dec", "pmra", "pmdec", "phot_g_mean_mag", "ref_epoch")
# A table name as ADQL writes it unquoted: schema.table (or a bare table). The name is
# configured, not the user's, but it is pasted into the query, so it is held to that shape.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
MAX_TOP = 100_000
MAX_RADIUS_ARCSEC = 3.0 * 3600


@dataclasses.dataclass(frozen=True, eq=False)
class GaiaSources:
    """Gaia sources as columns (one row per source), as a cone query returns them.

    `pmra` is mu_alpha* = mu_alpha cos(dec); `pmra`/`pmdec` are NaN for a source
    without proper motion (a two-parameter solution); `ref_epoch` is the epoch
    of `ra`/`dec` (2016.0 in DR3).
    """

    source_id: np.ndarray  # int64
    ra_deg: np.ndarray  # float64, ICRS
    dec_deg: np.ndarray
    pmra_mas_yr: np.ndarray
    pmdec_mas_yr: np.ndarray
    g_mag: np.ndarray
    ref_epoch: np.ndarray

    def __post_init__(self) -> None:
        sizes = {len(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if len(sizes) > 1:
            raise ValueError(f"columns of different lengths: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.source_id)

    @classmethod
    def of(
        cls,
        ra_deg: Any,
        dec_deg: Any,
        g_mag: Any,
        pmra_mas_yr: Any = None,
        pmdec_mas_yr: Any = None,
        source_id: Any = None,
        ref_epoch: Any = None,
    ) -> GaiaSources:
        """Sources from sequences; no proper motion (NaN) and epoch 2016.0 where not given."""
        ra = np.atleast_1d(np.asarray(ra_deg, dtype=np.float64))
        n = len(ra)

        def column(values: Any, default: float) -> np.ndarray:
            if values is None:
                return np.full(n, default)
            return np.atleast_1d(np.asarray(values, dtype=np.float64))

        ids = np.arange(n, dtype=np.int64) if source_id is None else np.asarray(source_id, dtype=np.int64)
        return cls(
            source_id=np.atleast_1d(ids),
            ra_deg=ra,
            dec_deg=column(dec_deg, math.nan),
            pmra_mas_yr=column(pmra_mas_yr, math.nan),
            pmdec_mas_yr=column(pmdec_mas_yr, math.nan),
            g_mag=column(g_mag, math.nan),
            ref_epoch=column(ref_epoch, DR3_EPOCH),
        )

    @classmethod
    def from_table(cls, table: Any) -> GaiaSources:
        """Sources from a table with Gaia's column names (an astropy Table, as pyvo's
        `to_table()` gives): masked (NULL) values become NaN."""
        missing = [c for c in COLUMNS if c not in table.colnames]
        if missing:
            raise ValueError(f"columns missing: {missing}")

        def floats(name: str) -> np.ndarray:
            return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan))

        return cls(
            source_id=np.asarray(np.ma.filled(table["source_id"], 0), dtype=np.int64),
            ra_deg=floats("ra"),
            dec_deg=floats("dec"),
            pmra_mas_yr=floats("pmra"),
            pmdec_mas_yr=floats("pmdec"),
            g_mag=floats("phot_g_mean_mag"),
            ref_epoch=floats("ref_epoch"),
        )

    def positions_at(self, epoch: float) -> tuple[np.ndarray, np.ndarray]:
        """(ra, dec) in degrees at `epoch` (Julian year): each source moved along the
        great circle of its proper motion, as a star at a great distance with no radial
        velocity moves (what astropy's `apply_space_motion` does without distance);
        a source without proper motion stays at its `ref_epoch` place."""
        ra = np.radians(self.ra_deg)
        dec = np.radians(self.dec_deg)
        mas = math.radians(1.0 / 3.6e6)
        dt = epoch - np.where(np.isfinite(self.ref_epoch), self.ref_epoch, DR3_EPOCH)
        mu_a = np.nan_to_num(self.pmra_mas_yr) * mas * dt
        mu_d = np.nan_to_num(self.pmdec_mas_yr) * mas * dt
        sin_a, cos_a, sin_d, cos_d = np.sin(ra), np.cos(ra), np.sin(dec), np.cos(dec)
        # r0 + mu_a p + mu_d q, with p and q the unit vectors east and north at r0.
        x = cos_d * cos_a - mu_a * sin_a - mu_d * sin_d * cos_a
        y = cos_d * sin_a + mu_a * cos_a - mu_d * sin_d * sin_a
        z = sin_d + mu_d * cos_d
        ra_t = np.degrees(np.arctan2(y, x)) % 360.0
        dec_t = np.degrees(np.arctan2(z, np.hypot(x, y)))
        return ra_t, dec_t


def cone_query(
    table: str, ra_deg: float, dec_deg: float, radius_arcsec: float, mag_limit: float, top: int
) -> str:
    """The ADQL of the one query: the `top` brightest sources with G < `mag_limit` within
    `radius_arcsec` of (ra, dec), at their catalogue epoch."""
    if not _TABLE_NAME.match(table):
        raise ServiceError(Code.INVALID_ARGUMENT, f"not a table name: {table!r}")
    if not (-90.0 <= dec_deg <= 90.0 and math.isfinite(ra_deg)):
        raise ServiceError(Code.INVALID_ARGUMENT, f"not a sky position: ({ra_deg}, {dec_deg})")
    if not 0.0 < radius_arcsec <= MAX_RADIUS_ARCSEC:
        raise ServiceError(
            Code.INVALID_ARGUMENT, f"cone radius {radius_arcsec} arcsec outside (0, {MAX_RADIUS_ARCSEC:g}]"
        )
    if not math.isfinite(mag_limit):
        raise ServiceError(Code.INVALID_ARGUMENT, f"not a magnitude limit: {mag_limit}")
    if not 0 < top <= MAX_TOP:
        raise ServiceError(Code.INVALID_ARGUMENT, f"TOP {top} outside [1, {MAX_TOP}]")
    return (
        f"SELECT TOP {int(top)} {', '.join(COLUMNS)} FROM {table} "
        f"WHERE 1 = CONTAINS(POINT('ICRS', ra, dec), "
        f"CIRCLE('ICRS', {ra_deg % 360.0:.9f}, {dec_deg:.9f}, {radius_arcsec / 3600.0:.9f})) "
        f"AND phot_g_mean_mag < {mag_limit:.3f} "
        f"ORDER BY phot_g_mean_mag ASC"
    )


class GaiaCatalogue:
    """Cone queries of a Gaia source table through a TAP service (`TapClient`).

    `cone` blocks; `cone_async` runs it in a thread under an overall deadline.
    """

    def __init__(
        self,
        url: str,
        *,
        table: str = DR3_TABLE,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        if not _TABLE_NAME.match(table):
            raise ServiceError(Code.INVALID_ARGUMENT, f"not a table name: {table!r}")
        self.table = table
        self.tap = TapClient(
            url,
            "Gaia catalogue",
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            session=session,
        )
        self.url = self.tap.url

    def query(self, ra_deg: float, dec_deg: float, radius_arcsec: float, mag_limit: float, top: int) -> str:
        return cone_query(self.table, ra_deg, dec_deg, radius_arcsec, mag_limit, top)

    def cone(
        self, ra_deg: float, dec_deg: float, radius_arcsec: float, *, mag_limit: float = 21.0, top: int = 5000
    ) -> GaiaSources:
        """The `top` brightest sources with G < `mag_limit` within `radius_arcsec` of (ra, dec)."""
        table = self.tap.query(self.query(ra_deg, dec_deg, radius_arcsec, mag_limit, top), top)
        try:
            return GaiaSources.from_table(table)
        except (ValueError, KeyError, TypeError) as err:
            raise unavailable(err, self.tap.label, self.url) from err

    async def cone_async(
        self,
        ra_deg: float,
        dec_deg: float,
        radius_arcsec: float,
        *,
        mag_limit: float = 21.0,
        top: int = 5000,
        deadline_s: float = 15.0,
    ) -> GaiaSources:
        """`cone` under an overall deadline (UNAVAILABLE, reason `timeout`, past it)."""
        adql = self.query(ra_deg, dec_deg, radius_arcsec, mag_limit, top)
        table = await self.tap.query_async(adql, top, deadline_s)
        try:
            return GaiaSources.from_table(table)
        except (ValueError, KeyError, TypeError) as err:
            raise unavailable(err, self.tap.label, self.url) from err

    def close(self) -> None:
        self.tap.close()
