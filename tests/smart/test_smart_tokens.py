"""Access token verification: decode_access_token, tampering, expiry, revocation, key rotation, speed."""
from __future__ import annotations

import base64
import json
import time

import pytest

from facade_helpers import FHIR_BASE, PUBLIC_URL


@pytest.fixture
def issue(app):
    """Issue an access token inside an app context: issue(**overrides) -> (token, claims)."""
    from smart.tokens import jwt as tokens

    def _issue(scope="patient/ImagingStudy.rs", patient="p1", **kwargs):
        with app.app_context():
            return tokens.issue_access_token("app", "alice", scope, context={"patient": patient}, **kwargs)

    return _issue


def decode(app, token):
    from smart.tokens.jwt import decode_access_token

    with app.app_context():
        return decode_access_token(token)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_decode_returns_claims(app, issue):
    token, claims = issue(fhir_user="Patient/p1")
    decoded = decode(app, token)
    assert decoded == claims
    assert decoded["iss"] == PUBLIC_URL
    assert decoded["aud"] == FHIR_BASE
    assert decoded["patient"] == "p1"
    assert decoded["scope"] == "patient/ImagingStudy.rs"
    assert decoded["fhirUser"] == "Patient/p1"
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["kid"]


def test_tampered_payload(app, issue):
    from smart.tokens.jwt import InvalidToken

    token, claims = issue()
    header, _, signature = token.split(".")
    forged = ".".join([header, _b64(dict(claims, patient="someone-else")), signature])
    with pytest.raises(InvalidToken, match="signature"):
        decode(app, forged)


@pytest.mark.parametrize("garbage", [
    "", "abc", "a.b.c", "a.b", "..", "x" * 5000, "eyJhbGciOiJub25lIn0.e30.",
    _b64({"alg": "none"}) + "." + _b64({"sub": "x"}) + ".",
    _b64({"alg": "HS256", "kid": "k"}) + "." + _b64({"sub": "x"}) + ".sig",
    _b64({"alg": "RS256", "kid": "unknown"}) + "." + _b64({"sub": "x"}) + ".sig",
])
def test_garbage_tokens(app, garbage):
    from smart.tokens.jwt import InvalidToken

    with pytest.raises(InvalidToken) as info:
        decode(app, garbage)
    assert info.value.description


def test_expired(app, issue):
    from smart.tokens.jwt import InvalidToken

    token, _ = issue(lifetime=-1)
    with pytest.raises(InvalidToken, match="expired"):
        decode(app, token)


def test_expires_while_cached(app, issue, monkeypatch):
    from smart.tokens.jwt import InvalidToken

    token, claims = issue()
    decode(app, token)
    monkeypatch.setattr(time, "time", lambda: claims["exp"] + 1)
    with pytest.raises(InvalidToken, match="expired"):
        decode(app, token)


def test_wrong_issuer_or_audience(app, issue, tmp_path):
    from app import create_app
    from smart.tokens.jwt import InvalidToken

    token, _ = issue()
    # Same database (same keys), other public URL: iss and aud no longer match.
    other = create_app({"TESTING": True, "FACADE_DATABASE_URL": app.config["FACADE_DATABASE_URL"],
                        "FACADE_PUBLIC_URL": "https://other.example"})
    with other.app_context(), pytest.raises(InvalidToken, match="issuer"):
        from smart.tokens.jwt import decode_access_token

        decode_access_token(token)


def test_revoked(app, issue):
    from smart.tokens.jwt import InvalidToken, revoke_jti

    token, claims = issue()
    decode(app, token)
    with app.app_context():
        revoke_jti(claims["jti"], claims["exp"])
    with pytest.raises(InvalidToken, match="revoked"):
        decode(app, token)


def test_rotation_keeps_old_tokens_valid(app, issue, client):
    from smart.tokens import keys

    old_token, _ = issue()
    with app.app_context():
        old_kid = keys.current_signing_key().kid
        new_kid = keys.rotate_key()
    assert new_kid != old_kid
    new_token, _ = issue()
    assert decode(app, old_token)["sub"] == "alice"
    assert decode(app, new_token)["sub"] == "alice"
    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]}
    assert kids == {old_kid, new_kid}


def test_key_expires_after_retirement(app, issue, monkeypatch):
    from smart.tokens import keys
    from smart.tokens.jwt import InvalidToken

    token, _ = issue(lifetime=7200)  # longer than allowed, to outlive the key
    with app.app_context():
        keys.rotate_key()
    later = time.time() + keys.MAX_SIGNED_LIFETIME + 5
    monkeypatch.setattr(time, "time", lambda: later)
    with app.app_context():
        app.extensions["smart_keys"].clear()
        with pytest.raises(InvalidToken, match="unknown key"):
            from smart.tokens.jwt import decode_access_token

            decode_access_token(token)


def test_jwks_has_no_private_parts(client, app):
    body = client.get("/.well-known/jwks.json").get_json()
    assert body["keys"]
    for key in body["keys"]:
        assert key["kty"] == "RSA" and key["kid"] and key["alg"] == "RS256"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_decode_is_fast_when_warm(app, issue):
    from smart.tokens.jwt import decode_access_token

    token, _ = issue()
    with app.app_context():
        decode_access_token(token)
        n = 2000
        start = time.perf_counter()
        for _ in range(n):
            decode_access_token(token)
        per_call = (time.perf_counter() - start) / n
    assert per_call < 0.0005, f"{per_call * 1e3:.3f} ms per call"
