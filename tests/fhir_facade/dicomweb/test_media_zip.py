"""A study as a DICOM-media ZIP (issue 15) from a real Orthanc: every member byte-identical to the
PACS's, the DICOMDIR read by pydicom's FileSet listing them all, names PS3.10 File IDs."""
from __future__ import annotations

import datetime
import hashlib
import io
import re
import zipfile

import numpy
import pydicom
import pytest
from pydicom.fileset import FileSet

import devpacs
import samples
from facade_helpers import bearer, make_app, token

PUBLIC = "https://facade.example/base"
PATIENT = "ZIP-PATIENT"
#: A PS3.10 File ID component: 1 to 8 of upper case letters, digits and underscore.
COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def zs(orthanc, tmp_path_factory):
    study = pydicom.uid.generate_uid()
    series = [pydicom.uid.generate_uid() for _ in range(2)]
    stored = {}
    pixels = {}
    for s, series_uid in enumerate(series):
        for n in range(1, 4):
            ds = samples.make_instance(PatientID=PATIENT, StudyInstanceUID=study, SeriesInstanceUID=series_uid,
                                       InstanceNumber=n, Modality="CT" if s == 0 else "OT")
            data = devpacs.to_part10(ds)
            devpacs.store_file(orthanc.url, data)
            stored[str(ds.SOPInstanceUID)] = sha(data)
            pixels[str(ds.SOPInstanceUID)] = sha(ds.pixel_array.tobytes())
    other = samples.make_instance(PatientID="ZIP-OTHER", Modality="OT")
    devpacs.store_file(orthanc.url, devpacs.to_part10(other))
    app = make_app(tmp_path_factory.mktemp("zip"), FACADE_PACS_URL=orthanc.dicomweb_url, FACADE_PUBLIC_URL=PUBLIC)
    return {"app": app, "study": study, "series": series, "stored": stored, "pixels": pixels,
            "other": str(other.StudyInstanceUID), "token": token(app, patient=PATIENT)}


def fetch_zip(zs, path, accept="application/zip", tok=None):
    return zs["app"].test_client().get(f"/dicomweb/{path}", headers={**bearer(tok or zs["token"]), "Accept": accept})


def check_media(archive: zipfile.ZipFile, zs, tmp_path) -> dict[str, str]:
    """Unzip; return SOPInstanceUID -> member name after checking every member and the DICOMDIR."""
    names = archive.namelist()
    assert names[-1] == "DICOMDIR"
    archive.extractall(tmp_path)
    file_set = FileSet(pydicom.dcmread(tmp_path / "DICOMDIR"))
    listed = {}
    for instance in file_set:
        member = instance.FileID.replace("\\", "/")
        assert all(COMPONENT.match(part) for part in member.split("/")), member
        data = archive.read(member)
        ds = instance.load()
        assert ds.SOPInstanceUID == instance.SOPInstanceUID
        assert sha(data) == zs["stored"][ds.SOPInstanceUID]
        assert sha(numpy.ascontiguousarray(ds.pixel_array).tobytes()) == zs["pixels"][ds.SOPInstanceUID]
        listed[ds.SOPInstanceUID] = member
    assert sorted(listed.values()) == sorted(n for n in names if n != "DICOMDIR")
    return listed


def test_a_study_as_dicom_media(zs, tmp_path):
    answer = fetch_zip(zs, f"studies/{zs['study']}")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"] == "application/zip"
    assert answer.is_streamed
    listed = check_media(zipfile.ZipFile(io.BytesIO(answer.data)), zs, tmp_path)
    assert set(listed) == set(zs["stored"])


def test_a_series_as_dicom_media_and_accept_in_the_query(zs, tmp_path):
    series = zs["series"][1]
    answer = zs["app"].test_client().get(f"/dicomweb/studies/{zs['study']}/series/{series}?accept=application/zip",
                                         headers=bearer(zs["token"]))
    assert answer.status_code == 200
    listed = check_media(zipfile.ZipFile(io.BytesIO(answer.data)), zs, tmp_path)
    assert len(listed) == 3


def test_zip_only_when_asked_and_only_for_whom_the_study_is(zs):
    multipart = fetch_zip(zs, f"studies/{zs['study']}", accept="*/*")
    assert multipart.headers["Content-Type"].startswith("multipart/related")
    assert fetch_zip(zs, f"studies/{zs['study']}", accept="application/zip; q=0").status_code == 406
    assert fetch_zip(zs, f"studies/{zs['other']}").status_code == 403
    assert fetch_zip(zs, f"studies/{zs['study']}/metadata").status_code == 406


