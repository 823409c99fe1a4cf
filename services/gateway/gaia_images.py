"""The OB's Gaia image in the selector (DESIGN.md, "Other sources in the selector").

An OB's Gaia image is a pseudo image of Gaia DR3 sources around its target
(`services.shared.gaia_image`): its spec, and so its key, comes from the
OB (the target, the field of the run's instrument from
`services.shared.instruments`, the BOA star when there is one) and the
observation date. It is listed without being made. Made on selection or first
display: the catalogue's cone (`services.shared.gaia`, through pyvo), the
drawing, then the upload path (`Uploads.upload`: staged, validated, processed
into a HiPS and preview, recorded) as a system-owned image of its key that the
catalog makes the OB's selection. The same request gives the same bytes, so a
culled image is made again, the same, when it is asked for again.

Whether the TAP service answers is known from the last query or probe, trusted
for GAIA_STATUS_TTL_S; past that a listing waits at most GAIA_PROBE_TIMEOUT_S
for a new probe (one at a time), so a service that is down or slow never holds
the selector up for long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import time
from collections.abc import AsyncIterator

from bgimages.catalog.v1 import catalog_pb2
from services.gateway.arguments import Caller, ObContext
from services.gateway.uploads import UploadFile, Uploads, UploadTarget
from services.shared import instruments
from services.shared.errors import Code, ServiceError
from services.shared.gaia import GaiaCatalogue
from services.shared.gaia_image import GaiaImageSpec, gaia_image_fits

log = logging.getLogger(__name__)

SYSTEM_OWNER = "system:gaia"
# Room around the BOA star when the field must reach it (arcsec).
BOA_MARGIN_ARCSEC = 30.0


@dataclasses.dataclass(frozen=True)
class GaiaStatus:
    """Whether the Gaia catalogue answers; the code and message when it does not."""

    available: bool
    code: Code | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class GaiaLimits:
    """The settings of the Gaia source (GAIA_*)."""

    mag_limit: float = 21.0
    max_sources: int = 5000
    query_deadline_s: float = 30.0
    probe_deadline_s: float = 2.0
    status_ttl_s: float = 60.0
    field_radius_arcsec: float = 300.0


def _separation_arcsec(a: ObContext, b_ra: float, b_dec: float) -> float:
    ra1, dec1 = math.radians(a.target.ra_deg), math.radians(a.target.dec_deg)
    ra2, dec2 = math.radians(b_ra), math.radians(b_dec)
    hav = math.sin((dec2 - dec1) / 2) ** 2 + math.cos(dec1) * math.cos(dec2) * math.sin((ra2 - ra1) / 2) ** 2
    return math.degrees(2 * math.asin(min(1.0, math.sqrt(hav)))) * 3600.0


class GaiaImages:
    """Specs, availability and the making of OBs' Gaia images."""

    def __init__(self, *, catalogue: GaiaCatalogue | None, uploads: Uploads, limits: GaiaLimits) -> None:
        self.catalogue = catalogue
        self.uploads = uploads
        self.limits = limits
        self._status = GaiaStatus(True)
        self._status_at = -math.inf
        self._probe: asyncio.Task[GaiaStatus] | None = None
        self._making: dict[str, asyncio.Task[None]] = {}

    # ---- the spec --------------------------------------------------------------------------

    def field_radius_arcsec(self, ob: ObContext) -> float:
        """What the image covers around the target: the reach of the run's instrument
        (its default mode's field, detectors, slits), GAIA_FIELD_RADIUS_ARCSEC when
        the instrument is unknown, and the BOA star when the OB has one."""
        radius = self.limits.field_radius_arcsec
        if ob.instrument:
            try:
                radius = instruments.bounding_radius_arcsec(instruments.lookup(ob.instrument))
            except instruments.UnknownInstrument:
                log.info("instrument %r is not in the table: Gaia field of %g arcsec", ob.instrument, radius)
        if ob.HasField("boa_star"):
            reach = _separation_arcsec(ob, ob.boa_star.ra_deg, ob.boa_star.dec_deg) + BOA_MARGIN_ARCSEC
            radius = max(radius, reach)
        return radius

    def spec(
        self,
        ob: ObContext,
        when: dt.date | dt.datetime | float | None = None,
        iq_arcsec: float | None = None,
        noise: float | None = None,
    ) -> GaiaImageSpec:
        """The spec (and key) of the OB's image; `when` the observation date (today when
        not given); p2api's GAIA_im_IQ and GAIA_im_noise defaults."""
        return GaiaImageSpec.for_observation(
            ob.target.ra_deg,
            ob.target.dec_deg,
            self.field_radius_arcsec(ob),
            when if when is not None else dt.datetime.now(dt.UTC),
            iq_arcsec,
            noise,
        )

    # ---- availability ----------------------------------------------------------------------

    async def status(self) -> GaiaStatus:
        """The catalogue's state for a listing: the last one known while fresh, else a
        probe awaited at most GAIA_PROBE_TIMEOUT_S (its end updates the state)."""
        if self.catalogue is None:
            return GaiaStatus(False, Code.UNAVAILABLE, "no Gaia catalogue is configured (GAIA_TAP_URL)")
        if time.monotonic() - self._status_at < self.limits.status_ttl_s:
            return self._status
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._run_probe())
        try:
            return await asyncio.wait_for(asyncio.shield(self._probe), self.limits.probe_deadline_s)
        except TimeoutError:
            return GaiaStatus(
                False, Code.UNAVAILABLE, "Gaia catalogue: the TAP service did not answer in time"
            )

    async def _run_probe(self) -> GaiaStatus:
        assert self.catalogue is not None
        try:
            # The query a make runs, on a 1" cone: the service, the table and the VOTable.
            await self.catalogue.cone_async(
                0.0, 0.0, 1.0, mag_limit=self.limits.mag_limit, top=1, deadline_s=self.limits.query_deadline_s
            )
        except ServiceError as err:
            return self._record(GaiaStatus(False, err.code, err.message))
        return self._record(GaiaStatus(True))

    def _record(self, status: GaiaStatus) -> GaiaStatus:
        if status.available != self._status.available:
            log.warning(
                "Gaia catalogue %s: %s", "back" if status.available else "unavailable", status.message
            )
        self._status, self._status_at = status, time.monotonic()
        return status

    # ---- making it -------------------------------------------------------------------------

    async def make(self, caller: Caller, ob: ObContext, spec: GaiaImageSpec) -> None:
        """Makes and stores the image of `spec` for the OB, changing no selection (the
        catalog's Select with its key shows it for an OB). One make per key at a time on
        this gateway: a second request of the same key waits for the first. UNAVAILABLE
        when the catalogue does not answer; nothing is stored when any step fails."""
        if self.catalogue is None:
            raise ServiceError(Code.UNAVAILABLE, "no Gaia catalogue is configured (GAIA_TAP_URL)")
        running = self._making.get(spec.key)
        if running is not None:
            await asyncio.shield(running)
            return
        task = asyncio.create_task(self._make(caller, ob, spec))
        self._making[spec.key] = task
        task.add_done_callback(lambda _: self._making.pop(spec.key, None))
        await asyncio.shield(task)

    async def _make(self, caller: Caller, ob: ObContext, spec: GaiaImageSpec) -> None:
        assert self.catalogue is not None
        t0 = time.perf_counter()
        try:
            sources = await self.catalogue.cone_async(
                spec.ra_deg,
                spec.dec_deg,
                spec.cone_radius_arcsec,
                mag_limit=self.limits.mag_limit,
                top=self.limits.max_sources,
                deadline_s=self.limits.query_deadline_s,
            )
        except ServiceError as err:
            self._record(GaiaStatus(False, err.code, err.message))
            raise
        self._record(GaiaStatus(True))
        t1 = time.perf_counter()
        data = await asyncio.to_thread(gaia_image_fits, sources, spec)
        t2 = time.perf_counter()
        generated = catalog_pb2.Generated(
            owner_id=SYSTEM_OWNER, source_key=spec.key, kind=catalog_pb2.SELECTION_KIND_GAIA
        )
        async with self.uploads.slot():
            outcome = await self.uploads.upload(
                caller,
                UploadFile(chunks=_once(data), file_name=spec.label),
                UploadTarget(ob, "G", generated),
            )
        log.info(
            "Gaia image made",
            extra={
                "ob_id": ob.ob_id,
                "fits_hash": outcome.image.fits_hash,
                "sources": len(sources),
                "side_px": spec.side_px,
                "query_s": round(t1 - t0, 3),
                "draw_s": round(t2 - t1, 3),
                "store_s": round(time.perf_counter() - t2, 3),
            },
        )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
