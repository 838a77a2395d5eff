"""Real SMART clients against the facade served on loopback with a real Orthanc (issue 4 "Real clients").

- Python ``fhirclient`` (SMART client-py): standalone launch, patient user and practitioner with
  the patient picker, then ImagingStudy through its R4 models.
- SMART JavaScript client (npm ``fhirclient``) in Debian's headless chromium, driven by
  playwright-core (tests/browser/ehr_launch.mjs): EHR launch from a launch context, ImagingStudy,
  Endpoint and a WADO-RS frame fetched cross-origin with the token (real CORS preflight).
  Screenshots of the login, consent and picker pages go to var/screenshots/ (git-ignored).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

import devpacs
from access_helpers import allow
from facade_helpers import make_app
from live_server import live_server
from smart_flow import form_data, form_with_action, make_verifier, parse_forms, s256

ROOT = Path(__file__).resolve().parents[2]
BROWSER = ROOT / "tests" / "browser"
APP_DIR = BROWSER / "app"
CLIENT_JS = BROWSER / "node_modules" / "fhirclient" / "build" / "fhir-client.js"
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("FACADE_TEST_CHROMIUM", "/usr/bin/chromium")

PATIENT_USER, PATIENT_PASSWORD = "demo-patient", "demo-patient-pw"
DOCTOR, DOCTOR_PASSWORD = "dr-grey", "dr-grey-pw"
#: A practitioner granted one patient only (``smart grant-access --username``).
LOCUM, LOCUM_PASSWORD = "dr-locum", "dr-locum-pw"
PY_CLIENT = "py-app"
PY_REDIRECT = "http://127.0.0.1:9/py-callback"  # never fetched: the test reads the Location header


class _AppFiles(SimpleHTTPRequestHandler):
    """Serves tests/browser/app/ and client-js's browser bundle at /fhir-client.js."""

    def translate_path(self, path):
        if urlsplit(path).path == "/fhir-client.js":
            return str(CLIENT_JS)
        return super().translate_path(path)

    def log_message(self, format, *args):  # keep pytest output clean
        pass


@dataclass
class Facade:
    base: str
    app_origin: str
    app: object

    @property
    def fhir(self) -> str:
        return self.base + "/fhir"


@pytest.fixture(scope="module")
def facade(orthanc, tmp_path_factory):
    """The facade on a loopback port chosen first (so FACADE_PUBLIC_URL is right), plus the
    browser test app on another loopback port (another origin: CORS is real)."""
    static = ThreadingHTTPServer(("127.0.0.1", 0), partial(_AppFiles, directory=str(APP_DIR)))
    threading.Thread(target=static.serve_forever, daemon=True).start()
    app_origin = f"http://127.0.0.1:{static.server_port}"
    port = devpacs.free_port()
    public = f"http://127.0.0.1:{port}"
    app = make_app(tmp_path_factory.mktemp("clients"), FACADE_PACS_URL=orthanc.dicomweb_url,
                   FACADE_PUBLIC_URL=public)
    from smart.admin.cli import add_client, add_user
    with app.app_context():
        add_client(PY_CLIENT, [PY_REDIRECT], public=True, name="Python fhirclient")
        add_client("browser-app", [f"{app_origin}/index.html", f"{app_origin}/picker-done.html"], public=True,
                   name="Imaging test app")
        add_user(PATIENT_USER, PATIENT_PASSWORD, patient="DEMO-0001")
        add_user(DOCTOR, DOCTOR_PASSWORD, role="practitioner")
        add_user(LOCUM, LOCUM_PASSWORD, role="practitioner")
    allow(app, None, username=DOCTOR)
    allow(app, ["DEMO-0001"], username=LOCUM)
    try:
        with live_server(app, port=port) as base:
            assert base == public
            yield Facade(base=base, app_origin=app_origin, app=app)
    finally:
        static.shutdown()
        app.extensions["smart_db"].engine.dispose()


# --- form posting like a browser without JavaScript ---------------------------------------------
def submit(browser: requests.Session, page: requests.Response, action: str, values: dict | None = None,
           button: tuple[str, str] | None = None, **kwargs) -> requests.Response:
    """Post the page's *action* form (login / consent) with *values* replacing fields."""
    form = form_with_action(page.text, action)
    return browser.post(urljoin(page.url, form["action"]), data=form_data(form, values, button), **kwargs)


