"""The one authorization decision of the facade: may this access token see this patient's data?

Both the FHIR API and the DICOMweb proxy call :func:`require`, :func:`check_patient` and
:meth:`AccessGrant.patients`; nothing else decides. Token validation is
:func:`smart.tokens.jwt.decode_access_token` for the facade's own tokens and
:func:`smart.tokens.issuers.decode_ehr_token` for tokens of trusted EHRs; scope grammar is
:mod:`smart.scopes` (SMART App Launch 2.2 §Scopes and Launch Context).

An EHR token becomes a grant like an own token's, in the facade's Patient ids: its ``patient``
(the EHR's id) is mapped to the PACS PatientID (:mod:`smart.tokens.ehr_patients`) and that to
the facade's Patient id by the rule the facade registers (:func:`register_patient_id_rule`);
the EHR's id stays on the grant (:attr:`AccessGrant.ehr_patient`) for the FHIR answers. The
access lists of an EHR's backend clients and users are keyed ``<client id or sub>@<issuer>``.

Which patients a grant reaches depends on the context of the scope that allows the
interaction:

- ``patient/``: the token's ``patient`` only;
- ``user/`` of a patient user (``fhirUser`` ``Patient/x``): that patient only;
- ``user/`` of any other user: the user's stored access list (:class:`smart.store.models.PatientAccess`,
  by username, the token's ``sub``);
- ``system/``: the backend client's stored access list (by ``client_id``).

A stored list is "all patients" or named Patient ids; without one, no patient (SMART Imaging
Access: "missing patient context SHALL NOT be treated as authorization").
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
import threading
import time
from dataclasses import dataclass

from flask import current_app, g, request
from sqlalchemy import select

from smart import scopes as scope_grammar
from smart.store.db import get_session
from smart.store.models import ACCESS_CLIENT, ACCESS_USER, ALL_PATIENTS, PatientAccess
from smart.tokens import ehr_patients as ehr_patient_ids
from smart.tokens import issuers
from smart.tokens import jwt as tokens
from smart.tokens import shares

#: ``scopes.permits`` memoised: every proxied request asks the same few questions of the
#: same few scope strings, and parsing them each time is most of the decision's cost.
_permits = functools.lru_cache(maxsize=4096)(scope_grammar.permits)

#: Contexts from most to least restricted (SMART App Launch 2.2 §Scopes).
_CONTEXTS = ("system", "user", "patient")


class AuthorizationError(Exception):
    """The request may not proceed; ``status`` and ``error`` follow RFC 6750 §3.1."""

    status = 401
    error: str | None = "invalid_token"
    default_description = "the access token is not valid"

    def __init__(self, description: str | None = None, *, error: str | None = None):
        super().__init__(description or self.default_description)
        self.description = description or self.default_description
        if error is not None:
            self.error = error

    def headers(self, realm: str) -> dict[str, str]:
        """Response headers for this error: the challenge, on 401 and 403 alike (RFC 6750 §3)."""
        return {"WWW-Authenticate": self.www_authenticate(realm)}

    def www_authenticate(self, realm: str) -> str:
        """The ``WWW-Authenticate`` header value for this error (RFC 6750 §3)."""
        value = f'Bearer realm="{realm}"'
        if self.error:
            value += f', error="{self.error}", error_description="{self.description}"'
        return value


class Unauthorized(AuthorizationError):
    """No token, or a token that is malformed, expired, revoked or not ours (401)."""


class Unavailable(AuthorizationError):
    """The EHR that issued the token could not vouch for it in time (503 with ``Retry-After``,
    RFC 9110 §15.6.4): never an acceptance by default, never a 500."""

    status = 503
    error = "temporarily_unavailable"  # RFC 6749 §4.1.2.1, for the OAuth-shaped answers
    default_description = "the token's issuer is unavailable; try again later"

    def __init__(self, description: str | None = None, *, retry_after: int = 5):
        super().__init__(description)
        self.retry_after = retry_after

    def headers(self, realm: str) -> dict[str, str]:
        """``Retry-After`` (RFC 9110 §10.2.3); no challenge: the token was not refused."""
        return {"Retry-After": str(self.retry_after)}


class Forbidden(AuthorizationError):
    """A valid token whose scopes or patient context do not cover the request (403)."""

    status = 403
    error = "insufficient_scope"
    default_description = "the access token does not allow this request"


@dataclass(frozen=True)
class AccessGrant:
    """What a verified access token allows.

    Attributes
    ----------
    claims : dict
        The token's verified claims.
    scope : str
        Granted scopes, space separated.
    patient : str or None
        FHIR Patient id of the launch context.
    client_id : str or None
        The client the token was issued to.
    issuer : str or None
        The trusted EHR that issued the token; ``None`` for the facade's own tokens.
    ehr_patient : str or None
        The EHR's Patient id of an EHR token's ``patient`` (``patient`` is then the facade's
        id of the PatientID it maps to).
    study : str or None
        The one StudyInstanceUID a share link's token reaches (:mod:`smart.tokens.shares`);
        ``None``: no study binding.
    share : str or None
        The id of the share link that minted the token; checked on every request.
    """

    claims: dict
    scope: str
    patient: str | None
    client_id: str | None
    issuer: str | None = None
    ehr_patient: str | None = None
    study: str | None = None
    share: str | None = None

    def context_for(self, resource_type: str, interaction: str) -> str | None:
        """The least restricted context (system, user, patient) whose scopes allow the interaction."""
        for context in _CONTEXTS:
            if _permits(self.scope, resource_type, interaction, contexts=(context,)):
                return context
        return None

    def context(self, resource_type: str, interaction: str) -> str:
        """The context whose scopes allow the interaction, as :meth:`context_for`.

        Raises
        ------
        Forbidden
            If no scope covers the interaction, or a patient-level scope has no patient context.
        """
        context = self.context_for(resource_type, interaction)
        if context is None:
            raise Forbidden(f"no granted scope allows {resource_type} {interaction}")
        if context == "patient" and not self.patient:
            raise Forbidden("patient-level scope without a patient in context")
        return context

    def patients(self, resource_type: str, interaction: str = "r") -> frozenset[str] | None:
        """The Patient ids this grant may see for *resource_type*, or ``None`` for every patient.

        The one answer every route asks (see the module docstring). An empty set means no
        patient at all.

        Raises
        ------
        Forbidden
            If no scope covers the interaction, or a patient-level scope has no patient context.
        """
        context = self.context(resource_type, interaction)
        if self.study is not None and interaction == "s":
            # A token bound to one study searches nothing (FHIR); DICOMweb's top-level QIDO asks
            # :meth:`study_search` instead, which limits the search to that study.
            raise Forbidden("this access token reaches one study and may not search")
        if context == "patient":
            return frozenset({self.patient})
        if context == "user":
            own = self.own_patient()
            if own is not None:
                return frozenset({own})
            return stored_patients(ACCESS_USER, self.access_subject(self.claims.get("sub")))
        return stored_patients(ACCESS_CLIENT, self.access_subject(self.client_id))

    def check_study(self, study_uid: str) -> None:
        """Refuse a study other than the one a share's token is bound to (issue 15).

        Raises
        ------
        Forbidden
            The grant is bound to another study.
        """
        if self.study is not None and study_uid != self.study:
            raise Forbidden("the access token is not for this study")

    def study_search(self, resource_type: str = "ImagingStudy") -> tuple[frozenset[str] | None, str | None]:
        """What a QIDO-RS search may return: the patients (as :meth:`patients`) and the one
        StudyInstanceUID the results are limited to (``None``: any of those patients' studies).

        Raises
        ------
        Forbidden
            As :meth:`patients`.
        """
        if self.study is None:
            return self.patients(resource_type, "s"), None
        self.context(resource_type, "s")
        return self.patients(resource_type, "r"), self.study

    def access_subject(self, name) -> str:
        """The key of a stored access list: the client id or username, ``@issuer`` for an EHR's."""
        name = str(name or "")
        return f"{name}@{self.issuer}" if name and self.issuer else name

    def own_patient(self) -> str | None:
        """The Patient id of a patient user (``fhirUser`` ``Patient/x``), else ``None``.

        For an EHR token, only its own mapped ``patient`` when ``fhirUser`` names that Patient.
        """
        fhir_user = str(self.claims.get("fhirUser") or "")
        marker = "Patient/"
        own = fhir_user[fhir_user.index(marker) + len(marker):] if marker in fhir_user else None
        if self.issuer is not None:
            return self.patient if own is not None and own == self.ehr_patient else None
        return own

    def public_patient(self, patient: str) -> str:
        """The id a client of this grant knows Patient *patient* by: the EHR's id for the
        token's own patient of an EHR token, else the facade's id."""
        return self.ehr_patient if self.ehr_patient is not None and patient == self.patient else patient

    def local_patient(self, value: str) -> str:
        """The facade's Patient id for a patient id the client sent (``?patient=``).

        An EHR token with a patient speaks the EHR's ids: its ``patient`` maps to the facade's;
        any other value is not the token's patient (SMART Imaging Access: 403).

        Raises
        ------
        Forbidden
            An EHR token with a patient, and *value* another patient.
        """
        if self.ehr_patient is None:
            return value
        if value == self.ehr_patient:
            return self.patient
        raise Forbidden("the access token is not for this patient")


class _AccessCache:
    """Stored access lists read within the last few seconds, per app."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}


def _access_cache() -> _AccessCache:
    return current_app.extensions.setdefault("smart_access", _AccessCache())


def read_access_list(kind: str, subject: str) -> frozenset[str] | None:
    """The stored access list of a client or user, straight from the database.

    Parameters
    ----------
    kind : {"client", "user"}
        :data:`smart.store.models.ACCESS_CLIENT` or :data:`smart.store.models.ACCESS_USER`.
    subject : str
        The client id or the username.

    Returns
    -------
    frozenset of str or None
        ``None`` for all patients, else the named Patient ids (empty: none).
    """
    if not subject:
        return frozenset()
    rows = get_session().scalars(select(PatientAccess.patient).where(
        PatientAccess.kind == kind, PatientAccess.subject == subject)).all()
    return None if ALL_PATIENTS in rows else frozenset(rows)


def stored_patients(kind: str, subject: str) -> frozenset[str] | None:
    """:func:`read_access_list`, trusted for ``SMART_REVOCATION_CACHE_SECONDS`` (as revocations are).

    A grant or revocation made in this process is seen at once (:func:`forget_access`);
    one made elsewhere within that many seconds.
    """
    ttl = float(current_app.config.get("SMART_REVOCATION_CACHE_SECONDS", tokens.REVOCATION_CACHE_SECONDS))
    cache = _access_cache()
    key = (kind, subject)
    with cache.lock:
        hit = cache.entries.get(key)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    found = read_access_list(kind, subject)
    with cache.lock:
        if len(cache.entries) > 4096:
            cache.entries.clear()
        cache.entries[key] = (time.monotonic(), found)
    return found


def practitioner_may_see(username: str, patient: str) -> bool:
    """Whether the stored access list of user *username* (``smart grant-access --username``)
    holds Patient *patient*: no launch, standalone or EHR, gives a practitioner a patient
    beyond it (SMART Imaging Access: missing authorization is not authorization)."""
    allowed = stored_patients(ACCESS_USER, username)
    return allowed is None or patient in allowed


def forget_access() -> None:
    """Drop this app's cached access lists (after a grant or revocation)."""
    cache = _access_cache()
    with cache.lock:
        cache.entries.clear()


def bearer_token() -> str:
    """Return the Bearer token of the current request (RFC 6750 §2.1).

    Raises
    ------
    Unauthorized
        Without an Authorization header (no error code, RFC 6750 §3.1) or with a
        header that is not a Bearer token (``invalid_request``).
    """
    header = request.headers.get("Authorization", "")
    if not header:
        raise Unauthorized("an access token is required", error="")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", error="invalid_request")
    return token


def register_patient_id_rule(app, rule) -> None:
    """Register how a PACS PatientID becomes the facade's Patient id (the facade's rule,
    DESIGN.md "Identifiers"; smart does not know it). Needed for EHR tokens with a patient."""
    app.extensions["smart_patient_id_rule"] = rule


def _is_own(token: str) -> bool:
    """Whether *token* is for :func:`tokens.decode_access_token`: one it verified already, one
    naming the facade as issuer, or one no trusted EHR can have issued (a JWT of nobody's)."""
    if tokens.is_cached(token):
        return True
    iss = issuers.unverified_issuer(token)
    return iss == tokens.issuer() or (iss is None and not issuers.trusted_issuers())


def _ehr_grant(token: str, key: str) -> AccessGrant:
    """The grant of an EHR token (hash *key*): verified (or introspected), its patient mapped,
    kept as long as the verdict (:func:`smart.tokens.issuers.keep_grant`).

    Raises
    ------
    Unauthorized, Forbidden, Unavailable
    """
    try:
        found = issuers.decode_ehr_token(token)
        ehr_patient = found.claims.get("patient")
        patient = None
        if ehr_patient:
            rule = current_app.extensions.get("smart_patient_id_rule")
            if rule is None:
                raise Forbidden("this server maps no EHR patient")
            patient = rule(ehr_patient_ids.pacs_patient_id(found.issuer, ehr_patient, token))
    except tokens.InvalidToken as exc:
        raise Unauthorized(exc.description) from exc
    except issuers.IssuerUnavailable as exc:
        raise Unavailable(exc.description, retry_after=exc.retry_after) from exc
    except ehr_patient_ids.PatientNotMapped as exc:
        raise Forbidden(exc.description) from exc
    claims = found.claims
    grant = AccessGrant(claims=claims, scope=str(claims.get("scope") or ""), patient=patient,
                        client_id=claims.get("client_id"), issuer=found.issuer.issuer,
                        ehr_patient=ehr_patient or None)
    issuers.keep_grant(key, grant, found.until)
    return grant


def current_grant() -> AccessGrant:
    """Verify the current request's access token once and return its grant.

    The facade's own tokens are checked by :func:`smart.tokens.jwt.decode_access_token`;
    any other token by :func:`_ehr_grant` (a trusted EHR's, or refused).

    Raises
    ------
    Unauthorized
        No token, or an invalid, expired or revoked token, or one of an untrusted issuer.
    Forbidden
        An EHR token whose patient the EHR does not map to a PACS PatientID.
    Unavailable
        The EHR that issued the token could not be asked in time.
    """
    grant = g.get("_access_grant")
    if grant is not None:
        return grant
    token = bearer_token()
    ehr_key = None if tokens.is_cached(token) else issuers.token_key(token)
    grant = None if ehr_key is None else issuers.cached_grant(ehr_key)
    if grant is not None:
        pass
    elif _is_own(token):
        try:
            claims = tokens.decode_access_token(token)
        except tokens.InvalidToken as exc:
            raise Unauthorized(exc.description) from exc
        grant = AccessGrant(claims=claims, scope=str(claims.get("scope") or ""),
                            patient=claims.get("patient"), client_id=claims.get("client_id"),
                            study=claims.get("study"), share=claims.get("share"))
    else:
        grant = _ehr_grant(token, ehr_key)
    if grant.share is not None and not shares.is_active(grant.share):
        raise Unauthorized("the share link of this access token was revoked or has expired")
    g._access_grant = grant
    return grant


def require(resource_type: str, interaction: str = "r") -> AccessGrant:
    """Check the current request's token allows *interaction* on *resource_type*.

    Parameters
    ----------
    resource_type : str
        FHIR resource type; the DICOMweb proxy asks for ``ImagingStudy``.
    interaction : str
        One SMART v2 letter: ``c``, ``r``, ``u``, ``d`` or ``s``.

    Returns
    -------
    AccessGrant

    Raises
    ------
    Unauthorized, Forbidden
    """
    grant = current_grant()
    grant.context(resource_type, interaction)
    return grant


def check_study(grant: AccessGrant, study_uid: str) -> None:
    """Refuse study *study_uid* to a grant bound to another study (:meth:`AccessGrant.check_study`).

    Raises
    ------
    Forbidden
    """
    grant.check_study(study_uid)


def check_patient(grant: AccessGrant, resource_type: str, patient_id: str, interaction: str = "r") -> None:
    """Refuse unless *grant* may see *resource_type* data of Patient *patient_id*.

    Raises
    ------
    Forbidden
        If the grant does not reach that patient (:meth:`AccessGrant.patients`).
    """
    asked = g.get("_asked_patients")
    if asked is None:
        g._asked_patients = asked = []
    asked.append(patient_id)  # for the audit trail: the patients this request was about
    allowed = grant.patients(resource_type, interaction)
    if allowed is not None and patient_id not in allowed:
        raise Forbidden("the access token is not for this patient")


def request_grant() -> AccessGrant | None:
    """The grant the current request's token was verified to carry, or ``None`` (no token, or
    one that was refused); verifies nothing (the audit trail's after-request hook)."""
    return g.get("_access_grant")


def asked_patients() -> list[str]:
    """The Patient ids :func:`check_patient` was asked about in the current request, in order."""
    return g.get("_asked_patients") or []


# --- routes declare what they need -----------------------------------------------------------

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


#: Request headers that say a proxy forwarded the request (RFC 7239; de facto X-Forwarded-For).
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


@functools.lru_cache(maxsize=16)
def parse_networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The client networks of an allow list: CIDRs or addresses, separated by commas or blanks.

    ``none`` (or an empty list) allows no address.

    Raises
    ------
    ValueError
        If an entry is not an IP address or network; the message names it.
    """
    networks = []
    for entry in value.replace(",", " ").split():
        if entry.lower() == "none":
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from exc
    return tuple(networks)


def operator_allowed(allow_setting: str) -> bool:
    """Whether the current request may read an operator route guarded by *allow_setting*.

    Allowed when the request carries ``Authorization: Bearer <FACADE_METRICS_TOKEN>`` (if that
    secret is set; compared in constant time), or when the client address is in the allow list.
    The client address is the socket peer, or, with ``FACADE_TRUSTED_PROXIES`` > 0, what that
    many proxies said (werkzeug's ``ProxyFix``, wired in ``create_app``). A request carrying
    forwarding headers that no proxy is trusted for is refused by address: it came through a
    proxy, so the peer address (the proxy's, often loopback) is not the client's (fail closed).
    """
    secret = current_app.config.get("FACADE_METRICS_TOKEN")
    header = request.headers.get("Authorization", "")
    if secret and header:
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), str(secret).encode())
    if not int(current_app.config.get("FACADE_TRUSTED_PROXIES") or 0) and any(
            name in request.headers for name in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    networks = parse_networks(str(current_app.config.get(allow_setting) or ""))
    return any(address in network for network in networks)


def check_operator(allow_setting: str) -> None:
    """Refuse the current request unless :func:`operator_allowed`.

    Raises
    ------
    Forbidden
        The client is not one the operator allowed (403; no hint of which rule failed).
    """
    if not operator_allowed(allow_setting):
        raise Forbidden("this client may not read operator routes", error="access_denied")


def require_any(resource_types: tuple[str, ...], interaction: str = "r") -> AccessGrant:
    """:func:`require` for the first of *resource_types* a scope allows.

    Raises
    ------
    Unauthorized, Forbidden
        As :func:`require`; Forbidden names the last type when none is allowed.
    """
    grant = current_grant()
    for resource_type in resource_types[:-1]:
        if grant.context_for(resource_type, interaction) is not None:
            return require(resource_type, interaction)
    return require(resource_types[-1], interaction)


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
