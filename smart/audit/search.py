"""Reading the audit trail: the AuditEvents matching a search, limited to the patients a reader reaches."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, func, or_, select

from smart.store.audit_log import AuditRecord
from smart.store.db import get_session

#: Shown instead of a Patient reference the reader does not reach.
OTHER_PATIENT = {"display": "another patient"}


@dataclass
class AuditQuery:
    """What ``GET /fhir/AuditEvent`` asks for (FHIR R4 AuditEvent search parameters).

    Each tuple is an OR list of one parameter; parameters combine with AND (FHIR R4
    §3.1.1.5.10). ``dates`` holds ``(prefix, low, high)`` with *low* and *high* epoch seconds
    of the value's range ``[low, high)`` (FHIR R4 §3.1.1.5.4).
    """

    patients: list[tuple[str, ...]] = field(default_factory=list)
    agents: list[tuple[str, ...]] = field(default_factory=list)
    entities: list[tuple[str, ...]] = field(default_factory=list)
    types: list[tuple[str, ...]] = field(default_factory=list)
    subtypes: list[tuple[str, ...]] = field(default_factory=list)
    outcomes: list[tuple[str, ...]] = field(default_factory=list)
    dates: list[tuple[str, float, float]] = field(default_factory=list)


def _date_clause(prefix: str, low: float, high: float):
    recorded = AuditRecord.recorded
    return {"eq": and_(recorded >= low, recorded < high), "ne": or_(recorded < low, recorded >= high),
            "lt": recorded < low, "le": recorded < high, "gt": recorded >= high, "ge": recorded >= low,
            "sa": recorded >= high, "eb": recorded < low,
            "ap": and_(recorded >= low - (high - low) * 0.1, recorded < high + (high - low) * 0.1)}[prefix]


def _about(patients) -> object:
    return or_(AuditRecord.patient.in_(patients), AuditRecord.agent_patient.in_(patients))


def _clauses(query: AuditQuery, reach: frozenset[str] | None) -> list:
    clauses = [] if reach is None else [_about(sorted(reach))]
    clauses += [_about(values) for values in query.patients]
    clauses += [or_(AuditRecord.client_id.in_(values), AuditRecord.who.in_(values)) for values in query.agents]
    clauses += [AuditRecord.entity.in_(values) for values in query.entities]
    clauses += [or_(AuditRecord.type.in_(values), AuditRecord.subtype.in_(values)) for values in query.types]
    clauses += [AuditRecord.subtype.in_(values) for values in query.subtypes]
    clauses += [AuditRecord.outcome.in_(values) for values in query.outcomes]
    clauses += [_date_clause(*date) for date in query.dates]
    return clauses


def _redacted(resource: dict, reach: frozenset[str]) -> dict:
    """*resource* with every Patient reference outside *reach* replaced by :data:`OTHER_PATIENT`
    (a patient sees who tried to open their records, not the other patient's id)."""
    def keep(reference: dict | None) -> bool:
        target = (reference or {}).get("reference", "")
        return not target.startswith("Patient/") or target[len("Patient/"):] in reach

    copy = json.loads(json.dumps(resource))
    for agent in copy.get("agent", []):
        if not keep(agent.get("who")):
            agent["who"] = dict(OTHER_PATIENT)
    for entity in copy.get("entity", []):
        if not keep(entity.get("what")):
            entity["what"] = dict(OTHER_PATIENT)
    return copy


def search(query: AuditQuery, reach: frozenset[str] | None, offset: int = 0,
           count: int = 50) -> tuple[list[dict], int]:
    """The AuditEvents matching *query* that are about a patient in *reach*, newest first.

    Parameters
    ----------
    query : AuditQuery
    reach : frozenset of str or None
        The Patient ids the reader may see (:meth:`smart.authz.AccessGrant.patients` for
        AuditEvent); ``None`` for every event, those about no patient included. An event is
        about a patient when the patient is its entity or its acting agent (FHIR R4
        AuditEvent ``patient`` search parameter).
    offset, count : int
        The page.

    Returns
    -------
    (list of dict, int)
        The page's AuditEvents (other patients' references redacted for a limited reader)
        and the number of matches over all pages.
    """
    clauses = _clauses(query, reach)
    session = get_session()
    total = session.scalar(select(func.count()).select_from(AuditRecord).where(*clauses)) or 0
    rows = session.scalars(select(AuditRecord.resource).where(*clauses)
                           .order_by(AuditRecord.recorded.desc(), AuditRecord.id.desc())
                           .offset(offset).limit(count)).all() if count else []
    if reach is not None:
        rows = [_redacted(resource, reach) for resource in rows]
    return list(rows), total


def export(since: float | None = None):
    """Every AuditEvent recorded at or after *since* (epoch seconds), oldest first, as dicts."""
    statement = select(AuditRecord.resource).order_by(AuditRecord.recorded, AuditRecord.id)
    if since is not None:
        statement = statement.where(AuditRecord.recorded >= since)
    yield from get_session().scalars(statement.execution_options(yield_per=500))


def prune(before: float) -> int:
    """Delete the AuditEvents recorded before *before* (epoch seconds); the number deleted."""
    session = get_session()
    deleted = session.execute(delete(AuditRecord).where(AuditRecord.recorded < before)).rowcount
    session.commit()
    return deleted or 0


__all__ = ["AuditQuery", "search", "export", "prune"]
