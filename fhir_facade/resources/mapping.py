"""DICOM JSON (QIDO-RS answers) -> FHIR R4 ImagingStudy, Patient and Endpoint, as pure functions.

Each function takes DICOM JSON datasets (PS3.18 Annex F) and returns a plain FHIR JSON
dict; nothing here does I/O. Element names follow FHIR R4 (``numberOfInstances``,
``sopClass``) and DICOM keywords (``StudyInstanceUID``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir_facade.dicom import dicom_json as dj
from fhir_facade.dicom.patient_ids import to_fhir_id

from fhir_facade.resources.terminology import BODY_PART, CODING_SCHEMES, DCM, GENDER, LATERALITY, SNOMED  # noqa: F401 (re-exported)

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_PAYLOAD_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
REQUIRES_ACCESS_TOKEN = "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token"
EN_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
ENDPOINT_ID = "dicomweb"
#: IHE MADO's web-viewer Endpoint connection type (MADO 1.0, CodeSystem MadoEndpointConnectionTypes).
MADO_CONNECTION_TYPE = "https://profiles.ihe.net/RAD/MADO/CodeSystem/MadoEndpointConnectionTypes"
VIEWER_ENDPOINT_PREFIX = "viewer-"
_UID_DIGITS = "0123456789."
_ID_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class MappingContext:
    """What the mapping needs to know about this deployment.

    Attributes
    ----------
    public_url : str
        Public base URL of the facade (no trailing slash).
    timezone : str
        IANA zone for DICOM times that carry no TimezoneOffsetFromUTC.
    patient_id_system : str or None
        ``Identifier.system`` for PatientID when the data names no issuer.
    """

    public_url: str
    timezone: str = "UTC"
    patient_id_system: str | None = None

    @property
    def dicomweb_base(self) -> str:
        """Public WADO-RS/QIDO-RS base (``Endpoint.address``)."""
        return f"{self.public_url}/dicomweb"

    @property
    def fhir_base(self) -> str:
        """Public FHIR base."""
        return f"{self.public_url}/fhir"

    def viewer_url(self, study_instance_uid: str) -> str:
        """The bundled web viewer's URL that opens one study (OHIF's ``viewer?StudyInstanceUIDs=``)."""
        return viewer_study_url(self.public_url, study_instance_uid)


def viewer_study_url(public_url: str, study_instance_uid: str) -> str:
    """The URL at which the facade's bundled viewer (``/viewer/``) opens study *study_instance_uid*.

    A UID holds only digits and dots (PS3.5 Section 9.1), so it needs no escaping in a query.
    """
    return f"{public_url.rstrip('/')}/viewer/viewer?StudyInstanceUIDs={study_instance_uid}"


def has_viewer_endpoint(study_instance_uid: str | None) -> bool:
    """Whether a study has a web-viewer Endpoint: its UID is one (digits and dots, PS3.5 §9.1)."""
    return bool(study_instance_uid) and set(study_instance_uid) <= set(_UID_DIGITS) and len(study_instance_uid) <= 64


def viewer_endpoint_id(study_instance_uid: str) -> str:
    """The id of a study's web-viewer Endpoint: ``viewer-<UID>``, reversible (:func:`viewer_endpoint_study`).

    A FHIR id holds at most 64 characters (FHIR R4 §2.24.0.1 ``id``); a UID of more than 57
    is written ``viewer-x<base 62>`` instead (its digits and dots read as a base-11 number).
    """
    plain = VIEWER_ENDPOINT_PREFIX + study_instance_uid
    if len(plain) <= 64:
        return plain
    number = 1  # a leading 1 keeps leading zeros
    for char in study_instance_uid:
        number = number * 11 + _UID_DIGITS.index(char)
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = _ID_DIGITS[rest] + digits
    return VIEWER_ENDPOINT_PREFIX + "x" + digits


def viewer_endpoint_study(endpoint_id: str) -> str | None:
    """The StudyInstanceUID a web-viewer Endpoint id names, or None if it names none."""
    if not endpoint_id.startswith(VIEWER_ENDPOINT_PREFIX):
        return None
    rest = endpoint_id[len(VIEWER_ENDPOINT_PREFIX):]
    if not rest.startswith("x"):
        return rest if rest and set(rest) <= set(_UID_DIGITS) else None
    number = 0
    for char in rest[1:]:
        if char not in _ID_DIGITS:
            return None
        number = number * 62 + _ID_DIGITS.index(char)
    uid = ""
    while number > 1:
        number, digit = divmod(number, 11)
        uid = _UID_DIGITS[digit] + uid
    return uid if number == 1 and uid else None


# --- date and time (PS3.5 Section 6.2 DA/TM/DT -> FHIR date/dateTime) -----------------

_DA = re.compile(r"(\d{4})(\d{2})?(\d{2})?")
_TM = re.compile(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?")
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})")


def fhir_date(value: str | None) -> str | None:
    """Convert a DICOM DA (``YYYYMMDD``) to a FHIR ``date``; ``None`` if absent or invalid."""
    if not value:
        return None
    match = _DA.fullmatch(value.strip().replace("-", ""))
    if not match:
        return None
    year, month, day = match.groups()
    try:
        if day:
            return date(int(year), int(month), int(day)).isoformat()
        if month:
            date(int(year), int(month), 1)
            return f"{year}-{month}"
        return year
    except ValueError:
        return None


def _zone_offset(zone_name: str, on: date, at: time) -> str:
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    delta = datetime.combine(on, at, tzinfo=zone).utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def fhir_datetime(da: str | None, tm: str | None, offset: str | None, default_zone: str) -> str | None:
    """Combine DICOM date, time and TimezoneOffsetFromUTC into a FHIR ``dateTime``.

    Parameters
    ----------
    da : str or None
        DA value, e.g. ``20240105``.
    tm : str or None
        TM value, e.g. ``101500.123456`` (``HH``, ``HHMM`` and the old ``HH:MM:SS`` forms too).
    offset : str or None
        TimezoneOffsetFromUTC (0008,0201), e.g. ``-0500``.
    default_zone : str
        IANA zone used when *offset* is absent (field case FH-4).

    Returns
    -------
    str or None
        ``2024-01-05T10:15:00.123456-05:00``; the date alone when there is no valid time;
        ``None`` when there is no valid date. A time is never emitted without an offset
        (FHIR R4 §2.24.0.1 dateTime).
    """
    day = fhir_date(da)
    if day is None or len(day) != 10:
        return day
    if not tm:
        return day
    match = _TM.fullmatch(tm.strip())
    if not match:
        return day
    hh, mm, ss, frac = match.groups()
    try:
        at = time(int(hh), int(mm or 0), min(int(ss or 0), 59))
    except ValueError:
        return day
    stamp = f"{day}T{at.strftime('%H:%M:%S')}"
    if frac:
        stamp += "." + frac
    off = _OFFSET.fullmatch(offset.strip()) if offset else None
    if off and int(off.group(2)) <= 14 and int(off.group(3)) < 60:
        zone = f"{off.group(1)}{off.group(2)}:{off.group(3)}"
    else:
        zone = _zone_offset(default_zone, date.fromisoformat(day), at)
    if zone == "-00:00":
        zone = "+00:00"
    return stamp + zone


# --- names ------------------------------------------------------------------------

def human_names(pn: object) -> list[dict]:
    """Map a DICOM PN value (PS3.18 F.2.2: Alphabetic/Ideographic/Phonetic) to FHIR HumanNames.

    Components are ``family^given^middle^prefix^suffix`` (PS3.5 Section 6.2.1). The
    Ideographic and Phonetic groups become extra names marked with the
    ``iso21090-EN-representation`` extension (``IDE``, ``SYL``).
    """
    if isinstance(pn, str):
        pn = {"Alphabetic": pn}
    if not isinstance(pn, dict):
        return []
    names = []
    for group, representation in (("Alphabetic", None), ("Ideographic", "IDE"), ("Phonetic", "SYL")):
        raw = pn.get(group)
        if not isinstance(raw, str) or not raw.strip("^ "):
            continue
        parts = [p.strip() for p in raw.split("^")] + [""] * 5
        family, given, middle, prefix, suffix = parts[:5]
        name: dict = {}
        if representation:
            name["extension"] = [{"url": EN_REPRESENTATION, "valueCode": representation}]
        name["text"] = " ".join(p for p in (prefix, given, middle, family, suffix) if p)
        if family:
            name["family"] = family
        given_names = [g for g in (given, middle) if g]
        if given_names:
            name["given"] = given_names
        if prefix:
            name["prefix"] = [prefix]
        if suffix:
            name["suffix"] = [suffix]
        names.append(name)
    return names


def _person_display(pn: object) -> str | None:
    names = human_names(pn)
    return names[0]["text"] if names else None


# --- codes ------------------------------------------------------------------------

def coding_from_item(item: dict) -> dict | None:
    """Map a DICOM code sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning) to a Coding."""
    code = dj.text(item, "CodeValue")
    scheme = dj.text(item, "CodingSchemeDesignator")
    meaning = dj.text(item, "CodeMeaning")
    if not code and not meaning:
        return None
    coding: dict = {}
    if scheme:
        coding["system"] = CODING_SCHEMES.get(scheme.upper(), f"urn:dicom:coding-scheme:{scheme}")
    if code:
        coding["code"] = code
    if meaning:
        coding["display"] = meaning
    return coding


def concepts(dataset: dict, keyword: str) -> list[dict]:
    """Map every item of a code sequence to a CodeableConcept."""
    result = []
    for item in dj.items(dataset, keyword):
        coding = coding_from_item(item)
        if coding:
            concept: dict = {"coding": [coding]}
            if "display" in coding:
                concept["text"] = coding["display"]
            result.append(concept)
    return result


def modality_coding(code: str) -> dict:
    """Coding for a DICOM Modality defined term (PS3.16 CID 29/33, DCM system)."""
    return {"system": DCM, "code": code}


def body_site(part: str | None) -> dict | None:
    """Map BodyPartExamined to a SNOMED CT Coding (PS3.16 Annex L); unknown terms keep the text."""
    if not part:
        return None
    known = BODY_PART.get(part.upper().replace(" ", ""))
    if known:
        return {"system": SNOMED, "code": known[0], "display": known[1]}
    return {"display": part}


def laterality(value: str | None) -> dict | None:
    """Map Laterality (0020,0060) R/L/B to a SNOMED CT Coding."""
    known = LATERALITY.get((value or "").upper())
    if not known:
        return None
    return {"system": SNOMED, "code": known[0], "display": known[1]}


# --- resources --------------------------------------------------------------------

def study_identifiers(study: dict) -> list[dict]:
    """ImagingStudy.identifier: the study UID as ``urn:dicom:uid`` and the accession number (ACSN)."""
    identifiers = [{"system": "urn:dicom:uid", "value": f"urn:oid:{dj.text(study, 'StudyInstanceUID')}"}]
    accession = dj.text(study, "AccessionNumber")
    if accession:
        acsn: dict = {
            "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
            "value": accession,
        }
        issuer = dj.items(study, "IssuerOfAccessionNumberSequence")
        if issuer:
            assigner = dj.text(issuer[0], "LocalNamespaceEntityID") or dj.text(issuer[0], "UniversalEntityID")
            if assigner:
                acsn["assigner"] = {"display": assigner}
        identifiers.append(acsn)
    return identifiers


def _instance(ds: dict) -> dict | None:
    uid = dj.text(ds, "SOPInstanceUID")
    sop_class = dj.text(ds, "SOPClassUID")
    if not uid or not sop_class:
        return None
    instance: dict = {"uid": uid, "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"}}
    number = dj.integer(ds, "InstanceNumber")
    if number is not None and number >= 0:
        instance["number"] = number
    title = dj.text(ds, "DocumentTitle")
    if not title:
        names = dj.items(ds, "ConceptNameCodeSequence")
        title = dj.text(names[0], "CodeMeaning") if names else None
    if title:
        instance["title"] = title
    return instance


def _series(ds: dict, instances: list[dict], ctx: MappingContext, study_offset: str | None = None) -> dict | None:
    uid = dj.text(ds, "SeriesInstanceUID")
    modality = dj.text(ds, "Modality")
    if not uid:
        return None
    series: dict = {"uid": uid}
    number = dj.integer(ds, "SeriesNumber")
    if number is not None and number >= 0:
        series["number"] = number
    series["modality"] = modality_coding(modality or "OT")
    description = dj.text(ds, "SeriesDescription")
    if description:
        series["description"] = description
    mapped = [m for m in (_instance(i) for i in instances) if m]
    mapped.sort(key=lambda i: (i.get("number", 1 << 31), i["uid"]))
    count = len(mapped) if mapped else dj.integer(ds, "NumberOfSeriesRelatedInstances")
    if count is not None and count >= 0:
        series["numberOfInstances"] = count
    site = body_site(dj.text(ds, "BodyPartExamined"))
    if site:
        series["bodySite"] = site
    side = laterality(dj.text(ds, "Laterality"))
    if side:
        series["laterality"] = side
    # TimezoneOffsetFromUTC is a study/instance attribute (PS3.3 C.12.1): the series'
    # own value wins, else the study's, else the configured zone (FH-4).
    started = fhir_datetime(dj.text(ds, "SeriesDate"), dj.text(ds, "SeriesTime"),
                            dj.text(ds, "TimezoneOffsetFromUTC") or study_offset, ctx.timezone)
    if started:
        series["started"] = started
    if mapped:
        series["instance"] = mapped
    return series


def imaging_study(study: dict, series: list[dict], instances: list[dict], ctx: MappingContext) -> dict:
    """Map one study's QIDO-RS answers to a FHIR R4 ImagingStudy.

    Parameters
    ----------
    study : dict
        Study-level DICOM JSON (PS3.18 Section 10.6.3.3.1 attributes).
    series : list of dict
        Series-level DICOM JSON for this study.
    instances : list of dict
        Instance-level DICOM JSON for this study (each with SeriesInstanceUID).
    ctx : MappingContext
        Public URLs and the default time zone.

    Returns
    -------
    dict
        FHIR R4 ImagingStudy; ``id`` is the StudyInstanceUID (DESIGN.md "Identifiers"),
        ``modality`` the union of the series' Modality (field case FH-2),
        ``numberOfInstances`` the count of instances found (FH-3).
    """
    uid = dj.text(study, "StudyInstanceUID")
    by_series: dict[str, list[dict]] = {}
    for instance in instances:
        by_series.setdefault(dj.text(instance, "SeriesInstanceUID") or "", []).append(instance)
    offset = dj.text(study, "TimezoneOffsetFromUTC")
    mapped_series = [s for s in (_series(ds, by_series.get(dj.text(ds, "SeriesInstanceUID") or "", []), ctx, offset)
                                 for ds in series) if s]
    mapped_series.sort(key=lambda s: (s.get("number", 1 << 31), s["uid"]))

    resource: dict = {
        "resourceType": "ImagingStudy",
        "id": uid,
        "identifier": study_identifiers(study),
        "status": "available",
    }
    modalities: list[str] = []
    for item in mapped_series:
        code = item["modality"]["code"]
        if code not in modalities:
            modalities.append(code)
    if not mapped_series:
        modalities = [str(m).strip() for m in dj.values(study, "ModalitiesInStudy") if str(m).strip()]
    if modalities:
        resource["modality"] = [modality_coding(m) for m in modalities]
    subject: dict = {"reference": f"Patient/{to_fhir_id(dj.patient_id(study))}"}
    display = _person_display(dj.first(study, "PatientName"))
    if display:
        subject["display"] = display
    resource["subject"] = subject
    started = fhir_datetime(dj.text(study, "StudyDate"), dj.text(study, "StudyTime"),
                            dj.text(study, "TimezoneOffsetFromUTC"), ctx.timezone)
    if started:
        resource["started"] = started
    referrer = _person_display(dj.first(study, "ReferringPhysicianName"))
    if referrer:
        resource["referrer"] = {"display": referrer}
    interpreters = [d for d in (_person_display(pn) for pn in dj.values(study, "NameOfPhysiciansReadingStudy")) if d]
    if interpreters:
        resource["interpreter"] = [{"display": d} for d in interpreters]
    resource["endpoint"] = [{"reference": f"Endpoint/{ENDPOINT_ID}"}]
    if has_viewer_endpoint(uid):
        resource["endpoint"].append({"reference": f"Endpoint/{viewer_endpoint_id(uid)}"})
    number_of_series = len(mapped_series) if mapped_series else dj.integer(study, "NumberOfStudyRelatedSeries")
    if number_of_series is not None and number_of_series >= 0:
        resource["numberOfSeries"] = number_of_series
    number_of_instances = (sum(s.get("numberOfInstances", 0) for s in mapped_series) if mapped_series
                           else dj.integer(study, "NumberOfStudyRelatedInstances"))
    if number_of_instances is not None and number_of_instances >= 0:
        resource["numberOfInstances"] = number_of_instances
    procedures = concepts(study, "ProcedureCodeSequence")
    if procedures:
        resource["procedureCode"] = procedures
    reasons = concepts(study, "ReasonForPerformedProcedureCodeSequence")
    if reasons:
        resource["reasonCode"] = reasons
    description = dj.text(study, "StudyDescription")
    if description:
        resource["description"] = description
    if mapped_series:
        resource["series"] = mapped_series
    return resource


def patient_identifier(ds: dict, ctx: MappingContext) -> dict:
    """Patient.identifier for PatientID, qualified by IssuerOfPatientID when present."""
    identifier: dict = {"value": dj.patient_id(ds) or ""}
    issuer = dj.text(ds, "IssuerOfPatientID")
    if issuer and re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", issuer):
        identifier["system"] = f"urn:oid:{issuer}"
    elif issuer and re.match(r"[A-Za-z][A-Za-z0-9+.-]*:\S+$", issuer):
        identifier["system"] = issuer
    elif ctx.patient_id_system:
        identifier["system"] = ctx.patient_id_system
    if issuer and "system" not in identifier:
        identifier["assigner"] = {"display": issuer}
    if not identifier["value"]:
        del identifier["value"]
    return identifier


def patient(ds: dict, ctx: MappingContext) -> dict:
    """Map patient-level DICOM attributes (from any QIDO-RS study answer) to a FHIR R4 Patient.

    ``id`` follows :mod:`fhir_facade.dicom.patient_ids`; ``gender`` maps M/F/O and anything
    else present to ``unknown``; ``birthDate`` keeps only a valid DA value.
    """
    resource: dict = {"resourceType": "Patient", "id": to_fhir_id(dj.patient_id(ds))}
    identifier = patient_identifier(ds, ctx)
    if "value" in identifier:
        resource["identifier"] = [identifier]
    names = human_names(dj.first(ds, "PatientName"))
    if names:
        resource["name"] = names
    sex = dj.text(ds, "PatientSex")
    if sex:
        resource["gender"] = GENDER.get(sex.upper(), "unknown")
    birth = fhir_date(dj.text(ds, "PatientBirthDate"))
    if birth:
        resource["birthDate"] = birth
    return resource


def endpoint(ctx: MappingContext) -> dict:
    """The facade's DICOMweb Endpoint (SMART Imaging Access; FHIR R4 Endpoint).

    ``address`` is the facade's public WADO-RS base, never the PACS's.
    """
    return {
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "extension": [{"url": REQUIRES_ACCESS_TOKEN, "valueBoolean": True}],
        "status": "active",
        "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs"},
        "name": "DICOMweb (WADO-RS, QIDO-RS) through the imaging FHIR facade",
        "payloadType": [{"coding": [{"system": ENDPOINT_PAYLOAD_TYPE, "code": "any", "display": "Any"}],
                         "text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": ctx.dicomweb_base,
    }


def viewer_endpoint(study_instance_uid: str, ctx: MappingContext) -> dict:
    """A study's web-viewer Endpoint (IHE MADO 1.0 MadoWebViewerEndpoint; FHIR R4 Endpoint).

    ``address`` opens the study in the facade's bundled viewer, which signs the user in
    itself; the page is HTML, so the payload type is ``none`` and the MIME type ``text/html``.
    """
    return {
        "resourceType": "Endpoint",
        "id": viewer_endpoint_id(study_instance_uid),
        "status": "active",
        "connectionType": {"system": MADO_CONNECTION_TYPE, "code": "web-viewer",
                           "display": "DICOM web viewer for the study"},
        "name": "Web viewer (OHIF) of the imaging FHIR facade",
        "payloadType": [{"coding": [{"system": ENDPOINT_PAYLOAD_TYPE, "code": "none", "display": "None"}]}],
        "payloadMimeType": ["text/html"],
        "address": ctx.viewer_url(study_instance_uid),
    }
