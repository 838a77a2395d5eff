"""WADO-RS / QIDO-RS content negotiation (PS3.18 Section 8.7), decided by the facade, not the PACS.

The facade parses the client's ``Accept`` (quoted or unquoted ``type`` and
``transfer-syntax``, q-values), picks a representation the resource can have, and asks the
PACS for it in one canonical form. What the client cannot get is a 406 before the PACS is
asked anything.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from werkzeug.http import parse_list_header

from fhir_facade.dicom.transcoding import PRODUCIBLE

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")

#: Resource kind -> media types that may be asked for inside multipart/related (PS3.18
#: Tables 8.7.3-2 to 8.7.3-5).
MULTIPART_TYPES = {
    "instances": ("application/dicom",),
    "bulkdata": ("application/octet-stream", "image/jpeg", "image/jls", "image/jp2", "image/jpx",
                 "image/dicom-rle", "video/mpeg", "video/mp4", "video/H265"),
}
#: Resource kind -> single-part media types (PS3.18 Table 8.7.3-1 "single part").
SINGLE_TYPES = {
    "instance": ("application/dicom",),
    "frame": ("application/octet-stream", "image/jpeg", "image/jls", "image/jp2", "image/jpx"),
    "rendered": ("image/jpeg", "image/png"),
    "json": ("application/dicom+json", "application/json"),
}


#: Compressed pixel data media types -> the transfer syntax meant when a request names none
#: (PS3.18 Table 8.7.3-5 "default transfer syntax"). Asked for explicitly, a PACS that holds
#: another one transcodes, or fails and the client gets 406, rather than sending stored
#: JPEG Lossless bytes as ``image/jpeg`` that a browser cannot decode.
DEFAULT_TRANSFER_SYNTAX = {
    "image/jpeg": "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
}


#: A quoted string from its opening quote: escaped characters, up to the closing quote or the end.
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split *text* at *separator* outside quoted strings (RFC 9110 Section 5.6.4).

    A backslash inside a quoted string escapes the next character; an unclosed quote runs
    to the end. Found with ``str.find`` and one regular expression per quoted string: media
    types are parsed several times a request, and a loop over characters cost ~0.1 ms.
    """
    if '"' not in text:
        return text.split(separator)
    parts, start, position, separator_at = [], 0, 0, -1
    while True:
        if separator_at < position:  # else the one found before is still the next (linear time)
            separator_at = text.find(separator, position)
            if separator_at < 0:
                separator_at = len(text)
        quote_at = text.find('"', position, separator_at)
        if quote_at >= 0:
            position = _QUOTED.match(text, quote_at).end()
            continue
        if separator_at == len(text):
            break
        parts.append(text[start:separator_at])
        start = position = separator_at + 1
    parts.append(text[start:])
    return parts


def parse_media_type(text: str) -> tuple[str, dict]:
    """Split ``type/subtype; name=value; name="value"`` into the type and its parameters.

    Unlike RFC 9110 tokens, unquoted values may hold ``/`` (``type=application/dicom``), as
    DICOMweb clients commonly send them (PS3.18 Section 8.7.3.5.2 examples are quoted).
    """
    pieces = _split_quoted(text, ";")
    media = pieces[0].strip().lower()
    params = {}
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name.strip().lower()] = value
    return media, params


class NotAcceptable(Exception):
    """No representation the client accepts can be served (406, PS3.18 Section 8.7.1)."""

    def __init__(self, accept: str):
        super().__init__(f"cannot serve any of: {accept}")
        self.accept = accept


