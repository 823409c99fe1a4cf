"""Signed, expiring path tokens that open one image's HiPS.

Aladin Lite appends `/properties`, `/NorderK/DirD/NpixN.png` to a HiPS base
URL, so the credential lives in the path: `<payload>.<mac>`, both base64url.
The payload names the image (fits_hash), where its HiPS is stored, and the
expiry; the MAC is HMAC-SHA256 with a key of its own (HIPS_SIGNING_KEY),
shared by every gateway replica, so any replica verifies any token without a
catalog call per tile.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time

from services.shared.errors import Code, ServiceError
from services.shared.settings import GatewaySettings

# Only for local development (DEV_MODE): a fixed key, so restarts keep links valid.
DEV_SIGNING_KEY = "bgimages-development-hips-key-not-for-production"


@dataclasses.dataclass(frozen=True)
class HipsGrant:
    fits_hash: str
    hips_prefix: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HipsTokens:
    """Issues and verifies HiPS path tokens."""

    def __init__(self, key: bytes, ttl_s: int) -> None:
        if len(key) < 16:
            raise ValueError("the HiPS signing key must have at least 16 bytes")
        self._key = key
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> HipsTokens:
        key = settings.hips_signing_key.get_secret_value()
        if not key:
            if not settings.dev_mode:
                raise ValueError("HIPS_SIGNING_KEY must be set (DEV_MODE off)")
            key = DEV_SIGNING_KEY
        return cls(key.encode(), settings.hips_token_ttl_s)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, b"hips-v1." + payload.encode(), hashlib.sha256).digest())

    def issue(self, fits_hash: str, hips_prefix: str, now: float | None = None) -> tuple[str, int]:
        """A token for this image's HiPS, and when it expires (epoch seconds)."""
        expires = int(now if now is not None else time.time()) + self.ttl_s
        payload = _b64(
            json.dumps({"h": fits_hash, "p": hips_prefix, "e": expires}, separators=(",", ":")).encode()
        )
        return f"{payload}.{self._mac(payload)}", expires

    def verify(self, token: str, fits_hash: str, now: float | None = None) -> HipsGrant:
        """The grant a token carries; FORBIDDEN when it is forged, expired or another image's."""
        payload, _, mac = token.partition(".")
        if not payload or not mac or not hmac.compare_digest(mac, self._mac(payload)):
            raise ServiceError(Code.FORBIDDEN, "invalid HiPS token")
        try:
            claims = json.loads(_unb64(payload))
            grant = HipsGrant(str(claims["h"]), str(claims["p"]), int(claims["e"]))
        except (ValueError, KeyError, TypeError):
            raise ServiceError(Code.FORBIDDEN, "invalid HiPS token") from None
        if grant.expires_at <= int(now if now is not None else time.time()):
            raise ServiceError(Code.FORBIDDEN, "the HiPS token has expired; ask for a new one")
        if not hmac.compare_digest(grant.fits_hash, fits_hash):
            raise ServiceError(Code.FORBIDDEN, "this HiPS token is for another image")
        return grant