@pytest.mark.parametrize("accept, wanted", [
    ("application/zip", True), ("application/ZIP;q=0.5", True), ("multipart/related, application/zip", True),
    ("application/zip;q=0", False), ("*/*", False), (None, False), ("application/zip;q=x", False),
])
def test_wants_zip(accept, wanted):
    from fhir_facade.dicomweb.media import wants_zip
    assert wants_zip(accept) is wanted


def test_each_part_yields_whole_parts_however_the_body_is_cut():
    from fhir_facade.dicomweb.multipart import each_part
    bodies = [b"first\r\n--not-the-boundary", b"", b"x" * 100_000]
    body = b"".join(b"--B0undary\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in bodies)
    body += b"--B0undary--\r\n"
    for size in (1, 7, 4096, len(body)):
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        assert list(each_part(chunks, "B0undary")) == bodies, size


def test_names_are_the_file_ids_pydicom_gives(tmp_path):
    import samples
    from fhir_facade.dicom.hierarchy import hierarchy
    from fhir_facade.dicomweb.media import Names
    names, file_set, ours = Names(), FileSet(), []
    study = pydicom.uid.generate_uid()
    series = [pydicom.uid.generate_uid() for _ in range(3)]
    for patient, series_uid in (("A", series[0]), ("B", series[1]), ("A", series[2]), ("A", series[0])):
        ds = samples.make_instance(PatientID=patient, StudyInstanceUID=study, SeriesInstanceUID=series_uid)
        data = devpacs.to_part10(ds)
        ds = pydicom.dcmread(io.BytesIO(data))
        ours.append(names.file_id(hierarchy(data)))
        file_set.add(ds)
    assert [i.FileID.replace("\\", "/") for i in file_set] == ours
    assert ours[3] == "PT000000/ST000000/SE000000/IM000001" and ours[2] == "PT000000/ST000000/SE000001/IM000000"


@pytest.mark.parametrize("data", [b"", b"a", bytes(range(256)) * 4099, numpy.random.default_rng(15).bytes(1 << 20)],
                         ids=["empty", "one", "pattern", "random"])
@pytest.mark.parametrize("start", [None, 0, 1, 0xFFFFFFFF, 0x1234ABCD])
def test_zipstream_computes_member_crcs_with_isa_l_and_the_crc_is_zlibs(data, start):
    """zipstream-ng looks ``crc32`` up in its own module: media binds it to ISA-L's, the same CRC-32."""
    import zlib

    import zipstream.ng
    from isal import isal_zlib

    from fhir_facade.dicomweb import media
    assert zipstream.ng.crc32 is isal_zlib.crc32
    assert zipfile.crc32 is zlib.crc32  # zipfile's own is left as it is
    assert media.crc32 is isal_zlib.crc32
    if start is None:
        assert isal_zlib.crc32(data) == zlib.crc32(data)
    else:
        assert isal_zlib.crc32(data, start) == zlib.crc32(data, start)
    assert isal_zlib.crc32(memoryview(data)) == zlib.crc32(data)


#: Runs of equal sizes, as in a CT series: with fewer turns, or pieces held past BLOCK bytes, the next
#: instance would overwrite the one before while it is still to be sent.
REUSE_SIZES = [20_000, 256 * 1024, 300_000, 600_000, 5_000, 270_000, 1_500_000, 256 * 1024 + 1, 100_000,
               2 * 256 * 1024 - 3, 700_000, 525_400, 525_400, 525_400, 525_400, 300_000, 2_000, 300_000, 300_000]


def reused_pieces(originals):
    """The ZIP's pieces as media.zip_pieces makes them, each member read into memory from Places."""
    from zipstream import ZIP_STORED, ZipStream

    from fhir_facade.dicomweb.media import Places
    places, stream = Places(), ZipStream(compress_type=ZIP_STORED)
    for n, data in enumerate(originals):
        place = places(len(data))
        place[:] = data
        stream.add([place], f"IM{n:06d}", size=len(place))
        yield from stream.file()
    yield from stream.footer()


def check_reused(body: bytes, originals) -> None:
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    assert [sha(archive.read(f"IM{n:06d}")) for n in range(len(originals))] == [sha(data) for data in originals]


def test_a_zip_of_reused_memory_holds_each_member_as_it_was():
    """media.joined copies each block as soon as BLOCK bytes are pending: members read into buffers
    reused by Places come out intact."""
    from fhir_facade.dicomweb.media import joined
    rng = numpy.random.default_rng(4)
    originals = [rng.bytes(size) for size in REUSE_SIZES]
    blocks = list(joined(reused_pieces(originals)))  # all held, as a buffering client would
    check_reused(b"".join(blocks), originals)


@pytest.mark.parametrize("chunked", [True, False])
def test_a_zip_of_reused_memory_written_to_a_socket_holds_each_member_as_it_was(chunked):
    """zerocopy.write_pieces writes each piece before the next is asked for once BLOCK bytes are pending."""
    import socket
    import threading

    from fhir_facade.dicomweb import zerocopy
    from fhir_facade.dicomweb.media import BLOCK
    rng = numpy.random.default_rng(5)
    originals = [rng.bytes(size) for size in REUSE_SIZES]
    facade_out, client_side = socket.socketpair()
    received = []

    def read():
        while data := client_side.recv(1 << 20):
            received.append(data)
    reader = threading.Thread(target=read)
    reader.start()
    body = zerocopy.write_pieces(reused_pieces(originals), facade_out, chunked, 10, BLOCK)
    first = next(body)
    assert len(first) >= BLOCK
    assert list(body) == []
    facade_out.close()
    reader.join(10)
    stream = b"".join(received)
    if chunked:  # RFC 9112 Section 7.1: size line, data, CRLF; each write at least BLOCK bytes but the last
        out, pos = [], 0
        while pos < len(stream):
            line_end = stream.index(b"\r\n", pos)
            size = int(stream[pos:line_end], 16)
            out.append(stream[line_end + 2:line_end + 2 + size])
            assert stream[line_end + 2 + size:line_end + 4 + size] == b"\r\n"
            pos = line_end + 4 + size
        assert all(len(chunk) >= BLOCK for chunk in out[:-1]) and out[-1]
        stream = b"".join(out)
    check_reused(first + stream, originals)


def test_places_take_turns_in_three_buffers_for_the_sizes_reused():
    from fhir_facade.dicomweb.media import BLOCK, REUSED_UP_TO, Places
    places = Places()
    sizes = [300_000, REUSED_UP_TO, BLOCK + 1, BLOCK, 290_000, 400_000, 280_000]
    views = [places(size) for size in sizes]
    assert [len(view) for view in views] == sizes
    assert all(view.readonly is False and view.contiguous for view in views)
    owners = [view.obj for view in views]
    assert len({id(owner) for owner in owners[:3]}) == 3
    # The fourth reuses the first's memory, and so on, where it fits.
    assert owners[3] is owners[0] and owners[4] is owners[1] and owners[6] is owners[0]
    assert owners[5] is not owners[2]  # 400 kB did not fit the BLOCK + 1 bytes of the third: replaced
    assert places(BLOCK).obj is owners[1]  # the rotation goes on where it was
    assert places(400_000).obj is owners[5]


@pytest.mark.parametrize("size", [0, 1, 5_000, "BLOCK - 1", "REUSED_UP_TO + 1", 20_000_000])
def test_places_outside_the_reused_sizes_are_fresh_memory_and_do_not_turn(size):
    from fhir_facade.dicomweb import media
    size = eval(size, vars(media)) if isinstance(size, str) else size
    places = media.Places()
    first = places(media.BLOCK)
    fresh = [places(size) for _ in range(4)]
    assert [len(view) for view in fresh] == [size] * 4
    assert len({id(view.obj) for view in fresh} | {id(first.obj)}) == 5
    for view in fresh:
        view[:] = b"\x07" * size  # writable, each its own
    assert bytes(first[:16]) == bytes(16)
    second, third, fourth = places(media.BLOCK), places(media.BLOCK), places(media.BLOCK)
    assert second.obj is not first.obj and third.obj is not first.obj and fourth.obj is first.obj


def test_a_buffer_grows_by_replacement_and_an_old_view_stays_as_it_was():
    from fhir_facade.dicomweb.media import BLOCK, Places
    places = Places()
    old = places(BLOCK)
    old[:] = b"\x01" * BLOCK
    places(BLOCK), places(BLOCK)
    grown = places(3 * BLOCK)  # the first buffer's turn again, and more than it holds
    assert grown.obj is not old.obj and len(grown) == 3 * BLOCK
    grown[:] = b"\x02" * (3 * BLOCK)
    assert bytes(old) == b"\x01" * BLOCK  # still valid, not written over
    places(BLOCK), places(BLOCK)
    again = places(BLOCK)  # the grown buffer, used for a smaller instance
    assert again.obj is grown.obj and len(again) == BLOCK