def radio_values(html: str) -> list[str]:
    """Values of the picker's patient radio buttons."""
    import re
    return re.findall(r'<input type="radio" name="patient" id="p\d+" value="([^"]*)"', html)


def fhirclient_for(facade: Facade, scope: str):
    from fhirclient import client
    return client.FHIRClient(settings={
        "app_id": PY_CLIENT, "api_base": facade.fhir, "redirect_uri": PY_REDIRECT, "scope": scope,
    })


def authorize_in_browser(url: str, username: str, password: str, patient: str | None = None) -> str:
    """Log in and approve at *url*; return the redirect Location with the code."""
    browser = requests.Session()
    page = browser.get(url, timeout=30)
    assert page.status_code == 200, page.text
    page = submit(browser, page, "login", {"username": username, "password": password}, timeout=30)
    assert page.status_code == 200, page.text
    values = {"patient": patient} if patient else {}
    if patient:
        assert patient in radio_values(page.text), page.text
    response = submit(browser, page, "consent", values, button=("decision", "approve"),
                      allow_redirects=False, timeout=30)
    assert response.status_code == 302, response.text
    return response.headers["Location"]


# --- Python fhirclient (SMART client-py) -------------------------------------------------------
# fhirclient 4.4 deprecates FHIRSearch.perform() in favour of perform_iter(); perform() is still
# what its README shows, so the tests use it.
pytestmark = pytest.mark.filterwarnings("ignore:perform\\(\\) is deprecated:DeprecationWarning")


def test_python_fhirclient_standalone_launch(facade, orthanc):
    from fhirclient.models.imagingstudy import ImagingStudy

    smart = fhirclient_for(facade, "openid fhirUser patient/ImagingStudy.rs patient/Patient.rs")
    url = smart.authorize_url
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(facade.base + "/auth/authorize?")
    assert query["aud"] == [facade.fhir] and query["code_challenge_method"] == ["S256"]
    assert "launch/patient" in query["scope"][0].split()

    location = authorize_in_browser(url, PATIENT_USER, PATIENT_PASSWORD)
    assert location.startswith(PY_REDIRECT + "?")
    smart.handle_callback(location)
    assert smart.ready
    assert smart.patient_id == "DEMO-0001"
    assert smart.server.auth.access_token

    bundle = ImagingStudy.where(struct={"patient": smart.patient_id}).perform(smart.server)
    studies = [entry.resource for entry in bundle.entry or [] if entry.resource.resource_type == "ImagingStudy"]
    uid = orthanc.samples["demo"]["StudyInstanceUID"]
    assert [study.id for study in studies] == [uid]
    assert studies[0].identifier[0].value == f"urn:oid:{uid}"
    assert studies[0].subject.reference == "Patient/DEMO-0001"
    assert {m.code for m in studies[0].modality} == {"CT", "PT"}
    # fhirclient reads the patient with the same token; another patient is refused.
    assert smart.patient.id == "DEMO-0001"
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRPermissionDeniedException
    with pytest.raises(FHIRPermissionDeniedException):
        Patient.read("1CT1", smart.server)


def test_python_fhirclient_practitioner_picks_from_the_pacs(facade, orthanc):
    from fhirclient.models.imagingstudy import ImagingStudy

    smart = fhirclient_for(facade, "openid fhirUser patient/ImagingStudy.rs")
    location = authorize_in_browser(smart.authorize_url, DOCTOR, DOCTOR_PASSWORD, patient="1CT1")
    smart.handle_callback(location)
    assert smart.patient_id == "1CT1"
    bundle = ImagingStudy.where(struct={"patient": "1CT1"}).perform(smart.server)
    expected = {i["StudyInstanceUID"] for i in orthanc.samples["instances"].values() if i["PatientID"] == "1CT1"}
    assert {entry.resource.id for entry in bundle.entry} == expected


# --- patient picker over HTTP, without JavaScript ------------------------------------------------
def _picker_page(facade: Facade, username: str = DOCTOR, password: str = DOCTOR_PASSWORD):
    verifier = make_verifier()
    params = {"response_type": "code", "client_id": PY_CLIENT, "redirect_uri": PY_REDIRECT,
              "scope": "launch/patient patient/ImagingStudy.rs", "state": "st", "aud": facade.fhir,
              "code_challenge": s256(verifier), "code_challenge_method": "S256"}
    browser = requests.Session()
    page = browser.get(facade.base + "/auth/authorize?" + urlencode(params), timeout=30)
    page = submit(browser, page, "login", {"username": username, "password": password}, timeout=30)
    assert page.status_code == 200, page.text
    return browser, page


