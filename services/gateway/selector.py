"""The selector: what one OB may show behind it (the user's and shared compatible
images, the OB's Gaia image, its selection, the caller's tombstones), and choosing one."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.arguments import Caller, ObContext, parse_selection
from services.gateway.gaia_images import GaiaImages, GaiaStatus
from services.shared.errors import Code, ServiceError
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
class Offer:
    """Everything the selector shows for one OB."""

    listing: catalog_pb2.ListImagesResponse
    gaia: GaiaOffer


class Selector:
    """The selector's actions, over the catalog and the Gaia images."""

    def __init__(self, *, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, gaia: GaiaImages) -> None:
        self.catalog = catalog
        self.gaia = gaia

    async def list_images(self, caller: Caller, ob: ObContext, when: dt.date | None = None) -> Offer:
        """What the selector shows for one OB: own and shared compatible images, the
        OB's Gaia image (listed, made or not), the selection, the caller's tombstones.
        The catalog and the Gaia catalogue's state are asked at once."""
        spec = self.gaia.spec(ob, when)
        request = catalog_pb2.ListImagesRequest(caller=caller, ob=ob, source_keys=[spec.key])
        listing, status = await asyncio.gather(call(self.catalog.ListImages, request), self.gaia.status())
        made = next((i for i in listing.generated if i.source_key == spec.key), None)
        return Offer(listing, GaiaOffer(spec, status, made))

    async def select(
        self, caller: Caller, ob: ObContext, selection: str, when: dt.date | None = None
    ) -> catalog_pb2.Selection:
        """Uses a background for the OB; `selection` in p2api's vocabulary. `gaia` shows
        the OB's Gaia image, made first when it is not stored (the selection changes
        only once it is)."""
        kind, value = parse_selection(selection)
        if kind == catalog_pb2.SELECTION_KIND_GAIA:
            return await self._select_gaia(caller, ob, self.gaia.spec(ob, when))
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
