"""Administration: register clients, create users and EHR launch contexts, rotate keys (``flask smart ...``)."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

import click
from sqlalchemy import delete, select

from smart import audit, authz
from smart.admin import issuers as issuer_admin
from smart.oauth import cors
from smart.admin.schema import DatabaseGroup
from smart.oauth.launches import FHIR_ID, LAUNCH_LIFETIME, AdminError, create_launch  # noqa: F401 (create_launch: API)
from smart.store.db import get_session
from smart.store.models import (ACCESS_CLIENT, ACCESS_USER, ALL_PATIENTS, Client, PatientAccess, TrustedIssuer, User,
                                now)
from smart.tokens import keys

ROLES = ("patient", "practitioner")


#: Schemes a browser runs or reads locally instead of navigating to an app: never a redirect
#: target (OAuth 2.0 Security BCP, RFC 9700 §4.1; RFC 6749 §10.15 open redirectors).
UNSAFE_SCHEMES = frozenset({"javascript", "data", "vbscript", "file", "blob", "about"})


def _check_redirect_uri(uri: str) -> None:
    # RFC 6749 §3.1.2: absolute URI, no fragment. Custom schemes are fine (RFC 8252 §7.1).
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or not (parts.netloc or parts.path):
        raise AdminError(f"redirect URI {uri!r} must be an absolute URI without a fragment")
    # RFC 3986 §2: no blanks, controls or characters outside the URI grammar; a blank or ';'
    # in the host would also split the CSP frame-ancestors and CORS origins made of it.
    if any(c.isspace() or not c.isprintable() or c in '"<>\\^`{|}' for c in uri):
        raise AdminError(f"redirect URI {uri!r} holds characters a URI may not hold")
    if parts.scheme.lower() in UNSAFE_SCHEMES:
        raise AdminError(f"redirect URI {uri!r} has a scheme a browser does not navigate to an app with")
    if parts.scheme in ("http", "https") and not parts.netloc:
        raise AdminError(f"redirect URI {uri!r} has no host")
    if parts.scheme in ("http", "https") and ("@" in parts.netloc or ";" in parts.netloc or "," in parts.netloc):
        raise AdminError(f"redirect URI {uri!r} must name its host without user information")


def add_client(
    client_id: str,
    redirect_uris: list[str],
    public: bool = True,
    secret: str | None = None,
    scope: str | None = None,
    name: str | None = None,
    jwks: dict | None = None,
    jwks_uri: str | None = None,
    post_logout_redirect_uris: list[str] = (),
) -> Client:
    """Register an OAuth 2.0 client (RFC 6749 §2).

    Parameters
    ----------
    client_id : str
        Identifier the app presents.
    redirect_uris : list of str
        Exact redirect URIs (compared as strings, SMART 2.2 / RFC 9700 §4.1.3).
    public : bool
        A public client (no secret, ``token_endpoint_auth_method`` ``none``). Ignored
        when *secret* is given, which makes a confidential symmetric client
        (``client_secret_basic`` or ``client_secret_post``).
    secret : str, optional
        Client secret; stored hashed.
    jwks : dict, optional
        Public JWK Set for ``private_key_jwt`` (RFC 7523); makes a confidential
        asymmetric client that may also use ``client_credentials`` (SMART Backend Services).
    jwks_uri : str, optional
        Where to fetch that JWK Set instead.
    scope : str, optional
        Space-separated scopes the client may be granted; None allows any valid scope.
    name : str, optional
        Name shown on the consent page.
    post_logout_redirect_uris : list of str
        Where the end-session endpoint may send the browser after sign-out
        (RP-Initiated Logout 1.0 §3), exact strings.

    Returns
    -------
    Client

    Raises
    ------
    AdminError
        If the client id exists, no redirect URI is given or one is malformed, or a
        confidential client has no secret.
    """
    if not client_id:
        raise AdminError("client id must not be empty")
    asymmetric = bool(jwks or jwks_uri)
    if not redirect_uris and not asymmetric:
        raise AdminError("at least one redirect URI is required")
    for uri in list(redirect_uris or []) + list(post_logout_redirect_uris or []):
        _check_redirect_uri(uri)
    if not public and not secret and not asymmetric:
        raise AdminError("a confidential client needs a secret or a JWK Set")
    if secret and asymmetric:
        raise AdminError("a client uses either a secret or a JWK Set, not both")
    if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list)):
        raise AdminError("the JWK Set must be a JSON object with a 'keys' list")
    if jwks_uri is not None and urlsplit(jwks_uri).scheme not in ("https", "http"):
        raise AdminError(f"jwks_uri {jwks_uri!r} must be an http(s) URL")
    session = get_session()
    if session.scalars(select(Client).where(Client.client_id == client_id)).first() is not None:
        raise AdminError(f"client {client_id!r} already exists")
    client = Client(
        client_id=client_id,
        client_name=name or client_id,
        redirect_uris=list(dict.fromkeys(redirect_uris or [])),
        post_logout_redirect_uris=list(dict.fromkeys(post_logout_redirect_uris or [])),
        scope=scope,
        token_endpoint_auth_method=(
            "private_key_jwt" if asymmetric else "client_secret_basic" if secret else "none"
        ),
        grant_types=["authorization_code", "refresh_token"] + (["client_credentials"] if asymmetric else []),
        jwks=jwks,
        jwks_uri=jwks_uri,
    )
    client.set_secret(secret)
    session.add(client)
    session.commit()
    cors.forget_origins()
    return client


def update_client(
    client_id: str,
    add_redirect_uris: list[str] = (),
    remove_redirect_uris: list[str] = (),
    add_post_logout_redirect_uris: list[str] = (),
    remove_post_logout_redirect_uris: list[str] = (),
) -> Client:
    """Change a registered client's redirect URIs and post-logout redirect URIs.

    Parameters
    ----------
    client_id : str
        The client to change.
    add_redirect_uris, remove_redirect_uris : list of str
        Redirect URIs (RFC 6749 §3.1.2) to register and to drop, exact strings; removals apply
        after additions.
    add_post_logout_redirect_uris, remove_post_logout_redirect_uris : list of str
        The same for post-logout redirect URIs (RP-Initiated Logout 1.0 §3).

    Returns
    -------
    Client

    Raises
    ------
    AdminError
        For an unknown client, a malformed URI, removing a URI that is not registered, or
        leaving a client that is not a Backend Services client without a redirect URI.
    """
    session = get_session()
    client = session.scalars(select(Client).where(Client.client_id == client_id)).first()
    if client is None:
        raise AdminError(f"no client {client_id!r}")
    for uri in list(add_redirect_uris) + list(add_post_logout_redirect_uris):
        _check_redirect_uri(uri)
    redirects = _changed(client.redirect_uris, add_redirect_uris, remove_redirect_uris, "redirect URI")
    logouts = _changed(client.post_logout_redirect_uris, add_post_logout_redirect_uris,
                       remove_post_logout_redirect_uris, "post-logout redirect URI")
    if not redirects and not (client.jwks or client.jwks_uri):
        raise AdminError("a client needs at least one redirect URI")
    # A new list, not a changed one: SQLAlchemy's JSON columns do not see changes in place.
    client.redirect_uris = redirects
    if logouts != list(client.post_logout_redirect_uris):
        client.post_logout_redirect_uris = logouts
    session.commit()
    cors.forget_origins()
    return client


def _changed(current: list | None, add: list[str], remove: list[str], what: str) -> list[str]:
    """*current* with *add* appended (once each) and *remove* taken out."""
    result = list(dict.fromkeys(list(current or []) + list(add)))
    missing = [uri for uri in remove if uri not in result]
    if missing:
        raise AdminError(f"{what} {missing[0]!r} is not registered for this client")
    return [uri for uri in result if uri not in set(remove)]


def add_user(username: str, password: str, patient: str | None = None, role: str = "patient") -> User:
    """Create a built-in user who can log in on the authorization page.

    Parameters
    ----------
    username, password : str
        Credentials; the password is stored hashed (werkzeug scrypt).
    patient : str, optional
        FHIR Patient id of a patient user's own record (required for role ``patient``).
    role : {"patient", "practitioner"}

    Raises
    ------
    AdminError
        If the username exists, the role is unknown, or a patient user has no valid
        patient id.
    """
    if not username or not password:
        raise AdminError("username and password must not be empty")
    if role not in ROLES:
        raise AdminError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if role == "patient" and not patient:
        raise AdminError("a patient user needs --patient (their FHIR Patient id)")
    if patient is not None and not FHIR_ID.match(patient):
        raise AdminError(f"patient id {patient!r} is not a valid FHIR id")
    session = get_session()
    if session.scalars(select(User).where(User.username == username)).first() is not None:
        raise AdminError(f"user {username!r} already exists")
    user = User(username=username, patient=patient, role=role)
    user.set_password(password)
    session.add(user)
    session.commit()
    return user


def rotate_key() -> str:
    """Make a new signing key current; the old one verifies until its tokens expire."""
    return keys.rotate_key()


def _access_subject(client_id: str | None, username: str | None) -> tuple[str, str]:
    """The (kind, subject) of an access list: a backend client's or a practitioner user's.

    ``<client id or sub>@<issuer>`` names a backend client or user of a trusted EHR
    (``smart add-issuer``), whom this server does not know otherwise.

    Raises
    ------
    AdminError
        Unless exactly one of *client_id* and *username* is given and names a known client or
        a user who is not a patient user (whose access is their own record).
    """
    if bool(client_id) == bool(username):
        raise AdminError("give either --client-id or --username")
    session = get_session()
    subject = client_id or username
    name, _, issuer = subject.rpartition("@")
    if name and session.get(TrustedIssuer, issuer) is not None:
        # A client or user of a trusted EHR (its tokens' client_id or sub, at its iss).
        return (ACCESS_CLIENT if client_id else ACCESS_USER), subject
    if client_id:
        if session.scalars(select(Client).where(Client.client_id == client_id)).first() is None:
            raise AdminError(f"no client {client_id!r}")
        return ACCESS_CLIENT, client_id
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise AdminError(f"no user {username!r}")
    if user.role == "patient":
        raise AdminError(f"user {username!r} is a patient user: their tokens reach their own record only")
    return ACCESS_USER, username


def _check_patients(patients: list[str]) -> None:
    for patient in patients:
        if not FHIR_ID.match(patient):
            raise AdminError(f"patient id {patient!r} is not a valid FHIR id")


def access_list(client_id: str | None = None, username: str | None = None) -> frozenset[str] | None:
    """The stored access list of a client or user: ``None`` for all patients, else the named ids.

    Raises
    ------
    AdminError
        As :func:`grant_access`.
    """
    return authz.read_access_list(*_access_subject(client_id, username))


def grant_access(client_id: str | None = None, username: str | None = None, patients: list[str] = (),
                 all_patients: bool = False) -> frozenset[str] | None:
    """Let a backend client (``system/`` tokens) or practitioner user (``user/`` tokens) see patients.

    Parameters
    ----------
    client_id : str, optional
        The backend client's id; give this or *username*.
    username : str, optional
        The practitioner user's username.
    patients : list of str
        FHIR Patient ids added to the list; give these or *all_patients*.
    all_patients : bool
        Give access to every patient (the named ids are then dropped).

    Returns
    -------
    frozenset of str or None
        The list now stored, as :func:`access_list`.

    Raises
    ------
    AdminError
        For an unknown client or user, a patient user, a malformed Patient id, or neither or
        both of *patients* and *all_patients*.
    """
    kind, subject = _access_subject(client_id, username)
    if bool(patients) == bool(all_patients):
        raise AdminError("give either --patient (one or more) or --all-patients")
    _check_patients(patients)
    session = get_session()
    current = authz.read_access_list(kind, subject)
    if all_patients:
        _delete_access(kind, subject)
        session.add(PatientAccess(kind=kind, subject=subject, patient=ALL_PATIENTS))
    elif current is not None:
        session.add_all(PatientAccess(kind=kind, subject=subject, patient=patient)
                        for patient in sorted(set(patients) - current))
    session.commit()
    authz.forget_access()
    _audit_access("access-granted", kind, subject, [] if all_patients else sorted(set(patients) - (current or set())))
    return authz.read_access_list(kind, subject)


def revoke_access(client_id: str | None = None, username: str | None = None,
                  patients: list[str] = ()) -> frozenset[str] | None:
    """Take back a client's or user's access to the named patients, or to every patient.

    Parameters
    ----------
    client_id, username : str, optional
        As :func:`grant_access`.
    patients : list of str
        FHIR Patient ids removed from the list; none removes everything (no access left).

    Returns
    -------
    frozenset of str or None
        The list now stored, as :func:`access_list`.

    Raises
    ------
    AdminError
        For an unknown client or user, a malformed Patient id, or named patients of a
        subject that has access to all patients (revoke everything first).
    """
    kind, subject = _access_subject(client_id, username)
    _check_patients(patients)
    if patients and authz.read_access_list(kind, subject) is None:
        raise AdminError(f"{subject!r} has access to all patients: revoke everything (no --patient), "
                         "then grant the patients it keeps")
    before = authz.read_access_list(kind, subject)
    _delete_access(kind, subject, patients)
    get_session().commit()
    authz.forget_access()
    _audit_access("access-revoked", kind, subject, sorted(set(patients) & before if patients and before else before or []))
    return authz.read_access_list(kind, subject)


def _audit_access(kind: str, subject_kind: str, subject: str, patients: list[str]) -> None:
    """Record an access list change: one event per patient named (so each patient's trail shows
    who was given or lost access), one without a patient for "all patients" or "everything"."""
    description = f"{'granted to' if kind == 'access-granted' else 'revoked from'} {subject_kind} {subject!r}"
    if not patients:
        audit.record(kind, user="administrator", description=description + " (all patients)")
    for patient in patients:
        audit.record(kind, user="administrator", patient=patient, description=description)


def _delete_access(kind: str, subject: str, patients: list[str] = ()) -> None:
    """Delete a subject's access rows (only those of *patients* when given); not committed."""
    query = delete(PatientAccess).where(PatientAccess.kind == kind, PatientAccess.subject == subject)
    if patients:
        query = query.where(PatientAccess.patient.in_(list(patients)))
    get_session().execute(query)


