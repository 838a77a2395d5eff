"""SMART on FHIR scope grammar (v1 and v2) and the pure check "does this scope string permit X"."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

#: Scope contexts, SMART App Launch 2.2 §Scopes for requesting clinical data.
CONTEXTS = ("patient", "user", "system")

#: v2 interaction letters in their only allowed order (SMART 2.2 §Scopes, "cruds").
INTERACTIONS = "cruds"

#: SMART v1 suffixes and the v2 interactions they mean (SMART 2.2 §Scope equivalence).
V1_SUFFIXES = {
    "read": frozenset("rs"),
    "write": frozenset("cud"),
    "*": frozenset(INTERACTIONS),
}

#: Scopes that ask for something other than resource access (SMART 2.2 §Scopes for
#: requesting context data, §Scopes for requesting identity data, §refresh tokens).
NON_RESOURCE_SCOPES = frozenset({
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
})

_RESOURCE_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})"
    r"\.(?P<suffix>[^?]+)(?:\?(?P<query>.*))?$"
)
_V2_SUFFIX = re.compile(r"^c?r?u?d?s?$")


class InvalidScope(ValueError):
    """A string that claims to be a SMART resource scope but breaks the grammar."""

    def __init__(self, scope: str, reason: str = "does not follow the SMART scope grammar"):
        super().__init__(f"scope {scope!r} {reason}")
        self.scope = scope
        self.reason = reason


@dataclass(frozen=True)
class Scope:
    """One parsed SMART resource scope.

    Attributes
    ----------
    context : str
        ``"patient"``, ``"user"`` or ``"system"``.
    resource_type : str
        A FHIR resource type name, or ``"*"`` for all types.
    interactions : frozenset of str
        Subset of ``{"c", "r", "u", "d", "s"}`` (create, read, update, delete, search).
    params : tuple of (str, str)
        Granular restrictions from ``?name=value&...`` (SMART 2.2 §Finer-grained
        resource constraints), in the order given.
    """

    context: str
    resource_type: str
    interactions: frozenset
    params: tuple = ()


def is_resource_scope(scope: str) -> bool:
    """Return True when *scope* starts like a resource scope (``patient/``, ``user/``, ``system/``)
    and is not one of the launch context scopes."""
    return scope not in NON_RESOURCE_SCOPES and scope.split("/", 1)[0] in CONTEXTS and "/" in scope


def parse_scope(scope: str) -> Scope | None:
    """Parse one SMART scope token.

    Parameters
    ----------
    scope : str
        A single scope, e.g. ``patient/ImagingStudy.rs``, ``user/*.read`` or
        ``patient/Observation.rs?category=laboratory`` (SMART App Launch 2.2 §Scopes).

    Returns
    -------
    Scope or None
        The parsed resource scope; None for any scope that is not a resource scope
        (``openid``, ``fhirUser``, ``launch``, ``launch/patient``, ``offline_access``, ...).

    Raises
    ------
    InvalidScope
        If *scope* starts with ``patient/``, ``user/`` or ``system/`` but is malformed:
        unknown suffix, v2 letters out of ``cruds`` order or repeated, granular
        parameters on a v1 suffix, or an empty parameter name.
    """
    if not is_resource_scope(scope):
        return None
    match = _RESOURCE_SCOPE.match(scope)
    if match is None:
        raise InvalidScope(scope)
    suffix, query = match["suffix"], match["query"]
    if suffix in V1_SUFFIXES:
        if query is not None:
            raise InvalidScope(scope, "uses granular parameters with a SMART v1 suffix")
        interactions = V1_SUFFIXES[suffix]
    elif _V2_SUFFIX.match(suffix):
        interactions = frozenset(suffix)
    else:
        raise InvalidScope(scope, f"has suffix {suffix!r}, not .read/.write/.* or letters of 'cruds' in order")
    params: tuple = ()
    if query is not None:
        try:
            params = tuple(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
        except ValueError as exc:
            raise InvalidScope(scope, "has a malformed parameter list") from exc
        if not params or any(not name for name, _ in params):
            raise InvalidScope(scope, "has an empty parameter name")
    return Scope(match["context"], match["type"], interactions, params)


def parse_scopes(scope_string: str | None) -> list[Scope]:
    """Parse every valid resource scope of a space-separated scope string.

    Invalid and non-resource scopes are skipped, so the result grants no more than
    the string does. Use :func:`is_valid_scope` to reject bad tokens up front.
    """
    parsed = []
    for token in (scope_string or "").split():
        try:
            item = parse_scope(token)
        except InvalidScope:
            continue
        if item is not None:
            parsed.append(item)
    return parsed


def is_valid_scope(scope: str) -> bool:
    """Return True if *scope* is a known non-resource scope or a well-formed resource scope."""
    if scope in NON_RESOURCE_SCOPES:
        return True
    try:
        return parse_scope(scope) is not None
    except InvalidScope:
        return False


def permits(
    scope_string: str | None,
    resource_type: str,
    interaction: str,
    contexts: Iterable[str] = CONTEXTS,
    params: Mapping[str, str] | None = None,
) -> bool:
    """Decide whether a granted scope string allows one interaction on one resource type.

    Parameters
    ----------
    scope_string : str
        Space-separated granted scopes (the token's ``scope`` claim).
    resource_type : str
        FHIR resource type being accessed, e.g. ``"ImagingStudy"``.
    interaction : str
        One of ``"c"``, ``"r"``, ``"u"``, ``"d"``, ``"s"`` (SMART 2.2 §Scopes).
    contexts : iterable of str, optional
        Which scope contexts count (default all three). The caller narrows this, e.g.
        to ``("patient",)`` when only patient-compartment access is acceptable.
    params : Mapping[str, str], optional
        Search parameters of the request. A granular scope
        (``patient/Observation.rs?category=laboratory``) permits only a request whose
        *params* carry every one of its ``name=value`` pairs; with no *params*,
        granular scopes permit nothing.

    Returns
    -------
    bool
        True if at least one granted scope covers the request.

    Raises
    ------
    ValueError
        If *interaction* is not one of ``cruds``.
    """
    if interaction not in INTERACTIONS or len(interaction) != 1:
        raise ValueError(f"interaction {interaction!r} is not one of {INTERACTIONS!r}")
    allowed_contexts = frozenset(contexts)
    for scope in parse_scopes(scope_string):
        if scope.context not in allowed_contexts:
            continue
        if scope.resource_type not in ("*", resource_type):
            continue
        if interaction not in scope.interactions:
            continue
        if scope.params and not (params and all(params.get(k) == v for k, v in scope.params)):
            continue
        return True
    return False


def covers(allowed: Scope, requested: Scope) -> bool:
    """True if the registered scope *allowed* includes all of *requested*.

    Same context; the same resource type or ``*``; every requested interaction among the
    allowed ones (so ``.r`` and ``.read`` are within ``.rs``, anything within ``.*``,
    SMART 2.2 §Scope equivalence); and every granular restriction of *allowed* also on
    *requested* (a request may be narrower, never wider).
    """
    return (
        allowed.context == requested.context
        and allowed.resource_type in ("*", requested.resource_type)
        and requested.interactions <= allowed.interactions
        and set(allowed.params) <= set(requested.params)
    )


def granted(requested: str | None, allowed: str | None = None) -> str:
    """Compute the grantable part of a requested scope string.

    Parameters
    ----------
    requested : str
        Space-separated scopes the client asked for.
    allowed : str, optional
        Space-separated scopes registered for the client; None means any valid scope.

    Returns
    -------
    str
        The requested scopes, in request order without duplicates, that are
        syntactically valid (:func:`is_valid_scope`) and, when *allowed* is given, listed
        there (non-resource scopes) or :func:`covers`-ed by one registered resource scope
        (``system/ImagingStudy.r`` for a client registered with ``system/ImagingStudy.rs``).
        Always a subset of *requested* (RFC 6749 §3.3).
    """
    allowed_tokens = None if allowed is None else set(allowed.split())
    allowed_scopes = parse_scopes(allowed)
    out: list[str] = []
    for token in (requested or "").split():
        if token in out or not is_valid_scope(token):
            continue
        if allowed_tokens is not None and token not in allowed_tokens:
            parsed = parse_scope(token)
            if parsed is None or not any(covers(scope, parsed) for scope in allowed_scopes):
                continue
        out.append(token)
    return " ".join(out)


def for_end_user(scope_string: str | None, role: str, fhir_user: str | None = None) -> str:
    """The part of a scope string that an end user's authorization may carry.

    Applied by the authorization code and refresh token grants (never by
    ``client_credentials``):

    - ``system/`` scopes are dropped: they mean "everything on the server, no user
      involved" and belong to SMART Backend Services (SMART 2.2 §Backend Services), which
      authenticate a client, not a user.
    - for a ``patient`` user, ``user/`` scopes are kept only when *fhir_user* names a
      ``Patient``: the access token then carries that ``fhirUser`` claim and
      :meth:`smart.authz.AccessGrant.compartment` limits ``user/`` access to it
      (SMART 2.2 §Scopes: ``user/`` is what the user may see, for a patient their record).

    Parameters
    ----------
    scope_string : str
        Space-separated scopes (requested or stored).
    role : str
        The user's role, ``"patient"`` or ``"practitioner"``.
    fhir_user : str, optional
        The user's relative FHIR reference, e.g. ``Patient/123``.

    Returns
    -------
    str
        The kept scopes, in order.
    """
    drop = {"system"}
    if role == "patient" and not (fhir_user or "").startswith("Patient/"):
        drop.add("user")
    return " ".join(s for s in (scope_string or "").split() if s.split("/", 1)[0] not in drop)
