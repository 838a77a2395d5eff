"""What each route declares it needs (:func:`needs`, :func:`public`, :func:`operator`), and
the blueprint guard that checks the declaration before the view runs (:func:`guard`).
"""
from __future__ import annotations

from flask import current_app, request

from smart.authz.bearer import current_grant, require_any
from smart.authz.errors import Forbidden
from smart.authz.operators import check_operator

#: Attribute a view function carries: what it needs (``(resource types, interaction)``),
#: :data:`PUBLIC`, or ``(OPERATOR, setting)``.
NEEDS = "_facade_access"
PUBLIC = "public"
OPERATOR = "operator"


def needs(resource_types: str | tuple[str, ...], interaction: str = "r"):
    """Declare that a view needs a token allowing *interaction* on one of *resource_types*.

    Checked before the view runs by :func:`guard`'s ``before_request``; the view reads
    the grant with :func:`current_grant`.

    Parameters
    ----------
    resource_types : str or tuple of str
        FHIR resource type(s); any one of them suffices (the Endpoint, for instance, is
        read with an ImagingStudy scope: SMART Imaging Access).
    interaction : str
        One SMART v2 letter: ``c``, ``r``, ``u``, ``d`` or ``s``.
    """
    types = (resource_types,) if isinstance(resource_types, str) else tuple(resource_types)

    def mark(view):
        setattr(view, NEEDS, (types, interaction))
        return view
    return mark


def public(view):
    """Declare that a view needs no token (discovery, the CapabilityStatement)."""
    setattr(view, NEEDS, PUBLIC)
    return view


def operator(allow_setting: str):
    """Declare an operator view (health, readiness, metrics): no SMART token, but the client
    must be one the operator allowed (:func:`check_operator`).

    Parameters
    ----------
    allow_setting : str
        The configuration key holding the allowed client networks (``FACADE_HEALTH_ALLOW``,
        ``FACADE_METRICS_ALLOW``).
    """
    def mark(view):
        setattr(view, NEEDS, (OPERATOR, allow_setting))
        return view
    return mark


def guard(bp) -> None:
    """Check every request to blueprint *bp* against what its view declares (:func:`needs`).

    A view that declares nothing is refused (fail closed: a new route cannot forget); an
    operator view (:func:`operator`) is checked by client address or operator secret;
    CORS preflights (``OPTIONS``) carry no token by design (Fetch standard §4.8) and pass.
    """
    @bp.before_request
    def _check():
        if request.method == "OPTIONS" or request.endpoint is None:
            return
        view = current_app.view_functions.get(request.endpoint)
        declared = getattr(view, NEEDS, None)
        if declared == PUBLIC:
            return
        if isinstance(declared, tuple) and declared[0] == OPERATOR:
            check_operator(declared[1])
            return
        if declared is None:
            current_grant()  # no token: 401 still
            raise Forbidden("this route declares no access rule")
        require_any(*declared)
