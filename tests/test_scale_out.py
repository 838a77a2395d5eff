"""Two facade instances (gunicorn, gunicorn.conf.py) on one PostgreSQL behind nginx in round robin
(issue 13 item 3): the whole SMART flow with consecutive steps on different instances, revocation,
key rotation and a client added by the CLI seen by every instance, and login throttling counted
across instances. Which instance answered is nginx's ``X-Facade-Upstream`` header."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

import scaleout
from multipart_parsers import parse_by_boundary
from smart_flow import form_data, form_with_action, make_verifier, parse_forms, s256

pytestmark = [pytest.mark.postgresql, pytest.mark.integration]

REDIRECT = "http://127.0.0.1:9999/callback"
SCOPE = "launch/patient openid fhirUser offline_access patient/ImagingStudy.rs"
PATIENT = "DEMO-0001"
REVOCATION_SECONDS = 1.0


def run_cli(env: dict, *args: str) -> str:
    """``flask --app app ARGS`` as an operator runs it; its output (asserts exit status 0)."""
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=scaleout.ROOT, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def fleet(orthanc, postgresql, tmp_path_factory):
    """init-db and the demo client/user by the CLI, two instances, nginx; yields the base URL and env."""
    if scaleout.Nginx.binary() is None:
        pytest.fail("nginx is missing: scripts/bootstrap.sh installs nginx-light")
    workdir = tmp_path_factory.mktemp("scale-out")
    nginx_port = scaleout.free_port()
    public = f"http://127.0.0.1:{nginx_port}"
    env = dict(os.environ, FACADE_DATABASE_URL=postgresql.create_database("scale_out"),
               FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=public, FACADE_TRUSTED_PROXIES="1",
               SMART_REVOCATION_CACHE_SECONDS=str(REVOCATION_SECONDS), FACADE_WORKERS="1", FACADE_THREADS="4")
    run_cli(env, "init-db")
    run_cli(env, "smart", "add-client", "--client-id", "fleet-app", "--redirect-uri", REDIRECT, "--public")
    run_cli(env, "smart", "add-user", "--username", "fleet-patient", "--password", "fleet-pass", "--patient", PATIENT)
    instances = [scaleout.Instance(env, workdir / f"instance-{n}") for n in (1, 2)]
    nginx = scaleout.Nginx([i.address for i in instances], port=nginx_port)
    try:
        for instance in instances:
            instance.start()
        nginx.start()
        yield {"url": public, "env": env, "instances": {i.address for i in instances}}
    finally:
        nginx.stop()
        for instance in instances:
            instance.stop()


class Browser:
    """A requests session through nginx that records which instance answered each request."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.upstreams: list[str] = []

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.session.request(method, urljoin(self.base, path), allow_redirects=False, timeout=30,
                                        **kwargs)
        self.upstreams.append(response.headers[scaleout.UPSTREAM_HEADER])
        return response

    def post_form(self, html: str, action: str, values: dict | None = None, button=None) -> requests.Response:
        form = form_with_action(html, action)
        return self.request("POST", form["action"] or "/auth/authorize", data=form_data(form, values, button))


def authorize_params(base: str, client_id: str = "fleet-app", scope: str = SCOPE) -> tuple[dict, str]:
    verifier = make_verifier()
    return {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT, "scope": scope,
            "state": "s1", "aud": f"{base}/fhir", "code_challenge": s256(verifier),
            "code_challenge_method": "S256"}, verifier


def on_both(browser: Browser, method: str, path: str, **kwargs) -> list[requests.Response]:
    """Two consecutive requests, which round robin sends to the two instances."""
    answers = [browser.request(method, path, **kwargs) for _ in range(2)]
    assert len(set(browser.upstreams[-2:])) == 2, browser.upstreams
    return answers


