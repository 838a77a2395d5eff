"""FHIR search (R4 §3.1.1) on ImagingStudy and Patient, translated to QIDO-RS plus exact filters.

The PACS is asked a coarse QIDO-RS query (PS3.18 Section 10.6); every FHIR matching rule is
then applied exactly here, so PACS quirks (wildcards in PatientID, fuzzy matching, missing
ModalitiesInStudy) never widen an answer.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import dicom_json as dj
from . import mapping
from .outcomes import BadSearch
from .patient_ids import InvalidPatientId, to_patient_id

#: Parameters every search understands (FHIR R4 §3.1.1.5 result parameters).
RESULT_PARAMETERS = frozenset({"_count", "_offset", "_include", "_format", "_pretty", "_summary", "_elements"})
DEFAULT_COUNT = 50
MAX_COUNT = 500

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DATE_PARAM = re.compile(
    r"(eq|ne|lt|le|gt|ge|sa|eb|ap)?"
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def is_uid(value: str) -> bool:
    """True for a syntactically valid DICOM UID (PS3.5 Section 9.1), at most 64 characters."""
    return len(value) <= 64 and bool(_UID.fullmatch(value)) and all(
        part == "0" or not part.startswith("0") for part in value.split("."))


# --- dates -----------------------------------------------------------------------------

def _zone(name: str):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def date_range(value: str, zone_name: str) -> tuple[datetime, datetime]:
    """The half-open instant range ``[low, high)`` a FHIR date/dateTime value stands for.

    Parameters
    ----------
    value : str
        ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or a dateTime with time (and offset).
    zone_name : str
        Zone for values without an offset.

    Raises
    ------
    ValueError
        If *value* is not a FHIR date or dateTime.
    """
    match = _DATE_PARAM.fullmatch(value)
    if not match or match.group(1):
        raise ValueError(value)
    _, year, month, day, hh, mm, ss, frac, off = match.groups()
    if off:
        tz = timezone.utc if off == "Z" else timezone(
            (1 if off[0] == "+" else -1) * timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    else:
        tz = _zone(zone_name)
    y = int(year)
    if month is None:
        return datetime(y, 1, 1, tzinfo=tz), datetime(y + 1, 1, 1, tzinfo=tz)
    m = int(month)
    if day is None:
        low = datetime(y, m, 1, tzinfo=tz)
        return low, (datetime(y + 1, 1, 1, tzinfo=tz) if m == 12 else datetime(y, m + 1, 1, tzinfo=tz))
    d = int(day)
    if hh is None:
        low = datetime(y, m, d, tzinfo=tz)
        return low, low + timedelta(days=1)
    low = datetime(y, m, d, int(hh), int(mm), int(ss or 0), int(float(frac or 0) * 1_000_000), tzinfo=tz)
    if ss is None:
        return low, low + timedelta(minutes=1)
    if frac:
        return low, low + timedelta(microseconds=max(1, int(10 ** (6 - min(len(frac) - 1, 6)))))
    return low, low + timedelta(seconds=1)


def date_predicate(raw: str, zone_name: str) -> tuple[Callable[[str | None], bool], tuple[str, str]]:
    """Parse a ``date`` search value with its prefix (FHIR R4 §3.1.1.5.4).

    Returns
    -------
    (predicate, qido_range)
        *predicate* takes a resource's FHIR date/dateTime (or ``None``) and says whether it
        matches; *qido_range* is a coarse ``(from, to)`` StudyDate range in DA form that
        contains every match (either side may be empty).

    Raises
    ------
    BadSearch
        For a value that is not a prefixed FHIR date.
    """
    match = _DATE_PARAM.fullmatch(raw)
    if not match:
        raise BadSearch(f"invalid date search value {raw!r}")
    prefix = match.group(1) or "eq"
    try:
        low, high = date_range(raw[len(match.group(1) or ""):], zone_name)
    except ValueError as exc:
        raise BadSearch(f"invalid date search value {raw!r}") from exc

    def matches(value: str | None) -> bool:
        if not value:
            return False
        try:
            r_low, r_high = date_range(value, zone_name)
        except ValueError:
            return False
        inside = r_low >= low and r_high <= high
        return {
            "eq": inside,
            "ne": not inside,
            "gt": r_high > high,
            "lt": r_low < low,
            "ge": r_high > high or inside,
            "le": r_low < low or inside,
            "sa": r_low >= high,
            "eb": r_high <= low,
            "ap": r_low < high and r_high > low,
        }[prefix]

    # One day of slack each way covers any zone offset between the PACS's local dates and ours.
    start = (low - timedelta(days=1)).strftime("%Y%m%d")
    end = (high + timedelta(days=1)).strftime("%Y%m%d")
    qido = {"eq": (start, end), "ap": (start, end), "gt": ("", ""), "ge": (start, ""), "sa": (start, ""),
            "lt": ("", end), "le": ("", end), "eb": ("", end), "ne": ("", "")}[prefix]
    if prefix == "gt":
        qido = ((high - timedelta(days=1)).strftime("%Y%m%d"), "")
    return matches, qido


# --- tokens ----------------------------------------------------------------------------

def split_token(raw: str) -> tuple[str | None, str]:
    """Split a ``token`` search value into (system, code) (FHIR R4 §3.1.1.5.5); system ``None`` if absent."""
    if "|" in raw:
        system, _, code = raw.partition("|")
        return system, code
    return None, raw


def split_values(raw: str) -> list[str]:
    """Split a comma-separated OR list, honouring ``\\,`` escapes (FHIR R4 §3.1.1.5.7)."""
    parts = re.split(r"(?<!\\),", raw)
    return [p.replace("\\,", ",") for p in parts]


# --- the ImagingStudy search ---------------------------------------------------------------

@dataclass
class StudySearch:
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
    count, offset : int
        Page size and start.
    include_endpoint, include_patient : bool
        ``_include=ImagingStudy:endpoint`` / ``ImagingStudy:patient``.
    summary_count : bool
        ``_summary=count``.
    echo : list of (str, str)
        The parameters understood, for the ``self`` link.
    """

    qido: list = field(default_factory=list)
    study_filters: list = field(default_factory=list)
    resource_filters: list = field(default_factory=list)
    patient: str | None = None
    count: int = DEFAULT_COUNT
    offset: int = 0
    include_endpoint: bool = False
    include_patient: bool = False
    summary_count: bool = False
    echo: list = field(default_factory=list)


