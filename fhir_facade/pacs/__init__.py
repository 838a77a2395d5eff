"""The PACS as the facade reads it (QIDO-RS / WADO-RS over HTTP).

- :mod:`.client` — the HTTP client (session, pool, retries, errors); knows nothing of FHIR or tokens;
- :mod:`.exact` — exact copies of values a PACS answers in the wrong character set;
- :mod:`.lookups` — which patients a study, series or instance is filed under (cached);
- :mod:`.studies` — the study repository: study queries, their caches, the mapped ImagingStudy
  resources and the stored one-way Patient id aliases.
"""
from .client import PacsClient, PacsError, get_pacs
from .lookups import Lookups, UnknownStudy, get_lookups
from .studies import StudyRepository, get_studies

__all__ = ["PacsClient", "PacsError", "get_pacs", "Lookups", "UnknownStudy", "get_lookups", "StudyRepository",
           "get_studies"]
