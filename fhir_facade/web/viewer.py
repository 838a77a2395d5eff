"""The bundled web viewer at ``/viewer/``: OHIF's prebuilt files and its generated configuration.

The files come unmodified from the npm package ``@ohif/app`` (pinned in ``viewer/package.json``,
installed by ``scripts/bootstrap.sh``). That dist is built for the site root (webpack's public
path and ``window.PUBLIC_URL`` are ``/``), so the few files that name the root are served with
the viewer's base path written in (:func:`rebase`), from a cache folder; everything else is sent
as it is. ``app-config.js`` is generated from ``FACADE_PUBLIC_URL`` (:func:`app_config`): the
facade's ``/dicomweb`` is the data source and the facade's OpenID Connect issuer signs the user in,
with the registered public client ``FACADE_VIEWER_CLIENT_ID``.

Caching: content-hashed files (``*.bundle.<hash>.js``, ``<hash>.wasm``) are immutable for a year;
the HTML and the configuration are never stored; other files are revalidated. Every answer
carries the viewer's own Content-Security-Policy (:func:`content_security_policy`), which allows
what OHIF needs (workers, WebAssembly, ``blob:`` URLs, inline styles) on ``/viewer/`` only.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, send_file
from werkzeug.exceptions import NotFound, ServiceUnavailable
from werkzeug.security import safe_join

from smart import api as authz  # the one smart module the facade may import

from fhir_facade.resources.mapping import viewer_study_url

#: Where ``npm ci`` in ``viewer/`` puts OHIF's prebuilt files.
DEFAULT_DIST = Path(__file__).resolve().parents[2] / "viewer" / "node_modules" / "@ohif" / "app" / "dist"
#: Scopes the viewer asks for: sign-in, the user's FHIR identity, renewal, and the images (the
#: DICOMweb proxy needs ImagingStudy read: SMART Imaging Access) of the patient or of the
#: practitioner's patients.
VIEWER_SCOPE = "openid fhirUser offline_access patient/ImagingStudy.rs user/ImagingStudy.rs"
IMMUTABLE = "public, max-age=31536000, immutable"
#: Webpack's content-hashed output names: ``123.bundle.0123456789abcdef.js``, ``0123456789abcdef.wasm``.
HASHED = re.compile(r"(?:^|[./])[0-9a-f]{16}\.(?:js|wasm|woff2?|css)$")
#: Files that may name the site root and are rewritten for the base path.
REBASED_SUFFIXES = (".html", ".js", ".css", ".json")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
_SERVICE_WORKER = re.compile(rb'<script[^>]*src="[^"]*init-service-worker\.js"[^>]*></script>')

bp = Blueprint("viewer", __name__, url_prefix="/viewer")
authz.guard(bp)

_lock = threading.Lock()


# --- paths -------------------------------------------------------------------------------------
def base_path(public_url: str) -> str:
    """The viewer's path on the public site, ``/viewer/`` below FACADE_PUBLIC_URL's own path."""
    return urlsplit(public_url).path.rstrip("/") + "/viewer/"


def viewer_url(public_url: str, study_instance_uid: str) -> str:
    """The viewer's URL that opens one study (OHIF's ``/viewer?StudyInstanceUIDs=``), as the
    study's web-viewer Endpoint gives it (:func:`fhir_facade.resources.mapping.viewer_study_url`)."""
    return viewer_study_url(public_url, study_instance_uid)


def _dist() -> Path:
    return Path(current_app.config.get("FACADE_VIEWER_DIST") or DEFAULT_DIST)


def _cache_dir(dist: Path, base: str) -> Path:
    """One folder per installed dist and base path, so a new version or base never serves stale files."""
    index = dist / "index.html"
    key = hashlib.sha256(f"{dist.resolve()}|{index.stat().st_mtime_ns}|{base}".encode()).hexdigest()[:16]
    root = current_app.config.get("FACADE_VIEWER_CACHE") or "var/viewer-cache"
    return Path(root) / key


