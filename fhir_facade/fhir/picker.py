"""The consent page's patient picker, answered from the PACS (smart's :class:`PatientDirectory`).

smart does not import the facade: :func:`init_app` registers :class:`PacsPatientDirectory`
with smart (``smart.api.register_patient_directory``), and the consent page asks it for the
patients a practitioner may pick, found by name or id over QIDO-RS.
"""
from __future__ import annotations

from flask import Flask

from smart.api import PICKER_LIMIT, UNNAMED, PatientChoice, PickerUnavailable, register_patient_directory

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import to_fhir_id
from fhir_facade.fhir.patient_search import normalize
from fhir_facade.pacs.client import PacsError
from fhir_facade.pacs.studies import get_studies
from fhir_facade.resources.mapping import human_names

#: Studies asked of the PACS per query; patients are grouped from them.
STUDY_LIMIT = 200


def _matching_keys(query: str) -> list[list[tuple[str, str]]]:
    """Study-level QIDO-RS queries for *query* (PS3.18 Section 10.6).

    A coarse query of the first :data:`STUDY_LIMIT` studies, and for a search text also an
    exact PatientID query and a wildcard PatientName query (PS3.4 C.2.2.2.4), which reach
    patients past that limit on a PACS that supports them. PACSs differ in how they match
    names and wildcards (the dev Orthanc matches neither), so :func:`find_patients` applies
    the real test itself, like the FHIR Patient search does.
    """
    limit = ("limit", str(STUDY_LIMIT))
    queries = [[limit]]
    if query:
        queries.append([("PatientName", "*" + "*".join(query.split()) + "*"), limit])
        if " " not in query:
            queries.append([("PatientID", query), limit])
    return queries


def _matches(query: str, patient_id: str, name: str) -> bool:
    """True if every word of *query* occurs in the PatientID or the name (case- and
    accent-insensitive, like FHIR R4 §3.1.1.5.6 ``:contains``)."""
    haystack = normalize(f"{patient_id} {name}")
    return all(normalize(word) in haystack for word in query.split())


def find_patients(query: str, limit: int = PICKER_LIMIT) -> list[PatientChoice]:
    """Patients of the PACS whose name or PatientID contains *query* (all when empty).

    Parameters
    ----------
    query : str
        What the user typed, without wildcards (``smart.web.picker.clean_query``).
    limit : int
        Patients returned at most, sorted by name then id.

    Returns
    -------
    list of PatientChoice

    Raises
    ------
    PickerUnavailable
        If the PACS fails (connection, timeout, error status).
    """
    repository = get_studies()
    found: dict[str, dict] = {}
    try:
        for params in _matching_keys(query):
            for study in repository.find_studies(params):
                patient_id = dj.patient_id(study) or ""
                row = found.setdefault(patient_id, {"study": study, "uids": set()})
                row["uids"].add(dj.text(study, "StudyInstanceUID"))
    except PacsError as exc:
        raise PickerUnavailable() from exc
    choices = []
    for patient_id, row in found.items():
        choice = _choice(patient_id, row["study"], len(row["uids"]))
        if query and not _matches(query, f"{patient_id} {choice.id}", choice.name if choice.name != UNNAMED else ""):
            continue
        choices.append(choice)
    # Named patients first (by name), then the unnamed ones, each by id.
    choices.sort(key=lambda c: (c.name == UNNAMED, c.name.lower(), c.id))
    return _with_stored_names(choices[:limit], found, repository)


def _with_stored_names(choices: list[PatientChoice], found: dict, repository) -> list[PatientChoice]:
    """Re-read the shown patients' names from instance metadata (some PACS, Orthanc 1.10
    among them, answer QIDO-RS in Latin-1 and drop Greek or Cyrillic letters)."""
    by_id = {to_fhir_id(patient_id): (patient_id, row) for patient_id, row in found.items()}
    try:
        modules = repository.patient_modules([by_id[c.id][1]["study"] for c in choices])
    except PacsError:
        return choices
    # The PatientID (hence the FHIR id) stays the one the study query matched.
    return [_choice(by_id[choice.id][0], module, choice.studies) for choice, module in zip(choices, modules)]


def describe_patient(fhir_id: str | None) -> PatientChoice | None:
    """The picker row of the patient with FHIR id *fhir_id* (for the patient in context of an
    EHR launch), or None when the id is not one of ours, the PACS holds no study of it, or
    the PACS fails: the page then shows the bare id."""
    try:
        patient_id = get_studies().patient_id_of(fhir_id)
        if patient_id is None:
            return None
        studies = get_studies().find_studies([("PatientID", patient_id)])
    except PacsError:
        return None
    studies = [ds for ds in studies if (dj.patient_id(ds) or "") == patient_id]
    if not studies:
        return None
    return _choice(patient_id, studies[0], len({dj.text(ds, "StudyInstanceUID") for ds in studies}))


def _choice(patient_id: str, study: dict, count: int) -> PatientChoice:
    """A picker row from one study-level dataset of the patient (PS3.18 Table 10.6.3-3)."""
    names = human_names(dj.first(study, "PatientName"))
    return PatientChoice(
        id=to_fhir_id(patient_id),
        name=" / ".join(n["text"] for n in names) or UNNAMED,
        birth_date=_date(dj.text(study, "PatientBirthDate")),
        sex=dj.text(study, "PatientSex"),
        studies=count,
    )


def _date(value: str | None) -> str | None:
    """DICOM DA ``YYYYMMDD`` as ``YYYY-MM-DD`` for display; anything else as it is."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def find_among(fhir_ids: frozenset[str], query: str, limit: int = PICKER_LIMIT) -> list[PatientChoice]:
    """The patients of *fhir_ids* (an access list) the PACS holds whose name or id contains
    *query*: each looked up by its own PatientID, so none is missed past the first studies.

    Raises
    ------
    PickerUnavailable
        If the PACS fails.
    """
    choices = []
    for fhir_id in sorted(fhir_ids):
        choice = describe_patient(fhir_id)
        if choice is not None and (not query or _matches(query, fhir_id, choice.name)):
            choices.append(choice)
        if len(choices) == limit:
            break
    choices.sort(key=lambda c: (c.name == UNNAMED, c.name.lower(), c.id))
    return choices


class PacsPatientDirectory:
    """smart's ``PatientDirectory`` over the facade's PACS (the app's study repository)."""

    def find_patients(self, query: str, limit: int = PICKER_LIMIT,
                      among: frozenset[str] | None = None) -> list[PatientChoice]:
        return find_patients(query, limit) if among is None else find_among(among, query, limit)

    def describe_patient(self, fhir_id: str | None) -> PatientChoice | None:
        return describe_patient(fhir_id)


def init_app(app: Flask) -> None:
    """Register the PACS as the source of the consent page's patient picker."""
    register_patient_directory(app, PacsPatientDirectory())
