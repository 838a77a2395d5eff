"""Instances the facade transcodes itself, part by part, while a WADO-RS answer streams.

For a retrieval of DICOM instances in an uncompressed transfer syntax (the default, Explicit
VR Little Endian, PS3.18 Section 8.7.3.5.2, included) the PACS is asked for the instances as
stored (``transfer-syntax=*``), which it can always send. Each part is then relayed as it came
when it is already in the syntax asked for (its body spliced where the server allows), or read
whole, decoded and re-encoded (:mod:`fhir_facade.dicom.transcoding`) and sent with its own
Content-Length once it is complete: one instance in memory at a time.

A part that cannot be transcoded (a stored syntax without a decoder, damaged pixel data)
raises :class:`~fhir_facade.dicom.transcoding.TranscodeError`. As the first part, before any
byte went out: the relay answers 406. Later, the answer ends after the last whole part and
without the multipart close delimiter (and, over HTTP/1.1, without the last chunk), which
every multipart parser reports as incomplete: never a part cut short or mislabelled.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from fhir_facade.dicom.transcoding import TranscodeError, is_part10, transcode_instance
from fhir_facade.dicomweb import multipart
from fhir_facade.dicomweb.negotiation import parse_media_type

log = logging.getLogger(__name__)

Headers = multipart.Headers


def is_dicom_part(headers: Headers) -> bool:
    """Whether a part is a DICOM instance (``application/dicom``), whose File Meta to peek at."""
    media, _ = parse_media_type(multipart.header(headers, "Content-Type") or "")
    return media == "application/dicom"


def needs_transcoding(headers: Headers, start: bytes, transfer_syntax: str) -> bool:
    """Whether a part starting with *start* is a DICOM file (PS3.10 Section 7.1) not in *transfer_syntax*.

    A body without the Part-10 preamble and ``DICM`` is a bare dataset as the PACS stored it,
    which a client cannot read as a file: it is made one. One whose File Meta does not end
    within *start* is read whole.
    """
    if not is_dicom_part(headers):
        return False
    if transfer_syntax == "*":  # as stored: only a bare dataset is made a file
        return not is_part10(start)
    return multipart.transfer_syntax_of(start) != transfer_syntax


def relabelled(headers: Headers, data: bytes) -> Headers:
    """*headers* of a part whose body became the DICOM file *data*: its Content-Type and Content-Length."""
    kept = [(name, value) for name, value in headers if name.lower() not in ("content-type", "content-length")]
    return kept + [("Content-Type", f"application/dicom; transfer-syntax={multipart.transfer_syntax_of(data)}"),
                   ("Content-Length", str(len(data)))]


def replacer(transfer_syntax: str, relabel: Callable[[Headers], Headers]) -> multipart.Replacer:
    """The :func:`multipart.rewrite` ``replace`` hook transcoding DICOM parts to *transfer_syntax*.

    Parameters
    ----------
    transfer_syntax : str
        The syntax asked for, one of :data:`fhir_facade.dicom.transcoding.PRODUCIBLE`, or ``*``:
        as stored, a bare dataset made a Part-10 file in its own syntax (relayed as sent if
        it cannot be read).
    relabel : callable
        ``headers -> headers`` for a transcoded part (Content-Location pointed at the
        facade); it must not need an app context (it runs while the answer streams).

    Returns
    -------
    callable
        ``(headers, body_start) -> None`` for a part already in *transfer_syntax* (or not
        DICOM), else ``finish(body) -> (headers, body)``, which raises
        :class:`TranscodeError` when the instance cannot be transcoded.
    """
    def replace(headers: Headers, start: bytes):
        if not needs_transcoding(headers, start, transfer_syntax):
            return None  # delivered as asked: relayed byte for byte (and spliced)

        def finish(body: bytes) -> tuple[Headers, bytes]:
            try:
                data = transcode_instance(body, transfer_syntax)
            except TranscodeError as exc:
                if transfer_syntax == "*":
                    return relabel(headers), body  # as stored, as the PACS sent it
                log.warning("an instance could not be transcoded to %s: %s", transfer_syntax, exc)
                raise
            return relabel(relabelled(headers, data)), data
        return finish
    return replace
