"""AuditEvent search parameters (FHIR R4 AuditEvent search: ``patient``, ``date``, ``agent``,
``entity``, ``type``, ``subtype``, ``outcome``) into smart's :class:`AuditQuery`; pure."""
from __future__ import annotations

import re
from datetime import date

from smart import api as authz  # the one smart module the facade may import

from fhir_facade.fhir.outcomes import BadSearch
from fhir_facade.fhir.search_params import (ResultParams, check_modifier, date_range, parse_result_parameter,
                                            reference_id, split_token, split_values)

_PREFIX = re.compile(r"(eq|ne|lt|le|gt|ge|sa|eb|ap)?(.*)")
#: Microseconds from 0001-01-01 to the epoch (search_params.date_range counts from 0001).
_EPOCH_MICROS = date(1970, 1, 1).toordinal() * 86_400 * 1_000_000
#: The search parameters answered, with the CapabilityStatement's definitions.
PARAMS = ("patient", "date", "agent", "entity", "type", "subtype", "outcome")


def _dates(raw: str, zone: str) -> tuple[str, float, float]:
    prefix, value = _PREFIX.fullmatch(raw).groups()
    try:
        low, high = date_range(value, zone)
    except ValueError as exc:
        raise BadSearch(f"invalid date search value {raw!r}") from exc
    return prefix or "eq", (low - _EPOCH_MICROS) / 1e6, (high - _EPOCH_MICROS) / 1e6


def _entity(raw: str) -> str:
    value = raw[len("ImagingStudy/"):] if raw.startswith("ImagingStudy/") else raw
    return value[len("urn:oid:"):] if value.startswith("urn:oid:") else value


def parse_audit_search(params: list[tuple[str, str]], zone: str, strict: bool) -> tuple[authz.AuditQuery,
                                                                                           ResultParams]:
    """Parse ``GET /fhir/AuditEvent`` parameters.

    Parameters
    ----------
    params : list of (str, str)
        The query (and form) parameters, in order.
    zone : str
        Zone of dates without an offset.
    strict : bool
        ``Prefer: handling=strict``: an unknown parameter is a 400 (else ignored, FHIR R4 §3.1.1.5.14).

    Returns
    -------
    (AuditQuery, ResultParams)

    Raises
    ------
    BadSearch
        A malformed value, an unsupported modifier, or (strict) an unknown parameter.
    """
    query, result = authz.AuditQuery(), ResultParams()
    for name, raw in params:
        if parse_result_parameter(result, name, raw, {}, strict):
            continue
        base, _ = check_modifier(name)
        if base not in PARAMS:
            if strict:
                raise BadSearch(f"unknown search parameter {name!r}")
            continue
        values = split_values(raw)
        if not values or not all(values):
            raise BadSearch(f"empty value of {name!r}")
        if base == "patient":
            query.patients.append(tuple(reference_id(v, "Patient") for v in values))
        elif base == "agent":
            query.agents.append(tuple(values))
        elif base == "entity":
            query.entities.append(tuple(_entity(v) for v in values))
        elif base in ("type", "subtype", "outcome"):
            codes = tuple(split_token(v)[1] for v in values)
            {"type": query.types, "subtype": query.subtypes, "outcome": query.outcomes}[base].append(codes)
        else:  # date: AND by repeating the parameter, one value each
            if len(values) > 1:
                raise BadSearch(f"one value per date parameter, not {raw!r}")
            query.dates.append(_dates(values[0], zone))
        result.echo.append((name, raw))
    return query, result