def describe_access(allowed: frozenset[str] | None) -> str:
    """An access list for people: ``all patients``, ``no patients`` or the ids."""
    if allowed is None:
        return "all patients"
    return ", ".join(sorted(allowed)) if allowed else "no patients"


smart_cli = DatabaseGroup("smart", help="Administer the SMART authorization server.")


def _run(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


@smart_cli.command("add-client")
@click.option("--client-id", required=True, help="Client identifier.")
@click.option("--redirect-uri", "redirect_uris", multiple=True,
              help="Exact redirect URI (repeatable; required unless --jwks/--jwks-uri).")
@click.option("--public", "public", is_flag=True, default=False, help="Public client (default).")
@click.option("--secret", default=None, help="Client secret: makes a confidential symmetric client.")
@click.option("--scope", default=None, help="Space-separated scopes the client may get (default: any).")
@click.option("--name", default=None, help="Name shown on the consent page.")
@click.option("--jwks", "jwks_file", type=click.File("r"), default=None,
              help="JSON file with the client's public JWK Set (private_key_jwt, Backend Services).")
@click.option("--jwks-uri", default=None, help="URL of the client's public JWK Set.")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True,
              help="Where the browser may be sent after sign-out (repeatable).")
def add_client_command(client_id, redirect_uris, public, secret, scope, name, jwks_file, jwks_uri,
                       post_logout_redirect_uris):
    """Register an OAuth client."""
    if sum(bool(x) for x in (public, secret, jwks_file or jwks_uri)) > 1:
        raise click.UsageError("choose one of --public, --secret, --jwks/--jwks-uri")
    try:
        jwks = json.load(jwks_file) if jwks_file else None
    except ValueError as exc:
        raise click.UsageError(f"--jwks is not JSON: {exc}") from None
    asymmetric = bool(jwks or jwks_uri)
    _run(add_client, client_id, list(redirect_uris), public=not (secret or asymmetric), secret=secret,
         scope=scope, name=name, jwks=jwks, jwks_uri=jwks_uri,
         post_logout_redirect_uris=list(post_logout_redirect_uris))
    kind = ("confidential asymmetric (private_key_jwt)" if asymmetric
            else "confidential (client_secret_basic/post)" if secret else "public")
    click.echo(f"Added {kind} client {client_id}.")


