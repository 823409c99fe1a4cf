"""The JWT checks and HiPS path tokens, called directly (the HTTP tests repeat
the important ones over the wire)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.gateway.auth import ADMIN_SCOPE, Authenticator, make_token, require_admin
from services.gateway.hips_tokens import HipsTokens
from services.shared.errors import ServiceError
from services.shared.settings import GatewaySettings

OLD = "o" * 40
NEW = "n" * 40
ISS = "https://www.eso.org/p2"
AUD = "bgimages"


def settings(**kw: object) -> GatewaySettings:
    base: dict[str, object] = {"jwt_keys": json.dumps({"old": OLD, "new": NEW}), "dev_mode": False}
    base.update(kw)
    return GatewaySettings(**base)  # type: ignore[arg-type]


def claims(**kw: object) -> dict[str, object]:
    now = int(time.time())
    out: dict[str, object] = {"sub": "p2:52052", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 600}
    out.update(kw)
    return out


def hs(payload: dict[str, object], key: str = NEW, kid: str | None = "new", alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def refused(auth: Authenticator, token: str) -> str:
    with pytest.raises(ServiceError) as err:
        auth.authenticate({"Authorization": f"Bearer {token}"})
    assert err.value.code == "UNAUTHENTICATED"
    return err.value.message


def test_both_keys_work_during_a_rotation() -> None:
    auth = Authenticator(settings())
    assert auth.authenticate({"Authorization": f"Bearer {hs(claims(), OLD, 'old')}"}).user_id == "p2:52052"
    assert auth.authenticate({"Authorization": f"Bearer {hs(claims(), NEW, 'new')}"}).user_id == "p2:52052"


def test_a_key_under_the_wrong_kid_or_an_unknown_kid_is_refused() -> None:
    auth = Authenticator(settings())
    assert "signature" in refused(auth, hs(claims(), OLD, "new"))
    assert "kid" in refused(auth, hs(claims(), NEW, "retired"))
    assert "kid" in refused(auth, hs(claims(), NEW, None))  # two keys: the kid must say which


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (claims(exp=int(time.time()) - 120), "expired"),
        (claims(aud="another-service"), "audience"),
        (claims(iss="https://evil.example"), "issuer"),
        ({k: v for k, v in claims().items() if k != "exp"}, "exp"),
        ({k: v for k, v in claims().items() if k != "aud"}, "aud"),
        ({k: v for k, v in claims().items() if k != "iss"}, "iss"),
        ({k: v for k, v in claims().items() if k != "sub"}, "sub"),
    ],
)
def test_claims_are_required_and_checked(payload: dict[str, object], words: str) -> None:
    assert words in refused(Authenticator(settings()), hs(payload))


def test_alg_none_and_algorithm_confusion_are_refused() -> None:
    auth = Authenticator(settings())
    header = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "new"}).encode()).rstrip(b"=").decode()
    )
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    assert "algorithm" in refused(auth, f"{header}.{body}.")
    # An RS256 deployment must not accept an HS256 token "signed" with its public key.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rs = Authenticator(settings(jwt_algorithm="RS256", jwt_keys=json.dumps({"k1": pem.decode()})))
    good = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k1"})
    assert rs.authenticate({"Authorization": f"Bearer {good}"}).user_id == "p2:52052"
    forged = hs(claims(), "x" * 40, "k1")  # PyJWT refuses PEM as an HMAC secret; any HS256 must fail
    assert "algorithm" in refused(rs, forged)


def test_malformed_headers_are_refused() -> None:
    auth = Authenticator(settings())
    for value in ["", "Basic dXNlcjpwdw==", "Bearer", "Bearer not.a.jwt"]:
        with pytest.raises(ServiceError) as err:
            auth.authenticate({"Authorization": value} if value else {})
        assert err.value.code == "UNAUTHENTICATED"


def test_x_user_only_in_dev_mode() -> None:
    with pytest.raises(ServiceError):
        Authenticator(settings()).authenticate({"X-User": "p2:1"})
    assert Authenticator(settings(dev_mode=True)).authenticate({"X-User": "p2:1"}).user_id == "p2:1"


def test_no_default_key_outside_development() -> None:
    with pytest.raises(ValueError, match="JWT_KEYS"):
        Authenticator(settings(jwt_keys=""))
    with pytest.raises(ValueError, match="at least 32"):
        Authenticator(settings(jwt_keys=json.dumps({"k": "short"})))
    dev = Authenticator(settings(jwt_keys="", dev_mode=True))
    token = make_token(settings(jwt_keys="", dev_mode=True), "p2:7")
    assert dev.authenticate({"Authorization": f"Bearer {token}"}).user_id == "p2:7"


def test_admin_scope() -> None:
    auth = Authenticator(settings())
    plain = auth.authenticate({"Authorization": f"Bearer {hs(claims(scope='openid'))}"})
    with pytest.raises(ServiceError) as err:
        require_admin(plain)
    assert err.value.code == "FORBIDDEN"
    admin = auth.authenticate({"Authorization": f"Bearer {hs(claims(scope=f'openid {ADMIN_SCOPE}'))}"})
    require_admin(admin)
    listed = auth.authenticate({"Authorization": f"Bearer {hs(claims(scp=[ADMIN_SCOPE]))}"})
    require_admin(listed)


H1 = "a" * 64
H2 = "b" * 64


def test_hips_token_opens_one_image_until_it_expires() -> None:
    tokens = HipsTokens(b"k" * 32, ttl_s=60)
    token, expires = tokens.issue(H1, f"content/{H1}/g1/hips/", now=1000)
    assert expires == 1060
    grant = tokens.verify(token, H1, now=1059)
    assert grant.hips_prefix == f"content/{H1}/g1/hips/"
    for now, fits_hash, words in [(1060, H1, "expired"), (1000, H2, "another image")]:
        with pytest.raises(ServiceError) as err:
            tokens.verify(token, fits_hash, now=now)
        assert err.value.code == "FORBIDDEN" and words in err.value.message


def test_hips_token_tampering_is_refused() -> None:
    tokens = HipsTokens(b"k" * 32, ttl_s=60)
    token, _ = tokens.issue(H1, f"content/{H1}/g1/hips/", now=1000)
    payload, mac = token.split(".")
    claims_ = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims_["p"] = f"content/{H2}/g1/hips/"
    forged = base64.urlsafe_b64encode(json.dumps(claims_).encode()).rstrip(b"=").decode()
    other_key, _ = HipsTokens(b"z" * 32, ttl_s=60).issue(H1, f"content/{H1}/g1/hips/", now=1000)
    for bad in [f"{forged}.{mac}", f"{payload}.{mac[:-2]}AA", f"{payload}.", "garbage", other_key]:
        with pytest.raises(ServiceError) as err:
            tokens.verify(bad, H1, now=1001)
        assert err.value.code == "FORBIDDEN"
