"""Unit tests for the instances and frames the facade transcodes itself (issue 14 item 3).

fhir_facade.dicom.transcoding on pydicom's sample files; the proxy's decisions with the PACS
faked by `responses`: what the PACS is asked for, what the client gets, and what it gets when
an instance's pixel data is damaged before or after the first byte.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pydicom
import pytest
import responses
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

import devpacs
import samples
from dicom_json_builders import ds as json_ds
from facade_helpers import FAKE_PACS, bearer, token
from fhir_facade.dicom.transcoding import TranscodeError, can_decode, decode_frames, transcode_instance
from multipart_parsers import parse_by_length

STUDY, SERIES = "1.2.1", "1.2.1.1"
EVRLE = str(ExplicitVRLittleEndian)
#: pydicom's bundled files, one per stored syntax the facade decodes (none is downloaded).
SAMPLES = ["SC_rgb_jpeg_gdcm.dcm", "SC_rgb_small_odd_jpeg.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
           "JPEG2000.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "MR_small.dcm"]


def sample(name: str) -> bytes:
    with open(get_testdata_file(name, download=False), "rb") as handle:
        return handle.read()


def damaged(name: str = "SC_rgb_jpeg_gdcm.dcm") -> bytes:
    """A JPEG instance whose compressed stream is cut off after 64 bytes (and then zeros)."""
    ds = pydicom.dcmread(io.BytesIO(sample(name)))
    from pydicom.encaps import encapsulate, generate_frames
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:64] + bytes(len(frame) - 64)])
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize("name", SAMPLES)
def test_each_stored_syntax_is_written_explicit_vr_little_endian_with_the_same_pixels(name):
    stored = sample(name)
    result = pydicom.dcmread(io.BytesIO(transcode_instance(stored, EVRLE)))
    original = pydicom.dcmread(io.BytesIO(stored))
    assert result.file_meta.TransferSyntaxUID == EVRLE
    assert result.SOPInstanceUID == original.SOPInstanceUID  # the same instance, not a new one
    assert np.array_equal(result.pixel_array, original.pixel_array)


def test_an_instance_already_in_the_syntax_is_returned_untouched():
    stored = sample("MR_small.dcm")
    assert transcode_instance(stored, EVRLE) is stored


def test_implicit_vr_little_endian_can_be_asked_for():
    result = pydicom.dcmread(io.BytesIO(transcode_instance(sample("MR_small_RLE.dcm"), ImplicitVRLittleEndian)))
    assert result.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert result.pixel_array.sum() == pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.sum()


def test_a_bare_dataset_becomes_a_part10_file():
    """Orthanc keeps files stored without preamble and File Meta as they came."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    original = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    bare = DicomBytesIO()
    bare.is_little_endian, bare.is_implicit_VR = True, True
    write_dataset(bare, original)
    as_stored = pydicom.dcmread(io.BytesIO(transcode_instance(bare.getvalue(), "*")))
    assert as_stored.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert as_stored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    explicit = pydicom.dcmread(io.BytesIO(transcode_instance(bare.getvalue(), EVRLE)))
    assert np.array_equal(explicit.pixel_array, original.pixel_array)


@pytest.mark.parametrize("data, target", [
    (b"not DICOM at all", EVRLE),
    (damaged(), EVRLE),
    (sample("MR_small.dcm"), "1.2.840.10008.1.2.4.50"),  # compressed targets are the PACS's
])
def test_what_cannot_be_transcoded_raises(data, target):
    with pytest.raises(TranscodeError):
        transcode_instance(data, target)


@pytest.mark.parametrize("syntax, decodable", [
    ("1.2.840.10008.1.2.4.50", True), ("1.2.840.10008.1.2.4.90", True), ("1.2.840.10008.1.2.5", True),
    ("1.2.840.10008.1.2.2", True), ("1.2.840.10008.1.2.4.102", False), ("1.2.3.4", False),
])
def test_can_decode(syntax, decodable):
    assert can_decode(syntax) is decodable


def test_decode_frames_of_a_multiframe_rle_instance():
    ds = samples.make_instance(transfer_syntax=RLELossless, NumberOfFrames=4, Rows=16, Columns=16)
    data = devpacs.to_part10(ds)
    frames = decode_frames(data, [3, 1])
    reference = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert frames == [reference[2].astype("<u2").tobytes(), reference[0].astype("<u2").tobytes()]
    with pytest.raises(IndexError):
        decode_frames(data, [5])


# --- the proxy, with the PACS faked --------------------------------------------------------------

@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.GET, f"{FAKE_PACS}/studies", json=[json_ds(StudyInstanceUID=STUDY, PatientID="P1")])
        mock.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series",
                 json=[json_ds(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, PatientID="P1")])
        mock.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances",
                 json=[{**json_ds(StudyInstanceUID=STUDY, SOPInstanceUID="1.2.3"), "00280010": {"vr": "US", "Value": [64]},
                        "00280008": {"vr": "IS", "Value": [1]}}])
        yield mock


def multipart_body(*parts: bytes, boundary: str = "pacs") -> bytes:
    pieces = [b"--%s\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n%s\r\n"
              % (boundary.encode(), len(part), part) for part in parts]
    return b"".join(pieces) + b"--%s--\r\n" % boundary.encode()


def pacs_study(rsps, *parts: bytes):
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}", body=multipart_body(*parts),
             content_type='multipart/related; type="application/dicom"; boundary=pacs')


