"""Frames the facade decodes itself when the PACS cannot send them uncompressed (PS3.18 Section 10.4.1.1.4).

``application/octet-stream`` frames are uncompressed, Explicit VR Little Endian (PS3.18
Section 8.7.3.5.2). A PACS that cannot decode an instance's pixel data (Orthanc 1.10 and
JPEG 2000) refuses such a request before answering; the facade then asks for the instance as
stored, decodes the frames asked for with pydicom (:mod:`fhir_facade.dicom.transcoding`) and
answers them itself, all of them decoded before the first byte. One instance in memory.
"""
from __future__ import annotations

import io
import secrets

from flask import Response

from fhir_facade.dicom.transcoding import MAX_INSTANCE_BYTES, TranscodeError, decode_frames
from fhir_facade.dicomweb import multipart
from fhir_facade.dicomweb.negotiation import AS_STORED_INSTANCES, EXPLICIT_VR_LITTLE_ENDIAN, Choice, parse_media_type
from fhir_facade.dicomweb.relay import DicomwebError, NotAvailable, upstream_failure
from fhir_facade.pacs.client import READ_ERRORS, PacsError, broken_answer, get_pacs

FRAME_TYPE = f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"


def can_answer(choice: Choice) -> bool:
    """Whether *choice* is uncompressed frames, which the facade can decode itself."""
    return choice.part_type == "application/octet-stream" and choice.transfer_syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN)


def _stored_instance(instance_path: str) -> bytes | Response | None:
    """The instance at *instance_path* as stored (a Part-10 file, or the bare dataset the PACS
    holds); the 404 answer when the PACS has no such instance; ``None`` when it fails otherwise.

    Raises
    ------
    NotAvailable
        For an instance over :data:`~fhir_facade.dicom.transcoding.MAX_INSTANCE_BYTES`.
    PacsError
        If the PACS answer is broken.
    """
    upstream = get_pacs().get(instance_path, headers={"Accept": AS_STORED_INSTANCES, "Accept-Encoding": "identity"},
                              stream=True)
    with upstream:
        if upstream.status_code in (404, 410):
            return upstream_failure(upstream, None)
        if upstream.status_code != 200:
            return None
        media, params = parse_media_type(upstream.headers.get("Content-Type", ""))
        if media != "multipart/related" or not params.get("boundary"):
            raise PacsError("the PACS answered something other than multipart/related")
        try:
            data = upstream.raw.read(MAX_INSTANCE_BYTES + 1, decode_content=False)
        except READ_ERRORS as exc:
            raise broken_answer(upstream, exc) from exc
    if len(data) > MAX_INSTANCE_BYTES:
        raise NotAvailable(f"the instance is larger than {MAX_INSTANCE_BYTES} bytes: its frames are not decoded here")
    try:
        _, _, body = multipart.unwrap(io.BytesIO(data).read, params["boundary"])
        return b"".join(body)
    except multipart.MultipartError as exc:
        raise PacsError(f"the PACS answered a malformed multipart body: {exc}") from exc


def answer(instance_path: str, numbers: list[int], choice: Choice) -> Response | None:
    """Frames *numbers* (1-based) of the instance at *instance_path*, decoded here, as *choice* asks.

    Parameters
    ----------
    instance_path : str
        ``studies/{uid}/series/{uid}/instances/{uid}`` below the PACS's DICOMweb base.
    numbers : list of int
        The frame list of the request.
    choice : Choice
        Uncompressed frames (:func:`can_answer`): one part, or multipart/related.

    Returns
    -------
    Response or None
        ``None`` when the PACS fails to send the instance (the PACS's refusal stands).

    Raises
    ------
    DicomwebError
        404 for a frame the instance lacks or an instance without pixel data; 406 when its
        pixel data cannot be decoded.
    """
    part10 = _stored_instance(instance_path)
    if part10 is None or isinstance(part10, Response):
        return part10
    try:
        frames = decode_frames(part10, numbers)
    except IndexError as exc:
        raise DicomwebError(404, str(exc)) from exc
    except TranscodeError as exc:
        raise NotAvailable(f"the frames are not available uncompressed: {exc}") from exc
    if choice.unwrap:
        return Response([frames[0]], status=200, headers={"Content-Type": FRAME_TYPE,
                                                          "Content-Length": str(len(frames[0]))})
    boundary = f"facade-{secrets.token_hex(16)}"
    pieces = []
    for frame in frames:
        pieces += [f"--{boundary}\r\nContent-Type: {FRAME_TYPE}\r\nContent-Length: {len(frame)}\r\n\r\n".encode(),
                   frame, b"\r\n"]
    pieces.append(f"--{boundary}--\r\n".encode())
    body = b"".join(pieces)
    return Response([body], status=200, headers={
        "Content-Type": f'multipart/related; type="application/octet-stream"; '
                        f'transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}; boundary={boundary}',
        "Content-Length": str(len(body))})