def test_the_whole_smart_flow_across_instances(fleet, orthanc):
    base = fleet["url"]
    browser = Browser(base)
    params, verifier = authorize_params(base)
    page = browser.request("GET", "/auth/authorize", params=params)                          # authorize
    assert page.status_code == 200, page.text
    page = browser.post_form(page.text, "login", {"username": "fleet-patient", "password": "fleet-pass"})  # login
    assert page.status_code == 200 and form_with_action(page.text, "consent"), page.text
    redirect = browser.post_form(page.text, "consent", button=("decision", "approve"))        # consent
    assert redirect.status_code == 302, redirect.text
    code = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]
    tokens = browser.request("POST", "/auth/token", data={                                    # token
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "fleet-app",
        "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    tokens = tokens.json()
    assert tokens["patient"] == PATIENT
    refreshed = browser.request("POST", "/auth/token", data={                                 # refresh
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "fleet-app"})
    assert refreshed.status_code == 200, refreshed.text
    access = refreshed.json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    bundle = browser.request("GET", f"/fhir/ImagingStudy?patient={PATIENT}", headers=headers)  # FHIR search
    assert bundle.status_code == 200, bundle.text
    studies = [e["resource"]["id"] for e in bundle.json()["entry"]]
    assert studies == [orthanc.samples["demo"]["StudyInstanceUID"]]
    sop = orthanc.samples["demo"]["SOPInstanceUIDs"][0]
    instance = orthanc.samples["instances"][sop]
    retrieved = browser.request(                                                             # WADO-RS
        "GET", f"/dicomweb/studies/{studies[0]}/series/{instance['SeriesInstanceUID']}/instances/{sop}",
        headers={**headers, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert retrieved.status_code == 200, retrieved.text[:500]
    (_, body), = parse_by_boundary(retrieved.content, retrieved.headers["Content-Type"])
    assert hashlib.sha256(body).hexdigest() == orthanc.samples["sha256"][sop]
    revoked = browser.request("POST", "/auth/revoke", data={"token": access, "client_id": "fleet-app"})  # revoke
    assert revoked.status_code == 200, revoked.text

    # Every step landed on the other instance than the step before it.
    steps = browser.upstreams
    assert set(steps) == fleet["instances"]
    assert all(a != b for a, b in zip(steps, steps[1:])), steps

    # The revoked token is refused by every instance within SMART_REVOCATION_CACHE_SECONDS.
    time.sleep(REVOCATION_SECONDS + 0.2)
    for answer in on_both(browser, "GET", f"/fhir/ImagingStudy?patient={PATIENT}", headers=headers):
        assert answer.status_code == 401, answer.text


def test_a_key_rotated_by_the_cli_verifies_on_every_instance(fleet):
    base, env = fleet["url"], fleet["env"]
    browser = Browser(base)
    before = browser.request("POST", "/auth/token", data={"grant_type": "refresh_token", "client_id": "fleet-app",
                                                          "refresh_token": _refresh_token(base)}).json()
    kid_before = _kid(before["access_token"])
    run_cli(env, "smart", "rotate-key")
    after = browser.request("POST", "/auth/token", data={"grant_type": "refresh_token", "client_id": "fleet-app",
                                                         "refresh_token": before["refresh_token"]})
    assert after.status_code == 200, after.text
    after = after.json()
    assert _kid(after["access_token"]) != kid_before
    for token in (after["access_token"], before["access_token"]):  # new key and retired key
        for answer in on_both(browser, "GET", f"/fhir/ImagingStudy?patient={PATIENT}",
                              headers={"Authorization": f"Bearer {token}"}):
            assert answer.status_code == 200, answer.text


def test_a_client_added_by_the_cli_works_on_every_instance(fleet):
    base = fleet["url"]
    browser = Browser(base)
    params, _ = authorize_params(base, client_id="late-app")
    for answer in on_both(browser, "GET", "/auth/authorize", params=params):
        assert answer.status_code == 400, answer.text  # unknown client: never redirected
    run_cli(fleet["env"], "smart", "add-client", "--client-id", "late-app", "--redirect-uri", REDIRECT, "--public")
    for answer in on_both(browser, "GET", "/auth/authorize", params=params):
        assert answer.status_code == 200, answer.text
        assert form_with_action(answer.text, "login")


def test_login_throttling_counts_failures_across_instances(fleet):
    base = fleet["url"]
    run_cli(fleet["env"], "smart", "add-user", "--username", "throttled", "--password", "right-pass",
            "--patient", PATIENT)
    browser = Browser(base)
    params, _ = authorize_params(base)
    page = browser.request("GET", "/auth/authorize", params=params).text
    for _ in range(5):  # MAX_PAIR_FAILURES wrong passwords, alternating between the instances
        page = browser.post_form(page, "login", {"username": "throttled", "password": "wrong"}).text
        assert _is_login_page(page)
    assert len(set(browser.upstreams)) == 2
    # Now the right password is refused on both instances: each counts the other's failures.
    for _ in range(2):
        page = browser.post_form(page, "login", {"username": "throttled", "password": "right-pass"}).text
        assert _is_login_page(page), page[:500]
    assert len(set(browser.upstreams[-2:])) == 2


def _is_login_page(html: str) -> bool:
    return any(("action", "login") in form["fields"] for form in parse_forms(html))


def _refresh_token(base: str) -> str:
    """A fresh refresh token of fleet-patient (a whole launch through nginx)."""
    browser = Browser(base)
    params, verifier = authorize_params(base)
    page = browser.request("GET", "/auth/authorize", params=params)
    page = browser.post_form(page.text, "login", {"username": "fleet-patient", "password": "fleet-pass"})
    redirect = browser.post_form(page.text, "consent", button=("decision", "approve"))
    code = parse_qs(urlsplit(redirect.headers["Location"]).query)["code"][0]
    return browser.request("POST", "/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "fleet-app",
        "code_verifier": verifier}).json()["refresh_token"]


def _kid(token: str) -> str:
    import base64
    import json
    header = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