# --- rewriting for the base path -----------------------------------------------------------------
def rebase(name: str, data: bytes, base: str) -> bytes:
    """Write the viewer's *base* path where the root-built dist names ``/``.

    Parameters
    ----------
    name : str
        The file's path inside the dist (its suffix chooses the rules).
    data : bytes
        The file as the dist holds it.
    base : str
        The viewer's path on the site, with both slashes (``/viewer/``).

    Returns
    -------
    bytes
        *data* with webpack's public path (``__webpack_require__.p``), ``window.PUBLIC_URL``,
        root-relative ``href``/``src`` attributes, CSS ``url(/...)`` and the manifest's icon
        paths moved below *base*; ``index.html`` also loses OHIF's service-worker loader (an
        offline cache of medical images is not wanted, and its precache lists root paths).
    """
    b = base.encode()
    if name.endswith(".js"):
        return data.replace(b'__webpack_require__.p = "/";', b'__webpack_require__.p = "' + b + b'";')
    if name.endswith(".css"):
        return re.sub(rb"url\(/(?!/)", b"url(" + b, data)
    if name.endswith(".json"):
        return re.sub(rb'("(?:src|start_url|scope)"\s*:\s*)"/(?!/)', rb'\1"' + b, data)
    if name.endswith(".html"):
        data = data.replace(b'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + b + b'"')
        data = re.sub(rb'((?:href|src)=)"/(?!/)', rb'\1"' + b, data)
        return _SERVICE_WORKER.sub(b"", data)
    return data


def _served_file(name: str) -> Path:
    """The file to send for dist path *name*: the rebased copy when it differs, else the dist's own."""
    dist = _dist()
    source = Path(safe_join(str(dist), name) or "")
    if not name or not source.is_file():
        raise NotFound("no such file in the viewer")
    if not name.endswith(REBASED_SUFFIXES):
        return source
    base = base_path(current_app.config["FACADE_PUBLIC_URL"])
    cache = _cache_dir(dist, base)
    copy, unchanged = cache / name, cache / (name + ".unchanged")
    if copy.is_file():
        return copy
    if unchanged.is_file():
        return source
    with _lock:
        data = source.read_bytes()
        rebased = rebase(name, data, base)
        target = copy if rebased != data else unchanged
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: another worker never sends half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(rebased if rebased != data else b"")
        os.replace(tmp, target)
    return copy if rebased != data else source


# --- configuration -------------------------------------------------------------------------------
def app_config(public_url: str, client_id: str, viewer_base: str | None = None) -> dict:
    """OHIF's ``window.config`` for the facade at *public_url*.

    Parameters
    ----------
    public_url : str
        FACADE_PUBLIC_URL (no trailing slash).
    client_id : str
        The viewer's registered public OAuth client (code + PKCE, OIDC Core 1.0 §3.1).
    viewer_base : str, optional
        Where the viewer is served, with a trailing slash; default the bundled one,
        ``<public_url>/viewer/``. An OHIF on another origin passes its own (its redirect URI
        is ``<viewer_base>callback``, its post-logout URI *viewer_base*).

    Notes
    -----
    The bundled viewer's post-logout URI is ``<public_url>/viewer/signed-out``, a page of the
    facade, not ``/viewer/``: OHIF 3.13 registers a route for the post-logout URI's whole path
    below its router base, so ``/viewer/`` would also catch its study route ``/viewer/viewer``
    and loop through the sign-out callback.

    Returns
    -------
    dict
        One DICOMweb data source (QIDO-RS, WADO-RS and WADO-URI roots = the facade's
        ``/dicomweb``, PS3.18) and one OpenID Connect client whose authority is the facade's
        issuer; no ``aud`` is sent (the facade binds such a token to its FHIR base).
    """
    public_url = public_url.rstrip("/")
    dicomweb = f"{public_url}/dicomweb"
    post_logout = viewer_base or f"{public_url}/viewer/signed-out"
    viewer_base = viewer_base or f"{public_url}/viewer/"
    base = urlsplit(viewer_base).path
    return {
        "name": "imaging-fhir-facade",
        "routerBasename": base.rstrip("/") or "/",
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "facade",
        "dataSources": [{
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "facade",
            "configuration": {
                "friendlyName": "Imaging FHIR facade",
                "name": "facade",
                "qidoRoot": dicomweb,
                "wadoRoot": dicomweb,
                "wadoUriRoot": dicomweb,
                "qidoSupportsIncludeField": False,
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": False,
                "omitQuotationForMultipartRequest": True,
                "bulkDataURI": {"enabled": True},
            },
        }],
        "oidc": [{
            "authority": public_url,
            "client_id": client_id,
            "redirect_uri": f"{viewer_base}callback",
            "silent_redirect_uri": f"{viewer_base}silent-refresh.html",
            "post_logout_redirect_uri": post_logout,
            "response_type": "code",
            "scope": VIEWER_SCOPE,
            "automaticSilentRenew": True,
            "revokeAccessTokenOnSignout": True,
        }],
    }


def content_security_policy(inline_scripts: list[bytes] = ()) -> str:
    """The viewer's Content-Security-Policy (CSP Level 3).

    Scripts only from the facade (and the given inline scripts, by hash), WebAssembly
    compilation (the image codecs), workers from ``blob:`` URLs, inline styles (React sets
    them), images and fonts from ``data:``/``blob:``; framed by the facade itself only.
    """
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'"
                      for s in inline_scripts)
    script_src = " ".join(filter(None, ["'self'", "'wasm-unsafe-eval'", hashes]))
    return "; ".join([
        "default-src 'self'",
        f"script-src {script_src}",
        "worker-src 'self' blob:",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self' blob: data:",
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ])