def test_the_picker_lists_and_accepts_only_patients_on_the_practitioners_access_list(facade, orthanc):
    """Issue 12: a practitioner granted DEMO-0001 only sees that patient in the picker (no other
    patient's name or birth date is shown) and cannot approve a typed id outside the list."""
    browser, page = _picker_page(facade, LOCUM, LOCUM_PASSWORD)
    assert radio_values(page.text) == ["DEMO-0001"]
    for typed in ("P-typed", "1CT1"):
        refused = submit(browser, page, "consent", {"patient": typed}, button=("decision", "approve"),
                         allow_redirects=False)
        assert refused.status_code == 403 and "Location" not in refused.headers, typed
        assert "no access to this patient" in refused.text
    approved = submit(browser, page, "consent", {"patient": "DEMO-0001"}, button=("decision", "approve"),
                      allow_redirects=False)
    assert approved.status_code == 302 and "code=" in approved.headers["Location"]


def test_picker_lists_searches_and_validates(facade, orthanc):
    from fhir_facade.dicom.patient_ids import to_fhir_id

    browser, page = _picker_page(facade)
    listed = radio_values(page.text)
    # Other tests may have stored more studies in the shared Orthanc: ask it what it holds.
    studies = requests.get(f"{orthanc.dicomweb_url}/studies", params={"limit": "200", "includefield": "00100020"},
                           headers={"Accept": "application/dicom+json"}, timeout=30).json()
    pacs_patients = {(ds.get("00100020", {}).get("Value") or [""])[0] for ds in studies}
    from smart.web.picker import PICKER_LIMIT
    assert len(listed) == min(PICKER_LIMIT, len(pacs_patients)) == len(set(listed))
    assert set(listed) <= {to_fhir_id(p) for p in pacs_patients}
    if len(pacs_patients) > PICKER_LIMIT:
        assert f"Showing the first {PICKER_LIMIT} patients" in page.text
    assert 'name="patient_query"' in page.text and 'id="patient"' in page.text

    # Search (the Search button posts the consent form without a decision): by id, by name.
    found = submit(browser, page, "consent", {"patient_query": "demo"}, button=("patient_search", "1"))
    assert found.status_code == 200
    assert radio_values(found.text) == ["DEMO-0001"]
    assert 'value="demo"' in found.text
    demo = next(i for i in orthanc.samples["instances"].values() if i["PatientID"] == "DEMO-0001")
    family = demo.get("PatientName", "").split("^")[0]
    if family:
        by_name = submit(browser, page, "consent", {"patient_query": family.lower()[:4]},
                         button=("patient_search", "1"))
        assert "DEMO-0001" in radio_values(by_name.text)
    none = submit(browser, page, "consent", {"patient_query": "*no-such-patient?"}, button=("patient_search", "1"))
    assert radio_values(none.text) == [] and "No patient matches" in none.text
    # Unticked scopes stay unticked across a search.
    kept = submit(browser, page, "consent", {"patient_query": "demo", "grant_scope": []},
                  button=("patient_search", "1"))
    assert 'value="patient/ImagingStudy.rs" checked' not in kept.text

    # Approve without a patient, or with two different ones: the page again, no redirect.
    for values in ({}, {"patient": ["DEMO-0001", "1CT1"]}, {"patient": "bad id!"}):
        again = submit(browser, found, "consent", values, button=("decision", "approve"), allow_redirects=False)
        assert again.status_code == 400 and "Location" not in again.headers, values
    # The typed id still works (a patient not listed, e.g. one the PACS does not hold yet).
    typed = submit(browser, found, "consent", {"patient": "P-typed"}, button=("decision", "approve"),
                   allow_redirects=False)
    assert typed.status_code == 302 and "code=" in typed.headers["Location"]


