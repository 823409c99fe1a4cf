"""Typed results of the client, built from the gateway's JSON."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Footprint:
    hdu: int
    corners: list[tuple[float, float]]
    pixel_scale_arcsec: float


@dataclasses.dataclass(frozen=True)
class Image:
    fits_hash: str
    file_name: str
    object_name: str
    filter: str
    owner_id: str
    owned_by_caller: bool
    file_bytes: int  # the file as uploaded
    stored_bytes: int  # everything stored for it (file, mosaic, HiPS, preview)
    hips_order: int
    footprints: list[Footprint]
    run_ids: list[str]
    created_at: str | None
    last_used_at: str | None
    reused_content: bool = False
    # What selects it: `user_bkg_image|<fits_hash>`, or `gaia` for an OB's Gaia image.
    selection: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        return cls(
            fits_hash=data["fits_hash"],
            file_name=data.get("file_name", ""),
            object_name=data.get("object_name", ""),
            filter=data.get("filter", ""),
            owner_id=data.get("owner_id", ""),
            owned_by_caller=bool(data.get("owned_by_caller", False)),
            file_bytes=int(data.get("file_bytes", 0)),
            stored_bytes=int(data.get("stored_bytes", 0)),
            hips_order=int(data.get("hips_order", 0)),
            footprints=[
                Footprint(
                    hdu=int(f["hdu"]),
                    corners=[(float(c[0]), float(c[1])) for c in f.get("corners", [])],
                    pixel_scale_arcsec=float(f.get("pixel_scale_arcsec", 0.0)),
                )
                for f in data.get("footprints", [])
            ],
            run_ids=list(data.get("run_ids", [])),
            created_at=data.get("created_at"),
            last_used_at=data.get("last_used_at"),
            reused_content=bool(data.get("reused_content", False)),
            selection=data.get("selection") or f"user_bkg_image|{data['fits_hash']}",
        )


@dataclasses.dataclass(frozen=True)
class Selection:
    """The background an OB uses, in p2api's vocabulary (`selection`); `preparing` when the
    chosen archive image is being fetched (the OB shows it once it is stored)."""

    selection: str
    kind: str  # default, gaia, survey, eso_image, user_image
    value: str
    image: Image | None
    preparing: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Selection:
        image = data.get("image")
        return cls(
            selection=data["selection"],
            kind=data.get("kind", ""),
            value=data.get("value", ""),
            image=Image.from_json(image) if image else None,
            preparing=data.get("state") == "preparing",
        )


@dataclasses.dataclass(frozen=True)
class Tombstone:
    fits_hash: str
    file_name: str
    removed_at: str | None
    reason: str  # deleted or culled

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tombstone:
        return cls(
            data["fits_hash"], data.get("file_name", ""), data.get("removed_at"), data.get("reason", "")
        )


@dataclasses.dataclass(frozen=True)
class DefaultSurvey:
    name: str
    hips_url: str


@dataclasses.dataclass(frozen=True)
class GaiaEntry:
    """The OB's Gaia image: listed before it is made (on selection, `gaia`)."""

    name: str  # "Gaia DR3 (epoch YYYY.yy)"
    epoch: float
    field_radius_arcsec: float
    available: bool  # the Gaia catalogue answers; else `code` and `message` say why
    code: str
    message: str
    image: Image | None  # once made

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GaiaEntry:
        image = data.get("image")
        return cls(
            name=data.get("name", ""),
            epoch=float(data.get("epoch", 0.0)),
            field_radius_arcsec=float(data.get("field_radius_arcsec", 0.0)),
            available=bool(data.get("available", False)),
            code=data.get("code", ""),
            message=data.get("message", ""),
            image=Image.from_json(image) if image else None,
        )


@dataclasses.dataclass(frozen=True)
class NamedSurvey:
    """A named survey (`survey|NAME`)."""

    selection: str
    name: str
    hips_url: str
    fits_tiles: bool
    band: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NamedSurvey:
        return cls(
            data["selection"],
            data.get("name", ""),
            data.get("hips_url", ""),
            bool(data.get("fits_tiles")),
            data.get("band", ""),
        )