@dataclass(frozen=True)
class Choice:
    """The representation chosen for one request.

    Attributes
    ----------
    upstream_accept : str
        Canonical ``Accept`` sent to the PACS.
    unwrap : bool
        The client wants a single part: unwrap the PACS's multipart answer.
    multipart : bool
        The answer is multipart/related (relayed with rewritten part headers).
    part_type : str
        Media type of the parts, or of the single-part answer.
    transfer_syntax : str or None
        Transfer syntax asked for (``*`` or a UID), ``None`` for the default.
    stored_type : str or None
        Serve only what the PACS holds in this media type, as stored: the PACS is asked for
        the pixel data as stored and every part must be of this type (and of
        *transfer_syntax*, unless ``*``); anything else is not available.
    transcode : bool
        DICOM instances in an uncompressed syntax the facade writes itself
        (:data:`TRANSCODED_SYNTAXES`): the PACS is asked for them as stored and each part
        not already in :attr:`target_syntax` is transcoded by the facade
        (:mod:`fhir_facade.dicomweb.transcoded`).
    """

    upstream_accept: str
    unwrap: bool
    multipart: bool
    part_type: str
    transfer_syntax: str | None = None
    stored_type: str | None = None
    transcode: bool = False

    @property
    def target_syntax(self) -> str:
        """The transfer syntax of the parts sent: the one asked for, or the default Explicit
        VR Little Endian (PS3.18 Section 8.7.3.5.2)."""
        return self.transfer_syntax or EXPLICIT_VR_LITTLE_ENDIAN


def media_ranges(accept: str | None) -> list[tuple[str, dict, float]]:
    """Parse an Accept header into ``(media type, parameters, q)``, best first (RFC 9110 §12.5.1).

    A missing or empty header is ``*/*``. Quoted and unquoted parameter values are the same;
    a ``type`` parameter that embeds ``; transfer-syntax=`` (as some PACS write it) is split.
    """
    if not accept or not accept.strip():
        return [("*/*", {}, 1.0)]
    ranges = []
    for position, item in enumerate(parse_list_header(accept)):
        media, params = parse_media_type(item)
        if "type" in params and ";" in params["type"]:
            inner, inner_params = parse_media_type(params["type"])
            params["type"] = inner
            for key, value in inner_params.items():
                params.setdefault(key.lower(), value)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        if q > 0 and media:
            ranges.append((media, params, q, position))
    ranges.sort(key=lambda r: (-r[2], r[3]))
    return [(m, p, q) for m, p, q, _ in ranges]


def _transfer_syntax(params: dict) -> str | None | bool:
    """The transfer-syntax parameter: ``None`` absent, a value, or ``False`` if malformed."""
    value = params.get("transfer-syntax")
    if value is None:
        return None
    value = value.strip()
    if value == "*" or _UID.fullmatch(value):
        return value
    return False


#: Pixel data asked for as stored instead of transcoded by the PACS, so that an encoder the
#: PACS lacks or gets wrong is never run: ``*`` with a compressed type (Orthanc 1.10 answers
#: 400 to those), and JPEG-LS always (Orthanc 1.10's JPEG-LS encoder aborts the whole PACS
#: on some 8-bit colour frames).
AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
STORED_ONLY_TYPES = frozenset({"image/jls"})


#: Instances asked for as stored and transcoded by the facade when the client wants them in
#: one of these (Explicit VR Little Endian also when it names none): a PACS asked to transcode
#: may fail after its first parts went out (Orthanc 1.10 does for JPEG 2000), the facade knows
#: before each part. Compressed targets stay the PACS's to produce.
TRANSCODED_SYNTAXES = PRODUCIBLE
AS_STORED_INSTANCES = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _multipart(part_type: str, ts: str | None, unwrap: bool = False) -> Choice:
    if part_type == "application/dicom" and (ts is None or ts in TRANSCODED_SYNTAXES):
        return Choice(AS_STORED_INSTANCES, unwrap=unwrap, multipart=not unwrap, part_type=part_type,
                      transfer_syntax=ts, transcode=True)
    if ts is None:
        ts = DEFAULT_TRANSFER_SYNTAX.get(part_type.lower())
    compressed = part_type.lower().startswith(("image/", "video/"))
    if compressed and (ts == "*" or part_type.lower() in STORED_ONLY_TYPES):
        return Choice(AS_STORED, unwrap=unwrap, multipart=not unwrap, part_type=part_type, transfer_syntax=ts,
                      stored_type=part_type.lower())
    accept = f'multipart/related; type="{part_type}"'
    if ts:
        accept += f"; transfer-syntax={ts}"
    return Choice(accept, unwrap=unwrap, multipart=not unwrap, part_type=part_type, transfer_syntax=ts)