@smart_cli.command("update-client")
@click.option("--client-id", required=True, help="Client identifier.")
@click.option("--add-redirect-uri", multiple=True, help="Redirect URI to register (repeatable).")
@click.option("--remove-redirect-uri", multiple=True, help="Redirect URI to drop (repeatable).")
@click.option("--add-post-logout-redirect-uri", multiple=True, help="Post-logout redirect URI to register (repeatable).")
@click.option("--remove-post-logout-redirect-uri", multiple=True, help="Post-logout redirect URI to drop (repeatable).")
def update_client_command(client_id, add_redirect_uri, remove_redirect_uri, add_post_logout_redirect_uri,
                          remove_post_logout_redirect_uri):
    """Change a client's redirect URIs and post-logout redirect URIs."""
    client = _run(update_client, client_id, list(add_redirect_uri), list(remove_redirect_uri),
                  list(add_post_logout_redirect_uri), list(remove_post_logout_redirect_uri))
    click.echo(f"Client {client_id}: redirect URIs {', '.join(client.redirect_uris) or '(none)'}; "
               f"post-logout redirect URIs {', '.join(client.post_logout_redirect_uris or []) or '(none)'}.")


@smart_cli.command("add-user")
@click.option("--username", required=True)
@click.option("--password", required=True, help="Stored hashed.")
@click.option("--patient", default=None, help="FHIR Patient id of a patient user's record.")
@click.option("--role", type=click.Choice(ROLES), default="patient", show_default=True)
def add_user_command(username, password, patient, role):
    """Create a user who can log in on the authorization page."""
    _run(add_user, username, password, patient=patient, role=role)
    click.echo(f"Added {role} user {username}.")


