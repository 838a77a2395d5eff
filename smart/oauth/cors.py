"""CORS for the authorization server: discovery from anywhere, token endpoints from registered origins."""
from __future__ import annotations

import threading
import time

from flask import current_app, request
from sqlalchemy import select

from smart.store.db import DATABASE_ERRORS, get_session, unavailable
from smart.store.models import Client

#: Seconds the set of registered origins is reused before it is re-read.
ORIGINS_CACHE_SECONDS = 30.0

#: Endpoints readable from any origin (public metadata, no credentials).
PUBLIC_ENDPOINTS = {"smart.smart_configuration", "smart.openid_configuration", "smart.jwks", "smart.smart_style"}
#: Endpoints readable only from an origin of a registered client's redirect URI.
CLIENT_ENDPOINTS = {"smart.token", "smart.introspect", "smart.revoke", "smart.create_launch", "smart.userinfo"}

ALLOW_HEADERS = "Authorization, Content-Type, Accept"


class _OriginCache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.origins: frozenset[str] = frozenset()
        self.loaded_at = float("-inf")


def registered_origins() -> frozenset[str]:
    """Origins (``scheme://host[:port]``, lower case) of every registered http(s) redirect URI."""
    cache = current_app.extensions.setdefault("smart_origins", _OriginCache())
    if time.monotonic() - cache.loaded_at > ORIGINS_CACHE_SECONDS:
        with cache.lock:
            found: set[str] = set()
            try:
                for client in get_session().scalars(select(Client)):
                    found |= client.origins
            except DATABASE_ERRORS as exc:
                # Read by after_request hooks, where an exception would be a bare 500: during an
                # outage keep the origins last read (none before the first read) and retry later.
                unavailable(exc)
                return cache.origins
            cache.origins = frozenset(found)
            cache.loaded_at = time.monotonic()
    return cache.origins


def forget_origins() -> None:
    """Drop the cached origins (after a client is registered)."""
    cache = current_app.extensions.get("smart_origins")
    if cache is not None:
        cache.loaded_at = float("-inf")


def is_allowed_origin(origin: str | None) -> bool:
    """True if *origin* belongs to a registered client (for token, FHIR and DICOMweb CORS)."""
    return bool(origin) and origin.lower() in registered_origins()


def add_cors_headers(response):
    """``after_request`` hook of the SMART blueprint (Fetch standard §3.2 CORS protocol).

    Error answers get the headers too, so a browser app can read the OAuth error.
    """
    origin = request.headers.get("Origin")
    endpoint = request.endpoint
    if not origin or endpoint is None:
        return response
    if endpoint in PUBLIC_ENDPOINTS:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif endpoint in CLIENT_ENDPOINTS and is_allowed_origin(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.vary.add("Origin")
    else:
        return response
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    return response

