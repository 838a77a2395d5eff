"""The audit trail: who did what to whose records, as FHIR R4 AuditEvents (IHE BALP).

- :mod:`.events`: the codes of each kind of event and the AuditEvent built from one item (pure);
- :mod:`.recorder`: :func:`record`, the one call every part of the facade makes (cheap: a
  bounded queue), and the writer thread that aggregates frame requests and writes in batches;
- :mod:`.search`: reading it back for ``GET /fhir/AuditEvent``, export and retention;
- :mod:`.syslog`: optional forwarding to a syslog collector (RFC 5424).

Layer: above ``store`` (its table is :class:`smart.store.audit_log.AuditRecord`), beside
``tokens``; ``oauth``, ``admin``, ``web`` and the facade (through :mod:`smart.api`) record.
"""
from __future__ import annotations

from smart.audit.events import outcome_of_status
from smart.audit.recorder import close_all, get_recorder, record


def agent_fields(grant) -> dict:
    """The agent fields of :func:`record` for an access grant (:class:`smart.authz.AccessGrant`):
    client, ``fhirUser`` or username, the token's ``jti`` and the acting patient. Never the token.

    Parameters
    ----------
    grant : smart.authz.AccessGrant or None
        ``None`` (no valid token) gives no field.
    """
    if grant is None:
        return {}
    claims = grant.claims
    fields = {"client_id": grant.client_id, "jti": claims.get("jti"),
              "agent_patient": grant.patient or grant.own_patient()}
    if claims.get("fhirUser"):
        fields["who"] = str(claims["fhirUser"])
    elif claims.get("sub") and claims.get("sub") != grant.client_id:
        fields["user"] = str(claims["sub"])
    return fields


__all__ = ["record", "outcome_of_status", "agent_fields", "close_all", "get_recorder"]
