"""The authorization server's storage: the database wiring (:mod:`.db`) and its tables (:mod:`.models`).
Above :mod:`smart.scopes` only."""
