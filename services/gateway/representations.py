"""The JSON bodies of both faces (native API and p2api), as pydantic models, and their
builders from catalog messages. The OpenAPI document is generated from these models.

Store keys and internal ids stay inside; clients get links instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from aiohttp import web
from google.protobuf import timestamp_pb2
from pydantic import BaseModel, ConfigDict, Field, RootModel, WithJsonSchema

from bgimages.catalog.v1 import catalog_pb2
from bgimages.common.v1 import common_pb2
from bgimages.validator.v1 import validator_pb2
from services.gateway.arguments import format_selection
from services.gateway.hips import HipsAccess
from services.gateway.openapi import error_codes
from services.gateway.selector import ArchiveOffer, GaiaOffer, Offer
from services.gateway.surveys import Survey, Surveys
from services.gateway.uploads import UploadOutcome, after_upload_json
from services.shared.errors import Code

API = "/api/v1"

FitsHash = Annotated[str, Field(pattern="^[0-9a-f]{64}$", description="SHA-256 of the uploaded bytes")]
# The error codes, one list (`error_codes`) for the problem's `code` and the findings'.
ErrorCode = Annotated[str, WithJsonSchema({"type": "string", "enum": error_codes()})]
Kind = Literal["default", "gaia", "survey", "eso_image", "user_image"]
Time = dt.datetime | None  # UTC, whole seconds; null when unset


def _never_null(schema: dict[str, Any]) -> None:
    branches = [s for s in schema.pop("anyOf", []) if s != {"type": "null"}]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    schema.pop("default", None)


def _is_none(value: object) -> bool:
    return value is None


def absent(description: str = "") -> Any:
    """A key that is left out of the JSON when it has no value (never sent as null)."""
    return Field(default=None, exclude_if=_is_none, json_schema_extra=_never_null, description=description)


class Body(BaseModel):
    """A JSON body the gateway sends: the declared keys and no others."""

    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True)


# ---- the native API ---------------------------------------------------------------------------


class Footprint(Body):
    hdu: int
    corners: list[tuple[float, float]] = Field(description="[ra, dec] degrees of each corner")
    pixel_scale_arcsec: float


class ImageLinks(Body):
    self_: str = Field(alias="self")
    preview: str
    fits: str
    hips: str


class Image(Body):
    fits_hash: FitsHash
    selection: str = Field(
        description="what selects it: user_bkg_image|<fits_hash>; gaia or eso_im|<DP id> (system-owned)"
    )
    file_name: str = Field(description="as the user gave it (user text)")
    object_name: str = Field(description="FITS OBJECT (user text)")
    filter: str
    owner_id: str
    owned_by_caller: bool
    file_bytes: int = Field(description="the file as uploaded (0: not recorded)")
    stored_bytes: int = Field(description="everything stored for it: the file, mosaic, HiPS and preview")
    hips_order: int
    pixel_cut: tuple[float, float]
    footprints: list[Footprint]
    run_ids: list[str]
    created_at: Time
    last_used_at: Time
    links: ImageLinks


class UploadedImage(Image):
    reused_content: bool = Field(description="the bytes were stored already")


class NamedSurvey(Body):
    """A named survey the selector offers (`survey|NAME`), displayed from its own HiPS."""

    selection: str = Field(description="survey|NAME")
    name: str
    hips_url: str = Field(description="HiPS base URL (a path on the gateway for a local survey)")
    fits_tiles: bool = Field(description="the HiPS has FITS tiles (pixel values), not only pictures")
    band: str = Field(description="filter or wavelength band ('' when not told)")
    selected: bool


class Selection(Body):
    selection: str = Field(
        description="default, gaia, survey|NAME, eso_im|DPID or user_bkg_image|<fits_hash>"
    )
    kind: Kind
    value: str
    image: Image | None
    survey: NamedSurvey | None = absent("the named survey of a survey|NAME selection (when configured)")


class PreparingSelection(Body):
    """A chosen archive image being fetched: the OB's selection changes once it is stored."""

    selection: str = Field(description="eso_im|<DP id>")
    kind: Literal["eso_image"]
    value: str = Field(description="the DP id")
    state: Literal["preparing"]
    message: str


