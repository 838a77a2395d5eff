"""The DICOMweb proxy (``/dicomweb``): never imports the FHIR API, nor it this.

- :mod:`.api` — the ``dicomweb`` blueprint (endpoint names ``dicomweb.*``);
- :mod:`.negotiation` — Accept / transfer syntax negotiation;
- :mod:`.relay` — relaying PACS answers (JSON rewriting, streaming);
- :mod:`.multipart`, :mod:`.zerocopy` — multipart parsing and the zero-copy frame path.
"""
from .api import bp, http_error, internal_error

__all__ = ["bp", "http_error", "internal_error"]