@dataclasses.dataclass(frozen=True)
class ArchiveEntry:
    """An ESO archive image holding the OB's target: `state` is available (fetched when
    chosen), preparing, ready (`image`) or failed (`code`, `message`)."""

    selection: str  # eso_im|<DP id>
    dp_id: str
    instrument: str
    filter: str
    observed: str | None
    depth_abmag: float | None
    state: str
    code: str
    message: str
    image: Image | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchiveEntry:
        image = data.get("image")
        return cls(
            selection=data["selection"],
            dp_id=data.get("dp_id", ""),
            instrument=data.get("instrument", ""),
            filter=data.get("filter", ""),
            observed=data.get("observed"),
            depth_abmag=data.get("depth_abmag"),
            state=data.get("state", ""),
            code=data.get("code", ""),
            message=data.get("message", ""),
            image=Image.from_json(image) if image else None,
        )


@dataclasses.dataclass(frozen=True)
class Listing:
    """What the selector shows for one OB."""

    ob_id: int
    run_id: str
    default_survey: DefaultSurvey
    own: list[Image]
    shared: list[Image]
    selected: Selection
    tombstones: list[Tombstone]
    gaia: GaiaEntry | None = None
    surveys: list[NamedSurvey] = dataclasses.field(default_factory=list)
    archive: list[ArchiveEntry] = dataclasses.field(default_factory=list)
    archive_problem: str = ""  # "CODE: message" when the archive gave no answer

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Listing:
        survey = data.get("default_survey", {})
        archive = data.get("archive", {})
        return cls(
            ob_id=int(data["ob_id"]),
            run_id=data["run_id"],
            default_survey=DefaultSurvey(survey.get("name", ""), survey.get("hips_url", "")),
            own=[Image.from_json(i) for i in data.get("own", [])],
            shared=[Image.from_json(i) for i in data.get("shared", [])],
            selected=Selection.from_json(data["selected"]),
            tombstones=[Tombstone.from_json(t) for t in data.get("tombstones", [])],
            gaia=GaiaEntry.from_json(data["gaia"]) if data.get("gaia") else None,
            surveys=[NamedSurvey.from_json(s) for s in data.get("surveys", [])],
            archive=[ArchiveEntry.from_json(a) for a in archive.get("images", [])],
            archive_problem=""
            if archive.get("available", True)
            else f"{archive.get('code')}: {archive.get('message')}",
        )


@dataclasses.dataclass(frozen=True)
class HipsLink:
    fits_hash: str
    hips_url: str  # base URL: Aladin Lite appends /properties, /NorderK/...
    expires_at: int


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str
    owner_id: str
    delegate_ids: list[str]


@dataclasses.dataclass(frozen=True)
class FindingChart:
    """One rendered finding chart."""

    title: str  # what it shows: a survey, the Gaia image, a file
    kind: str  # default, gaia, custom
    jpeg: bytes

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FindingChart:
        import base64

        return cls(data.get("title", ""), data.get("kind", ""), base64.b64decode(data["jpeg_base64"]))


@dataclasses.dataclass(frozen=True)
class HeaderCheck:
    """The check before sending: the file's headers pass (a refusal raises BgImagesError
    with the upload's code). `after_upload` lists what the full check still looks at (a
    position on blank pixels, a compressed file); `checked` is False when the headers could
    not be checked first (compressed as a whole, or more than the route takes)."""

    checked: bool
    filter: str = ""
    object_name: str = ""
    after_upload: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    warnings: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeaderCheck:
        return cls(
            checked=True,
            filter=data.get("filter", ""),
            object_name=data.get("object_name", ""),
            after_upload=list(data.get("after_upload", [])),
            warnings=list(data.get("warnings", [])),
        )
