"""OHIF in Debian's chromium against the facade and a real Orthanc (issue 14 "Must show").

Two viewers, one browser (tests/browser/ohif_viewer.mjs, playwright-core):

- the bundled viewer at ``<facade>/viewer/``, with the configuration the facade generates
  (no ``aud``);
- OHIF's unmodified dist served from another origin (a second static server on another loopback
  port): the facade's DICOMweb and OpenID Connect cross-origin (CORS).

Each logs in as the demo patient, opens the demo study, and its viewport canvas must show the
image (pixels of many values); a reload and a new tab reach the viewer without the consent page;
logout passes its id_token_hint and the post-logout URI (no "Sign out?" question) and the next
visit asks for the login. Screenshots go to var/screenshots/ (git-ignored).
"""
from __future__ import annotations

import json
import mimetypes
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import devpacs
from facade_helpers import make_app
from fhir_facade.web import viewer
from live_server import live_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BROWSER = ROOT / "tests" / "browser"
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "viewer-patient", "viewer-patient-pw"
OTHER_CLIENT = "ohif-elsewhere"


class _OtherOrigin(SimpleHTTPRequestHandler):
    """OHIF's dist as published (built for the root of its origin), with an app-config.js of the
    deployer's; unknown paths get index.html (the single-page app's routes)."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript"}
    app_config = b""

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/app-config.js":
            self.send_response(200)
            self.send_header("Content-Type", "text/javascript")
            self.send_header("Content-Length", str(len(self.app_config)))
            self.end_headers()
            self.wfile.write(self.app_config)
            return
        if not Path(self.translate_path(self.path)).is_file():
            self.path = "/index.html"
        super().do_GET()

    def log_message(self, format, *args):  # keep pytest output clean
        pass


def _missing() -> list[str]:
    missing = []
    if not Path(CHROMIUM).is_file():
        missing.append(CHROMIUM)
    if shutil.which("node") is None:
        missing.append("node")
    if not (BROWSER / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if not (viewer.DEFAULT_DIST / "index.html").is_file():
        missing.append("viewer/node_modules/@ohif/app/dist (npm ci in viewer)")
    return missing


def _cli(app, *args: str) -> None:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, (args, result.output)


@pytest.fixture(scope="module")
def viewers(orthanc, tmp_path_factory):
    """The facade (bundled viewer at /viewer/) and OHIF's dist on another loopback origin."""
    assert not _missing(), f"missing for the viewer's browser test: {', '.join(_missing())}"
    mimetypes.add_type("application/wasm", ".wasm")
    static = ThreadingHTTPServer(("127.0.0.1", 0), partial(_OtherOrigin, directory=str(viewer.DEFAULT_DIST)))
    other = f"http://127.0.0.1:{static.server_port}/"
    port = devpacs.free_port()
    public = f"http://127.0.0.1:{port}"
    tmp = tmp_path_factory.mktemp("viewer")
    app = make_app(tmp, FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=public,
                   FACADE_VIEWER_CACHE=str(tmp / "viewer-cache"))
    # The deployer's config for the OHIF elsewhere: what the README tells them to write.
    _OtherOrigin.app_config = ("window.config = " + json.dumps(viewer.app_config(public, OTHER_CLIENT, other))
                               + ";\n").encode()
    threading.Thread(target=static.serve_forever, daemon=True).start()
    with app.app_context():
        from smart.admin.cli import add_user
        add_user(USER, PASSWORD, patient="DEMO-0001")
    # The clients as scripts/demo registers the bundled one, and as the README tells a deployer.
    for client_id, base, post_logout in (("ohif-viewer", f"{public}/viewer/", f"{public}/viewer/signed-out"),
                                         (OTHER_CLIENT, other, other)):
        _cli(app, "smart", "add-client", "--client-id", client_id, "--public",
             "--redirect-uri", f"{base}callback", "--redirect-uri", f"{base}silent-refresh.html")
        _cli(app, "smart", "update-client", "--client-id", client_id, "--add-post-logout-redirect-uri", post_logout)
    try:
        with live_server(app, port=port) as base:
            assert base == public
            yield {"facade": public, "other": other}
    finally:
        static.shutdown()
        app.extensions["smart_db"].engine.dispose()


def test_ohif_bundled_and_elsewhere_logs_in_shows_the_demo_study_and_logs_out(viewers, orthanc):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    facade, other = viewers["facade"], viewers["other"]
    uid = orthanc.samples["demo"]["StudyInstanceUID"]
    config = {
        "chromium": CHROMIUM, "screenshots": str(SCREENSHOTS), "username": USER, "password": PASSWORD,
        "timeoutMs": 60000,
        "viewers": [
            {"name": "bundled", "studyUrl": viewer.viewer_url(facade, uid), "logoutUrl": f"{facade}/viewer/logout",
             "postLogoutUrl": f"{facade}/viewer/signed-out", "facade": facade},
            {"name": "elsewhere", "studyUrl": f"{other}viewer?StudyInstanceUIDs={uid}", "logoutUrl": f"{other}logout",
             "postLogoutUrl": other, "facade": facade},
        ],
    }
    run = subprocess.run(["node", str(BROWSER / "ohif_viewer.mjs"), json.dumps(config)], cwd=BROWSER,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    (SCREENSHOTS / "viewer-results.json").write_text(run.stdout)
    results = json.loads(run.stdout)
    assert [r["name"] for r in results] == ["bundled", "elsewhere"]
    for result, wanted in zip(results, config["viewers"]):
        report = json.dumps(result, indent=1)
        assert "failure" not in result, report
        # The viewer sent the browser to the facade's authorize endpoint, without aud.
        assert result["loginUrl"].startswith(facade + "/auth/authorize"), report
        assert "aud=" not in result["loginUrl"], report
        assert "DEMO-0001" in result["consentText"], report
        # The study is on screen: the canvas holds an image, not one flat value.
        assert result["firstUrl"].startswith(wanted["studyUrl"].split("?")[0]), report
        assert uid in result["firstUrl"], report
        for key in ("firstValues", "reloadValues", "tabValues"):
            assert result[key] > 16, (key, report)
        # Reload and a pasted link: no consent page, no login page.
        assert result["reloadConsent"] == 0 and result["tabConsent"] == 0, report
        assert result["tabLogin"] == 0, report
        # Logout: OHIF (oidc-client-ts) sends its id_token_hint, so the facade signs out without
        # asking "Sign out?" (RP-Initiated Logout 1.0 §2) and goes back to the post-logout URI;
        # the next visit asks for the login.
        assert "id_token_hint" in result["logoutParams"], report
        assert "post_logout_redirect_uri" in result["logoutParams"], report
        assert result["signOutAsked"] is False, report
        assert result["postLogout"].split("?")[0] == wanted["postLogoutUrl"], report
        assert result["nextVisitLogin"].startswith(facade + "/auth/authorize"), report
