"""The CapabilityStatement: exactly the interactions and search parameters that work (FHIR R4 §2.15)."""
from __future__ import annotations

from fhir_facade.resources.mapping import MappingContext

SPEC = "http://hl7.org/fhir/SearchParameter"

#: resource type -> (interactions, [(search parameter, type, definition)], includes).
#: Exactly what :mod:`fhir_facade.fhir.api` answers; ``tests/test_fhir_api.py`` runs every row.
RESOURCES = {
    "ImagingStudy": (
        ("read", "search-type"),
        [("patient", "reference", f"{SPEC}/clinical-patient"),
         ("subject", "reference", f"{SPEC}/ImagingStudy-subject"),
         ("_id", "token", f"{SPEC}/Resource-id"),
         ("identifier", "token", f"{SPEC}/clinical-identifier"),
         ("started", "date", f"{SPEC}/ImagingStudy-started"),
         # The latest StudyDate/Time or SeriesDate/Time the PACS reports (search.last_updated).
         ("_lastUpdated", "date", f"{SPEC}/Resource-lastUpdated"),
         ("modality", "token", f"{SPEC}/ImagingStudy-modality"),
         ("series", "token", f"{SPEC}/ImagingStudy-series"),
         ("instance", "token", f"{SPEC}/ImagingStudy-instance"),
         ("dicom-class", "token", f"{SPEC}/ImagingStudy-dicom-class"),
         ("bodysite", "token", f"{SPEC}/ImagingStudy-bodysite"),
         ("status", "token", f"{SPEC}/ImagingStudy-status"),
         ("endpoint", "reference", f"{SPEC}/ImagingStudy-endpoint")],
        ["ImagingStudy:endpoint", "ImagingStudy:patient", "ImagingStudy:subject"],
    ),
    "Endpoint": (
        ("read", "search-type"),
        [("_id", "token", f"{SPEC}/Resource-id"),
         ("connection-type", "token", f"{SPEC}/Endpoint-connection-type"),
         ("status", "token", f"{SPEC}/Endpoint-status")],
        [],
    ),
    "Patient": (
        ("read", "search-type"),
        [("_id", "token", f"{SPEC}/Resource-id"),
         ("identifier", "token", f"{SPEC}/Patient-identifier"),
         ("name", "string", f"{SPEC}/Patient-name"),
         ("family", "string", f"{SPEC}/individual-family"),
         ("given", "string", f"{SPEC}/individual-given"),
         ("birthdate", "date", f"{SPEC}/individual-birthdate"),
         ("gender", "token", f"{SPEC}/individual-gender")],
        [],
    ),
    # The audit trail (smart/audit; fhir_facade.fhir.audit_search): read by a patient's own
    # token (patient/AuditEvent.rs) or an auditor's with an access list.
    "AuditEvent": (
        ("search-type",),
        [("patient", "reference", f"{SPEC}/AuditEvent-patient"),
         ("date", "date", f"{SPEC}/AuditEvent-date"),
         ("agent", "reference", f"{SPEC}/AuditEvent-agent"),
         ("entity", "reference", f"{SPEC}/AuditEvent-entity"),
         ("type", "token", f"{SPEC}/AuditEvent-type"),
         ("subtype", "token", f"{SPEC}/AuditEvent-subtype"),
         ("outcome", "token", f"{SPEC}/AuditEvent-outcome")],
        [],
    ),
}


def capability_statement(ctx: MappingContext) -> dict:
    """Build the server's CapabilityStatement.

    Parameters
    ----------
    ctx : MappingContext
        Supplies the public FHIR base and the authorization endpoints' URLs.

    Returns
    -------
    dict
        FHIR R4 CapabilityStatement (``fhirVersion`` 4.0.1) with the SMART ``oauth-uris``
        security extension (SMART App Launch 2.2 §Conformance).
    """
    auth = f"{ctx.public_url}/auth"
    resources = []
    for resource_type, (interactions, params, includes) in RESOURCES.items():
        entry: dict = {
            "type": resource_type,
            "interaction": [{"code": code} for code in interactions],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "conditionalCreate": False,
            "conditionalRead": "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        if params:
            entry["searchParam"] = [{"name": n, "type": t, "definition": d} for n, t, d in params]
        if includes:
            entry["searchInclude"] = includes
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "publisher": "Imaging FHIR facade",
        "kind": "instance",
        "software": {"name": "imaging-fhir-facade", "version": "0.1.0"},
        "implementation": {"description": "FHIR R4 facade over a DICOMweb PACS", "url": ctx.fhir_base},
        "fhirVersion": "4.0.1",
        "format": ["json", "xml", "application/fhir+json", "application/fhir+xml"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": True,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": f"{auth}/authorize"},
                        {"url": "token", "valueUri": f"{auth}/token"},
                    ],
                }],
            },
            "resource": resources,
        }],
    }
