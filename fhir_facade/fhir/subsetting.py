"""Subsets of resources for ``_summary`` and ``_elements`` (FHIR R4 §3.1.1.5.8-9), as pure functions.

Which elements are "in the summary" is the ``isSummary`` flag of the R4 StructureDefinitions,
read from the ``fhir.resources`` R4B models (identical to R4 for ImagingStudy, Patient and
Endpoint); which are mandatory (min 1) is transcribed from the same definitions. Subsetted
resources are marked with the ``SUBSETTED`` tag (FHIR R4 §3.1.1.5.8). Inputs are never
modified: the study cache shares its resources.
"""
from __future__ import annotations

from functools import lru_cache

from fhir.resources.R4B import get_fhir_model_class

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}

#: Elements with min cardinality 1 (FHIR R4 resource definitions): kept by every subset.
MANDATORY = {
    "ImagingStudy": ("status", "subject"),
    "Endpoint": ("status", "connectionType", "payloadType", "address"),
    "Patient": (),
    "Bundle": ("type",),
}

#: Backbone elements whose own children carry summary flags: resource type -> element -> model.
BACKBONES = {"ImagingStudy": {"series": "ImagingStudySeries"}}

#: Always kept (FHIR R4 §3.1.1.5.9: "id, meta and mandatory elements").
ALWAYS = ("resourceType", "id", "meta")

SUMMARY_MODES = frozenset({"true", "false", "text", "data", "count"})


@lru_cache(maxsize=None)
def summary_elements(model_name: str) -> frozenset[str]:
    """Names of the elements of *model_name* flagged ``isSummary`` (from the R4B model)."""
    model = get_fhir_model_class(model_name)
    return frozenset(name for name, field in model.model_fields.items()
                     if (field.json_schema_extra or {}).get("summary_element_property"))


def _backbone_summary(resource_type: str, element: str) -> frozenset[str]:
    module = __import__(f"fhir.resources.R4B.{resource_type.lower()}", fromlist=["x"])
    model = getattr(module, BACKBONES[resource_type][element])
    return frozenset(name for name, field in model.model_fields.items()
                     if (field.json_schema_extra or {}).get("summary_element_property"))


def _tagged(resource: dict) -> dict:
    meta = dict(resource.get("meta", {}))
    tags = [t for t in meta.get("tag", []) if t.get("code") != "SUBSETTED"]
    meta["tag"] = tags + [SUBSETTED]
    resource["meta"] = meta
    return resource


def summarize(resource: dict, mode: str) -> dict:
    """Apply ``_summary`` *mode* to one resource (FHIR R4 §3.1.1.5.8).

    Parameters
    ----------
    resource : dict
        A FHIR resource (not modified).
    mode : str
        ``true`` (summary elements, recursing into ImagingStudy.series), ``text``
        (text, id, meta and mandatory elements), ``data`` (all but ``text``), ``false``.

    Returns
    -------
    dict
        A new resource; tagged ``SUBSETTED`` unless *mode* is ``false``.
    """
    resource_type = resource["resourceType"]
    if mode == "false":
        return resource
    if mode == "data":
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    keep = set(ALWAYS) | set(MANDATORY.get(resource_type, ()))
    if mode == "text":
        keep.add("text")
        return _tagged({k: v for k, v in resource.items() if k in keep})
    keep |= summary_elements(resource_type)
    result = {k: v for k, v in resource.items() if k in keep}
    for element in BACKBONES.get(resource_type, {}):
        if element in result:
            inner = _backbone_summary(resource_type, element)
            result[element] = [{k: v for k, v in item.items() if k in inner} for item in result[element]]
    return _tagged(result)


def select_elements(resource: dict, names: frozenset[str]) -> dict:
    """Apply ``_elements`` to one resource: the named top-level elements plus id, meta, mandatory ones."""
    keep = set(ALWAYS) | set(MANDATORY.get(resource["resourceType"], ())) | set(names)
    return _tagged({k: v for k, v in resource.items() if k in keep})
