"""The current request's grant: its Bearer token (RFC 6750 §2.1) verified once per request,
and the checks the routes ask of it (:func:`require`, :func:`check_patient`, :func:`check_study`).

Token validation is :func:`smart.tokens.jwt.decode_access_token` for the facade's own tokens and
:func:`smart.tokens.issuers.decode_ehr_token` for tokens of trusted EHRs.

An EHR token becomes a grant like an own token's, in the facade's Patient ids: its ``patient``
(the EHR's id) is mapped to the PACS PatientID (:mod:`smart.tokens.ehr_patients`) and that to
the facade's Patient id by the rule the facade registers (:func:`register_patient_id_rule`);
the EHR's id stays on the grant (:attr:`AccessGrant.ehr_patient`) for the FHIR answers. The
access lists of an EHR's backend clients and users are keyed ``<client id or sub>@<issuer>``.
"""
from __future__ import annotations

from flask import current_app, g, request

from smart.authz.errors import Forbidden, Unauthorized, Unavailable
from smart.authz.grant import AccessGrant
from smart.tokens import ehr_patients as ehr_patient_ids
from smart.tokens import issuers
from smart.tokens import jwt as tokens
from smart.tokens import shares


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
