"""FHIR search parameter types and result parameters shared by every resource's search (FHIR R4 §3.1.1).

Dates with prefixes (§3.1.1.5.4), tokens (§3.1.1.5.5), references, OR lists, modifiers, and the
result parameters ``_count``, ``_offset``, ``_summary``, ``_elements``, ``_include``
(§3.1.1.5.6, §3.1.1.5.7, §3.1.1.4). Pure functions: values in, predicates and errors out.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fhir_facade.dicom.uids import is_uid  # noqa: F401 (search parameters' UID check, used by search)
from fhir_facade.fhir.outcomes import BadSearch
from fhir_facade.fhir.subsetting import SUMMARY_MODES

DEFAULT_COUNT = 50
MAX_COUNT = 500

_DATE_PARAM = re.compile(
    r"(eq|ne|lt|le|gt|ge|sa|eb|ap)?"
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


# --- dates -----------------------------------------------------------------------------

def _zone(name: str):
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


_MICROS_PER_DAY = 86_400 * 1_000_000


def _instant(day: date, seconds: int, micros: int, offset: timedelta) -> int:
    """Microseconds since 0001-01-01T00:00Z; plain integers never overflow at the calendar's ends."""
    return (day.toordinal() * _MICROS_PER_DAY + seconds * 1_000_000 + micros
            - int(offset.total_seconds() * 1_000_000))


def date_range(value: str, zone_name: str) -> tuple[int, int]:
    """The half-open instant range ``[low, high)`` a FHIR date/dateTime value stands for.

    Parameters
    ----------
    value : str
        ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or a dateTime with time (and offset).
    zone_name : str
        Zone for values without an offset.

    Returns
    -------
    (int, int)
        Microseconds since 0001-01-01T00:00Z (UTC), so 0001 and 9999 work like any year.

    Raises
    ------
    ValueError
        If *value* is not a FHIR date or dateTime.
    """
    match = _DATE_PARAM.fullmatch(value)
    if not match or match.group(1):
        raise ValueError(value)
    _, year, month, day, hh, mm, ss, frac, off = match.groups()
    y = int(year)
    m = int(month) if month else 1
    d = int(day) if day else 1
    first = date(y, m, d)
    if off:
        offset = timedelta(0) if off == "Z" else (1 if off[0] == "+" else -1) * timedelta(
            hours=int(off[1:3]), minutes=int(off[4:6]))
    else:
        try:
            offset = datetime(y, m, d, int(hh or 0), int(mm or 0), tzinfo=_zone(zone_name)).utcoffset() \
                or timedelta(0)
        except (OverflowError, ValueError):
            offset = timedelta(0)
    if month is None:
        last_day = date(y, 12, 31)
    elif day is None:
        last_day = (date(y, m + 1, 1) - timedelta(days=1)) if m < 12 else date(y, 12, 31)
    else:
        last_day = None
    if last_day is not None or hh is None:
        end = (last_day or first).toordinal() + 1
        low = _instant(first, 0, 0, offset)
        return low, end * _MICROS_PER_DAY - int(offset.total_seconds() * 1_000_000)
    if not (int(hh) < 24 and int(mm) < 60 and int(ss or 0) < 60):
        raise ValueError(value)
    seconds = int(hh) * 3600 + int(mm) * 60 + int(ss or 0)
    micros = int(float(frac or 0) * 1_000_000)
    low = _instant(first, seconds, micros, offset)
    if ss is None:
        return low, low + 60_000_000
    if frac:
        return low, low + max(1, 10 ** (6 - min(len(frac) - 1, 6)))
    return low, low + 1_000_000


