"""Who may read the operator routes (/healthz, /readyz, /metrics): no SMART token, but a
client in the operator's allow list of networks, or one presenting the operator secret.

The routes declare the rule with :func:`smart.authz.operator`; the blueprint guard calls
:func:`check_operator`.
"""
from __future__ import annotations

import functools
import hmac
import ipaddress

from flask import current_app, request

from smart.authz.errors import Forbidden

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
