"""Discovery documents: SMART configuration (SMART 2.2 §Using well-known) and OIDC metadata."""
from __future__ import annotations

from smart.oauth import assertions, grants
from smart.oauth.urls import (  # noqa: F401
    AUTHORIZE_PATH, END_SESSION_PATH, INTROSPECT_PATH, JWKS_PATH, REVOKE_PATH, SMART_STYLE_PATH, TOKEN_PATH,
    USERINFO_PATH,
)
from smart.tokens import jwt as tokens
from smart.tokens import keys

#: Capabilities this server really implements (SMART 2.2 §Capabilities), plus the
#: Argonaut "smart-imaging-access" marker. Only list what works end to end.
CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "authorize-post",
    "smart-imaging-access",
    # The same, as later drafts of the Argonaut SMART Imaging Access guide name it: imaging
    # through an app launch, and through Backend Services (system/ImagingStudy.rs).
    "http://fhir.org/argonaut/smart-imaging/capabilities/app-launch",
    "http://fhir.org/argonaut/smart-imaging/capabilities/backend-services",
]

#: Example scopes advertised in discovery (any well-formed SMART scope is accepted).
SCOPES_SUPPORTED = [
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.rs",
    "patient/*.read",
    "user/*.rs",
    "user/*.read",
    "system/*.rs",
    "system/ImagingStudy.rs",
    "patient/ImagingStudy.rs",
    "patient/Patient.rs",
    "patient/Endpoint.rs",
    "user/ImagingStudy.rs",
    "user/Patient.rs",
    "user/Endpoint.rs",
]

#: Style hints served at SMART_STYLE_PATH (SMART 2.2 §Styling).
SMART_STYLE = {
    "color_background": "#f7f8fa",
    "color_error": "#b00020",
    "color_highlight": "#1f6feb",
    "color_modal_backdrop": "",
    "color_success": "#1a7f37",
    "color_text": "#1f2328",
    "dim_border_radius": "6px",
    "dim_font_size": "16px",
    "dim_spacing_size": "16px",
    "font_family_body": "system-ui, sans-serif",
    "font_family_heading": "system-ui, sans-serif",
}


def _url(path: str) -> str:
    return tokens.issuer() + path


#: The Argonaut SMART Imaging Access capability of an associated endpoint.
IMAGING_CAPABILITY = "smart-imaging-access"


def associated_endpoints() -> list[dict]:
    """The ``associated_endpoints`` of the facade's own discovery: its DICOMweb base, which
    takes the tokens this server issues (SMART App Launch 2.2 §Metadata, SMART Imaging Access)."""
    return [{"url": tokens.issuer() + "/dicomweb", "capabilities": [IMAGING_CAPABILITY]}]


def ehr_associated_endpoints() -> dict:
    """The fragment an EHR administrator adds to the EHR's ``.well-known/smart-configuration``
    so that apps launched in the EHR find the facade (SMART Imaging Access "Discovery"): its
    FHIR base (ImagingStudy search) and DICOMweb base, both taking the EHR's tokens."""
    return {"associated_endpoints": [
        {"url": tokens.fhir_base(), "capabilities": [IMAGING_CAPABILITY]},
        {"url": tokens.issuer() + "/dicomweb", "capabilities": [IMAGING_CAPABILITY]},
    ]}


def smart_configuration() -> dict:
    """The ``.well-known/smart-configuration`` JSON (needs an app context)."""
    return {
        "issuer": tokens.issuer(),
        "jwks_uri": _url(JWKS_PATH),
        "authorization_endpoint": _url(AUTHORIZE_PATH),
        "token_endpoint": _url(TOKEN_PATH),
        "introspection_endpoint": _url(INTROSPECT_PATH),
        "revocation_endpoint": _url(REVOKE_PATH),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": list(grants.TOKEN_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(assertions.ALGORITHMS),
        "scopes_supported": SCOPES_SUPPORTED,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": CAPABILITIES,
        "associated_endpoints": associated_endpoints(),
    }


def openid_configuration() -> dict:
    """OpenID Provider metadata (OIDC Discovery 1.0 §3) for ``openid fhirUser``, with the
    userinfo endpoint (OIDC Core 1.0 §5.3), RP-Initiated Logout 1.0 §2.1 ``end_session_endpoint``
    and RFC 7009 revocation, which browser OIDC clients (oidc-client-ts in OHIF) look for here."""
    return {
        "issuer": tokens.issuer(),
        "authorization_endpoint": _url(AUTHORIZE_PATH),
        "token_endpoint": _url(TOKEN_PATH),
        "userinfo_endpoint": _url(USERINFO_PATH),
        "end_session_endpoint": _url(END_SESSION_PATH),
        "revocation_endpoint": _url(REVOKE_PATH),
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint": _url(INTROSPECT_PATH),
        "jwks_uri": _url(JWKS_PATH),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys.ALG],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "prompt_values_supported": ["none", "login", "consent"],
        "token_endpoint_auth_methods_supported": list(grants.TOKEN_AUTH_METHODS),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_signing_alg_values_supported": list(assertions.ALGORITHMS),
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser", "name",
                             "preferred_username"],
    }
