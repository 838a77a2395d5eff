"""The FHIR R4 API (``/fhir``): never imports the DICOMweb proxy, nor it this.

- :mod:`.api` — the ``fhir`` blueprint (endpoint names ``fhir.*``);
- :mod:`.search`, :mod:`.patient_search`, :mod:`.search_params` — search parameters;
- :mod:`.bundle`, :mod:`.subsetting`, :mod:`.render`, :mod:`.outcomes`, :mod:`.capability` —
  answers: Bundles, ``_summary``/``_elements``, content negotiation, OperationOutcome, metadata;
- :mod:`.picker` — the consent page's patient directory, registered with smart.
"""
from .api import bp, http_error, internal_error

__all__ = ["bp", "http_error", "internal_error"]
