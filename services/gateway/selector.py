"""The selector: what one OB may show behind it (the user's and shared compatible
images, the named surveys, its selection, the caller's tombstones), and choosing one."""

from __future__ import annotations

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.arguments import Caller, ObContext, parse_selection
from services.gateway.surveys import Surveys
from services.shared.grpc_client import call


class Selector:
    """The selector's actions, over the catalog."""

    def __init__(self, *, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, surveys: Surveys) -> None:
        self.catalog = catalog
        self.surveys = surveys

    def parse(self, selection: str) -> tuple[catalog_pb2.SelectionKind.ValueType, str]:
        """A selection in p2api's vocabulary as (kind, value), checked: a survey must be one
        of the named surveys (its name as configured); INVALID_ARGUMENT otherwise."""
        kind, value = parse_selection(selection)
        if kind == catalog_pb2.SELECTION_KIND_SURVEY:
            value = self.surveys.lookup(value).name
        return kind, value

    async def list_images(self, caller: Caller, ob: ObContext) -> catalog_pb2.ListImagesResponse:
        """What the selector shows for one OB: own and shared compatible images,
        the selection, and the caller's tombstones."""
        return await call(self.catalog.ListImages, catalog_pb2.ListImagesRequest(caller=caller, ob=ob))

    async def select(self, caller: Caller, ob: ObContext, selection: str) -> catalog_pb2.Selection:
        """Uses a background for the OB; `selection` in p2api's vocabulary."""
        kind, value = self.parse(selection)
        return await call(
            self.catalog.Select, catalog_pb2.SelectRequest(caller=caller, ob=ob, kind=kind, value=value)
        )

    async def get_selection(self, caller: Caller, ob_id: int, run_id: str = "") -> catalog_pb2.Selection:
        """The OB's current selection (display rule: access to the OB's run)."""
        return await call(
            self.catalog.GetSelection,
            catalog_pb2.GetSelectionRequest(caller=caller, ob_id=ob_id, run_id=run_id),
        )