def _patient_reference(raw: str) -> str:
    value = raw
    for prefix in ("Patient/",):
        if value.startswith(prefix):
            value = value[len(prefix):]
    if "/" in value:
        # An absolute reference must point at our own Patient endpoint.
        match = re.search(r"/Patient/([^/]+)$", value)
        if not match:
            raise BadSearch(f"invalid patient reference {raw!r}")
        value = match.group(1)
    try:
        to_patient_id(value)
    except InvalidPatientId as exc:
        raise BadSearch(f"invalid patient id {raw!r}") from exc
    return value


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
        Unknown parameter under strict handling, or a malformed value.
    """
    search = StudySearch()
    for name, raw in params:
        base, _, modifier = name.partition(":")
        if base in ("patient", "subject"):
            if modifier and modifier != "Patient":
                raise BadSearch(f"unsupported modifier {name!r}")
            values = [_patient_reference(v) for v in split_values(raw)]
            if len(values) != 1:
                raise BadSearch(f"{name} takes one patient")
            if search.patient is not None and search.patient != values[0]:
                search.study_filters.append(lambda ds: False)
            search.patient = values[0]
        elif base == "_id" or (base == "identifier" and False):
            uids = split_values(raw)
            if not all(is_uid(u) for u in uids):
                raise BadSearch(f"invalid _id {raw!r}: not a DICOM UID")
            search.study_filters.append(lambda ds, uids=frozenset(uids): dj.text(ds, "StudyInstanceUID") in uids)
            if len(uids) == 1:
                search.qido.append(("StudyInstanceUID", uids[0]))
        elif base == "identifier":
            search.study_filters.append(_identifier_filter(raw, search))
        elif base == "started":
            match, (start, end) = date_predicate(raw, zone_name)
            search.study_filters.append(
                lambda ds, match=match: match(mapping.fhir_datetime(
                    dj.text(ds, "StudyDate"), dj.text(ds, "StudyTime"),
                    dj.text(ds, "TimezoneOffsetFromUTC"), zone_name)))
            if start or end:
                search.qido.append(("StudyDate", f"{start}-{end}"))
        elif base == "modality":
            wanted = []
            for value in split_values(raw):
                system, code = split_token(value)
                if system not in (None, "", mapping.DCM) or not code:
                    wanted.append(None)
                else:
                    wanted.append(code)
            search.resource_filters.append(
                lambda r, wanted=frozenset(wanted): any(c.get("code") in wanted for c in r.get("modality", [])))
        elif base == "_count":
            try:
                search.count = max(0, min(int(raw), MAX_COUNT))
            except ValueError as exc:
                raise BadSearch(f"invalid _count {raw!r}") from exc
        elif base == "_offset":
            try:
                search.offset = max(0, int(raw))
            except ValueError as exc:
                raise BadSearch(f"invalid _offset {raw!r}") from exc
            continue  # paging links set their own offset
        elif base == "_include":
            if raw in ("ImagingStudy:endpoint", "ImagingStudy:endpoint:Endpoint"):
                search.include_endpoint = True
            elif raw in ("ImagingStudy:patient", "ImagingStudy:patient:Patient",
                         "ImagingStudy:subject", "ImagingStudy:subject:Patient"):
                search.include_patient = True
            elif strict:
                raise BadSearch(f"unsupported _include {raw!r}")
            else:
                continue
        elif base == "_summary":
            if raw == "count":
                search.summary_count = True
            elif raw != "false":
                raise BadSearch(f"unsupported _summary {raw!r}")
        elif base in ("_format", "_pretty"):
            continue
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
