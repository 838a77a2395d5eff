"""The one authorization decision of the facade: may this access token see this patient's data?

Both the FHIR API and the DICOMweb proxy call :func:`require`, :func:`check_patient` and
:meth:`AccessGrant.patients`; nothing else decides. The decision is split by what each part owns:

- :mod:`smart.authz.errors`: the refusals (401, 403, 503) in RFC 6750 §3's shape;
- :mod:`smart.authz.grant`: :class:`AccessGrant`, which patients and studies a verified token
  reaches by the context of its scopes (SMART App Launch 2.2 §Scopes and Launch Context);
- :mod:`smart.authz.access_lists`: the stored access lists of clients and users, cached per app;
- :mod:`smart.authz.bearer`: the current request's Bearer token verified once (the facade's own
  tokens and trusted EHRs' tokens) and the checks routes ask of its grant;
- :mod:`smart.authz.operators`: who may read the operator routes (/healthz, /readyz, /metrics);
- :mod:`smart.authz.declarations`: what each route declares it needs, and the blueprint guard.

The names below are the package's interface; :mod:`smart.api` re-exports what the facade uses.
"""
from __future__ import annotations

from smart.authz.access_lists import forget_access, practitioner_may_see, read_access_list, stored_patients
from smart.authz.bearer import (asked_patients, bearer_token, check_patient, check_study, current_grant,
                                register_patient_id_rule, request_grant, require, require_any)
from smart.authz.declarations import NEEDS, OPERATOR, PUBLIC, guard, needs, operator, public
from smart.authz.errors import AuthorizationError, Forbidden, Unauthorized, Unavailable
from smart.authz.grant import AccessGrant
from smart.authz.operators import FORWARDING_HEADERS, check_operator, operator_allowed, parse_networks

__all__ = [
    "AuthorizationError", "Unauthorized", "Unavailable", "Forbidden",
    "AccessGrant",
    "read_access_list", "stored_patients", "practitioner_may_see", "forget_access",
    "bearer_token", "register_patient_id_rule", "current_grant", "require", "require_any", "check_study",
    "check_patient", "request_grant", "asked_patients",
    "NEEDS", "PUBLIC", "OPERATOR", "needs", "public", "operator", "guard",
    "FORWARDING_HEADERS", "parse_networks", "operator_allowed", "check_operator",
]
