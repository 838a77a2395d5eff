"""Tokens the server issues and checks: access-token JWTs and their revocation (:mod:`.jwt`), and the
signing keys (:mod:`.keys`). Above the store; knows nothing of OAuth flows or pages."""
