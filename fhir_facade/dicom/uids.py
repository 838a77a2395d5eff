"""DICOM UID syntax (PS3.5 Section 9.1): checked by the FHIR searches and by the DICOMweb paths."""
from __future__ import annotations

import re

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def is_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID (PS3.5 Section 9.1), at most 64 characters."""
    return len(value) <= 64 and bool(_UID.fullmatch(value)) and all(
        part == "0" or not part.startswith("0") for part in value.split("."))
