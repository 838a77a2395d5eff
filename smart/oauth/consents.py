"""Remembered consent: which scopes a user approved for a client, and withdrawing it (issue 14).

A user who approved a client's scopes on the consent page is not asked again for the same
scopes or fewer (OIDC Core 1.0 §3.1.2.4: the server may use a prior consent); ``prompt=consent``
still asks, and ``prompt=none`` succeeds only with such a consent. Withdrawing an app forgets the
consent and revokes every refresh token and access token its grants to that user produced
(RFC 7009 §2.1: revoking a grant revokes the tokens issued from it).
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import has_request_context, request
from sqlalchemy import delete, select, update

from smart import audit
from smart.oauth.grants import revoke_family
from smart.store.db import get_session
from smart.store.models import AuthorizationCode, Client, Consent, RefreshToken, User, now


@dataclass(frozen=True)
class ApprovedApp:
    """One row of the user's apps page.

    Attributes
    ----------
    client_id, name : str
        The client and its display name.
    scopes : list of str
        The scopes the user approved for it.
    granted_at, updated_at : int
        Seconds since the epoch of the first and the latest approval.
    """

    client_id: str
    name: str
    scopes: list[str]
    granted_at: int
    updated_at: int


def remembered_scopes(user: User, client_id: str) -> frozenset[str]:
    """The scopes *user* approved for *client_id* so far (empty when none)."""
    row = get_session().get(Consent, (user.id, client_id))
    return frozenset(row.scope.split()) if row is not None else frozenset()


def covers(user: User, client_id: str, scope: str) -> bool:
    """Whether *user* approved every scope of *scope* for *client_id* before.

    Parameters
    ----------
    user : User
        The logged-in user.
    client_id : str
        The requesting client.
    scope : str
        The scopes the request would be granted (space separated), as the consent page
        would offer them (already limited to what the user may grant).

    Returns
    -------
    bool
        True only for a non-empty *scope* that is a subset of the remembered one.
    """
    wanted = frozenset((scope or "").split())
    return bool(wanted) and wanted <= remembered_scopes(user, client_id)


def remember(user: User, client_id: str, scope: str) -> None:
    """Add the scopes *user* just approved for *client_id* to the remembered ones (committed)."""
    session = get_session()
    row = session.get(Consent, (user.id, client_id))
    approved = set((scope or "").split())
    if row is None:
        row = Consent(user_id=user.id, client_id=client_id, scope="", granted_at=now())
        session.add(row)
    row.scope = " ".join(sorted(approved | set(row.scope.split())))
    row.updated_at = now()
    session.commit()
    _audit("consent-given", user, client_id, f"scopes remembered: {row.scope}")


def _audit(kind: str, user: User, client_id: str, description: str) -> None:
    """Record a consent given or withdrawn, about the user's own patient when a patient user."""
    audit.record(kind, client_id=client_id, who=user.fhir_user, user=None if user.fhir_user else user.username,
                 patient=user.patient if user.role == "patient" else None,
                 address=request.remote_addr if has_request_context() else None, description=description)


def approved_apps(user: User) -> list[ApprovedApp]:
    """The clients *user* approved, most recently approved first."""
    session = get_session()
    rows = session.scalars(select(Consent).where(Consent.user_id == user.id)).all()
    names = {c.client_id: c.client_name or c.client_id for c in session.scalars(
        select(Client).where(Client.client_id.in_([r.client_id for r in rows])))}
    apps = [ApprovedApp(r.client_id, names.get(r.client_id, r.client_id), r.scope.split(), r.granted_at,
                        r.updated_at) for r in rows]
    return sorted(apps, key=lambda app: (-app.updated_at, app.client_id))


def withdraw(user: User, client_id: str) -> bool:
    """Forget *user*'s consent for *client_id* and revoke what its grants issued to the user.

    Every grant of that client to that user (an authorization code and the refresh and
    access tokens that came from it) is revoked, as on a replay (:func:`revoke_family`).

    Returns
    -------
    bool
        Whether there was a consent to withdraw.
    """
    session = get_session()
    forgotten = session.execute(delete(Consent).where(Consent.user_id == user.id, Consent.client_id == client_id))
    session.commit()
    families = set(session.scalars(select(AuthorizationCode.id).where(
        AuthorizationCode.user_id == user.id, AuthorizationCode.client_id == client_id)))
    families |= set(session.scalars(select(RefreshToken.code_id).where(
        RefreshToken.user_id == user.id, RefreshToken.client_id == client_id, RefreshToken.code_id.is_not(None))))
    for code_id in sorted(families):
        revoke_family(code_id)
    # Refresh tokens without a family (none are issued so today) are revoked all the same.
    session.execute(update(RefreshToken).where(
        RefreshToken.user_id == user.id, RefreshToken.client_id == client_id, RefreshToken.revoked_at.is_(None),
    ).values(revoked_at=now()))
    session.commit()
    if forgotten.rowcount > 0:
        _audit("consent-withdrawn", user, client_id, "consent withdrawn; the app's tokens for this user revoked")
    return forgotten.rowcount > 0
