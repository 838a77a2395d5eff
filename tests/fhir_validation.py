"""Test helper: validate FHIR JSON with the fhir.resources R4B models (and every Bundle entry)."""
from fhir.resources.R4B import get_fhir_model_class


def validate(resource: dict):
    """Validate *resource* (recursing into Bundle entries); return the parsed model.

    Raises pydantic's ValidationError when the JSON is not valid R4(B).
    """
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    for entry in resource.get("entry", []) if resource["resourceType"] == "Bundle" else []:
        validate(entry["resource"])
    return model
