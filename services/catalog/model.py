"""The catalog's domain values: who asks, about which OB, and what it answers."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import re

from services.shared.errors import Code, ServiceError

_HASH = re.compile(r"^[0-9a-f]{64}$")


class SelectionKind(enum.IntEnum):
    """What an OB shows behind it (numbers of catalog.v1.SelectionKind)."""

    DEFAULT = 1
    GAIA = 2
    SURVEY = 3
    ESO_IMAGE = 4
    USER_IMAGE = 5


class RemovalReason(enum.IntEnum):
    DELETED = 1
    CULLED = 2


@dataclasses.dataclass(frozen=True)
class Caller:
    """A user, and the runs p2 said they have access to (None: those SetRun stored)."""

    user_id: str
    runs: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.user_id or len(self.user_id) > 200:
            raise ServiceError(Code.INVALID_ARGUMENT, "caller.user_id is required")
        for run in self.runs or ():
            check_run_id(run)

    @property
    def run_list(self) -> list[str] | None:
        return None if self.runs is None else list(self.runs)

    @property
    def instance(self) -> str:
        """The p2 instance the caller comes from: the namespace of their user id."""
        return instance_of(self.user_id)


@dataclasses.dataclass(frozen=True)
class SkyPoint:
    ra: float
    dec: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ra) and math.isfinite(self.dec)):
            raise ServiceError(Code.INVALID_ARGUMENT, "coordinates must be finite numbers")
        if not -90.0 <= self.dec <= 90.0:
            raise ServiceError(Code.INVALID_ARGUMENT, f"Dec {self.dec} is outside [-90, 90]")
        if not 0.0 <= self.ra <= 360.0:
            raise ServiceError(Code.INVALID_ARGUMENT, f"RA {self.ra} is outside [0, 360)")


@dataclasses.dataclass(frozen=True)
class ObRef:
    """An OB as a request names it: its id, its run, and (when needed) where it points."""

    ob_id: int
    run_id: str
    target: SkyPoint | None = None
    boa_star: SkyPoint | None = None

    def __post_init__(self) -> None:
        if self.ob_id <= 0:
            raise ServiceError(Code.INVALID_ARGUMENT, "ob.ob_id must be a positive integer")
        check_run_id(self.run_id)

    def require_target(self) -> SkyPoint:
        if self.target is None:
            raise ServiceError(Code.INVALID_ARGUMENT, "ob.target is required")
        return self.target


SYSTEM_OWNER_PREFIX = "system:"
GENERATED_KINDS = (SelectionKind.GAIA, SelectionKind.ESO_IMAGE)


@dataclasses.dataclass(frozen=True)
class Generated:
    """A system-owned image the suite makes or fetches (a Gaia image, an archive image), not
    a user's upload: owned by `owner_id` ("system:gaia"), one per `source_key`, shown as a
    selection of `kind` and `value` (an archive image's DP id)."""

    owner_id: str
    source_key: str
    kind: SelectionKind
    value: str = ""

    def __post_init__(self) -> None:
        source = self.owner_id.removeprefix(SYSTEM_OWNER_PREFIX)
        if source == self.owner_id or not re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", source):
            raise ServiceError(Code.INVALID_ARGUMENT, "generated.owner_id must be system:<source>")
        if not 0 < len(self.source_key) <= 1024 or not self.source_key.isprintable():
            raise ServiceError(Code.INVALID_ARGUMENT, "generated.source_key must be printable text")
        if self.kind not in GENERATED_KINDS:
            raise ServiceError(Code.INVALID_ARGUMENT, "generated.kind must be gaia or eso_image")
        if (self.kind == SelectionKind.GAIA) == bool(self.value) or len(self.value) > 200:
            raise ServiceError(Code.INVALID_ARGUMENT, "generated.value: empty for gaia, the DP id else")


def instance_of(identifier: str) -> str:
    """The p2 instance an id is namespaced by: the text before its first ':'
    ("p2" for "p2:52052"), empty when there is none. OBs are keyed by
    (instance, ob_id): a caller only ever names OBs of their own instance."""
    head, sep, _ = identifier.partition(":")
    return head if sep else ""


def check_run_id(run_id: str) -> str:
    if not run_id or len(run_id) > 200:
        raise ServiceError(Code.INVALID_ARGUMENT, "run_id is required")
    return run_id


def check_hash(fits_hash: str) -> str:
    """A fits_hash: the SHA-256 of the uploaded bytes, 64 hex digits (lowercased)."""
    value = fits_hash.lower()
    if not _HASH.match(value):
        raise ServiceError(Code.INVALID_ARGUMENT, "fits_hash must be 64 hexadecimal digits (SHA-256)")
    return value


@dataclasses.dataclass(frozen=True)
class FootprintIn:
    """One displayable HDU's footprint as the validator reported it."""

    hdu: int
    corners: tuple[SkyPoint, ...]
    pixel_scale_arcsec: float


@dataclasses.dataclass(frozen=True)
class FootprintOut:
    hdu: int
    corners: tuple[tuple[float, float], ...]
    pixel_scale_arcsec: float


@dataclasses.dataclass(frozen=True)
class ImageView:
    """An image as a caller sees it."""

    image_id: int
    fits_hash: str
    owner_id: str
    file_name: str
    filter: str
    object_name: str
    file_bytes: int  # the file as uploaded
    stored_bytes: int  # everything stored for its content
    footprints: tuple[FootprintOut, ...]
    hips_order: int
    cut_low: float
    cut_high: float
    created_at: dt.datetime
    last_used_at: dt.datetime
    run_ids: tuple[str, ...]
    fits_key: str
    preview_key: str
    hips_prefix: str
    owned_by_caller: bool
    content_id: int = 0
    source_key: str = ""  # what a system-owned image is made from; empty for uploads


@dataclasses.dataclass(frozen=True)
class SelectionView:
    kind: SelectionKind
    value: str = ""
    image: ImageView | None = None


DEFAULT_SELECTION = SelectionView(SelectionKind.DEFAULT)


@dataclasses.dataclass(frozen=True)
class TombstoneView:
    fits_hash: str
    owner_id: str
    file_name: str
    removed_at: dt.datetime
    reason: RemovalReason


@dataclasses.dataclass(frozen=True)
class Listing:
    own: list[ImageView]
    shared: list[ImageView]
    selected: SelectionView
    tombstones: list[TombstoneView]
    generated: list[ImageView] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class UsageView:
    used_bytes: int
    capacity_bytes: int
    high_water_bytes: int
    low_water_bytes: int
    image_count: int
    content_count: int
    culled_images: int = 0