@smart_cli.command("create-launch")
@click.option("--patient", default=None, help="FHIR Patient id in context.")
@click.option("--encounter", default=None, help="FHIR Encounter id in context.")
@click.option("--user", "username", default=None, help="Username the EHR launches for.")
@click.option("--banner/--no-banner", default=False, show_default=True,
              help="need_patient_banner in the token response (default false: the EHR shows the patient).")
@click.option("--lifetime", type=int, default=LAUNCH_LIFETIME, show_default=True, help="Seconds.")
def create_launch_command(patient, encounter, username, banner, lifetime):
    """Create an EHR launch context and print its launch id."""
    click.echo(_run(create_launch, patient=patient, encounter=encounter, username=username,
                    need_patient_banner=banner, lifetime=lifetime))


@smart_cli.command("rotate-key")
def rotate_key_command():
    """Rotate the token signing key (the old key keeps verifying until tokens expire)."""
    click.echo(f"New signing key {rotate_key()}.")


def _subject_options(command):
    command = click.option("--username", default=None, help="A practitioner user (user/ tokens).")(command)
    return click.option("--client-id", default=None, help="A backend client (system/ tokens).")(command)


@smart_cli.command("grant-access")
@_subject_options
@click.option("--patient", "patients", multiple=True, help="FHIR Patient id (repeatable).")
@click.option("--all-patients", is_flag=True, help="Every patient.")
def grant_access_command(client_id, username, patients, all_patients):
    """Let a backend client or practitioner user see patients (default: none)."""
    allowed = _run(grant_access, client_id=client_id, username=username, patients=list(patients),
                   all_patients=all_patients)
    click.echo(f"{client_id or username} may see: {describe_access(allowed)}.")


@smart_cli.command("revoke-access")
@_subject_options
@click.option("--patient", "patients", multiple=True, help="FHIR Patient id (repeatable); none: all access.")
def revoke_access_command(client_id, username, patients):
    """Take back a backend client's or practitioner user's access (all of it without --patient)."""
    allowed = _run(revoke_access, client_id=client_id, username=username, patients=list(patients))
    click.echo(f"{client_id or username} may see: {describe_access(allowed)}.")


for _command in issuer_admin.COMMANDS:
    smart_cli.add_command(_command)
