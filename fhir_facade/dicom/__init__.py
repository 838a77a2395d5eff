"""DICOM itself, pure (no HTTP, no Flask, nothing above it): the lowest layer of the facade.

- :mod:`.dicom_json` — reading DICOM JSON datasets (PS3.18 Annex F);
- :mod:`.charsets` — repairing person names a PACS decoded in the wrong character set;
- :mod:`.patient_ids` — DICOM PatientID <-> FHIR Patient id;
- :mod:`.uids` — UID syntax.
"""
from .patient_ids import InvalidPatientId, hashed_id, to_fhir_id, to_patient_id
from .uids import is_uid

__all__ = ["InvalidPatientId", "hashed_id", "to_fhir_id", "to_patient_id", "is_uid"]
