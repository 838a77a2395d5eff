"""FHIR R4 API, DICOM->FHIR mapping, PACS client and DICOMweb proxy of the facade."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the PACS client, the FHIR blueprint and the DICOMweb proxy on *app*."""
