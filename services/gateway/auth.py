"""Who is calling the native API: a JWT bearer token, checked here.

One algorithm per deployment (HS256 or RS256); `iss`, `aud`, `exp` and `sub`
are required; the key is chosen by the token's `kid` so that the old and the
new key both work during a rotation. There is no default key outside local
development (DEV_MODE). Run and delegation updates need scope
`bgimages:admin` (in `scope`, space-separated, or `scp`, a list). The
`X-User` header names the user directly only in DEV_MODE.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Mapping

import jwt

from bgimages.catalog.v1 import catalog_pb2
from services.shared.errors import Code, ServiceError
from services.shared.settings import GatewaySettings

ADMIN_SCOPE = "bgimages:admin"
DEV_KID = "dev"
# Only for local development (DEV_MODE with JWT_KEYS empty).
DEV_SECRET = "bgimages-development-jwt-secret-not-for-production"
_ALGORITHMS = ("HS256", "RS256")
# NumericDate claims (RFC 7519): JSON numbers. PyJWT also takes "1767225600" (a string).
_NUMERIC_CLAIMS = ("exp", "iat", "nbf")


@dataclasses.dataclass(frozen=True)
class Principal:
    user_id: str
    scopes: frozenset[str]

    @property
    def caller(self) -> catalog_pb2.Caller:
        return catalog_pb2.Caller(user_id=self.user_id)

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def _unauthenticated(message: str) -> ServiceError:
    return ServiceError(Code.UNAUTHENTICATED, message)


class Authenticator:
    """Checks bearer tokens against the configured keys."""

    def __init__(self, settings: GatewaySettings) -> None:
        if settings.jwt_algorithm not in _ALGORITHMS:
            raise ValueError(f"JWT_ALGORITHM must be one of {_ALGORITHMS}")
        self.algorithm = settings.jwt_algorithm
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.dev_mode = settings.dev_mode
        raw = settings.jwt_keys.get_secret_value()
        keys: dict[str, str] = json.loads(raw) if raw else {}
        if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
            raise ValueError("JWT_KEYS must be a JSON object mapping kid to key")
        if not keys:
            if not settings.dev_mode:
                raise ValueError("JWT_KEYS must be set (no default key outside DEV_MODE)")
            if self.algorithm != "HS256":
                raise ValueError("the development key is HS256; set JWT_KEYS for RS256")
            keys = {DEV_KID: DEV_SECRET}
        self._keys: dict[str, object] = {}
        for kid, material in keys.items():
            if self.algorithm == "RS256":
                from cryptography.hazmat.primitives.serialization import load_pem_public_key

                self._keys[kid] = load_pem_public_key(material.encode())
            else:
                if len(material) < 32:
                    raise ValueError(f"JWT key {kid!r}: an HS256 secret needs at least 32 characters")
                self._keys[kid] = material.encode()

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The principal a request's headers prove; UNAUTHENTICATED otherwise."""
        auth = headers.get("Authorization", "")
        if not auth:
            user = headers.get("X-User", "")
            if self.dev_mode and user:
                if len(user) > 200 or not user.isprintable():
                    raise _unauthenticated("malformed X-User")
                return Principal(user, frozenset())
            raise _unauthenticated("a bearer token is required")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthenticated("the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("malformed token") from None
        if header.get("alg") != self.algorithm:
            raise _unauthenticated(f"token algorithm must be {self.algorithm}")
        kid = header.get("kid")
        if kid is None and len(self._keys) == 1:
            kid = next(iter(self._keys))
        key = self._keys.get(str(kid))
        if key is None:
            raise _unauthenticated("unknown signing key (kid)")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _unauthenticated("malformed token") from None
        _check_numeric_dates(unverified)
        try:
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("the token has another issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError:
            raise _unauthenticated("invalid token signature") from None
        _check_numeric_dates(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 200 or not sub.isprintable():
            raise _unauthenticated("the token's sub must name the user")
        return Principal(sub, frozenset(_scopes(claims)))


def _check_numeric_dates(claims: Mapping[str, object]) -> None:
    """exp, iat and nbf, when present, are finite JSON numbers (not strings, not booleans)."""
    for name in _NUMERIC_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _unauthenticated(f"the token's {name!r} claim must be a number (seconds since the epoch)")


def _scopes(claims: Mapping[str, object]) -> Iterable[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        yield from scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        yield from (s for s in scp if isinstance(s, str))


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ServiceError(Code.FORBIDDEN, f"this needs the scope {ADMIN_SCOPE}")


def make_token(
    settings: GatewaySettings,
    sub: str,
    *,
    scopes: Iterable[str] = (),
    ttl_s: int = 12 * 3600,
    kid: str | None = None,
    key: str | None = None,
) -> str:
    """An HS256 token the gateway accepts (development and tests): the first
    JWT_KEYS key unless `kid`/`key` are given, else the development key."""
    raw = settings.jwt_keys.get_secret_value()
    keys: dict[str, str] = json.loads(raw) if raw else {DEV_KID: DEV_SECRET}
    if kid is None:
        kid = next(iter(keys))
    secret = key if key is not None else keys[kid]
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + ttl_s,
    }
    scope = " ".join(scopes)
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid})
