"""Silent renew in Debian's chromium (issue 14): an app on another origin frames ``prompt=none``
in a hidden iframe, as oidc-client-ts (OHIF) does; the answer reaches the app's callback page.
Without a session: ``login_required``; after a login and an approval: a code. The login page
itself cannot be framed. Driven by playwright-core (tests/browser/silent_renew.mjs)."""
from __future__ import annotations

import json
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode

import pytest

import devpacs
from facade_helpers import make_app
from live_server import live_server
from smart_flow import make_verifier, s256
from test_smart_clients import BROWSER, CHROMIUM, _require_browser_tools

pytestmark = pytest.mark.integration  # a browser and a live server (no PACS needed)

HOST_PAGE = """<!doctype html><title>app</title><script>
addEventListener("message", (e) => { if (e.origin === location.origin) window.silentAnswer = e.data; });
const frame = document.createElement("iframe");
frame.style.display = "none";
frame.src = %s;
document.documentElement.appendChild(frame);
</script>"""
CALLBACK_PAGE = """<!doctype html><title>callback</title><script>
if (parent !== window) parent.postMessage(location.search, location.origin);
</script>"""
FRAMING_PAGE = """<!doctype html><title>framing</title><iframe src=%s></iframe>"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _authorize_url(base: str, redirect_uri: str, **extra) -> str:
    params = {"response_type": "code", "client_id": "viewer", "redirect_uri": redirect_uri, "state": "st-1",
              "scope": "openid fhirUser patient/ImagingStudy.rs", "code_challenge": s256(make_verifier()),
              "code_challenge_method": "S256", "nonce": "n-1", **extra}
    return base + "/auth/authorize?" + urlencode(params)


def test_silent_renew_in_a_hidden_iframe_of_another_origin(tmp_path):
    _require_browser_tools()
    site = tmp_path / "site"
    site.mkdir()
    static = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    threading.Thread(target=static.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{static.server_port}"
    port = devpacs.free_port()
    app = make_app(tmp_path / "facade", FACADE_PUBLIC_URL=f"http://127.0.0.1:{port}")
    from smart.admin.cli import add_client, add_user

    with app.app_context():
        add_client("viewer", [f"{origin}/callback.html"], public=True, name="Viewer")
        add_user("pat", "pat-pw", patient="P1")
    try:
        with live_server(app, port=port) as base:
            silent = _authorize_url(base, f"{origin}/callback.html", prompt="none")
            (site / "host.html").write_text(HOST_PAGE % json.dumps(silent))
            (site / "callback.html").write_text(CALLBACK_PAGE)
            login = _authorize_url(base, f"{origin}/callback.html")
            (site / "framing.html").write_text(FRAMING_PAGE % json.dumps(login))
            config = {"chromium": CHROMIUM, "hostUrl": f"{origin}/host.html", "loginUrl": login,
                      "framedLoginUrl": f"{origin}/framing.html", "username": "pat", "password": "pat-pw",
                      "timeoutMs": 20000}
            run = subprocess.run(["node", str(BROWSER / "silent_renew.mjs"), json.dumps(config)], cwd=BROWSER,
                                 capture_output=True, text=True, timeout=120)
    finally:
        static.shutdown()
        app.extensions["smart_db"].engine.dispose()
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert "failure" not in result, result["failure"]
    before = parse_qs(result["withoutSession"].lstrip("?"))
    assert before["error"] == ["login_required"] and before["state"] == ["st-1"]
    after = parse_qs(result["withSessionAndConsent"].lstrip("?"))
    assert "error" not in after and len(after["code"][0]) >= 20 and after["state"] == ["st-1"]
    # frame-ancestors 'none': chromium shows its own error page in the frame, not the login form.
    assert result["framedLoginUrl"].startswith("chrome-error://") and result["framedLoginHasForm"] is False
