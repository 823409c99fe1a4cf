"""An OB's finding charts (DESIGN.md, "Finding charts"): which charts, from what, rendered
by the processor.

The set: the default chart survey (a survey with FITS tiles: CHART_SURVEY_OPTICAL for
optical instruments, CHART_SURVEY_INFRARED for infrared ones, by the instrument's
wavelengths) and the OB's Gaia image (made first when it is not stored; no selection
changes), and a third, custom chart when there is a custom image: the one the request
names (`user_bkg_image|<hash>`, `eso_im|DPID`, `survey|NAME`), else the OB's selection
when it is one of those. A user image wins over a survey. The default charts take the
request's display parameters, the custom one its `c_` ones (as p2api's
`generateFindingChart`). Rendering the whole set is one processor call; nothing is kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from bgimages.processor.v1 import processor_pb2, processor_pb2_grpc
from services.gateway.archive_images import source_key as archive_key
from services.gateway.arguments import (
    Caller,
    ObContext,
    decimal_number,
    observation_date,
    parse_selection,
    sky_position,
)
from services.gateway.gaia_images import GaiaImages
from services.gateway.images import Images
from services.gateway.surveys import Survey, Surveys
from services.shared import instruments
from services.shared.errors import Code, ServiceError
from services.shared.grpc_client import call

INFRARED_FROM_NM = 800.0  # an instrument whose range starts here or redder is infrared
MOSAIC = "mosaic.fits"


@dataclasses.dataclass(frozen=True)
class ChartParams:
    """What a chart says of the OB beyond its context, and how it is displayed."""

    prog_id: str = ""
    pi_name: str = ""
    ob_name: str = ""
    target_name: str = ""
    mode: str = ""
    position_angle_deg: float = 0.0
    guide_star: tuple[float, float] | None = None
    obs_date: dt.date | None = None
    custom: str = ""  # a selection string; empty: the OB's selection when it is a custom image
    display: processor_pb2.ChartDisplay = dataclasses.field(default_factory=processor_pb2.ChartDisplay)
    custom_display: processor_pb2.ChartDisplay = dataclasses.field(default_factory=processor_pb2.ChartDisplay)
    gaia_iq_arcsec: float | None = None
    gaia_noise: float | None = None
    # Without `custom`, the OB's selection makes the custom chart (p2api's call: never).
    selection_as_custom: bool = True


@dataclasses.dataclass(frozen=True)
class Chart:
    title: str
    kind: str  # default, gaia, custom
    jpeg: bytes


@dataclasses.dataclass(frozen=True)
class ChartSet:
    charts: list[Chart]
    warnings: list[str]


def _hdu_of(image: catalog_pb2.Image) -> int:
    """The stored FITS's HDU to draw: the mosaic's only one, else the first displayable."""
    if image.fits_key.endswith(MOSAIC) or not image.footprints:
        return 0
    return image.footprints[0].hdu


class FindingCharts:
    """Renders an OB's set of charts."""

    def __init__(
        self,
        *,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        processor: processor_pb2_grpc.ProcessorServiceAsyncStub,
        images: Images,
        gaia: GaiaImages,
        surveys: Surveys,
        optical_survey: str,
        infrared_survey: str,
    ) -> None:
        self.catalog = catalog
        self.processor = processor
        self.images = images
        self.gaia = gaia
        self.surveys = surveys
        self.optical_survey = optical_survey
        self.infrared_survey = infrared_survey

    def default_survey(self, instrument: str) -> Survey:
        """The chart survey for the instrument's wavelengths (FITS tiles)."""
        band = instruments.wavelengths_nm(instrument) if instrument else None
        name = self.infrared_survey if band and band[0] >= INFRARED_FROM_NM else self.optical_survey
        survey = self.surveys.get(name)
        if survey is None or not survey.fits_tiles:
            raise ServiceError(
                Code.UNAVAILABLE, f"the chart survey {name!r} is not a configured survey with FITS tiles"
            )
        return survey

    async def render(self, caller: Caller, ob: ObContext, params: ChartParams) -> ChartSet:
        warnings: list[str] = []
        spec = self.gaia.spec(ob, params.obs_date, params.gaia_iq_arcsec, params.gaia_noise)
        request = catalog_pb2.ListImagesRequest(caller=caller, ob=ob, source_keys=[spec.key])
        listing = await call(self.catalog.ListImages, request)  # access to the OB's run
        survey = self.default_survey(ob.instrument)
        sources = [
            processor_pb2.ChartSource(
                title=survey.name, band=survey.band, hips=survey.location, display=params.display
            )
        ]
        gaia = next(iter(listing.generated), None)
        if gaia is None:
            await self.gaia.make(caller, ob, spec)
            listing = await call(self.catalog.ListImages, request)
            gaia = next(iter(listing.generated), None)
        if gaia is None:
            raise ServiceError(Code.UNAVAILABLE, "the Gaia image could not be stored; try again")
        sources.append(
            processor_pb2.ChartSource(
                title=spec.label, band="Gaia G", fits_key=gaia.fits_key, hdu=0, display=params.display
            )
        )
        kinds = ["default", "gaia"]
        custom = await self._custom(caller, ob, params, listing.selected, warnings)
        if custom is not None:
            sources.append(custom)
            kinds.append("custom")
        chart_ob = processor_pb2.ChartOb(
            prog_id=params.prog_id,
            pi_name=params.pi_name,
            ob_name=params.ob_name,
            target_name=params.target_name,
            target=ob.target,
            instrument=ob.instrument,
            mode=params.mode,
            position_angle_deg=params.position_angle_deg,
        )
        if ob.HasField("boa_star"):
            chart_ob.boa_star.CopyFrom(ob.boa_star)
        if params.guide_star is not None:
            chart_ob.guide_star.ra_deg, chart_ob.guide_star.dec_deg = params.guide_star
        rendered = await call(
            self.processor.RenderCharts, processor_pb2.RenderChartsRequest(ob=chart_ob, sources=sources)
        )
        charts = [Chart(c.title, kind, c.jpeg) for c, kind in zip(rendered.charts, kinds, strict=True)]
        return ChartSet(charts, warnings)

    async def _custom(
        self,
        caller: Caller,
        ob: ObContext,
        params: ChartParams,
        selected: catalog_pb2.Selection,
        warnings: list[str],
    ) -> processor_pb2.ChartSource | None:
        """The custom chart's source: the named image or survey, else the OB's selection."""
        if params.custom:
            kind, value = parse_selection(params.custom)
        elif params.selection_as_custom:
            kind, value = selected.kind, selected.value
        else:
            return None
        if kind == catalog_pb2.SELECTION_KIND_USER_IMAGE:
            image = await self.images.authorize_display(caller, value, ob.ob_id)
        elif kind == catalog_pb2.SELECTION_KIND_ESO_IMAGE:
            request = catalog_pb2.ListImagesRequest(caller=caller, ob=ob, source_keys=[archive_key(value)])
            stored = list((await call(self.catalog.ListImages, request)).generated)
            if not stored:
                warnings.append(f"eso_im|{value} is not stored yet (choose it first): no custom chart")
                return None
            image = stored[0]
        elif kind == catalog_pb2.SELECTION_KIND_SURVEY:
            survey = self.surveys.lookup(value)
            if not survey.fits_tiles:
                warnings.append(f"survey {survey.name} has no FITS tiles: no custom chart")
                return None
            return processor_pb2.ChartSource(
                title=survey.name, band=survey.band, hips=survey.location, display=params.custom_display
            )
        else:
            return None
        return processor_pb2.ChartSource(
            title=image.file_name,
            band=image.filter,
            fits_key=image.fits_key,
            hdu=_hdu_of(image),
            display=params.custom_display,
        )


