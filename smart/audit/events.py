"""AuditEvent content shaped after IHE Basic Audit Log Patterns (BALP): which codes each kind of
event carries, and the pure function that turns one recorded item into a FHIR R4 AuditEvent.

Codes: DICOM PS3.16 CID 400 (audit event ids), CID 401 (action), CID 402/403 (roles),
``http://terminology.hl7.org/CodeSystem/audit-event-type`` ``rest`` with
``http://hl7.org/fhir/restful-interaction`` for FHIR interactions (BALP "RESTful activities"),
and the facade's own subtypes where neither has a code (token issued, share link used ...).
"""
from __future__ import annotations

import base64
from datetime import datetime, timezone

DCM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SECURITY_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
NETWORK_TYPE_IP = "2"  # AuditEvent.agent.network.type: IP address
#: Identifier system of a token's ``jti`` (RFC 7519 §4.1.7).
JTI_SYSTEM = "urn:ietf:params:oauth:jwt-claim:jti"
#: Identifier system of a DICOM UID (DESIGN.md "Identifiers").
DICOM_UID = "urn:dicom:uid"
#: The facade's own subtype codes, below its public URL.
OWN_SUBTYPES = "/fhir/CodeSystem/audit-event-subtype"

#: outcome codes (FHIR R4 AuditEvent.outcome, ``audit-event-outcome``).
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12