class Tombstone(Body):
    fits_hash: FitsHash
    file_name: str
    removed_at: Time
    reason: Literal["deleted", "culled", "unspecified"]


class DefaultSurvey(Body):
    selection: Literal["default"]
    name: str
    hips_url: str


class GaiaEntry(Body):
    """The OB's Gaia image: listed before it is made (on selection), with its epoch."""

    selection: Literal["gaia"]
    name: str = Field(description='"Gaia DR3 (epoch YYYY.yy)"')
    epoch: float = Field(description="Julian year the positions are carried to (0.01 yr)")
    field_radius_arcsec: float = Field(description="the field it covers around the target")
    available: bool = Field(description="the Gaia catalogue answers (false: code and message say why)")
    code: ErrorCode | None = absent("why it is unavailable")
    message: str | None = absent("why it is unavailable")
    image: Image | None = Field(description="the stored image, once made; null until then")


class ArchiveImage(Body):
    """One ESO archive image that holds the OB's target (and BOA star), released."""

    selection: str = Field(description="eso_im|<DP id>")
    dp_id: str
    instrument: str
    filter: str
    observed: Time = Field(description="start of the exposure (ObsCore t_min)")
    depth_abmag: float | None = Field(description="limiting AB magnitude (ESO's abmaglim), when known")
    state: Literal["available", "preparing", "ready", "failed"] = Field(
        description="available: not fetched yet (choosing it fetches it); preparing: being fetched; "
        "ready: stored (image); failed: the last fetch failed (code, message; choose it to retry)"
    )
    code: ErrorCode | None = absent("why the last fetch failed")
    message: str | None = absent("why the last fetch failed")
    image: Image | None = Field(description="the stored image, once fetched")


class ArchiveSection(Body):
    """The OB's ESO archive images, most useful first (the OB instrument's band, then depth,
    then date)."""

    available: bool = Field(description="the archive answered (false: code and message say why)")
    code: ErrorCode | None = absent("why the archive gave no answer")
    message: str | None = absent("why the archive gave no answer")
    images: list[ArchiveImage]


class Listing(Body):
    ob_id: int
    run_id: str
    default_survey: DefaultSurvey
    surveys: list[NamedSurvey]
    own: list[Image]
    shared: list[Image]
    gaia: GaiaEntry
    archive: ArchiveSection
    selected: Selection
    tombstones: list[Tombstone]


class HipsUrl(Body):
    fits_hash: FitsHash
    hips_url: str = Field(description="base URL; append /properties, /NorderK/DirD/NpixN.png")
    expires_at: int = Field(description="seconds since the epoch")


class Run(Body):
    run_id: str
    owner_id: str
    delegate_ids: list[str]


class Health(Body):
    status: Literal["ok"]


class Readiness(Body):
    status: Literal["ready", "degraded"]
    checks: dict[str, bool]
    store_writable: bool
    warnings: list[str] | None = absent("why the gateway is degraded")


# ---- requests ---------------------------------------------------------------------------------

