"""Search result Bundles: entries, ``total`` and paging links (FHIR R4 §3.1.1.2, §2.36 Bundle)."""
from __future__ import annotations

from urllib.parse import urlencode

from fhir_facade.fhir.search_params import ResultParams
from fhir_facade.fhir.subsetting import select_elements, summarize


def shape(resource: dict, result: ResultParams) -> dict:
    """Apply ``_summary`` / ``_elements`` of *result* to one matched resource."""
    if result.elements is not None:
        return select_elements(resource, result.elements)
    if result.summary in ("true", "text", "data"):
        return summarize(resource, result.summary)
    return resource


def searchset(fhir_base: str, resource_type: str, matches: list[dict], total: int, result: ResultParams,
              includes: list[dict] = ()) -> dict:
    """Build a ``searchset`` Bundle for one page.

    Parameters
    ----------
    fhir_base : str
        Public FHIR base URL (``fullUrl`` and links start with it).
    resource_type : str
        Type searched (the links' path).
    matches : list of dict
        The page's matched resources, in order, already shaped.
    total : int
        Matches over all pages (``Bundle.total``).
    result : ResultParams
        Paging parameters and the understood parameters to echo.
    includes : list of dict
        ``_include``d resources for this page (``search.mode`` ``include``).

    Returns
    -------
    dict
        FHIR R4 Bundle. The ``self``, ``first``, ``previous``, ``next`` and ``last`` links
        repeat the understood parameters in request order with an explicit ``_count`` and
        ``_offset``, so following them pages stably through an unchanged result.
    """
    count = result.count

    def link(relation: str, offset: int) -> dict:
        query = [(n, v) for n, v in result.echo if n != "_count"] + [("_count", str(count)), ("_offset", str(offset))]
        return {"relation": relation, "url": f"{fhir_base}/{resource_type}?{urlencode(query)}"}

    links = [link("self", result.offset)]
    if count and not result.summary_count:
        last = max(0, (total - 1) // count * count)
        links.append(link("first", 0))
        if result.offset > 0:
            links.append(link("previous", max(0, result.offset - count)))
        if result.offset + count < total:
            links.append(link("next", result.offset + count))
        links.append(link("last", last))
    entries = [{"fullUrl": f"{fhir_base}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
               for r in matches]
    entries += [{"fullUrl": f"{fhir_base}/{r['resourceType']}/{r['id']}", "resource": r,
                 "search": {"mode": "include"}} for r in includes]
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "total": total, "link": links}
    if entries:
        bundle["entry"] = entries
    return bundle
