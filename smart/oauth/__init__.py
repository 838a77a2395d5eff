"""The OAuth 2 / SMART App Launch protocol on Authlib.

- :mod:`.server` — the authorization server and its token persistence;
- :mod:`.grants` — authorization code, refresh token and client credentials grants;
- :mod:`.assertions` — private_key_jwt client assertions;
- :mod:`.revocation` — introspection and revocation;
- :mod:`.discovery`, :mod:`.urls` — the well-known documents and the endpoint paths;
- :mod:`.launches` — EHR launch contexts;
- :mod:`.cors` — which origins are registered clients'.
"""
