"""DICOM -> FHIR R4 resources, pure: ImagingStudy, Patient and Endpoint from DICOM JSON.

Below the PACS layer because the study repository (:mod:`fhir_facade.pacs.studies`) caches the
ImagingStudy resources it maps; it knows nothing of HTTP, searches or tokens.

- :mod:`.mapping` — the resources;
- :mod:`.terminology` — the code systems and value maps they use.
"""
from .mapping import MappingContext, human_names, imaging_study

__all__ = ["MappingContext", "human_names", "imaging_study"]
