"""A share link in Debian's chromium against the facade and a real Orthanc (issue 15 "Must show").

tests/browser/share_viewer.mjs (playwright-core): the patient logs in on "My images" and shares
the demo study with a PIN; a fresh browser context opens the link, enters the PIN, downloads the
study as a ZIP and sees it rendered in the bundled viewer (canvas of many values); the patient
revokes; the recipient's next DICOMweb request and a reload of the link are refused. The ZIP is
then read here with pydicom's FileSet: every instance of the study, byte-identical to the PACS's.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile

import pydicom
import pytest
from pydicom.fileset import FileSet

import devpacs
from facade_helpers import make_app
from live_server import live_server
from test_viewer_browser import BROWSER, CHROMIUM, SCREENSHOTS, _missing

pytestmark = pytest.mark.integration

USER, PASSWORD, PIN = "share-browser-patient", "share-browser-patient-pw", "13579"


@pytest.fixture(scope="module")
def facade(orthanc, tmp_path_factory):
    assert not _missing(), f"missing for the share browser test: {', '.join(_missing())}"
    port = devpacs.free_port()
    public = f"http://127.0.0.1:{port}"
    tmp = tmp_path_factory.mktemp("share-browser")
    app = make_app(tmp, FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=public,
                   FACADE_VIEWER_CACHE=str(tmp / "viewer-cache"))
    with app.app_context():
        from smart.admin.cli import add_user
        add_user(USER, PASSWORD, patient="DEMO-0001")
    try:
        with live_server(app, port=port) as base:
            yield {"url": base, "tmp": tmp}
    finally:
        app.extensions["smart_db"].engine.dispose()


def test_share_view_download_and_revoke_in_chromium(facade, orthanc):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    uid = orthanc.samples["demo"]["StudyInstanceUID"]
    config = {"chromium": CHROMIUM, "screenshots": str(SCREENSHOTS), "downloads": str(facade["tmp"]),
              "facade": facade["url"], "username": USER, "password": PASSWORD, "studyUid": uid, "pin": PIN,
              "timeoutMs": 60000}
    run = subprocess.run(["node", str(BROWSER / "share_viewer.mjs"), json.dumps(config)], cwd=BROWSER,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    report = json.dumps(result, indent=1)
    assert "failure" not in result, report
    assert result["linkPrefix"] == facade["url"] + "/share/" and result["pinAsked"], report
    assert result["viewerValues"] > 16, report  # the study is on screen, not a flat canvas
    assert uid in result["viewerUrl"] and "token=" not in result["viewerUrl"], report
    assert result["beforeRevoke"] == 200 and result["afterRevoke"] == 401, report
    assert result["reloadStatus"] == 404, report
    # The downloaded ZIP: DICOM media with every instance of the study as the PACS holds it.
    archive = zipfile.ZipFile(result["download"])
    folder = facade["tmp"] / "unzipped"
    archive.extractall(folder)
    listed = {}
    for instance in FileSet(pydicom.dcmread(folder / "DICOMDIR")):
        data = (folder / instance.FileID).read_bytes()
        listed[instance.SOPInstanceUID] = hashlib.sha256(data).hexdigest()
    demo = orthanc.samples["demo"]["SOPInstanceUIDs"]
    assert listed == {sop: orthanc.samples["sha256"][sop] for sop in demo}
