"""The bundled viewer's blueprint (issue 14 item 2) on a small fake OHIF dist built for the root,
as the npm package's is: base path, generated configuration, caching, CSP, SPA routes, errors."""
from __future__ import annotations

import hashlib
import json
import base64
import re
from urllib.parse import urlsplit

import pytest

from facade_helpers import PUBLIC, make_app
from fhir_facade.web import viewer

#: The viewer's path on the test site (PUBLIC has a path of its own).
BASE = urlsplit(PUBLIC).path + "/viewer/"
B = BASE.encode()

INDEX = (b'<!doctype html><html><head><script>console.time("scriptToView"),window.PUBLIC_URL="/"</script>'
         b'<link rel="manifest" href="/manifest.json"><link rel="icon" href="/assets/favicon.ico">'
         b'<script rel="preload" as="script" src="/app-config.js"></script>'
         b'<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
         b'<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
         b'<script defer src="/app.bundle.0123456789abcdef.js"></script><link href="/app.bundle.css" rel="stylesheet">'
         b'<a href="//cdn.example/x">x</a></head><body><div id="root"></div></body></html>')
BUNDLE = b'(() => { __webpack_require__.p = "/"; })(); const chunk = __webpack_require__.p + "12.bundle.js";'
WASM = bytes(range(256)) * 8
CSS = b"@font-face{src:url(/a34f9d1faa5f3315.woff2)}body{background:url(//cdn.example/y.png)}"


@pytest.fixture
def dist(tmp_path):
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "app.bundle.0123456789abcdef.js").write_bytes(BUNDLE)
    (root / "0ddf166f7a343eda.wasm").write_bytes(WASM)
    (root / "app.bundle.css").write_bytes(CSS)
    (root / "assets" / "favicon.ico").write_bytes(b"\x00\x00\x01\x00icon")
    (root / "app-config.js").write_bytes(b"window.config = {dataSources: ['the demo server of OHIF']};")
    (root / "manifest.json").write_text(json.dumps({"icons": [{"src": "/assets/favicon.ico"}], "start_url": "/"}))
    return root


@pytest.fixture
def client(tmp_path, dist):
    app = make_app(tmp_path, FACADE_VIEWER_DIST=str(dist), FACADE_VIEWER_CACHE=str(tmp_path / "cache"))
    return app.test_client()


def inline_hashes(csp: str) -> set[str]:
    return set(re.findall(r"'sha256-([^']+)'", csp))


