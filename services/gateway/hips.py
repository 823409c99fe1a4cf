"""Serving an image's HiPS to Aladin Lite: a signed, expiring token for one image,
and the HiPS files under it (no other credential: Aladin Lite appends the names)."""

from __future__ import annotations

import dataclasses
import re
import time

from services.gateway.arguments import Caller
from services.gateway.displays import Displays
from services.gateway.hips_tokens import HipsGrant, HipsTokens
from services.gateway.images import REMOVED, Images, ObjectStream
from services.shared.errors import Code, ServiceError
from services.shared.store import ObjectStore

# The HiPS files a client may ask for; nothing else under the prefix is served.
_HIPS_PATH = re.compile(
    r"^(properties|Moc\.fits|Norder3/Allsky\.(fits|png|jpg)"
    r"|Norder([0-9]|[12][0-9])/Dir[0-9]{1,9}/Npix[0-9]{1,12}\.(fits|png|jpg))$"
)
_CONTENT_TYPES = {
    "fits": "application/fits",
    "png": "image/png",
    "jpg": "image/jpeg",
    "properties": "text/plain; charset=utf-8",
}


@dataclasses.dataclass(frozen=True)
class HipsAccess:
    """What the HiPS endpoint answers: a token and when it expires."""

    token: str
    expires_at: int  # seconds since the epoch
    fits_hash: str


class Hips:
    """Tokens for, and files of, the HiPS of the images a caller may display."""

    def __init__(self, *, images: Images, tokens: HipsTokens, store: ObjectStore, displays: Displays) -> None:
        self.images = images
        self.tokens = tokens
        self.store = store
        self.displays = displays

    async def access(self, caller: Caller, fits_hash: str, ob_id: int | None = None) -> HipsAccess:
        """A signed, expiring token opening this image's HiPS only."""
        image = await self.images.authorize_display(caller, fits_hash, ob_id)
        if not image.hips_prefix:
            raise ServiceError(Code.NOT_FOUND, "this image has no HiPS")
        token, expires = self.tokens.issue(image.fits_hash, image.hips_prefix)
        self.displays.seen(image.fits_hash)
        return HipsAccess(token=token, expires_at=expires, fits_hash=image.fits_hash)

    async def file(self, fits_hash: str, token: str, path: str) -> ObjectStream:
        """One HiPS file under a token: FORBIDDEN for a bad or expired token or
        another image's, NOT_FOUND for a path outside the HiPS, GONE when the
        image was removed."""
        grant: HipsGrant = self.tokens.verify(token, fits_hash)
        if not _HIPS_PATH.match(path):
            raise ServiceError(Code.NOT_FOUND, "no such HiPS file")
        key = grant.hips_prefix + path
        info = await self.store.stat(key)
        if info is None:
            if await self.store.stat(grant.hips_prefix + "properties") is None:
                raise ServiceError(Code.GONE, REMOVED)
            raise ServiceError(Code.NOT_FOUND, "no such HiPS tile")
        self.displays.seen(grant.fits_hash)
        ext = "properties" if path == "properties" else path.rsplit(".", 1)[1]
        max_age = max(0, min(grant.expires_at - int(time.time()), 86400))
        return ObjectStream(self.store.stream(key), info.size, _CONTENT_TYPES[ext], max_age)