# ---- what a request says -----------------------------------------------------------------------


def _text(body: Mapping[str, Any], key: str, limit: int = 200) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ServiceError(Code.INVALID_ARGUMENT, f"{key} must be text of at most {limit} characters")
    return value


def _number_or_none(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    return None if value is None or value == "" else decimal_number(value, key)


def _chart_display(body: Mapping[str, Any], prefix: str = "") -> processor_pb2.ChartDisplay:
    display = processor_pb2.ChartDisplay(stretch=_text(body, f"{prefix}stretch", 20))
    for name in ("exponent", "pmin", "pmax"):
        number = _number_or_none(body, f"{prefix}{name}")
        if number is not None:
            setattr(display, name, number)
    return display


def chart_params(body: Mapping[str, Any], *, selection_as_custom: bool = True) -> ChartParams:
    """What a finding-chart request says beyond the OB context."""
    guide = None
    if body.get("guide_ra") not in (None, "") or body.get("guide_dec") not in (None, ""):
        position = sky_position("guide", body.get("guide_ra"), body.get("guide_dec"))
        guide = (position.ra_deg, position.dec_deg)
    return ChartParams(
        prog_id=_text(body, "prog_id"),
        pi_name=_text(body, "pi_name"),
        ob_name=_text(body, "ob_name"),
        target_name=_text(body, "target_name"),
        mode=_text(body, "mode", 40),
        position_angle_deg=_number_or_none(body, "position_angle") or 0.0,
        guide_star=guide,
        obs_date=observation_date(body.get("obs_date")),
        custom=_text(body, "image", 300),
        display=_chart_display(body),
        custom_display=_chart_display(body, "c_"),
        gaia_iq_arcsec=_number_or_none(body, "GAIA_im_IQ"),
        gaia_noise=_number_or_none(body, "GAIA_im_noise"),
        selection_as_custom=selection_as_custom,
    )