def test_index_is_rebased_uncached_and_its_inline_scripts_allowed_by_hash(client):
    response = client.get("/viewer/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    html = response.data
    assert html.count(b'window.PUBLIC_URL="' + B + b'"') == 2 and b'PUBLIC_URL="/"' not in html
    assert b'src="' + B + b'app.bundle.0123456789abcdef.js"' in html and b'href="' + B + b'app.bundle.css"' in html
    assert b'src="' + B + b'app-config.js"' in html and b'href="' + B + b'manifest.json"' in html
    assert b'href="//cdn.example/x"' in html  # protocol-relative URLs are not paths of the site
    assert b"init-service-worker" not in html  # no offline cache of the viewer
    scripts = re.findall(rb"<script>(.*?)</script>", html)
    wanted = {base64.b64encode(hashlib.sha256(s).digest()).decode() for s in scripts}
    assert len(wanted) == 2 and inline_hashes(response.headers["Content-Security-Policy"]) == wanted


@pytest.mark.parametrize("path", ["/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/callback?code=abc&state=x",
                                  "/viewer/index.html", "/viewer/logout"])
def test_single_page_routes_serve_the_index(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert b'window.PUBLIC_URL="' + B + b'"' in response.data


def test_hashed_files_are_immutable_and_the_bundle_loads_its_chunks_below_the_base(client):
    response = client.get("/viewer/app.bundle.0123456789abcdef.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.data == BUNDLE.replace(b'__webpack_require__.p = "/";', b'__webpack_require__.p = "' + B + b'";')
    wasm = client.get("/viewer/0ddf166f7a343eda.wasm")
    assert wasm.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert wasm.mimetype == "application/wasm"
    assert hashlib.sha256(wasm.data).hexdigest() == hashlib.sha256(WASM).hexdigest()
    # Revalidation of an unchanged file: 304, no body.
    again = client.get("/viewer/0ddf166f7a343eda.wasm", headers={"If-None-Match": wasm.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""


def test_other_files_are_revalidated_and_rebased(client):
    css = client.get("/viewer/app.bundle.css")
    assert css.headers["Cache-Control"] == "no-cache"
    assert css.data == b"@font-face{src:url(" + B + b"a34f9d1faa5f3315.woff2)}body{background:url(//cdn.example/y.png)}"
    manifest = client.get("/viewer/manifest.json").get_json()
    assert manifest == {"icons": [{"src": f"{BASE}assets/favicon.ico"}], "start_url": BASE}
    icon = client.get("/viewer/assets/favicon.ico")
    assert icon.data == b"\x00\x00\x01\x00icon" and icon.headers["Cache-Control"] == "no-cache"


def test_the_config_is_generated_from_the_public_url_without_aud(client):
    response = client.get("/viewer/app-config.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    assert text.startswith("window.config = ") and text.rstrip().endswith(";")
    config = json.loads(text[len("window.config = "):].rstrip().rstrip(";"))
    assert "OHIF" not in text.split("friendlyName")[0]  # the dist's own config is not served
    [source] = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    roots = {source["configuration"][k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == {f"{PUBLIC}/dicomweb"}
    [oidc] = config["oidc"]
    assert oidc["authority"] == PUBLIC and oidc["client_id"] == "ohif-viewer" and oidc["response_type"] == "code"
    assert oidc["redirect_uri"] == f"{PUBLIC}/viewer/callback"
    assert oidc["post_logout_redirect_uri"] == f"{PUBLIC}/viewer/signed-out"
    assert set(oidc["scope"].split()) >= {"openid", "fhirUser", "offline_access", "patient/ImagingStudy.rs"}
    assert "aud" not in text and "extraQueryParams" not in text
    assert config["routerBasename"] == BASE.rstrip("/")


def test_a_public_url_with_a_path_moves_the_viewer_below_it(tmp_path, dist):
    app = make_app(tmp_path, FACADE_PUBLIC_URL="https://imaging.example/facade", FACADE_VIEWER_DIST=str(dist),
                   FACADE_VIEWER_CACHE=str(tmp_path / "cache"))
    client = app.test_client()
    assert b'window.PUBLIC_URL="/facade/viewer/"' in client.get("/viewer/").data
    assert b'__webpack_require__.p = "/facade/viewer/"' in client.get("/viewer/app.bundle.0123456789abcdef.js").data
    config = json.loads(client.get("/viewer/app-config.js").get_data(as_text=True)[16:].rstrip().rstrip(";"))
    assert config["routerBasename"] == "/facade/viewer"
    assert config["oidc"][0]["redirect_uri"] == "https://imaging.example/facade/viewer/callback"
    assert config["dataSources"][0]["configuration"]["wadoRoot"] == "https://imaging.example/facade/dicomweb"


def test_another_origins_config_names_its_own_pages():
    config = viewer.app_config(PUBLIC, "ohif-elsewhere", "https://viewer.example/")
    oidc = config["oidc"][0]
    assert oidc["redirect_uri"] == "https://viewer.example/callback"
    assert oidc["post_logout_redirect_uri"] == "https://viewer.example/"
    assert config["routerBasename"] == "/" and oidc["authority"] == PUBLIC


@pytest.mark.parametrize("path, status", [
    ("/viewer/missing.bundle.0123456789abcdef.js", 404), ("/viewer/../app.py", 200), ("/viewer/%2e%2e/app.py", 200),
    ("/viewer/assets/../../facade.db", 200),
])
def test_missing_files_and_paths_outside_the_dist(client, path, status):
    response = client.get(path)
    assert response.status_code == status
    assert b"create_app" not in response.data and b"SQLite" not in response.data
    if status == 404:
        assert response.mimetype == "text/plain" and b"404" in response.data


def test_a_viewer_not_installed_answers_503(tmp_path):
    client = make_app(tmp_path, FACADE_VIEWER_DIST=str(tmp_path / "nowhere")).test_client()
    response = client.get("/viewer/")
    assert response.status_code == 503 and b"npm ci" in response.data
    assert client.get("/viewer/app-config.js").status_code == 200


def test_the_signed_out_page_links_back_to_the_viewer(client):
    response = client.get("/viewer/signed-out")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert b'href="' + B + b'"' in response.data


def test_the_viewers_csp_is_its_own(client):
    csp = client.get("/viewer/").headers["Content-Security-Policy"]
    for directive in ("worker-src 'self' blob:", "style-src 'self' 'unsafe-inline'", "frame-ancestors 'self'",
                      "object-src 'none'", "'wasm-unsafe-eval'"):
        assert directive in csp
    assert "'unsafe-eval'" not in csp.replace("'wasm-unsafe-eval'", "")
    # The rest of the site keeps its own: the FHIR API gets none of the viewer's allowances.
    assert "blob:" not in client.get("/fhir/metadata").headers.get("Content-Security-Policy", "")
    assert client.post("/viewer/").status_code == 405