# Numbers in requests: JSON numbers or decimal text in ASCII digits.
Number = float | Annotated[str, Field(pattern=r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?$")]


class ObFields(BaseModel):
    run_id: str = Field(description="the OB's run (namespaced, e.g. p2:60.A-9252(A))")
    target_ra: Number = Field(description="target right ascension, degrees [0, 360)")
    target_dec: Number = Field(description="target declination, degrees [-90, 90]")
    boa_ra: Number | None = Field(None, description="BOA reference star right ascension, degrees")
    boa_dec: Number | None = Field(None, description="BOA reference star declination, degrees")
    instrument: str | None = Field(None, description="the instrument of the OB's run (sizes the Gaia image)")


class SelectRequest(ObFields):
    selection: str = Field(
        description="default, gaia, survey|NAME, eso_im|DPID or user_bkg_image|<fits_hash>"
    )
    obs_date: str | None = Field(None, description="observation date YYYY-MM-DD for gaia (default: today)")


class ChartsRequest(ObFields):
    """An OB's finding charts: its context, what the charts say, how they are displayed
    (p2api generateFindingChart's names: `c_` for the custom chart)."""

    mode: str | None = Field(None, description="the instrument mode (the table's), default its first")
    position_angle: Number | None = Field(None, description="sky position angle, degrees E of N")
    prog_id: str = Field("", description="the run's programme ID, e.g. 60.A-9252(A)")
    pi_name: str = ""
    ob_name: str = ""
    target_name: str = ""
    guide_ra: Number | None = Field(None, description="a guide star, degrees")
    guide_dec: Number | None = None
    obs_date: str | None = Field(None, description="YYYY-MM-DD: the Gaia image's epoch (default today)")
    image: str | None = Field(
        None,
        description="the custom chart's image: user_bkg_image|<hash>, eso_im|DPID or survey|NAME"
        " (default: the OB's selection when it is one of those)",
    )
    stretch: str | None = None
    exponent: Number | None = None
    pmin: Number | None = None
    pmax: Number | None = None
    c_stretch: str | None = None
    c_exponent: Number | None = None
    c_pmin: Number | None = None
    c_pmax: Number | None = None
    GAIA_im_IQ: Number | None = Field(None, description="Gaia image PSF FWHM, arcsec (default 1)")
    GAIA_im_noise: Number | None = Field(None, description="Gaia image noise / brightest pixel (1e-6)")


class ChartJson(Body):
    title: str = Field(description="what the chart shows: a survey, the Gaia image, a file")
    kind: Literal["default", "gaia", "custom"]
    media_type: Literal["image/jpeg"]
    bytes: int
    jpeg_base64: str


class Charts(Body):
    charts: list[ChartJson]
    warnings: list[str]


class UploadForm(ObFields):
    """The multipart form; the OB fields may come as query parameters instead."""

    file: bytes = Field(json_schema_extra={"contentMediaType": "application/fits"})
    bandpass: str | None = Field(None, description="filter for files that name none (p2api's bkg_lam)")


class LayoutEntry(BaseModel):
    offset: int = Field(description="where the HDU's header starts in the file (bytes)")
    header_bytes: int = Field(description="its header blocks' length, through the END card's block")
    data_bytes: int = Field(description="the data its header declares, without padding (skipped)")


class HeadersCheckForm(ObFields):
    """The check before sending: the file's size, its headers and where they are in it."""

    file_size: int = Field(description="the whole file's size (bytes)")
    layout: str = Field(
        description="JSON list of LayoutEntry {offset, header_bytes, data_bytes}, one per HDU in file "
        "order (and, when bytes follow the last HDU, one for their first block with data_bytes 0)"
    )
    headers: bytes = Field(
        description="the header blocks of every HDU, in layout order",
        json_schema_extra={"contentMediaType": "application/octet-stream"},
    )
    bandpass: str | None = Field(None, description="filter for files that name none")


class RunRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    owner_id: str
    delegate_ids: list[str] = []


# ---- errors -----------------------------------------------------------------------------------


class Finding(Body):
    code: ErrorCode
    hdu: int | None = absent()
    message: str


class AfterUpload(Body):
    """A check the headers alone cannot answer: made on the uploaded file."""

    codes: list[ErrorCode] = Field(description="the codes it may refuse the file with")
    hdu: int | None = absent()
    message: str


class HduChecked(Body):
    index: int
    extname: str
    shape: list[int] = Field(description="NAXISn, NAXIS1 first")
    displayable: bool
    skip_reason: str | None
    contains_target: bool | None
    contains_boa: bool | None


class HeadersChecked(Body):
    """The headers pass: what the upload will find of them."""

    ok: bool
    filter: str
    filter_source: str
    object_name: str
    hdus: list[HduChecked]
    warnings: list[Finding]
    after_upload: list[AfterUpload]


class ErrorDetails(BaseModel):
    """The details an error may carry beside its message (others may follow)."""

    model_config = ConfigDict(extra="allow")

    errors: list[Finding] | None = absent("a refused file: one finding per failed check")
    after_upload: list[AfterUpload] | None = absent(
        "the check before sending: what the full check would still look at"
    )
    limit: int | None = absent("TOO_LARGE: the limit in bytes")
    part: str | None = absent(
        "TOO_LARGE of a check before sending: 'headers' when the headers are over the route's limit "
        "(upload the file: it is checked in full then)"
    )
    retry_after_s: float | None = absent("TOO_MANY_UPLOADS, BUSY: seconds to wait (also Retry-After)")


class Problem(ErrorDetails):
    """RFC 9457 problem details with a stable code."""

    type: str = Field(json_schema_extra={"format": "uri"})
    title: str
    status: int
    detail: str
    code: ErrorCode


class NotReady(Problem):
    checks: dict[str, bool]
    store_writable: bool
    warnings: list[str] | None = absent()


class P2fcError(ErrorDetails):
    """An error of the p2api face: p2api raises P2Error with `error`."""

    error: str
    code: ErrorCode
    status: int


# ---- the p2api face ---------------------------------------------------------------------------


class P2fcImage(Body):
    """One user image as the p2api client reads it (it needs `fits_hash`)."""

    fits_hash: FitsHash
    value: str = Field(description="user_bkg_image|<fits_hash>")
    file_name: str
    object_name: str
    filter: str
    owned_by_you: bool
    owner_id: str
    selected: bool
    file_bytes: int = Field(description="the file as uploaded (0: not recorded)")
    stored_bytes: int = Field(description="everything stored for it: the file, mosaic, HiPS and preview")
    created_at: Time
    last_used_at: Time


class P2fcSource(Body):
    """An entry of <ob_image_list> that is no user image: the default survey, a named survey
    (and further sources). `value` is what bkg_image_set_ob_info takes to select it."""

    fits_hash: None = Field(description="always null: not a user image")
    value: str = Field(description="the selection: default, survey|NAME, ...")
    name: str
    kind: Kind
    selected: bool
    available: bool = Field(description="false while the source cannot be shown (see code and message)")
    code: ErrorCode | None = absent("why it is unavailable")
    message: str | None = absent("why it is unavailable, for people")


class ImageList(RootModel[dict[str, P2fcImage | P2fcSource]]):
    """<ob_image_list>: the compatible user images, keyed by image name, first; then the
    other sources (fits_hash null), keyed by their selection value."""


class P2fcCharts(Body):
    """generateFindingChart's answer: the charts this service attached, the OB's charts now."""

    ob_id: int
    charts: list[str] = Field(description="the names of the charts this service attached (p2fc_...)")
    finding_charts: list[str] = Field(description="every chart of the OB in p2, in index order")
    warnings: list[str]


class Position(Body):
    ra_deg: float
    dec_deg: float


class ObInfo(Body):
    """<ob_info>: the OB's background in p2api's vocabulary (`bkg_image`), the OB as p2 gave it."""

    ob_id: int
    run_id: str
    target: Position
    boa_star: Position | None
    bkg_image: str
    kind: Kind
    value: str
    warnings: list[str]


class UserImageObInfo(ObInfo):
    """<ob_info> of an OB showing a user image."""

    fits_hash: FitsHash
    image: P2fcImage | None
    hips_url: str | None = absent("HiPS base URL with a token (absent when it cannot be displayed)")
    hips_expires_at: int | None = absent("seconds since the epoch")


class ShownObInfo(ObInfo):
    """<ob_info> of an OB showing its Gaia image or an archive image, once it is stored."""

    fits_hash: FitsHash
    name: str = Field(description='"Gaia DR3 (epoch YYYY.yy)", or the archive file\'s name')
    hips_url: str | None = absent("HiPS base URL with a token (absent when it cannot be displayed)")
    hips_expires_at: int | None = absent("seconds since the epoch")


class UploadedObInfo(UserImageObInfo):
    reused_content: bool = Field(description="the bytes were stored already")


# ---- builders ---------------------------------------------------------------------------------


def json_response(body: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(body.model_dump(mode="json"), status=status)


def time_of(ts: timestamp_pb2.Timestamp) -> dt.datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC)


def image_links(fits_hash: str) -> ImageLinks:
    base = f"{API}/images/{fits_hash}"
    return ImageLinks.model_validate(
        {"self": base, "preview": f"{base}/preview.png", "fits": f"{base}/fits", "hips": f"{base}/hips"}
    )


def _image_fields(image: catalog_pb2.Image) -> dict[str, Any]:
    return {
        "fits_hash": image.fits_hash,
        "selection": selection_of(image),
        "file_name": image.file_name,
        "object_name": image.object_name,
        "filter": image.filter,
        "owner_id": image.owner_id,
        "owned_by_caller": image.owned_by_caller,
        "file_bytes": image.file_bytes,
        "stored_bytes": image.stored_bytes,
        "hips_order": image.hips_order,
        "pixel_cut": (image.cut_low, image.cut_high),
        "footprints": [
            Footprint(
                hdu=f.hdu,
                corners=[(c.ra_deg, c.dec_deg) for c in f.corners],
                pixel_scale_arcsec=f.pixel_scale_arcsec,
            )
            for f in image.footprints
        ],
        "run_ids": list(image.run_ids),
        "created_at": time_of(image.created_at),
        "last_used_at": time_of(image.last_used_at),
        "links": image_links(image.fits_hash),
    }


def selection_of(image: catalog_pb2.Image) -> str:
    """What selects an image: a system-owned one by its source (an archive image's key is
    its selection; anything else system-owned is a Gaia image), a user's by its hash."""
    if image.source_key.startswith("eso_im|"):
        return image.source_key
    return "gaia" if image.source_key else f"user_bkg_image|{image.fits_hash}"


def image_json(image: catalog_pb2.Image) -> Image:
    return Image(**_image_fields(image))


def kind_of(selection: catalog_pb2.Selection) -> Kind:
    kind = catalog_pb2.SelectionKind.Name(selection.kind).removeprefix("SELECTION_KIND_").lower()
    return "default" if kind == "unspecified" else kind  # type: ignore[return-value]


def survey_json(survey: Survey, selected: bool) -> NamedSurvey:
    return NamedSurvey(
        selection=survey.selection,
        name=survey.name,
        hips_url=survey.hips_url,
        fits_tiles=survey.fits_tiles,
        band=survey.band,
        selected=selected,
    )


def selected_survey(selection: catalog_pb2.Selection, surveys: Surveys) -> Survey | None:
    """The named survey a selection shows (None: not a survey, or one no longer configured)."""
    if selection.kind != catalog_pb2.SELECTION_KIND_SURVEY:
        return None
    return surveys.get(selection.value)


def selection_json(selection: catalog_pb2.Selection, surveys: Surveys | None = None) -> Selection:
    survey = selected_survey(selection, surveys) if surveys is not None else None
    return Selection(
        selection=format_selection(selection),
        kind=kind_of(selection),
        value=selection.value,
        image=image_json(selection.image) if selection.HasField("image") else None,
        survey=survey_json(survey, True) if survey is not None else None,
    )


PREPARING = (
    "being fetched from the ESO archive, checked and processed; the OB shows it once it is stored "
    "(the listing's archive entry says preparing until then)"
)


def preparing_json(dp_id: str) -> PreparingSelection:
    return PreparingSelection(
        selection=f"eso_im|{dp_id}", kind="eso_image", value=dp_id, state="preparing", message=PREPARING
    )


def tombstone_json(tombstone: catalog_pb2.Tombstone) -> Tombstone:
    reason = catalog_pb2.RemovalReason.Name(tombstone.reason).removeprefix("REMOVAL_REASON_").lower()
    return Tombstone(
        fits_hash=tombstone.fits_hash,
        file_name=tombstone.file_name,
        removed_at=time_of(tombstone.removed_at),
        reason=reason,  # type: ignore[arg-type]
    )


def gaia_json(gaia: GaiaOffer) -> GaiaEntry:
    status = gaia.status
    return GaiaEntry(
        selection="gaia",
        name=gaia.spec.label,
        epoch=gaia.spec.epoch,
        field_radius_arcsec=gaia.spec.radius_arcsec,
        available=status.available,
        code=None if status.available else status.code,
        message=None if status.available else status.message,
        image=image_json(gaia.image) if gaia.image is not None else None,
    )


def archive_json(offer: ArchiveOffer) -> ArchiveSection:
    images = []
    for entry in offer.entries:
        row, job = entry.found, entry.job
        state = "ready" if entry.image is not None else "available"
        if entry.image is None and job is not None:
            state = "preparing" if job.preparing else "failed"
        failed = state == "failed" and job is not None
        images.append(
            ArchiveImage(
                selection=row.selection,
                dp_id=row.dp_id,
                instrument=row.instrument,
                filter=row.filter,
                observed=row.observed.replace(microsecond=0) if row.observed else None,
                depth_abmag=row.depth_abmag,
                state=state,  # type: ignore[arg-type]
                code=job.code if failed and job else None,
                message=job.message if failed and job else None,
                image=image_json(entry.image) if entry.image is not None else None,
            )
        )
    found = offer.found
    return ArchiveSection(
        available=found.available,
        code=None if found.available else found.code,
        message=None if found.available else found.message,
        images=images,
    )


def listing_json(
    ob_id: int,
    run_id: str,
    offer: Offer,
    default_survey: DefaultSurvey,
    surveys: Surveys,
) -> Listing:
    listing = offer.listing
    chosen = selected_survey(listing.selected, surveys)
    return Listing(
        ob_id=ob_id,
        run_id=run_id,
        default_survey=default_survey,
        surveys=[survey_json(s, s == chosen) for s in surveys.all],
        own=[image_json(i) for i in listing.own],
        shared=[image_json(i) for i in listing.shared],
        gaia=gaia_json(offer.gaia),
        archive=archive_json(offer.archive),
        selected=selection_json(listing.selected, surveys),
        tombstones=[tombstone_json(t) for t in listing.tombstones],
    )


def upload_json(outcome: UploadOutcome) -> UploadedImage:
    return UploadedImage(**_image_fields(outcome.image), reused_content=outcome.reused_content)


def header_check_json(report: validator_pb2.ValidationReport) -> HeadersChecked:
    return HeadersChecked(
        ok=report.ok,
        filter=report.filter,
        filter_source=report.filter_source,
        object_name=report.object_name,
        hdus=[
            HduChecked(
                index=h.index,
                extname=h.extname,
                shape=list(h.shape),
                displayable=h.displayable,
                skip_reason=h.skip_reason or None,
                contains_target=h.contains_target if h.HasField("contains_target") else None,
                contains_boa=h.contains_boa if h.HasField("contains_boa") else None,
            )
            for h in report.hdus
        ],
        warnings=[
            Finding.model_validate(
                {"code": common_pb2.ErrorCode.Name(w.code), "message": w.message}
                | ({"hdu": w.hdu} if w.HasField("hdu") else {})
            )
            for w in report.warnings
        ],
        after_upload=[AfterUpload.model_validate(a) for a in after_upload_json(report)],
    )


def hips_json(access: HipsAccess, base_url: str) -> HipsUrl:
    return HipsUrl(
        fits_hash=access.fits_hash,
        hips_url=f"{base_url}{API}/images/{access.fits_hash}/hips/{access.token}",
        expires_at=access.expires_at,
    )


def run_json(run: catalog_pb2.Run) -> Run:
    return Run(run_id=run.run_id, owner_id=run.owner_id, delegate_ids=list(run.delegate_ids))


def p2fc_image(image: catalog_pb2.Image, selected_hash: str = "") -> P2fcImage:
    return P2fcImage(
        fits_hash=image.fits_hash,
        value=f"user_bkg_image|{image.fits_hash}",
        file_name=image.file_name,
        object_name=image.object_name,
        filter=image.filter,
        owned_by_you=image.owned_by_caller,
        owner_id=image.owner_id,
        selected=image.fits_hash == selected_hash,
        file_bytes=image.file_bytes,
        stored_bytes=image.stored_bytes,
        created_at=time_of(image.created_at),
        last_used_at=time_of(image.last_used_at),
    )


def survey_sources(
    listing: catalog_pb2.ListImagesResponse, default_name: str, surveys: Surveys
) -> list[P2fcSource]:
    """The default survey and the named surveys as entries of <ob_image_list>."""
    selected = format_selection(listing.selected)
    entries: list[tuple[str, str, Kind]] = [("default", default_name, "default")]
    entries += [(s.selection, s.name, "survey") for s in surveys.all]
    return [
        P2fcSource(
            fits_hash=None, value=value, name=name, kind=kind, selected=value == selected, available=True
        )
        for value, name, kind in entries
    ]


def gaia_source(gaia: GaiaOffer, selected: catalog_pb2.Selection) -> P2fcSource:
    """The OB's Gaia image as an entry of <ob_image_list> (fits_hash null, made or not)."""
    status = gaia.status
    return P2fcSource(
        fits_hash=None,
        value="gaia",
        name=gaia.spec.label,
        kind="gaia",
        selected=selected.kind == catalog_pb2.SELECTION_KIND_GAIA,
        available=status.available,
        code=None if status.available else status.code,
        message=None if status.available else status.message,
    )


def archive_sources(archive: ArchiveOffer, selected: catalog_pb2.Selection) -> list[P2fcSource]:
    """The OB's archive images as entries of <ob_image_list>; one being fetched or whose
    fetch failed is not available, with the code and message of its state."""
    chosen = format_selection(selected)
    out = []
    for entry in archive_json(archive).images:
        preparing = entry.state == "preparing"
        out.append(
            P2fcSource(
                fits_hash=None,
                value=entry.selection,
                name=f"{entry.dp_id} ({entry.instrument}, {entry.filter or 'no filter'})",
                kind="eso_image",
                selected=entry.selection == chosen,
                available=entry.state in ("available", "ready"),
                code=Code.UNAVAILABLE if preparing else entry.code,
                message="being fetched from the ESO archive" if preparing else entry.message,
            )
        )
    return out


def image_list(listing: catalog_pb2.ListImagesResponse, sources: Sequence[P2fcSource] = ()) -> ImageList:
    """The compatible user images, keyed by image name, then `sources` keyed by their value
    (p2api's documented use takes the first key's fits_hash: the images come first). A name
    two images share gets the start of each one's fits_hash in its key, so no entry hides another."""
    images = list(listing.own) + list(listing.shared)
    selected = (
        listing.selected.value if listing.selected.kind == catalog_pb2.SELECTION_KIND_USER_IMAGE else ""
    )
    names = [image.file_name or image.fits_hash[:12] for image in images]
    out: dict[str, P2fcImage | P2fcSource] = {}
    for image, name in zip(images, names, strict=True):
        key = name if names.count(name) == 1 else f"{name} [{image.fits_hash[:12]}]"
        if key in out:  # same name and the same 12 hex digits: take the whole hash
            key = f"{name} [{image.fits_hash}]"
        out[key] = p2fc_image(image, selected)
    for source in sources:
        key = source.value if source.value not in out else f"{source.value} [{source.kind}]"
        out[key] = source
    return ImageList(out)


def charts_json(chart_set: Any) -> Charts:
    import base64

    return Charts(
        charts=[
            ChartJson(
                title=c.title,
                kind=c.kind,
                media_type="image/jpeg",
                bytes=len(c.jpeg),
                jpeg_base64=base64.b64encode(c.jpeg).decode("ascii"),
            )
            for c in chart_set.charts
        ],
        warnings=list(chart_set.warnings),
    )