def choose(kind: str, accept: str | None, frames: int = 0) -> Choice:
    """Choose the representation of a DICOMweb resource for an Accept header: the first of :func:`choices`.

    Raises
    ------
    NotAcceptable
        If nothing the client accepts can be produced.
    """
    found = choices(kind, accept, frames)
    if not found:
        raise NotAcceptable(accept or "")
    return found[0]


def choices(kind: str, accept: str | None, frames: int = 0) -> list[Choice]:
    """Every representation of a DICOMweb resource the client accepts, best first.

    A PACS may be unable to produce the first one (it cannot transcode to a syntax); the
    next one the client accepts is then tried before answering 406 (PS3.18 Section 8.7.1).

    Parameters
    ----------
    kind : str
        ``study`` / ``series`` (DICOM instances, multipart only), ``instance`` (multipart or
        single part), ``frames`` and ``bulkdata`` (pixel data), ``rendered`` (images),
        ``json`` (metadata and QIDO-RS).
    accept : str or None
        The client's Accept header.
    frames : int
        Number of frames asked for (single-part frame answers need exactly one).

    Returns
    -------
    list of Choice
        Empty when nothing the client accepts can be produced.
    """
    found: list[Choice] = []
    for choice in _candidates(kind, accept, frames):
        alternatives = [choice]
        if choice.part_type == "application/octet-stream" and choice.transfer_syntax == "*":
            # Uncompressed frames as stored may be Big Endian or Deflated, which a frame
            # cannot be sent as: Explicit VR Little Endian is the uncompressed form "*"
            # also admits (PS3.18 Section 8.7.3.5.2), asked for when the PACS refuses.
            alternatives.append(_multipart("application/octet-stream", None, unwrap=choice.unwrap))
        for alternative in alternatives:
            if alternative not in found:
                found.append(alternative)
    return found


def _candidates(kind: str, accept: str | None, frames: int):
    for media, params, _ in media_ranges(accept):
        ts = _transfer_syntax(params)
        if ts is False:
            continue
        wildcard = media in ("*/*", "multipart/*")
        if kind in ("study", "series", "instance"):
            if wildcard or (media == "multipart/related" and params.get("type", "application/dicom").lower()
                            in ("application/dicom", "*/*", "application/*")):
                yield _multipart("application/dicom", ts)
                continue
            if kind == "instance" and media == "application/dicom":
                yield _multipart("application/dicom", ts, unwrap=True)
                continue
        elif kind in ("frames", "bulkdata"):
            if wildcard or media == "multipart/related":
                part = params.get("type", "application/octet-stream").lower() if not wildcard else \
                    "application/octet-stream"
                if part in ("*/*", "image/*", "video/*") and ts in (None, "*"):
                    # Any part type: the frames as stored, in whatever type they are (PS3.18 8.7.3.5.2).
                    yield _multipart("application/octet-stream", "*")
                    continue
                allowed = MULTIPART_TYPES["bulkdata"] if kind == "frames" else ("application/octet-stream",)
                match = next((t for t in allowed if t.lower() == part), None)
                if match:
                    yield _multipart(match, ts)
                    continue
            elif media in (t.lower() for t in SINGLE_TYPES["frame"]) and (frames == 1 or kind == "bulkdata"):
                if kind == "bulkdata" and media != "application/octet-stream":
                    continue
                match = next(t for t in SINGLE_TYPES["frame"] if t.lower() == media)
                yield _multipart(match, ts, unwrap=True)
                continue
        elif kind == "rendered":
            if media in ("*/*", "image/*"):
                yield Choice("image/jpeg", unwrap=False, multipart=False, part_type="image/jpeg")
                continue
            if media in SINGLE_TYPES["rendered"]:
                yield Choice(media, unwrap=False, multipart=False, part_type=media)
                continue
        elif kind == "json":
            if media in ("*/*", "application/*") or media in SINGLE_TYPES["json"]:
                yield Choice("application/dicom+json", unwrap=False, multipart=False,
                             part_type="application/dicom+json")
