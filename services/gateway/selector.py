"""The selector: what one OB may show behind it (the user's and shared compatible
images, the named surveys, the OB's Gaia image, the archive's images, its selection,
the caller's tombstones), and choosing one."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.archive_images import ArchiveFound, ArchiveImages, JobState, source_key
from services.gateway.arguments import Caller, ObContext, parse_selection
from services.gateway.gaia_images import GaiaImages, GaiaStatus
from services.gateway.surveys import Surveys
from services.shared.errors import Code, ServiceError
from services.shared.eso_archive import ArchiveImage
from services.shared.gaia_image import GaiaImageSpec
from services.shared.grpc_client import call


@dataclasses.dataclass(frozen=True)
class GaiaOffer:
    """The OB's Gaia image as the selector offers it: its spec (name, epoch), whether
    the catalogue answers, and the stored image when it has been made."""

    spec: GaiaImageSpec
    status: GaiaStatus
    image: catalog_pb2.Image | None


@dataclasses.dataclass(frozen=True)
class ArchiveEntry:
    """One archive image as the selector offers it: the archive's row, the stored image
    once fetched, and this gateway's fetch of it (running, or failed lately)."""

    found: ArchiveImage
    image: catalog_pb2.Image | None
    job: JobState | None


@dataclasses.dataclass(frozen=True)
class ArchiveOffer:
    found: ArchiveFound
    entries: tuple[ArchiveEntry, ...]


@dataclasses.dataclass(frozen=True)
class Offer:
    """Everything the selector shows for one OB."""

    listing: catalog_pb2.ListImagesResponse
    gaia: GaiaOffer
    archive: ArchiveOffer


class Preparing(Exception):
    """The chosen archive image is being fetched: the selection follows once it is stored."""

    def __init__(self, dp_id: str) -> None:
        super().__init__(dp_id)
        self.dp_id = dp_id


class Selector:
    """The selector's actions, over the catalog, the surveys, the Gaia and archive images."""

    def __init__(
        self,
        *,
        catalog: catalog_pb2_grpc.CatalogServiceAsyncStub,
        gaia: GaiaImages,
        archive: ArchiveImages,
        surveys: Surveys,
    ) -> None:
        self.catalog = catalog
        self.gaia = gaia
        self.archive = archive
        self.surveys = surveys

    def parse(self, selection: str) -> tuple[catalog_pb2.SelectionKind.ValueType, str]:
        """A selection in p2api's vocabulary as (kind, value), checked: a survey must be one
        of the named surveys (its name as configured), an archive image a DP id;
        INVALID_ARGUMENT otherwise."""
        kind, value = parse_selection(selection)
        if kind == catalog_pb2.SELECTION_KIND_SURVEY:
            value = self.surveys.lookup(value).name
        return kind, value

    async def list_images(self, caller: Caller, ob: ObContext, when: dt.date | None = None) -> Offer:
        """What the selector shows for one OB: own and shared compatible images, the
        OB's Gaia image and archive images (listed, stored or not), the selection, the
        caller's tombstones. The catalogue's state and the archive are asked at once,
        then the catalog once."""
        spec = self.gaia.spec(ob, when)
        status, found = await asyncio.gather(self.gaia.status(), self.archive.find(ob))
        keys = [spec.key, *(source_key(i.dp_id) for i in found.images)]
        request = catalog_pb2.ListImagesRequest(caller=caller, ob=ob, source_keys=keys)
        listing = await call(self.catalog.ListImages, request)
        stored = {i.source_key: i for i in listing.generated}
        entries = tuple(
            ArchiveEntry(i, stored.get(source_key(i.dp_id)), self.archive.job(i.dp_id)) for i in found.images
        )
        return Offer(listing, GaiaOffer(spec, status, stored.get(spec.key)), ArchiveOffer(found, entries))

    async def select(
        self, caller: Caller, ob: ObContext, selection: str, when: dt.date | None = None
    ) -> catalog_pb2.Selection:
        """Uses a background for the OB; `selection` in p2api's vocabulary. `gaia` shows
        the OB's Gaia image, made first when it is not stored; `eso_im|DPID` an archive
        image, which raises Preparing while it is fetched. The selection changes only
        once the image is stored."""
        kind, value = self.parse(selection)
        if kind == catalog_pb2.SELECTION_KIND_GAIA:
            return await self._select_gaia(caller, ob, self.gaia.spec(ob, when))
        if kind == catalog_pb2.SELECTION_KIND_ESO_IMAGE:
            chosen = await self.archive.select(caller, ob, value)
            if chosen is None:
                raise Preparing(value)
            return chosen
        return await call(
            self.catalog.Select, catalog_pb2.SelectRequest(caller=caller, ob=ob, kind=kind, value=value)
        )

    async def _select_gaia(self, caller: Caller, ob: ObContext, spec: GaiaImageSpec) -> catalog_pb2.Selection:
        request = catalog_pb2.SelectRequest(
            caller=caller, ob=ob, kind=catalog_pb2.SELECTION_KIND_GAIA, source_key=spec.key
        )
        try:
            # Access to the OB's run is checked here, before anything is made.
            return await call(self.catalog.Select, request)
        except ServiceError as err:
            if err.code != Code.NOT_FOUND:
                raise
        await self.gaia.make(caller, ob, spec)
        return await call(self.catalog.Select, request)

    async def get_selection(self, caller: Caller, ob_id: int, run_id: str = "") -> catalog_pb2.Selection:
        """The OB's current selection (display rule: access to the OB's run)."""
        return await call(
            self.catalog.GetSelection,
            catalog_pb2.GetSelectionRequest(caller=caller, ob_id=ob_id, run_id=run_id),
        )
