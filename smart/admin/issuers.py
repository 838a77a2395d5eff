"""Administration of trusted EHR authorization servers: ``flask smart add-issuer`` /
``list-issuers`` / ``remove-issuer`` / ``associated-endpoints`` (issue 17)."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

import click
from flask.cli import with_appcontext

from smart.oauth.discovery import ehr_associated_endpoints
from smart.oauth.launches import AdminError
from smart.store.db import get_session
from smart.store.models import TrustedIssuer
from smart.tokens import ehr_patients, issuers


def _check_url(name: str, url: str | None) -> None:
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or parts.query:
        raise AdminError(f"{name} {url!r} must be an absolute http(s) URL without query or fragment")


def add_issuer(issuer: str, patient_identifier_system: str, fhir_base: str | None = None,
               introspection_client_id: str | None = None, introspection_secret: str | None = None,
               introspection_key: str | None = None, audience: str | None = None) -> TrustedIssuer:
    """Trust the access tokens of an EHR authorization server.

    Parameters
    ----------
    issuer : str
        The ``iss`` of its tokens (RFC 8414 §2); its discovery is read below it.
    patient_identifier_system : str
        ``Identifier.system`` of the EHR Patient identifier that is the PACS's PatientID.
    fhir_base : str, optional
        The EHR's FHIR base for ``Patient/{id}`` reads (default: *issuer*).
    introspection_client_id : str, optional
        The facade's client id at the EHR, for RFC 7662 introspection of opaque tokens.
    introspection_secret, introspection_key : str, optional
        Its credential: a secret (``client_secret_basic``) or a PEM private key
        (``private_key_jwt``, RS256 or ES256); exactly one with a client id.
    audience : str, optional
        The ``aud`` its tokens name (default: the facade's FHIR base).

    Returns
    -------
    TrustedIssuer

    Raises
    ------
    AdminError
        A malformed URL, an issuer already trusted, a credential without client id or the
        other way round, both credentials, or a key that is not a PEM private key.
    """
    for name, url in (("issuer", issuer), ("FHIR base", fhir_base), ("audience", audience)):
        _check_url(name, url)
    if not patient_identifier_system:
        raise AdminError("the patient identifier system must not be empty")
    if introspection_secret and introspection_key:
        raise AdminError("give --introspection-secret or --introspection-key, not both")
    if bool(introspection_client_id) != bool(introspection_secret or introspection_key):
        raise AdminError("--introspection-client-id needs --introspection-secret or --introspection-key")
    if introspection_key:
        try:
            issuers.private_key(introspection_key)
        except ValueError as exc:
            raise AdminError("--introspection-key must be a PEM file of an RSA or EC private key") from exc
    session = get_session()
    if session.get(TrustedIssuer, issuer) is not None:
        raise AdminError(f"issuer {issuer!r} is already trusted")
    row = TrustedIssuer(issuer=issuer, patient_identifier_system=patient_identifier_system, fhir_base=fhir_base,
                        audience=audience, introspection_client_id=introspection_client_id,
                        introspection_secret=introspection_secret, introspection_key=introspection_key)
    session.add(row)
    session.commit()
    issuers.forget()
    return row


def list_issuers() -> list[dict]:
    """The trusted issuers, without their credentials (only how the facade authenticates)."""
    rows = get_session().query(TrustedIssuer).order_by(TrustedIssuer.issuer).all()
    return [{
        "issuer": row.issuer,
        "patient_identifier_system": row.patient_identifier_system,
        "fhir_base": row.fhir_base or row.issuer,
        "audience": row.audience,
        "introspection_client_id": row.introspection_client_id,
        "introspection_auth": ("private_key_jwt" if row.introspection_key
                               else "client_secret_basic" if row.introspection_secret else None),
    } for row in rows]


def remove_issuer(issuer: str) -> None:
    """Stop trusting *issuer*: its tokens are refused at once in this process, within
    :data:`smart.tokens.ehr_metadata.ISSUER_CACHE_SECONDS` (plus cached verdicts) in others.

    Raises
    ------
    AdminError
        If it is not trusted.
    """
    session = get_session()
    row = session.get(TrustedIssuer, issuer)
    if row is None:
        raise AdminError(f"issuer {issuer!r} is not trusted")
    session.delete(row)
    session.commit()
    issuers.forget()
    ehr_patients.forget()


def _run(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("add-issuer")
@with_appcontext
@click.option("--issuer", required=True, help="The EHR authorization server's issuer URL (its tokens' iss).")
@click.option("--patient-identifier-system", required=True,
              help="Identifier.system of the EHR Patient identifier that is the PACS PatientID (the MRN).")
@click.option("--fhir-base", default=None, help="The EHR's FHIR base for Patient reads (default: the issuer).")
@click.option("--introspection-client-id", default=None, help="The facade's client id for token introspection.")
@click.option("--introspection-secret", default=None, help="Its client secret (client_secret_basic).")
@click.option("--introspection-key", "key_file", type=click.File("r"), default=None,
              help="PEM file of its private key (private_key_jwt).")
@click.option("--audience", default=None, help="The aud its tokens name (default: this server's FHIR base).")
def add_issuer_command(issuer, patient_identifier_system, fhir_base, introspection_client_id,
                       introspection_secret, key_file, audience):
    """Trust the access tokens of an EHR's authorization server."""
    _run(add_issuer, issuer, patient_identifier_system, fhir_base=fhir_base,
         introspection_client_id=introspection_client_id, introspection_secret=introspection_secret,
         introspection_key=key_file.read() if key_file else None, audience=audience)
    click.echo(f"Trusting tokens of {issuer}.")


@click.command("list-issuers")
@with_appcontext
def list_issuers_command():
    """List the trusted EHR issuers (as JSON, credentials left out)."""
    click.echo(json.dumps(list_issuers(), indent=2))


@click.command("remove-issuer")
@with_appcontext
@click.option("--issuer", required=True)
def remove_issuer_command(issuer):
    """Stop trusting an EHR's tokens."""
    _run(remove_issuer, issuer)
    click.echo(f"No longer trusting tokens of {issuer}.")


@click.command("associated-endpoints")
@with_appcontext
def associated_endpoints_command():
    """Print the associated_endpoints fragment for the EHR's .well-known/smart-configuration."""
    click.echo(json.dumps(ehr_associated_endpoints(), indent=2))


COMMANDS = (add_issuer_command, list_issuers_command, remove_issuer_command, associated_endpoints_command)