def test_picker_without_pacs_falls_back_to_the_id_field(tmp_path):
    app = make_app(tmp_path, FACADE_PACS_URL="http://127.0.0.1:9/dicom-web", FACADE_PUBLIC_URL="http://127.0.0.1:8080")
    from smart.admin.cli import add_client, add_user
    with app.app_context():
        add_client(PY_CLIENT, [PY_REDIRECT], public=True)
        add_user(DOCTOR, DOCTOR_PASSWORD, role="practitioner")
        add_user(LOCUM, LOCUM_PASSWORD, role="practitioner")
    allow(app, None, username=DOCTOR)
    allow(app, ["DEMO-0001"], username=LOCUM)
    from smart_flow import AuthActions
    auth = AuthActions(app.test_client())
    params, _ = auth.authorize_params(client_id=PY_CLIENT, redirect_uri=PY_REDIRECT,
                                      scope="launch/patient patient/ImagingStudy.rs")
    page = auth.client.get("/auth/authorize", query_string=params)
    page = auth.login(page.get_data(as_text=True), DOCTOR, DOCTOR_PASSWORD)
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "patient list is not available" in html and 'id="patient"' in html
    assert [f for f in parse_forms(html) if ("action", "consent") in f["fields"]]
    app.extensions["smart_db"].engine.dispose()


# --- SMART JavaScript client in headless chromium ------------------------------------------------
def _require_browser_tools() -> None:
    """Fail (never skip) when the browser test cannot run: scripts/bootstrap.sh installs these."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian package chromium)")
    if shutil.which("node") is None:
        missing.append("node")
    if not CLIENT_JS.is_file() or not (BROWSER / "node_modules" / "playwright-core").is_dir():
        missing.append("tests/browser/node_modules (npm ci in tests/browser)")
    if missing:
        pytest.fail("browser test needs " + ", ".join(missing) + "; run scripts/test (it runs scripts/bootstrap.sh)")


def test_js_client_ehr_launch_in_chromium(facade, orthanc):
    _require_browser_tools()
    from smart.admin.cli import create_launch
    with facade.app.app_context():
        launch = create_launch(patient="DEMO-0001")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    verifier = make_verifier()
    picker_params = {
        "response_type": "code", "client_id": "browser-app", "redirect_uri": f"{facade.app_origin}/picker-done.html",
        "scope": "launch/patient openid fhirUser patient/ImagingStudy.rs patient/Patient.rs", "state": "pick",
        "aud": facade.fhir, "code_challenge": s256(verifier), "code_challenge_method": "S256",
    }
    config = {
        "chromium": CHROMIUM,
        "screenshots": str(SCREENSHOTS),
        "launchUrl": f"{facade.app_origin}/launch.html?" + urlencode({"iss": facade.fhir, "launch": launch}),
        "pickerUrl": facade.base + "/auth/authorize?" + urlencode(picker_params),
        "username": DOCTOR,
        "password": DOCTOR_PASSWORD,
        "patientQuery": "demo",
        "patientId": "DEMO-0001",
        "timeoutMs": 30000,
    }
    run = subprocess.run(["node", str(BROWSER / "ehr_launch.mjs"), json.dumps(config)], cwd=BROWSER,
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert "failure" not in result, json.dumps(result, indent=1)

    app = result["app"]
    assert app["status"] == "done", json.dumps(result, indent=1)
    assert result["appUrl"] == f"{facade.app_origin}/index.html"
    assert app["patient"] == "DEMO-0001"
    assert app["study"] == orthanc.samples["demo"]["StudyInstanceUID"]
    assert app["endpoint"] == facade.base + "/dicomweb"
    assert app["frame-status"].startswith("200 multipart/related")
    assert int(app["frame-bytes"]) > 0
    assert int(app["response-bytes"]) > int(app["frame-bytes"])
    assert "Patient: Patient Demo" in result["consentText"] and "DEMO-0001" in result["consentText"]
    # The token, FHIR and DICOMweb calls went cross-origin from the app's page.
    assert any(r.startswith("POST " + facade.base + "/auth/token") for r in result["requests"])
    assert any(r.startswith("GET " + facade.base + "/dicomweb/studies/") for r in result["requests"])

    assert len(result["pickerInitial"]) > 1
    assert result["pickerFound"] == ["DEMO-0001"] and result["pickerQuery"] == "demo"
    redirect = urlsplit(result["pickerRedirect"])
    assert f"{redirect.scheme}://{redirect.netloc}{redirect.path}" == f"{facade.app_origin}/picker-done.html"
    assert parse_qs(redirect.query)["state"] == ["pick"] and "code" in parse_qs(redirect.query)
    for name in ("01-login", "02-consent-ehr-launch", "03-app", "04-consent-picker", "05-consent-picker-search"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 1000, name