_TYPES = {
    "rest": (AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
    "110101": (DCM, "110101", "Audit Log Used"),
    "110106": (DCM, "110106", "Export"),
    "110110": (DCM, "110110", "Patient Record"),
    "110112": (DCM, "110112", "Query"),
    "110113": (DCM, "110113", "Security Alert"),
    "110114": (DCM, "110114", "User Authentication"),
}

#: kind -> (type, subtype (system, or None for the facade's own; code; display), action, aggregated).
#: ``aggregated`` kinds (a viewer's frame requests) become one event per study, token and
#: outcome per window, with the number of requests (:data:`COUNT_DETAIL`).
EVENTS: dict[str, tuple[str, tuple[str | None, str, str], str, bool]] = {
    "read": ("rest", (RESTFUL, "read", "read"), "R", False),
    "search": ("rest", (RESTFUL, "search-type", "search type"), "E", False),
    "audit-search": ("110101", (RESTFUL, "search-type", "search type"), "E", False),
    "retrieve": ("110106", (None, "wado-rs", "WADO-RS retrieve"), "R", False),
    "frames": ("110106", (None, "wado-rs-frames", "WADO-RS frames retrieved"), "R", True),
    "query": ("110112", (None, "qido-rs", "QIDO-RS query"), "E", False),
    "login": ("110114", (DCM, "110122", "Login"), "E", False),
    "logout": ("110114", (DCM, "110123", "Logout"), "E", False),
    "token-issued": ("110114", (None, "token-issued", "Access token issued"), "E", False),
    "token-refreshed": ("110114", (None, "token-refreshed", "Access token refreshed"), "E", False),
    "token-revoked": ("110114", (None, "token-revoked", "Token revoked"), "E", False),
    "consent-given": ("110110", (None, "consent-given", "Consent given"), "C", False),
    "consent-withdrawn": ("110110", (None, "consent-withdrawn", "Consent withdrawn"), "D", False),
    "share-created": ("110113", (DCM, "110135", "Object Security Attributes Changed"), "C", False),
    "share-used": ("110114", (None, "share-used", "Share link used"), "E", False),
    "share-revoked": ("110113", (DCM, "110135", "Object Security Attributes Changed"), "D", False),
    "access-granted": ("110113", (DCM, "110136", "Security Roles Changed"), "U", False),
    "access-revoked": ("110113", (DCM, "110136", "Security Roles Changed"), "U", False),
}

#: ``entity.detail.type`` holding the number of requests an aggregated event stands for.
COUNT_DETAIL = "requests"


def outcome_of_status(status: int) -> int:
    """The AuditEvent outcome of an HTTP status: 0 success, 4 refused or bad request (the
    client's failure), 8 the server or PACS failed (FHIR R4 ``audit-event-outcome``)."""
    if status < 400:
        return SUCCESS
    return MINOR_FAILURE if status < 500 else SERIOUS_FAILURE


def type_and_subtype(kind: str) -> tuple[str, str]:
    """The codes stored in the indexed ``type`` and ``subtype`` columns for *kind*.

    Raises
    ------
    KeyError
        For a kind not in :data:`EVENTS`.
    """
    type_key, (_, code, _), _, _ = EVENTS[kind]
    return _TYPES[type_key][1], code


def _instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _agents(item: dict, public_url: str) -> list[dict]:
    network = {"address": item["address"], "type": NETWORK_TYPE_IP} if item.get("address") else None
    agents = []
    who = item.get("who")
    if who or item.get("user"):
        user: dict = {"type": {"coding": [{"system": SECURITY_ROLE, "code": "humanuser", "display": "human user"}]},
                      "requestor": True}
        if who:
            user["who"] = {"reference": who}
        else:
            user["who"] = {"identifier": {"system": f"{public_url}/auth/users", "value": item["user"]}}
        if network:
            user["network"] = network
        agents.append(user)
    if item.get("client_id"):
        client: dict = {"type": {"coding": [{"system": DCM, "code": "110150", "display": "Application"}]},
                        "who": {"identifier": {"system": f"{public_url}/auth/clients", "value": item["client_id"]}},
                        "requestor": not agents}
        if network:
            client["network"] = network
        agents.append(client)
    if not agents:  # nobody identified (no token, a failed login): the network address alone
        anonymous: dict = {"type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                           "requestor": True}
        if network:
            anonymous["network"] = network
        agents.append(anonymous)
    return agents


def _entities(item: dict) -> list[dict]:
    entities = []
    for patient in dict.fromkeys(p for p in (item.get("patient"), item.get("agent_patient")) if p):
        entities.append({"what": {"reference": f"Patient/{patient}"},
                         "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                         "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"}})
    if item.get("study"):
        study: dict = {"what": {"reference": f"ImagingStudy/{item['study']}",
                                "identifier": {"system": DICOM_UID, "value": f"urn:oid:{item['study']}"}},
                       "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                       "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}}
        if item.get("count", 1) > 1 or EVENTS[item["kind"]][3]:
            study["detail"] = [{"type": COUNT_DETAIL, "valueString": str(item.get("count", 1))}]
        entities.append(study)
    elif item.get("resource_type") and item.get("resource_id"):
        entities.append({"what": {"reference": f"{item['resource_type']}/{item['resource_id']}"},
                         "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"}})
    if item.get("query") is not None:
        entities.append({"type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
                         "description": item.get("path") or None,
                         "query": base64.b64encode(item["query"].encode()).decode()})
        if entities[-1]["description"] is None:
            del entities[-1]["description"]
    if item.get("jti"):
        entities.append({"what": {"identifier": {"system": JTI_SYSTEM, "value": item["jti"]}},
                         "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                         "role": {"system": OBJECT_ROLE, "code": "13", "display": "Security Resource"},
                         "description": "OAuth 2.0 access token (by its jti)"})
    return entities


def to_resource(item: dict, event_id: str, public_url: str) -> dict:
    """One recorded item as a FHIR R4 AuditEvent (BALP-shaped).

    Parameters
    ----------
    item : dict
        As queued by :func:`smart.audit.recorder.record`: ``kind``, ``outcome``, ``recorded``
        (epoch seconds) and any of ``start`` and ``count`` (aggregated events), ``patient``,
        ``agent_patient``, ``client_id``, ``who`` (fhirUser), ``user``, ``jti``, ``address``,
        ``study``, ``resource_type``, ``resource_id``, ``query``, ``path``, ``description``.
    event_id : str
        ``AuditEvent.id``.
    public_url : str
        The facade's public base (the source observer and the facade's own code systems).

    Returns
    -------
    dict
        FHIR R4 AuditEvent (valid against ``fhir.resources`` R4B).

    Raises
    ------
    KeyError
        For a kind not in :data:`EVENTS`.
    """
    type_key, (sub_system, sub_code, sub_display), action, _ = EVENTS[item["kind"]]
    system, code, display = _TYPES[type_key]
    resource: dict = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {"system": system, "code": code, "display": display},
        "subtype": [{"system": sub_system or public_url + OWN_SUBTYPES, "code": sub_code, "display": sub_display}],
        "action": action,
        "recorded": _instant(item["recorded"]),
        "outcome": str(item["outcome"]),
        "agent": _agents(item, public_url),
        "source": {"site": public_url,
                   "observer": {"display": "imaging FHIR facade", "identifier": {"value": public_url}},
                   "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}]},
    }
    if item.get("start") is not None:
        resource["period"] = {"start": _instant(item["start"]), "end": _instant(item["recorded"])}
    if item.get("description"):
        resource["outcomeDesc"] = item["description"]
    entities = _entities(item)
    if entities:
        resource["entity"] = entities
    return resource
