"""ImagingStudy search (FHIR R4 §3.1.1), translated to QIDO-RS plus exact filters.

The PACS is asked a coarse QIDO-RS query (PS3.18 Section 10.6); every FHIR matching rule is
then applied exactly here, so PACS quirks (wildcards in PatientID, fuzzy matching, missing
ModalitiesInStudy) never widen an answer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import InvalidPatientId, to_patient_id
from fhir_facade.fhir.outcomes import BadSearch
from fhir_facade.fhir.search_params import (  # noqa: F401
    DEFAULT_COUNT, MAX_COUNT, ResultParams, check_modifier, coding_matcher, date_predicate, date_range, is_uid,
    parse_result_parameter, reference_id, split_token, split_values, uid_values,
)
from fhir_facade.resources import mapping

STUDY_INCLUDES = {
    "ImagingStudy:endpoint": "ImagingStudy:endpoint",
    "ImagingStudy:endpoint:Endpoint": "ImagingStudy:endpoint",
    "ImagingStudy:patient": "ImagingStudy:patient",
    "ImagingStudy:patient:Patient": "ImagingStudy:patient",
    "ImagingStudy:subject": "ImagingStudy:patient",
    "ImagingStudy:subject:Patient": "ImagingStudy:patient",
}

#: ImagingStudy.status codes (FHIR R4 ValueSet imagingstudy-status, required binding).
STUDY_STATUSES = frozenset({"registered", "available", "cancelled", "entered-in-error", "unknown"})


@dataclass
class StudySearch(ResultParams):
    """A parsed ImagingStudy search.

    Attributes
    ----------
    qido : list of (str, str)
        Matching keys for the study-level QIDO-RS query.
    study_filters : list of callables
        Exact tests on study-level DICOM JSON.
    resource_filters : list of callables
        Exact tests on the mapped ImagingStudy (for elements computed from series).
    patient : str or None
        The FHIR Patient id asked for, if any.
    needs_instances : bool
        A filter looks at ``series.instance`` (``instance``, ``dicom-class``).
    """

    qido: list = field(default_factory=list)
    study_filters: list = field(default_factory=list)
    resource_filters: list = field(default_factory=list)
    patient: str | None = None
    needs_instances: bool = False

    @property
    def include_endpoint(self) -> bool:
        return "ImagingStudy:endpoint" in self.include

    @property
    def include_patient(self) -> bool:
        return "ImagingStudy:patient" in self.include

    @property
    def wants_instances(self) -> bool:
        """Whether ``series.instance`` is needed, to filter or to show."""
        if self.needs_instances:
            return True
        if self.summary in ("true", "text", "count"):
            return False
        return self.elements is None or "series" in self.elements


def _patient_reference(raw: str) -> str:
    value = reference_id(raw, "Patient")
    try:
        to_patient_id(value)
    except InvalidPatientId as exc:
        raise BadSearch(f"invalid patient id {raw!r}") from exc
    return value


def last_updated(resource: dict, zone_name: str) -> str | None:
    """When the PACS's content of a study last changed, as far as DICOMweb tells: the latest of
    the study's ``started`` (StudyDate/StudyTime) and its series' ``started``
    (SeriesDate/SeriesTime). What ``_lastUpdated`` searches (SMART Imaging Access SHALL;
    README "ImagingStudy search"): DICOMweb exposes no modification time of the PACS's own
    (Orthanc's LastUpdate is not in QIDO-RS), and a series added to a study later carries
    its own date."""
    candidates = [resource.get("started")] + [s.get("started") for s in _series_items(resource)]
    latest, latest_end = None, None
    for value in candidates:
        if not value:
            continue
        try:
            end = date_range(value, zone_name)[1]
        except ValueError:
            continue
        if latest_end is None or end > latest_end:
            latest, latest_end = value, end
    return latest


def _series_items(resource: dict) -> list[dict]:
    return resource.get("series", [])


def _instances(resource: dict) -> list[dict]:
    return [i for s in _series_items(resource) for i in s.get("instance", [])]


def parse_study_search(params: list[tuple[str, str]], zone_name: str, strict: bool = False) -> StudySearch:
    """Translate ImagingStudy search parameters into a :class:`StudySearch`.

    Parameters
    ----------
    params : list of (str, str)
        Query (or form) parameters in order; repeated names are ANDed, commas ORed.
    zone_name : str
        Zone for date values without an offset.
    strict : bool
        ``Prefer: handling=strict``: unknown parameters are an error instead of ignored.

    Raises
    ------
    BadSearch
        Unknown parameter under strict handling, an unsupported modifier, or a malformed value.
    """
    search = StudySearch()
    for name, raw in params:
        if parse_result_parameter(search, name, raw, STUDY_INCLUDES, strict):
            continue
        base = name.partition(":")[0]
        if base in ("patient", "subject"):
            check_modifier(name, frozenset({"Patient"}))
            values = [_patient_reference(v) for v in split_values(raw)]
            if len(values) != 1:
                raise BadSearch(f"{name} takes one patient")
            if search.patient is not None and search.patient != values[0]:
                search.study_filters.append(lambda ds: False)
            search.patient = values[0]
        elif base == "_id":
            check_modifier(name)
            uids = split_values(raw)
            if not all(is_uid(u) for u in uids):
                raise BadSearch(f"invalid _id {raw!r}: not a DICOM UID")
            search.study_filters.append(lambda ds, uids=frozenset(uids): dj.text(ds, "StudyInstanceUID") in uids)
            if len(uids) == 1:
                search.qido.append(("StudyInstanceUID", uids[0]))
        elif base == "identifier":
            check_modifier(name)
            search.study_filters.append(_identifier_filter(raw, search))
        elif base == "started":
            check_modifier(name)
            alternatives = [date_predicate(v, zone_name) for v in split_values(raw)]
            search.study_filters.append(
                lambda ds, tests=[m for m, _ in alternatives]: any(m(mapping.fhir_datetime(
                    dj.text(ds, "StudyDate"), dj.text(ds, "StudyTime"),
                    dj.text(ds, "TimezoneOffsetFromUTC"), zone_name)) for m in tests))
            if len(alternatives) == 1:
                start, end = alternatives[0][1]
                if start or end:
                    search.qido.append(("StudyDate", f"{start}-{end}"))
        elif base == "_lastUpdated":
            check_modifier(name)
            tests = [date_predicate(v, zone_name)[0] for v in split_values(raw)]
            search.resource_filters.append(
                lambda r, tests=tests: any(m(last_updated(r, zone_name)) for m in tests))
        elif base == "modality":
            check_modifier(name)
            match = coding_matcher(raw)
            search.resource_filters.append(lambda r, match=match: match(r.get("modality", [])))
        elif base == "series":
            check_modifier(name)
            uids = uid_values(name, raw)
            search.resource_filters.append(
                lambda r, uids=uids: any(s["uid"] in uids for s in _series_items(r)))
        elif base == "instance":
            check_modifier(name)
            uids = uid_values(name, raw)
            search.needs_instances = True
            search.resource_filters.append(lambda r, uids=uids: any(i["uid"] in uids for i in _instances(r)))
        elif base == "dicom-class":
            check_modifier(name)
            classes = frozenset(f"urn:oid:{uid}" for uid in uid_values(name, raw))
            search.needs_instances = True
            search.resource_filters.append(
                lambda r, classes=classes: any(i["sopClass"]["code"] in classes for i in _instances(r)))
        elif base == "bodysite":
            check_modifier(name)
            match = coding_matcher(raw)
            search.resource_filters.append(
                lambda r, match=match: match([s["bodySite"] for s in _series_items(r) if "bodySite" in s]))
        elif base == "status":
            check_modifier(name)
            codes = {split_token(v)[1] for v in split_values(raw)}
            if not codes <= STUDY_STATUSES:
                raise BadSearch(f"invalid status {raw!r}: not an ImagingStudy status code")
            search.resource_filters.append(lambda r, codes=frozenset(codes): r["status"] in codes)
        elif base == "endpoint":
            check_modifier(name, frozenset({"Endpoint"}))
            ids = {reference_id(v, "Endpoint") for v in split_values(raw)}
            search.resource_filters.append(
                lambda r, ids=frozenset(ids): any(e["reference"].split("/")[-1] in ids for e in r.get("endpoint", [])))
        else:
            if strict:
                raise BadSearch(f"unknown search parameter {name!r}")
            continue
        search.echo.append((name, raw))
    if search.patient is not None:
        patient_id = to_patient_id(search.patient)
        if patient_id is not None:
            search.qido.append(("PatientID", patient_id))
    return search


def _identifier_filter(raw: str, search: StudySearch) -> Callable[[dict], bool]:
    """ImagingStudy.identifier token: the study UID (``urn:dicom:uid|urn:oid:X``, ``urn:oid:X``) or accession."""
    uids: set[str] = set()
    accessions: set[str] = set()
    for value in split_values(raw):
        system, code = split_token(value)
        if system in (None, "urn:dicom:uid", "urn:ietf:rfc:3986") and code.startswith("urn:oid:"):
            uid = code[len("urn:oid:"):]
            if not is_uid(uid):
                raise BadSearch(f"invalid study UID in identifier {raw!r}")
            uids.add(uid)
        elif system == "urn:dicom:uid":
            if not is_uid(code):
                raise BadSearch(f"invalid study UID in identifier {raw!r}")
            uids.add(code)
        elif system in (None, "") and code:
            accessions.add(code)
        # any other system names identifiers this server does not hold: nothing matches
    values = uids | accessions
    if len(values) == 1 and uids:
        search.qido.append(("StudyInstanceUID", next(iter(uids))))
    elif len(values) == 1 and accessions:
        search.qido.append(("AccessionNumber", next(iter(accessions))))

    def matches(ds: dict) -> bool:
        return (dj.text(ds, "StudyInstanceUID") in uids) or (dj.text(ds, "AccessionNumber") in accessions)

    return matches