def test_a_default_study_is_asked_as_stored_and_transcoded_part_by_part(fake_app, rsps):
    native, jpeg = sample("MR_small.dcm"), sample("SC_rgb_jpeg_gdcm.dcm")
    pacs_study(rsps, native, jpeg, native)
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers=bearer(token(fake_app)))
    assert response.status_code == 200
    asked = next(call.request for call in rsps.calls if call.request.url.endswith(f"/studies/{STUDY}"))
    assert asked.headers["Accept"] == 'multipart/related; type="application/dicom"; transfer-syntax=*'
    assert response.headers["Content-Type"].startswith(
        f'multipart/related; type="application/dicom"; transfer-syntax={EVRLE}; boundary=')
    parts = parse_by_length(response.data, response.headers["Content-Type"])
    assert [headers["content-type"] for headers, _ in parts] == [f"application/dicom; transfer-syntax={EVRLE}"] * 3
    # Delivered as asked: byte for byte; the JPEG one: decoded, the same pixels.
    assert hashlib.sha256(parts[0][1]).digest() == hashlib.sha256(native).digest() == hashlib.sha256(parts[2][1]).digest()
    decoded = pydicom.dcmread(io.BytesIO(parts[1][1]))
    assert decoded.file_meta.TransferSyntaxUID == EVRLE
    assert np.array_equal(decoded.pixel_array, pydicom.dcmread(io.BytesIO(jpeg)).pixel_array)


def test_a_compressed_target_is_still_asked_of_the_pacs(fake_app, rsps):
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    pacs_study(rsps, sample("SC_rgb_small_odd_jpeg.dcm"))
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}",
                                          headers={**bearer(token(fake_app)), "Accept": accept})
    assert response.status_code == 200
    asked = next(call.request for call in rsps.calls if call.request.url.endswith(f"/studies/{STUDY}"))
    assert asked.headers["Accept"] == accept


def test_damaged_pixel_data_in_the_first_part_is_406_before_any_byte(fake_app, rsps):
    pacs_study(rsps, damaged(), sample("MR_small.dcm"))
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers=bearer(token(fake_app)))
    assert response.status_code == 406
    assert response.get_json()["message"].startswith(f"the instance is not available in {EVRLE}")


def test_damaged_pixel_data_later_ends_the_answer_after_the_last_whole_part(fake_app, rsps):
    """Each part is decoded before its first byte goes out: the client gets the whole parts before
    the damaged one and no close delimiter (and, over HTTP/1.1, no last chunk): detectably incomplete."""
    native = sample("MR_small.dcm")
    pacs_study(rsps, native, damaged(), native)
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}", headers=bearer(token(fake_app)),
                                          buffered=False)
    assert response.status_code == 200
    received = []
    with pytest.raises(TranscodeError):
        for chunk in response.response:
            received.append(chunk)
    body = b"".join(received)
    boundary = response.headers["Content-Type"].rsplit("boundary=", 1)[1]
    assert body.count(b"--" + boundary.encode()) == 1 and not body.rstrip().endswith(b"--")
    assert body.endswith(native)  # the first part, whole, and nothing of the damaged one
    response.close()


def test_a_single_part_instance_is_transcoded_before_it_is_sent(fake_app, rsps):
    jpeg = sample("SC_rgb_jpeg_gdcm.dcm")
    rsps.add(responses.GET, f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/1.2.3",
             body=multipart_body(jpeg), content_type='multipart/related; type="application/dicom"; boundary=pacs')
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/1.2.3",
                                          headers={**bearer(token(fake_app)), "Accept": "application/dicom"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == f"application/dicom; transfer-syntax={EVRLE}"
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert np.array_equal(pydicom.dcmread(io.BytesIO(response.data)).pixel_array,
                          pydicom.dcmread(io.BytesIO(jpeg)).pixel_array)


def test_frames_the_pacs_cannot_decode_are_decoded_by_the_facade(fake_app, rsps):
    j2k = sample("MR_small_jp2klossless.dcm")
    instance = f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/1.2.3"
    rsps.add(responses.GET, f"{instance}/frames/1", status=500)  # Orthanc 1.10 and JPEG 2000
    rsps.add(responses.GET, instance, body=multipart_body(j2k),
             content_type='multipart/related; type="application/dicom"; boundary=pacs')
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/1.2.3/frames/1",
                                          headers={**bearer(token(fake_app)),
                                                   "Accept": 'multipart/related; type="application/octet-stream"'})
    assert response.status_code == 200
    [(headers, frame)] = parse_by_length(response.data, response.headers["Content-Type"])
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"
    assert frame == pydicom.dcmread(io.BytesIO(j2k)).pixel_array.astype("<i2").tobytes()


def test_a_frame_beyond_the_instance_is_404_when_the_facade_decodes(fake_app, rsps):
    instance = f"{FAKE_PACS}/studies/{STUDY}/series/{SERIES}/instances/1.2.3"
    rsps.add(responses.GET, f"{instance}/frames/2", status=500)
    rsps.add(responses.GET, instance, body=multipart_body(sample("MR_small_jp2klossless.dcm")),
             content_type='multipart/related; type="application/dicom"; boundary=pacs')
    response = fake_app.test_client().get(f"/dicomweb/studies/{STUDY}/series/{SERIES}/instances/1.2.3/frames/2",
                                          headers={**bearer(token(fake_app)), "Accept": "application/octet-stream"})
    assert response.status_code == 404