def _da(instant: int, days: int) -> str:
    """DICOM DA of the UTC day *days* from *instant*, clamped to 00010101..99991231."""
    ordinal = min(max(instant // _MICROS_PER_DAY + days, 1), date.max.toordinal())
    day = date.fromordinal(ordinal)
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


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
    start = _da(low, -1)
    end = _da(high, 1)
    qido = {"eq": (start, end), "ap": (start, end), "gt": ("", ""), "ge": (start, ""), "sa": (start, ""),
            "lt": ("", end), "le": ("", end), "eb": ("", end), "ne": ("", "")}[prefix]
    if prefix == "gt":
        qido = (_da(high, -1), "")
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


# --- result parameters shared by every search (FHIR R4 §3.1.1.5) --------------------------

#: Parameters that only shape the answer; ``_format``/``_pretty`` are handled by rendering.
FORMAT_PARAMETERS = frozenset({"_format", "_pretty"})
_ELEMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


@dataclass
class ResultParams:
    """Paging and shaping parameters of one search.

    Attributes
    ----------
    count, offset : int
        Page size (``_count``, at most :data:`MAX_COUNT`) and start (``_offset``).
    summary : str or None
        ``_summary`` mode (``true``, ``false``, ``text``, ``data``, ``count``).
    elements : frozenset of str or None
        ``_elements`` names.
    include : set of str
        Canonical ``_include`` values accepted (``ImagingStudy:endpoint``, ...).
    echo : list of (str, str)
        The parameters understood, in request order, for the paging links.
    """

    count: int = DEFAULT_COUNT
    offset: int = 0
    summary: str | None = None
    elements: frozenset | None = None
    include: set = field(default_factory=set)
    echo: list = field(default_factory=list)

    @property
    def summary_count(self) -> bool:
        """``_summary=count`` or ``_count=0``: the total only."""
        return self.summary == "count" or self.count == 0


def _non_negative(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadSearch(f"invalid {name} {raw!r}: not an integer") from exc
    if value < 0:
        raise BadSearch(f"invalid {name} {raw!r}: negative")
    return value


def parse_result_parameter(result: ResultParams, name: str, raw: str, includes: dict[str, str],
                           strict: bool) -> bool:
    """Apply one result parameter to *result*; ``False`` when *name* is not one.

    Parameters
    ----------
    includes : dict
        Accepted ``_include`` spellings -> canonical value for this resource type.

    Raises
    ------
    BadSearch
        Malformed value, ``_summary`` with ``_elements``, or (strict) an unsupported ``_include``.
    """
    if name in FORMAT_PARAMETERS:
        return True
    if name == "_count":
        result.count = min(_non_negative(name, raw), MAX_COUNT)
    elif name == "_offset":
        result.offset = _non_negative(name, raw)
        return True  # paging links set their own offset
    elif name == "_summary":
        if raw not in SUMMARY_MODES:
            raise BadSearch(f"unsupported _summary {raw!r}; use one of {', '.join(sorted(SUMMARY_MODES))}")
        result.summary = raw
    elif name == "_elements":
        names = [n.strip() for n in raw.split(",") if n.strip()]
        if not names or not all(_ELEMENT_NAME.fullmatch(n) for n in names):
            raise BadSearch(f"invalid _elements {raw!r}")
        result.elements = frozenset(names)
    elif name == "_include":
        canonical = includes.get(raw)
        if canonical is None:
            if strict:
                raise BadSearch(f"unsupported _include {raw!r}")
            return True
        result.include.add(canonical)
    else:
        return False
    if result.summary is not None and result.elements is not None:
        raise BadSearch("_summary and _elements cannot be used together (FHIR R4 §3.1.1.5.9)")
    result.echo.append((name, raw))
    return True


def check_modifier(name: str, allowed: frozenset = frozenset()) -> tuple[str, str]:
    """Split ``name:modifier``; an unsupported modifier is a 400 (FHIR R4 §3.1.1.5 "modifiers")."""
    base, _, modifier = name.partition(":")
    if modifier and modifier not in allowed:
        raise BadSearch(f"unsupported modifier {name!r}")
    return base, modifier


def reference_id(raw: str, resource_type: str) -> str:
    """The id of a ``reference`` search value: ``id``, ``Type/id`` or an absolute URL ending ``/Type/id``."""
    value = raw
    if value.startswith(f"{resource_type}/"):
        value = value[len(resource_type) + 1:]
    if "/" in value:
        match = re.search(rf"/{resource_type}/([^/]+)$", value)
        if not match:
            raise BadSearch(f"invalid {resource_type} reference {raw!r}")
        value = match.group(1)
    return value


def uid_values(name: str, raw: str) -> frozenset[str]:
    """DICOM UIDs of a token parameter: bare, ``urn:oid:X`` or ``urn:dicom:uid|urn:oid:X`` forms."""
    uids = set()
    for value in split_values(raw):
        _, code = split_token(value)
        uid = code[len("urn:oid:"):] if code.startswith("urn:oid:") else code
        if not is_uid(uid):
            raise BadSearch(f"invalid {name} {raw!r}: not a DICOM UID")
        uids.add(uid)
    return frozenset(uids)


def coding_matcher(raw: str) -> Callable[[list[dict]], bool]:
    """A token test on Codings (FHIR R4 §3.1.1.5.5): ``code``, ``system|code``, ``|code``, ``system|``."""
    wanted = [split_token(v) for v in split_values(raw)]

    def matches(codings: list[dict]) -> bool:
        for coding in codings:
            for system, code in wanted:
                if system is None and coding.get("code") == code:
                    return True
                if system == "" and "system" not in coding and coding.get("code") == code:
                    return True
                if system and coding.get("system") == system and (not code or coding.get("code") == code):
                    return True
        return False

    return matches


# --- the ImagingStudy search ---------------------------------------------------------------

#: ``_include`` spellings -> canonical value (FHIR R4 ImagingStudy search parameters).
