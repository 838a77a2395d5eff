"""The one module of smart that the facade (``fhir_facade``) may import.

Everything the FHIR API and the DICOMweb proxy need of the authorization server is named
here, so the boundary between the two packages can be read, and checked (the import-linter
contracts in ``.importlinter``), in one place:

- authorization of a request (:mod:`smart.authz`): the grant a token carries, the
  decorators a view declares its needs with, the blueprint guard and the errors;
- CORS: whether an origin is one of a registered client's;
- the database and the facade's one table in it (:class:`PatientAlias`), what a database
  outage is (:data:`DATABASE_ERRORS`, :func:`unavailable`: 503 with ``Retry-After``), and whether
  the database answers (:func:`database_ready`, for the readiness probe);
- the rule for operator routes (health, metrics): :func:`operator`;
- how a PACS PatientID becomes the facade's Patient id (for EHR tokens' patients), which
  the facade registers at app start;
- the audit trail: :func:`record_audit` (any part of the facade records an event),
  :func:`audit_agent` and :func:`request_grant` / :func:`asked_patients` (who made the
  current request, about which patients), and :func:`search_audit` (``GET /fhir/AuditEvent``);
- the consent page's patient picker protocol, which the facade implements over the PACS
  and registers at app start (smart itself never imports the facade).
"""
from __future__ import annotations

from smart.audit import agent_fields as audit_agent
from smart.audit import outcome_of_status as audit_outcome
from smart.audit import record as record_audit
from smart.audit.search import AuditQuery
from smart.audit.search import search as search_audit
from smart.authz import (AccessGrant, AuthorizationError, Forbidden, Unauthorized, Unavailable, asked_patients,
                         check_patient, check_study, current_grant, guard, needs, operator, parse_networks, public,
                         register_patient_id_rule, request_grant)
from smart.oauth.cors import is_allowed_origin
from smart.store.db import DATABASE_ERRORS, DatabaseUnavailable, get_database, unavailable
from smart.store.health import database_ready
from smart.store.models import PatientAlias
from smart.tokens.shares import register_patient_studies, register_study_owners
from smart.web.picker import (
    PICKER_LIMIT, UNNAMED, PatientChoice, PatientDirectory, PickerUnavailable, register_patient_directory,
)

__all__ = [
    "AccessGrant", "AuthorizationError", "Forbidden", "Unauthorized", "check_patient", "check_study", "current_grant", "guard",
    "needs", "operator", "parse_networks", "public", "Unavailable", "register_patient_id_rule",
    "is_allowed_origin",
    "get_database", "PatientAlias", "DATABASE_ERRORS", "DatabaseUnavailable", "unavailable", "database_ready",
    "register_study_owners", "register_patient_studies",
    "record_audit", "audit_agent", "audit_outcome", "AuditQuery", "search_audit", "request_grant", "asked_patients",
    "PICKER_LIMIT", "UNNAMED", "PatientChoice", "PatientDirectory", "PickerUnavailable", "register_patient_directory",
]
