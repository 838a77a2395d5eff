"""The DICOMweb proxy against a real Orthanc: field cases DW-1 to DW-10, authorization on every path."""
from __future__ import annotations

import hashlib

import pydicom
import requests
import pytest
from pydicom.data import get_testdata_file

import devpacs
import samples
from facade_helpers import bearer, make_app, token
from multipart_parsers import parse_by_boundary, parse_by_length

PUBLIC = "https://facade.example/base"
PATIENT = "DW-PATIENT"
OTHER = "DW-OTHER"
MULTI = 'multipart/related; type="application/dicom"'
APP_ORIGIN = "https://viewer.example"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def dw(orthanc, tmp_path_factory):
    """Store the DW test studies; return their UIDs and the stored bytes' hashes."""
    study = pydicom.uid.generate_uid()
    series = pydicom.uid.generate_uid()
    stored = {}
    # DW-1: a private OB element holding CRLF--boundary-like bytes.
    tricky = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series,
                                   InstanceNumber=1, Modality="OT")
    tricky.add_new(0x00090010, "LO", "FACADE TEST")
    tricky.add_new(0x00091001, "OB", b"\r\n--boundary\r\n--" + b"\r\n--" * 64 + b"\r\nContent-Type: x\r\n\r\n")
    instances = [tricky] + [samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study,
                                                  SeriesInstanceUID=series, InstanceNumber=n, Modality="OT")
                            for n in (2, 3)]
    multiframe = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, NumberOfFrames=10,
                                       Rows=16, Columns=16, Modality="OT", InstanceNumber=1)
    sr = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, pixels=False, Modality="SR",
                               SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")
    other = samples.make_instance(PatientID=OTHER, Modality="OT")
    for ds in instances + [multiframe, sr, other]:
        data = devpacs.to_part10(ds)
        devpacs.store_file(orthanc.url, data)
        stored[str(ds.SOPInstanceUID)] = sha(data)
    app = make_app(tmp_path_factory.mktemp("dw"), FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=PUBLIC)
    jpeg = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"), stop_before_pixels=True)
    from smart.admin.cli import add_client
    with app.app_context():
        add_client("browser-app", [f"{APP_ORIGIN}/callback"], public=True)
    return {
        "app": app, "client": app.test_client(), "study": study, "series": series,
        "instances": [str(d.SOPInstanceUID) for d in instances], "stored": stored,
        "multiframe": (str(multiframe.SeriesInstanceUID), str(multiframe.SOPInstanceUID)),
        "sr": (str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID)),
        "other": (str(other.StudyInstanceUID), str(other.SeriesInstanceUID), str(other.SOPInstanceUID)),
        "token": token(app, patient=PATIENT), "jpeg": jpeg, "jpeg_token": token(app, patient="ID1"),
        "orthanc": orthanc,
    }


def get(dw, path, accept=None, tok=None, **kw):
    headers = bearer(tok or dw["token"])
    if accept is not None:
        headers["Accept"] = accept
    return dw["client"].get(f"/dicomweb/{path}", headers=headers, **kw)


def test_dw1_dw2_series_parts_are_byte_identical_with_either_parser(dw):
    response = get(dw, f"studies/{dw['study']}/series/{dw['series']}", accept=f"{MULTI}; transfer-syntax=*")
    assert response.status_code == 200
    content_type = response.headers["Content-Type"]
    for parse in (parse_by_boundary, parse_by_length):
        parts = parse(response.data, content_type)
        assert len(parts) == 3
        assert sorted(sha(body) for _, body in parts) == sorted(dw["stored"][uid] for uid in dw["instances"])
        for headers, body in parts:
            assert body[128:132] == b"DICM"
            assert headers["content-type"].startswith("application/dicom")
            assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]


@pytest.mark.parametrize("accept", [
    'multipart/related; type="application/octet-stream"; transfer-syntax=*',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
])
def test_dw3_quoted_and_unquoted_type(dw, accept):
    series, sop = dw["multiframe"]
    response = get(dw, f"studies/{dw['study']}/series/{series}/instances/{sop}/frames/1", accept=accept)
    assert response.status_code == 200
    parts = parse_by_boundary(response.data, response.headers["Content-Type"])
    assert len(parts) == 1 and len(parts[0][1]) == 16 * 16 * 2


