"""The reversible rule between DICOM PatientID and FHIR ``Patient.id`` (DESIGN.md "Identifiers").

Rule
----
1. A PatientID that is already a valid FHIR id (``[A-Za-z0-9\\-\\.]{1,64}``, FHIR R4
   §2.26.0.2 "id") and does not start with the reserved prefix ``dcm-`` maps to itself.
2. Every other PatientID — empty, with spaces, ``/``, ``+``, ``_``, non-ASCII characters,
   longer than 64 characters, or starting with ``dcm-`` — maps to ``dcm-`` followed by its
   UTF-8 bytes where ``A-Z a-z 0-9 -`` stay as they are and every other byte becomes ``.``
   plus two upper-case hex digits (so ``.`` itself is ``.2E``). A leading ``h`` that an
   escape follows is escaped too (``.68``): ``dcm-h.`` begins rule 3's ids only, so no
   PatientID's id is another's one-way id. The empty PatientID (type 2 in DICOM, present
   but empty) becomes ``dcm-``: all studies without a PatientID belong to one Patient whose
   id is ``dcm-``.
3. If the result of rule 2 would be longer than 64 characters the id is
   ``dcm-h.`` + the first 32 hex digits of the SHA-256 of the UTF-8 PatientID. That form is
   one-way; :func:`to_patient_id` answers ``None`` for it and the caller resolves it by
   matching the hash against the PatientIDs it sees.

A multi-valued PatientID (``bs\\x``: DICOM's value separator inside the element, PS3.5
Section 6.4) is one identity: its values joined by ``\\`` again
(:func:`fhir_facade.dicom.dicom_json.patient_id`), never its first value. The backslash is
escaped by rule 2 (``dcm-bs.5Cx``), so it never meets the id of ``bs``.

Both directions are pure functions; :func:`to_patient_id` inverts :func:`to_fhir_id` for
every id produced by rules 1 and 2.
"""
from __future__ import annotations

import hashlib
import re

PREFIX = "dcm-"
HASH_PREFIX = PREFIX + "h."
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPE = re.compile(r"\.([0-9A-F]{2})")


class InvalidPatientId(ValueError):
    """A FHIR Patient id that no PatientID maps to."""

    def __init__(self, value: str):
        super().__init__(f"{value!r} is not a Patient id this server issues")
        self.value = value


def hashed_id(patient_id: str) -> str:
    """Return the one-way id of rule 3 for *patient_id*."""
    return HASH_PREFIX + hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:32]


def to_fhir_id(patient_id: str | None) -> str:
    """Map a DICOM PatientID (0010,0020) to a FHIR ``Patient.id``.

    Parameters
    ----------
    patient_id : str or None
        The PatientID value as found in DICOM JSON (``None`` when absent or empty).

    Returns
    -------
    str
        A valid FHIR id (FHIR R4 datatype ``id``), 4 to 64 characters when encoded.
    """
    value = patient_id or ""
    if FHIR_ID.fullmatch(value) and not value.startswith(PREFIX):
        return value
    encoded = PREFIX + "".join(chr(b) if b in _KEEP else f".{b:02X}" for b in value.encode("utf-8"))
    if encoded.startswith(HASH_PREFIX):  # reserved for rule 3: "h" then an escape
        encoded = PREFIX + ".68" + encoded[len(PREFIX) + 1:]
    if len(encoded) <= 64:
        return encoded
    return hashed_id(value)


def to_patient_id(fhir_id: str) -> str | None:
    """Invert :func:`to_fhir_id`.

    Parameters
    ----------
    fhir_id : str
        A FHIR Patient id as a client sends it.

    Returns
    -------
    str or None
        The DICOM PatientID, or ``None`` for the one-way hashed form (rule 3).

    Raises
    ------
    InvalidPatientId
        If *fhir_id* is not a valid FHIR id or is not a form :func:`to_fhir_id` produces.
    """
    if not FHIR_ID.fullmatch(fhir_id):
        raise InvalidPatientId(fhir_id)
    if not fhir_id.startswith(PREFIX):
        return fhir_id
    if fhir_id.startswith(HASH_PREFIX):
        if not re.fullmatch(r"[0-9a-f]{32}", fhir_id[len(HASH_PREFIX):]):
            raise InvalidPatientId(fhir_id)
        return None
    body = fhir_id[len(PREFIX):]
    if "." in _ESCAPE.sub("", body):
        raise InvalidPatientId(fhir_id)
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(body):
        raw += body[pos:match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += body[pos:].encode("ascii")
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPatientId(fhir_id) from exc
    if to_fhir_id(value) != fhir_id:  # escapes of bytes that rule 2 keeps as they are
        raise InvalidPatientId(fhir_id)
    return value
