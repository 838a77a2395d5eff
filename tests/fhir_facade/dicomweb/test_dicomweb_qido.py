"""QIDO-RS through the proxy on a real Orthanc (DW-7 paging, DW-8 includefield), dicomweb-client
end to end, and a client that goes away mid-download."""
from __future__ import annotations

import hashlib
import socket
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest

import devpacs
import samples
from facade_helpers import bearer, make_app, token
from live_server import live_server

PATIENT = "DW7-PAT"
BIG = "DW7-BIG"


@pytest.fixture(scope="module")
def paging(orthanc, tmp_path_factory):
    """250 one-instance studies and a series of 2,099 instances for one patient."""
    big_study, big_series = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    datasets = [samples.make_instance(PatientID=PATIENT, pixels=False, StudyDescription=f"paging {n}",
                                      StudyDate=f"2020{1 + n % 12:02d}{1 + n % 28:02d}") for n in range(250)]
    datasets += [samples.make_instance(PatientID=BIG, pixels=False, StudyInstanceUID=big_study,
                                       SeriesInstanceUID=big_series, InstanceNumber=n) for n in range(2099)]
    blobs = [devpacs.to_part10(ds) for ds in datasets]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda b: devpacs.store_file(orthanc.url, b), blobs))
    app = make_app(tmp_path_factory.mktemp("qido"), FACADE_PACS_URL=orthanc.dicomweb_url)
    return {"client": app.test_client(), "headers": bearer(token(app, patient=PATIENT)),
            "big_headers": bearer(token(app, patient=BIG)),
            "studies": {str(ds.StudyInstanceUID) for ds in datasets[:250]}, "big": (big_study, big_series),
            "app": app, "orthanc": orthanc}


def uids(rows, tag):
    return [r[tag]["Value"][0] for r in rows]


def qido(paging, path, headers=None):
    response = paging["client"].get(f"/dicomweb/{path}", headers=headers or paging["headers"])
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    return response.get_json() if response.status_code == 200 else []


def test_dw7_study_paging(paging):
    pages = [uids(qido(paging, f"studies?limit=100&offset={offset}"), "0020000D") for offset in (0, 100, 200)]
    assert [len(p) for p in pages] == [100, 100, 50]
    seen = [u for p in pages for u in p]
    assert len(seen) == 250 and set(seen) == paging["studies"]
    assert qido(paging, "studies?limit=100&offset=250") == []


def test_dw7_big_series_pages_completely(paging):
    study, series = paging["big"]
    seen = []
    for offset in range(0, 2200, 500):
        seen += uids(qido(paging, f"studies/{study}/series/{series}/instances?limit=500&offset={offset}",
                          paging["big_headers"]), "00080018")
    assert len(seen) == 2099 and len(set(seen)) == 2099


def test_dw8_includefield(paging):
    study = sorted(paging["studies"])[0]
    base = f"studies?StudyInstanceUID={study}"
    all_fields = qido(paging, f"{base}&includefield=all")
    assert qido(paging, f"{base}&includefield=00081030&includefield=all") == all_fields
    repeated = qido(paging, f"{base}&includefield=00081030&includefield=00080020")
    assert qido(paging, f"{base}&includefield=00081030,00080020") == repeated
    assert "00081030" in repeated[0]
    plain = qido(paging, base)  # nothing of the previous request leaks into this one
    assert "00081030" not in plain[0] or plain[0] == repeated[0] == all_fields[0]


def test_qido_levels_and_fuzzy_matching_pass_through(paging):
    rows = qido(paging, "series?limit=5")
    assert len(rows) == 5 and all(r["00100020"]["Value"][0] == PATIENT for r in rows)
    rows = qido(paging, "instances?limit=3")
    assert len(rows) == 3 and all(r["00100020"]["Value"][0] == PATIENT for r in rows)
    rows = qido(paging, "studies?StudyDescription=paging%2012*&limit=50")
    assert {r["00081030"]["Value"][0] for r in rows if "00081030" in r} <= {f"paging {n}" for n in range(120, 130)} | {
        "paging 12"}


def test_dicomweb_client_against_the_facade(orthanc, tmp_path):
    from dicomweb_client.api import DICOMwebClient

    demo = orthanc.samples["demo"]
    port = devpacs.free_port()
    url = f"http://127.0.0.1:{port}"
    app = make_app(tmp_path, FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=url)
    value = token(app, patient=demo["PatientID"])
    with live_server(app, port=port):
        facade = DICOMwebClient(url=f"{url}/dicomweb", headers={"Authorization": f"Bearer {value}"})
        direct = DICOMwebClient(url=orthanc.dicomweb_url)
        study, series = demo["StudyInstanceUID"], demo["series"]["CT"]
        found = facade.search_for_studies(search_filters={"PatientID": demo["PatientID"]})
        assert [r["0020000D"]["Value"][0] for r in found] == [study]
        assert found[0]["00081190"]["Value"][0] == f"{url}/dicomweb/studies/{study}"
        sops = sorted(r["00080018"]["Value"][0] for r in facade.search_for_instances(study, series))
        assert sops == sorted(r["00080018"]["Value"][0] for r in direct.search_for_instances(study, series))

        def digest(datasets):
            return sorted((str(ds.SOPInstanceUID), hashlib.sha256(ds.PixelData).hexdigest()) for ds in datasets)

        assert digest(facade.retrieve_study(study)) == digest(direct.retrieve_study(study))
        assert digest(facade.retrieve_series(study, series)) == digest(direct.retrieve_series(study, series))
        one = facade.retrieve_instance(study, series, sops[0])
        assert digest([one]) == digest([direct.retrieve_instance(study, series, sops[0])])
        metadata = facade.retrieve_study_metadata(study)
        assert len(metadata) == len(demo["SOPInstanceUIDs"])
        assert sorted(m["00080018"]["Value"][0] for m in metadata) == sorted(demo["SOPInstanceUIDs"])
        # dicomweb-client's default, type="*/*", is refused by Orthanc itself (400); the facade serves it
        frames = facade.retrieve_instance_frames(study, series, sops[0], frame_numbers=[1])
        as_stored = (("application/octet-stream", "*"),)
        assert frames == direct.retrieve_instance_frames(study, series, sops[0], frame_numbers=[1],
                                                         media_types=as_stored)
        assert frames == facade.retrieve_instance_frames(study, series, sops[0], frame_numbers=[1],
                                                         media_types=as_stored)
        assert len(frames) == 1 and len(frames[0]) > 0


def test_client_going_away_releases_the_pacs_connection(orthanc, tmp_path, monkeypatch):
    from fhir_facade.pacs.client import PacsClient

    demo = orthanc.samples["demo"]
    app = make_app(tmp_path, FACADE_PACS_URL=orthanc.dicomweb_url)
    opened = []
    original = PacsClient.get

    def recording_get(self, *args, **kwargs):
        response = original(self, *args, **kwargs)
        if kwargs.get("stream"):
            opened.append(response)
        return response

    monkeypatch.setattr(PacsClient, "get", recording_get)
    value = token(app, patient=demo["PatientID"])
    with live_server(app) as url:
        host, port = url[len("http://"):].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            request = (f"GET /dicomweb/studies/{demo['StudyInstanceUID']} HTTP/1.1\r\nHost: {host}\r\n"
                       f"Authorization: Bearer {value}\r\n"
                       'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n\r\n')
            sock.sendall(request.encode())
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        # the socket is gone after one read: the server notices on its next write
        import time
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (opened and opened[-1].raw.closed):
            time.sleep(0.05)
    assert opened and opened[-1].raw.closed