def test_dw4_transfer_syntax(dw):
    jpeg = dw["jpeg"]
    path = f"studies/{jpeg.StudyInstanceUID}/series/{jpeg.SeriesInstanceUID}/instances/{jpeg.SOPInstanceUID}"
    as_stored = get(dw, path, accept=f"{MULTI}; transfer-syntax=*", tok=dw["jpeg_token"])
    assert as_stored.status_code == 200
    [(headers, body)] = parse_by_boundary(as_stored.data, as_stored.headers["Content-Type"])
    assert "transfer-syntax=1.2.840.10008.1.2.4.70" in headers["content-type"]
    assert sha(body) == hashlib.sha256(open(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"), "rb").read()).hexdigest()
    # Single part, as stored: the Content-Type names the syntax as a part header would.
    single = get(dw, path, accept="application/dicom; transfer-syntax=*", tok=dw["jpeg_token"])
    assert single.status_code == 200 and sha(single.data) == sha(body)
    assert single.headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.70"
    default = get(dw, path, accept=MULTI, tok=dw["jpeg_token"])
    assert default.status_code in (200, 406)
    if default.status_code == 200:
        [(headers, body)] = parse_by_boundary(default.data, default.headers["Content-Type"])
        ds = pydicom.dcmread(__import__("io").BytesIO(body))
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert "transfer-syntax=1.2.840.10008.1.2.1" in headers["content-type"]


def test_image_jpeg_frames_without_a_syntax_are_jpeg_baseline(dw):
    """image/jpeg with no transfer-syntax means JPEG Baseline (PS3.18 Table 8.7.3-5): a
    JPEG Lossless instance is transcoded, not sent as lossless bytes a browser cannot decode."""
    jpeg = dw["jpeg"]
    path = (f"studies/{jpeg.StudyInstanceUID}/series/{jpeg.SeriesInstanceUID}/instances/{jpeg.SOPInstanceUID}"
            "/frames/1")
    for accept in ('multipart/related; type="image/jpeg"', "image/jpeg"):
        response = get(dw, path, accept=accept, tok=dw["jpeg_token"])
        assert response.status_code == 200, accept
        if accept.startswith("multipart"):
            [(headers, frame)] = parse_by_boundary(response.data, response.headers["Content-Type"])
            content_type = headers["content-type"]
        else:
            frame, content_type = response.data, response.headers["Content-Type"]
        assert content_type == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
        assert frame[:2] == b"\xff\xd8" and b"\xff\xc0" in frame and b"\xff\xc3" not in frame  # SOF0, not SOF3
    as_stored = get(dw, path, accept='multipart/related; type="application/octet-stream"; transfer-syntax=*',
                    tok=dw["jpeg_token"])
    assert as_stored.status_code == 200, as_stored.get_data(as_text=True)
    [(headers, frame)] = parse_by_boundary(as_stored.data, as_stored.headers["Content-Type"])
    assert headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70"
    assert b"\xff\xc3" in frame  # the stored JPEG Lossless (process 14) frame


def test_dw5_accept_handling_on_an_instance(dw):
    uid = dw["instances"][1]
    path = f"studies/{dw['study']}/series/{dw['series']}/instances/{uid}"
    single = get(dw, path, accept="application/dicom")
    assert single.status_code == 200
    assert single.headers["Content-Type"].startswith("application/dicom")
    assert sha(single.data) == dw["stored"][uid]
    assert get(dw, path, accept="image/jpeg").status_code == 406
    assert get(dw, path, accept="text/html").status_code == 406
    assert get(dw, path, accept="application/x-nonsense").status_code == 406


def test_dw6_metadata_bulkdata_uris_point_at_the_facade_and_work(dw):
    response = get(dw, f"studies/{dw['study']}/series/{dw['series']}/metadata")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    port = dw["orthanc"].url.rsplit(":", 1)[1]
    assert port not in text and "127.0.0.1" not in text and "localhost" not in text
    uris = [v["BulkDataURI"] for ds in response.get_json() for v in ds.values() if "BulkDataURI" in v]
    assert uris and all(u.startswith(f"{PUBLIC}/dicomweb/") for u in uris)
    relative = uris[0][len(f"{PUBLIC}/dicomweb/"):]
    assert get(dw, relative).status_code == 200
    qido = get(dw, "studies", accept="application/dicom+json")
    urls = [ds["00081190"]["Value"][0] for ds in qido.get_json()]
    assert urls == [f"{PUBLIC}/dicomweb/studies/{dw['study']}"]


def test_dw9_frames(dw):
    series, sop = dw["multiframe"]
    base = f"studies/{dw['study']}/series/{series}/instances/{sop}/frames"
    accept = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    frames = {}
    for n in (1, 2, 3, 10):
        response = get(dw, f"{base}/{n}", accept=accept)
        assert response.status_code == 200, n
        frames[n] = parse_by_boundary(response.data, response.headers["Content-Type"])[0][1]
    assert len(set(frames.values())) == 4
    assert get(dw, f"{base}/11", accept=accept).status_code == 404
    assert get(dw, f"{base}/0", accept=accept).status_code == 400
    listed = get(dw, f"{base}/3,1,2", accept=accept)
    assert listed.status_code == 200
    assert [b for _, b in parse_by_boundary(listed.data, listed.headers["Content-Type"])] == \
        [frames[3], frames[1], frames[2]]
    for headers, _ in parse_by_boundary(listed.data, listed.headers["Content-Type"]):
        assert headers.get("content-location", PUBLIC).startswith(PUBLIC)


@pytest.mark.parametrize("frame_list", ["1,2,11", "9,10,11,12", "2,3,4,5,6,7,8,9,10,11", "11,1"])
def test_dw9_a_frame_list_running_past_the_last_frame_is_404_not_a_broken_200(dw, frame_list):
    """Orthanc sends the frames it has, then breaks off: the list is checked first (review)."""
    series, sop = dw["multiframe"]
    response = get(dw, f"studies/{dw['study']}/series/{series}/instances/{sop}/frames/{frame_list}",
                   accept='multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert response.status_code == 404
    assert "frame 11 does not exist (NumberOfFrames is 10)" in response.get_data(as_text=True)


def test_dw10_rendered(dw):
    uid = dw["instances"][0]
    path = f"studies/{dw['study']}/series/{dw['series']}/instances/{uid}/rendered"
    assert get(dw, path, accept="image/jpeg").data[:2] == b"\xff\xd8"
    assert get(dw, path, accept="image/png").data[:4] == b"\x89PNG"
    assert get(dw, path, accept="application/dicom").status_code == 406
    series, sop = dw["sr"]
    assert get(dw, f"studies/{dw['study']}/series/{series}/instances/{sop}/rendered",
               accept="image/jpeg").status_code in (404, 406)
    assert get(dw, f"studies/{dw['study']}/series/{series}/rendered", accept="image/jpeg").status_code in (404, 406)
    mf_series, mf_sop = dw["multiframe"]
    frame = get(dw, f"studies/{dw['study']}/series/{mf_series}/instances/{mf_sop}/frames/2/rendered",
                accept="image/jpeg")
    assert frame.status_code == 200 and frame.data[:2] == b"\xff\xd8"
    assert get(dw, f"studies/{dw['study']}/series/{mf_series}/instances/{mf_sop}/frames/11/rendered",
               accept="image/jpeg").status_code == 404


def test_other_patients_study_is_forbidden_on_every_path(dw):
    study, series, sop = dw["other"]
    for path in (f"studies/{study}", f"studies/{study}/metadata", f"studies/{study}/series",
                 f"studies/{study}/series/{series}", f"studies/{study}/series/{series}/instances/{sop}",
                 f"studies/{study}/series/{series}/instances/{sop}/frames/1",
                 f"studies/{study}/series/{series}/instances/{sop}/rendered"):
        assert get(dw, path).status_code == 403, path
        assert dw["client"].get(f"/dicomweb/{path}").status_code == 401, path
    # and QIDO never shows them
    rows = get(dw, f"instances?PatientID={OTHER}").get_json() or []
    assert all(r["00100020"]["Value"][0] == PATIENT for r in rows)


@pytest.mark.parametrize("query", ["limit=-1", "offset=-1", "limit=abc", "offset=1.5"])
def test_bad_paging_values_are_400(dw, query):
    for path in ("studies", f"studies/{dw['study']}/series", f"studies/{dw['study']}/instances"):
        assert get(dw, f"{path}?{query}").status_code == 400, path


def test_unknown_study_and_series_are_404(dw):
    assert get(dw, "studies/1.2.3.4.5.6.7.8.9").status_code == 404
    assert get(dw, f"studies/{dw['study']}/series/1.2.3.4.5.6.7.8.9", accept=MULTI).status_code == 404


def test_dw11_cors(dw):
    series, sop = dw["multiframe"]
    path = f"/dicomweb/studies/{dw['study']}/series/{series}/instances/{sop}/frames/1"
    client = dw["client"]
    preflight = client.options(path, headers={"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "accept, authorization"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"accept", "authorization"} <= allowed
    other_study = dw["other"][0]
    for response, status in (
        (client.get(path, headers={"Origin": APP_ORIGIN}), 401),
        (client.get(f"/dicomweb/studies/{other_study}", headers={"Origin": APP_ORIGIN, **bearer(dw["token"])}), 403),
        (client.get(path, headers={"Origin": APP_ORIGIN, "Accept": "text/html", **bearer(dw["token"])}), 406),
        (client.get(path, headers={"Origin": APP_ORIGIN, "Accept": 'multipart/related; type="application/octet-stream"',
                                   **bearer(dw["token"])}), 200),
    ):
        assert response.status_code == status
        assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "WWW-Authenticate" in client.get(path, headers={"Origin": APP_ORIGIN}).headers["Access-Control-Expose-Headers"]
    stranger = client.get(path, headers={"Origin": "https://evil.example", **bearer(dw["token"])})
    assert "Access-Control-Allow-Origin" not in stranger.headers
    metadata = client.get("/fhir/metadata", headers={"Origin": "https://anyone.example"})
    assert metadata.headers["Access-Control-Allow-Origin"] == "*"


def store_test_file(dw, name: str) -> tuple[pydicom.Dataset, str]:
    """One of pydicom's test files, re-identified into the DW patient's study and stored; its instance path."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.PatientID = PATIENT
    ds.StudyInstanceUID, ds.SeriesInstanceUID = dw["study"], pydicom.uid.generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    buffer = __import__("io").BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    assert devpacs.store_file(dw["orthanc"].url, buffer.getvalue()) is not None
    return ds, f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


@pytest.fixture(scope="module")
def jpeg_ls(dw):
    """pydicom's JPEG-LS Lossless MR, re-identified under the DW patient, stored; its frame's bytes."""
    from pydicom.encaps import generate_frames
    ds, path = store_test_file(dw, "MR_small_jpeg_ls_lossless.dcm")
    return f"{path}/frames/1", next(generate_frames(ds.PixelData, number_of_frames=1))


def test_jpeg_ls_is_served_as_stored_and_never_transcoded(dw, jpeg_ls):
    """Orthanc 1.10's JPEG-LS encoder can abort the PACS: image/jls is only ever the stored bitstream."""
    path, frame = jpeg_ls
    single = get(dw, path, accept="image/jls")
    assert single.status_code == 200
    assert single.headers["Content-Type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert single.data == frame
    multi = get(dw, path, accept='multipart/related; type="image/jls"')
    [(headers, body)] = parse_by_boundary(multi.data, multi.headers["Content-Type"])
    assert headers["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80" and body == frame
    uncompressed = f"studies/{dw['study']}/series/{dw['series']}/instances/{dw['instances'][1]}/frames/1"
    refused = get(dw, uncompressed, accept="image/jls")
    assert refused.status_code == 406 and "not stored as image/jls" in refused.get_json()["message"]
    fallback = get(dw, uncompressed, accept='multipart/related; type="image/jls", '
                                            'multipart/related; type="application/octet-stream"; q=0.5')
    assert fallback.status_code == 200
    [(headers, _)] = parse_by_boundary(fallback.data, fallback.headers["Content-Type"])
    assert headers["content-type"].startswith("application/octet-stream")
    assert requests.get(f"{dw['orthanc'].url}/system", timeout=10).status_code == 200  # the PACS is still there


def test_an_image_type_as_stored_is_that_type_or_406(dw):
    """``type="image/jpeg"; transfer-syntax=*`` (DW-5: 406, never 400)."""
    jpeg = dw["jpeg"]
    path = f"studies/{jpeg.StudyInstanceUID}/series/{jpeg.SeriesInstanceUID}/instances/{jpeg.SOPInstanceUID}/frames/1"
    stored = get(dw, path, accept='multipart/related; type="image/jpeg"; transfer-syntax=*', tok=dw["jpeg_token"])
    assert stored.status_code == 200
    [(headers, body)] = parse_by_boundary(stored.data, stored.headers["Content-Type"])
    assert headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.70" and b"\xff\xc3" in body
    uncompressed = f"studies/{dw['study']}/series/{dw['series']}/instances/{dw['instances'][1]}/frames/1"
    assert get(dw, uncompressed, accept='multipart/related; type="image/jpeg"; transfer-syntax=*').status_code == 406


@pytest.fixture(scope="module")
def stored_forms(dw):
    """Multi-frame 16-bit instances stored Big Endian, Deflated and RLE; their frames, little endian."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless
    found = {}
    for name, syntax, count in (("big endian", ExplicitVRBigEndian, 3), ("deflated", DeflatedExplicitVRLittleEndian, 2),
                                ("rle", RLELossless, 4)):
        ds = samples.make_instance(transfer_syntax=syntax, PatientID=PATIENT, StudyInstanceUID=dw["study"],
                                   NumberOfFrames=count, Rows=6, Columns=10, Modality="OT")
        assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
        frames = [samples._pattern_frame(6, 10, 1, 16, i) for i in range(count)]
        found[name] = (f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}", frames)
    return found


@pytest.mark.parametrize("form", ["big endian", "deflated"])
@pytest.mark.parametrize("accept", ['multipart/related; type="application/octet-stream"; transfer-syntax=*',
                                    "application/octet-stream; transfer-syntax=*", "*/*"])
def test_frames_as_stored_of_big_endian_and_deflated_instances_are_little_endian(dw, stored_forms, form, accept):
    """DW-9 (never a 5xx): Orthanc cannot send these frames as stored; "*" admits Explicit VR Little Endian."""
    path, frames = stored_forms[form]
    response = get(dw, f"{path}/frames/2", accept=accept)
    assert response.status_code == 200
    if response.headers["Content-Type"].startswith("multipart/"):
        [(headers, body)] = parse_by_boundary(response.data, response.headers["Content-Type"])
        content_type = headers["content-type"]
    else:
        body, content_type = response.data, response.headers["Content-Type"]
    assert content_type == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert body == frames[1]
    assert frames[1] != samples._byteswap(frames[1], 16)  # the test tells the byte orders apart


@pytest.mark.parametrize("form", ["big endian", "deflated", "rle"])
def test_pixel_data_bulk_data_is_every_frame_uncompressed_little_endian(dw, stored_forms, form):
    """octet-stream bulk data is Explicit VR Little Endian: not Orthanc's Big Endian bytes or RLE fragments."""
    path, frames = stored_forms[form]
    multi = get(dw, f"{path}/bulk/7FE00010", accept='multipart/related; type="application/octet-stream"')
    assert multi.status_code == 200
    [(headers, body)] = parse_by_boundary(multi.data, multi.headers["Content-Type"])
    assert body == b"".join(frames)
    assert headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    assert "content-length" not in headers or int(headers["content-length"]) == len(body)
    single = get(dw, f"{path}/bulk/7fe00010", accept="application/octet-stream")
    assert single.status_code == 200 and single.data == b"".join(frames)
    assert int(single.headers.get("Content-Length", len(single.data))) == len(single.data)


def test_pixel_data_bulk_data_the_pacs_cannot_decode_is_406(dw):
    """A JPEG 2000 instance (Orthanc 1.10 has no decoder): 406, not the stored fragments as octet-stream."""
    _, path = store_test_file(dw, "MR_small_jp2klossless.dcm")
    as_stored = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    for _ in range(3):  # refused often enough to be remembered as refused
        assert get(dw, f"{path}/bulk/7fe00010", accept="application/octet-stream").status_code == 406
        assert get(dw, f"{path}/bulk/7fe00010", accept=as_stored).status_code == 406
    # The frames as stored remain the way to the compressed bitstream: what the bulk data
    # route was refused is not held against the frames route (found by the review).
    for accept in ('multipart/related; type="image/jp2"; transfer-syntax=*', as_stored):
        stored = get(dw, f"{path}/frames/1", accept=accept)
        assert stored.status_code == 200
        [(headers, _)] = parse_by_boundary(stored.data, stored.headers["Content-Type"])
        assert headers["content-type"] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.90"


def test_uncompressed_pixel_data_the_pacs_cannot_cut_into_frames_is_its_own_value(dw):
    """YBR_FULL_422 uncompressed: Orthanc refuses its frames; the stored value is the right answer (review M1)."""
    ds, path = store_test_file(dw, "SC_ybr_full_422_uncompressed.dcm")
    response = get(dw, f"{path}/bulk/7fe00010", accept="application/octet-stream")
    assert response.status_code == 200 and response.data == ds.PixelData


def test_compressed_pixel_data_of_more_frames_than_one_request_holds_is_406(dw):
    """Over MAX_FRAME_LIST frames the PACS's own value is relayed only when uncompressed (review M2)."""
    from pydicom.uid import RLELossless
    ds = samples.make_instance(transfer_syntax=RLELossless, PatientID=PATIENT, StudyInstanceUID=dw["study"],
                               NumberOfFrames=1001, Rows=2, Columns=3, Modality="OT")
    assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
    path = f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/bulk/7fe00010"
    for accept in ("application/octet-stream", 'multipart/related; type="application/octet-stream"'):
        assert get(dw, path, accept=accept).status_code == 406
    native = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=dw["study"], NumberOfFrames=1001,
                                   Rows=2, Columns=3, Modality="OT")
    assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(native)) is not None
    path = f"studies/{dw['study']}/series/{native.SeriesInstanceUID}/instances/{native.SOPInstanceUID}/bulk/7fe00010"
    whole = get(dw, path, accept="application/octet-stream")
    assert whole.status_code == 200 and whole.data == native.PixelData


def test_a_negative_number_of_frames_is_one_frame_not_a_server_error(dw):
    ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=dw["study"], Modality="OT")
    ds.NumberOfFrames = "-2"
    assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
    path = f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    response = get(dw, f"{path}/bulk/7fe00010", accept="application/octet-stream")
    assert response.status_code < 500 and (response.status_code != 200 or response.data == ds.PixelData)
    assert get(dw, f"{path}/frames/2", accept="application/octet-stream").status_code < 500


def test_merged_pixel_data_names_no_single_frame_and_an_explicit_other_syntax_is_406(dw, stored_forms):
    path, frames = stored_forms["big endian"]
    multi = get(dw, f"{path}/bulk/7fe00010", accept='multipart/related; type="application/octet-stream"')
    [(headers, body)] = parse_by_boundary(multi.data, multi.headers["Content-Type"])
    assert body == b"".join(frames) and "content-location" not in headers  # review L3
    big_endian = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.2'
    assert get(dw, f"{path}/bulk/7fe00010", accept=big_endian).status_code == 406  # review L5
    assert get(dw, f"{path}/frames/1", accept=big_endian).status_code == 406


def test_uncompressed_pixel_data_as_long_as_an_offset_table_is_not_taken_for_fragments(dw):
    """2x2 8-bit, 1001 frames: 4,004 bytes, as long as a Basic Offset Table of 1001 frames (review)."""
    ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=dw["study"], NumberOfFrames=1001, Rows=2,
                               Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7, Modality="OT")
    assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
    path = f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/bulk/7fe00010"
    response = get(dw, path, accept="application/octet-stream")
    assert response.status_code == 200 and response.data == ds.PixelData and len(ds.PixelData) == 4 * 1001


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_thumbnails_are_small_renderings_when_the_pacs_has_none(dw):
    """Orthanc 1.10 has no thumbnail resource: the facade answers with the rendered one in a 128-pixel viewport."""
    ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=dw["study"], Rows=300, Columns=256,
                               NumberOfFrames=2, Modality="OT")
    assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
    instance = f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    assert png_size(get(dw, f"{instance}/rendered", accept="image/png").data) == (256, 300)
    for path in (f"{instance}/thumbnail", f"{instance}/frames/2/thumbnail"):
        width, height = png_size(get(dw, path, accept="image/png").data)
        assert max(width, height) <= 128 and width > 0
        assert get(dw, path, accept="image/jpeg").data[:2] == b"\xff\xd8"
    width, height = png_size(get(dw, f"{instance}/thumbnail?viewport=40,40", accept="image/png").data)
    assert max(width, height) <= 40
    series, sop = dw["sr"]
    assert get(dw, f"studies/{dw['study']}/series/{series}/instances/{sop}/thumbnail",
               accept="image/jpeg").status_code == 404
    assert get(dw, f"{instance}/frames/3/thumbnail", accept="image/jpeg").status_code == 404


@pytest.mark.parametrize("frames", [1, 3])
def test_an_offset_table_as_long_as_the_pixels_is_never_served_as_them(dw, frames):
    """2x2 8-bit JPEG 2000 Orthanc cannot decode: its 4-byte-per-frame offset table is not the pixels (review)."""
    from pydicom.uid import JPEG2000Lossless
    ds = samples.make_instance(transfer_syntax=JPEG2000Lossless, PatientID=PATIENT, StudyInstanceUID=dw["study"],
                               Rows=2, Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7, Modality="OT",
                               NumberOfFrames=frames if frames > 1 else None,
                               frames=[b"\xff\x4f\xff\x51NOTREALLYJ2K"] * frames)
    assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
    path = f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/bulk/7fe00010"
    for accept in ("application/octet-stream", 'multipart/related; type="application/octet-stream"'):
        assert get(dw, path, accept=accept).status_code == 406


def test_frame_lists_and_viewports_are_bounded(dw):
    series, sop = dw["multiframe"]
    instance = f"studies/{dw['study']}/series/{series}/instances/{sop}"
    accept = 'multipart/related; type="application/octet-stream"'
    assert get(dw, f"{instance}/frames/" + ",".join(["1"] * 1001), accept=accept).status_code == 400
    assert get(dw, f"{instance}/frames/" + ",".join(["1"] * 1000), accept=accept).status_code == 200
    for viewport in ("20000,20000", "0,0", "10", "a,b", "10,10,1"):
        assert get(dw, f"{instance}/rendered?viewport={viewport}", accept="image/png").status_code == 400, viewport
    small = get(dw, f"{instance}/thumbnail?VIEWPORT=12,12", accept="image/png")
    assert small.status_code == 200 and max(png_size(small.data)) <= 12


def test_rendering_parameters_out_of_their_range_are_400_not_404(dw):
    """quality is 1 to 100 (PS3.18 8.3.5.1.2), window center,width,function (8.3.5.1.4); Orthanc's
    400 for a bad one had been read as nothing to render here (review)."""
    series, sop = dw["multiframe"]
    instance = f"studies/{dw['study']}/series/{series}/instances/{sop}"
    for query in ("quality=500", "quality=0", "quality=high", "window=40,0.5,linear", "window=40,0,sigmoid",
                  "window=40,400", "window=40,400,cubic", "window=40,400,LINEAR", "window=a,400,linear"):
        response = get(dw, f"{instance}/rendered?{query}", accept="image/jpeg")
        assert response.status_code == 400, query
        assert ("quality" if query.startswith("quality") else "window") in response.get_data(as_text=True)
    for query in ("quality=1", "quality=100", "window=40,400,linear", "window=-20.5,0.5,sigmoid",
                  "window=40,400,linear-exact&quality=90"):
        response = get(dw, f"{instance}/rendered?{query}", accept="image/jpeg")
        assert response.status_code == 200 and response.data[:2] == b"\xff\xd8", query


def test_pixel_data_over_a_mebibyte_is_one_part_or_406(dw):
    """Over 1 MiB the parts are not all read first: an offset table not matching NumberOfFrames was
    served as the pixels (review), and uncompressed 4-byte frames were taken for one."""
    from pydicom.uid import JPEG2000Lossless
    fragment = bytes(range(256)) * 2048  # 512 KiB
    compressed = samples.make_instance(transfer_syntax=JPEG2000Lossless, PatientID=PATIENT,
                                       StudyInstanceUID=dw["study"], Rows=1024, Columns=1024, Modality="OT",
                                       frames=[fragment] * 3)  # one frame said, three fragments with an offset table
    native = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=dw["study"], NumberOfFrames=262145,
                                   Rows=2, Columns=2, BitsAllocated=8, BitsStored=8, HighBit=7, Modality="OT")
    for ds in (compressed, native):
        assert devpacs.store_file(dw["orthanc"].url, devpacs.to_part10(ds)) is not None
    for ds, status in ((compressed, 406), (native, 200)):
        path = f"studies/{dw['study']}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/bulk/7fe00010"
        for accept in ("application/octet-stream", 'multipart/related; type="application/octet-stream"'):
            response = get(dw, path, accept=accept)
            assert response.status_code == status, accept
            if status == 200:
                body = response.data if accept == "application/octet-stream" else \
                    parse_by_boundary(response.data, response.headers["Content-Type"])[0][1]
                assert sha(body) == sha(ds.PixelData)
