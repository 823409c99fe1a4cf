"""One user image: its record, its deletion by its owner, and what a client may
display of it (the preview and the stored FITS), under the display rule."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

from bgimages.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.gateway.arguments import Caller, check_hash
from services.shared.errors import Code, ServiceError
from services.shared.grpc_client import call
from services.shared.store import ObjectStore

REMOVED = "this image was deleted or culled; please upload it again"


@dataclasses.dataclass
class ObjectStream:
    """An object to send to a client, chunk by chunk."""

    chunks: AsyncIterator[bytes]
    size: int
    content_type: str
    # Seconds a client may cache it; 0 for no caching.
    max_age: int = 0


class Images:
    """Images over the catalog (who may see what) and the store (the bytes)."""

    def __init__(self, *, catalog: catalog_pb2_grpc.CatalogServiceAsyncStub, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store

    async def get(self, caller: Caller, fits_hash: str) -> catalog_pb2.Image:
        """One image the caller owns or may list (NOT_FOUND otherwise, GONE if removed)."""
        return await call(
            self.catalog.GetImage, catalog_pb2.GetImageRequest(caller=caller, fits_hash=check_hash(fits_hash))
        )

    async def delete(self, caller: Caller, fits_hash: str) -> catalog_pb2.Tombstone:
        """Deletes the caller's own image (the catalog removes the objects after its commit)."""
        response = await call(
            self.catalog.DeleteImage,
            catalog_pb2.DeleteImageRequest(caller=caller, fits_hash=check_hash(fits_hash)),
        )
        return response.tombstone

    async def authorize_display(
        self, caller: Caller, fits_hash: str, ob_id: int | None = None
    ) -> catalog_pb2.Image:
        """The image if the caller may display it (list rule, or the OB's selection)."""
        request = catalog_pb2.AuthorizeDisplayRequest(caller=caller, fits_hash=check_hash(fits_hash))
        if ob_id is not None:
            request.ob_id = ob_id
        return await call(self.catalog.AuthorizeDisplay, request)

    async def preview(self, caller: Caller, fits_hash: str, ob_id: int | None = None) -> ObjectStream:
        """The image's preview PNG."""
        image = await self.authorize_display(caller, fits_hash, ob_id)
        return await self._object(image.preview_key, "image/png")

    async def fits(self, caller: Caller, fits_hash: str, ob_id: int | None = None) -> ObjectStream:
        """The stored FITS (the mosaic for a MEF, else the uploaded file), streamed."""
        image = await self.authorize_display(caller, fits_hash, ob_id)
        return await self._object(image.fits_key, "application/fits")

    async def _object(self, key: str, content_type: str) -> ObjectStream:
        if not key:
            raise ServiceError(Code.NOT_FOUND, "no such object")
        info = await self.store.stat(key)
        if info is None:
            raise ServiceError(Code.GONE, REMOVED)
        return ObjectStream(self.store.stream(key), info.size, content_type)