def _secure(response: Response, inline_scripts: list[bytes] = ()) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy(inline_scripts)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# --- routes --------------------------------------------------------------------------------------
def _require_installed() -> None:
    if not (_dist() / "index.html").is_file():
        raise ServiceUnavailable("the viewer is not installed (scripts/bootstrap.sh runs npm ci in viewer/)")


@bp.get("/app-config.js")
@authz.public
def config_js():
    """OHIF's configuration, generated from FACADE_PUBLIC_URL (never cached)."""
    config = app_config(current_app.config["FACADE_PUBLIC_URL"],
                        current_app.config.get("FACADE_VIEWER_CLIENT_ID") or "ohif-viewer")
    body = "window.config = " + json.dumps(config, indent=2) + ";\n"
    response = Response(body, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-store"
    return _secure(response)


@bp.get("/signed-out")
@authz.public
def signed_out():
    """The bundled viewer's post-logout page (OIDC RP-Initiated Logout 1.0 §3)."""
    body = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed out</title></head>"
            "<body><main><h1>You have signed out of the viewer</h1>"
            f"<p><a id=\"sign-in\" href=\"{base_path(current_app.config['FACADE_PUBLIC_URL'])}\">Sign in again</a></p>"
            "</main></body></html>")
    response = Response(body, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return _secure(response)


@bp.get("/", defaults={"name": ""})
@bp.get("/<path:name>")
@authz.public
def static_file(name: str):
    """A file of the viewer, or ``index.html`` for the single-page app's own routes."""
    _require_installed()
    try:
        path = _served_file(name)
    except NotFound:
        if name.endswith((".js", ".css", ".wasm", ".map", ".png", ".json", ".ico")):
            raise
        return _index()
    if name == "index.html":
        return _index()
    response = send_file(path, conditional=True, etag=True, max_age=None,
                         mimetype="text/javascript" if name.endswith(".js") else None)
    response.headers["Cache-Control"] = IMMUTABLE if HASHED.search(name) else "no-cache"
    return _secure(response)


def _index() -> Response:
    data = _served_file("index.html").read_bytes()
    response = Response(data, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    return _secure(response, _INLINE_SCRIPT.findall(data))


def http_error(exc) -> Response:
    """A plain-text error page for the viewer's routes (404 file, 405, 503 not installed)."""
    response = Response(f"{exc.code} {exc.name}: {exc.description}\n", status=exc.code, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    return _secure(response)
