"""Token signing keys: generation, rotation, the public JWK Set and a cache of verification keys."""
from __future__ import annotations

import json
import secrets
import threading
import time

from flask import current_app
from joserfc.jwk import RSAKey
from sqlalchemy import select, update

from smart.store.db import get_session
from smart.store.models import SigningKey, now

#: Longest lifetime of anything signed with our keys (access tokens, id_tokens), seconds.
#: A retired key keeps verifying this long after retirement (issue 4, key rotation).
MAX_SIGNED_LIFETIME = 3600

#: Seconds a loaded set of verification keys is trusted before it is re-read.
CACHE_SECONDS = 60.0

#: Minimum seconds between re-reads triggered by an unknown ``kid``.
UNKNOWN_KID_BACKOFF = 1.0

ALG = "RS256"
#: JWK members of an RSA public key (RFC 7518 Section 6.3.1) and its identifier (RFC 7517 Section 4.5).
PUBLIC_MEMBERS = ("kty", "n", "e", "kid")


class KeyCache:
    """Per-app cache of public keys by ``kid`` (thread-safe, refreshed by time or unknown kid)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.public: dict[str, RSAKey] = {}
        self.private: dict[str, RSAKey] = {}
        self.loaded_at = 0.0

    def clear(self) -> None:
        with self.lock:
            self.public = {}
            self.loaded_at = 0.0


def _cache() -> KeyCache:
    return current_app.extensions.setdefault("smart_keys", KeyCache())


def generate_key() -> SigningKey:
    """Create, store and return a new 2048-bit RSA signing key with a random ``kid``.

    The caller commits (or :func:`rotate_key` / :func:`current_signing_key` do).
    """
    kid = secrets.token_urlsafe(12)
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALG}, private=True)
    row = SigningKey(kid=kid, private_jwk=json.dumps(key.as_dict(private=True)), alg=ALG, created_at=now())
    get_session().add(row)
    return row


def _private_key(row: SigningKey) -> RSAKey:
    cache = _cache()
    key = cache.private.get(row.kid)
    if key is None:
        key = RSAKey.import_key(json.loads(row.private_jwk))
        cache.private[row.kid] = key
    return key


def current_signing_key() -> RSAKey:
    """Return the newest active private key, creating one if the table has none.

    Returns
    -------
    joserfc.jwk.RSAKey
        Private key whose ``kid`` goes in the JWS header (RFC 7515 §4.1.4).
    """
    session = get_session()
    row = session.scalars(
        select(SigningKey).where(SigningKey.retired_at.is_(None)).order_by(SigningKey.created_at.desc()).limit(1)
    ).first()
    if row is None:
        row = generate_key()
        session.commit()
        _cache().clear()
    return _private_key(row)


def rotate_key() -> str:
    """Retire every active key and make a new one current.

    Tokens signed with a retired key keep verifying until they expire
    (:data:`MAX_SIGNED_LIFETIME` after retirement); the retired key stays in the JWKS
    for that long.

    Returns
    -------
    str
        The new key's ``kid``.
    """
    session = get_session()
    session.execute(update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=now()))
    row = generate_key()
    session.commit()
    _cache().clear()
    return row.kid


def _load_public_keys() -> dict[str, RSAKey]:
    cutoff = now() - MAX_SIGNED_LIFETIME
    rows = get_session().scalars(
        select(SigningKey).where((SigningKey.retired_at.is_(None)) | (SigningKey.retired_at > cutoff))
    )
    found = {}
    for row in rows:
        # The public members only (RFC 7518 Section 6.3.1): importing the private key would
        # have it validated, which costs a worker milliseconds on its first request.
        jwk = json.loads(row.private_jwk)
        found[row.kid] = RSAKey.import_key({name: jwk[name] for name in PUBLIC_MEMBERS if name in jwk})
    return found


def verification_keys(kid: str | None = None) -> dict[str, RSAKey]:
    """Return the public keys that may verify a token, by ``kid``.

    Parameters
    ----------
    kid : str, optional
        The ``kid`` about to be looked up; if it is missing from the cache the set is
        re-read (at most once per :data:`UNKNOWN_KID_BACKOFF` seconds), so a key made
        by another worker is found without waiting for the cache to age out.
    """
    cache = _cache()
    age = time.monotonic() - cache.loaded_at
    stale = age > CACHE_SECONDS or (kid is not None and kid not in cache.public and age > UNKNOWN_KID_BACKOFF)
    if stale:
        with cache.lock:
            cache.public = _load_public_keys()
            cache.loaded_at = time.monotonic()
    return cache.public


def public_jwks() -> dict:
    """JWK Set (RFC 7517 §5) of every key that may still verify a token, private parts removed."""
    keys = []
    for key in verification_keys().values():
        data = key.as_dict(private=False)
        data.setdefault("use", "sig")
        data.setdefault("alg", ALG)
        keys.append(data)
    return {"keys": keys}
