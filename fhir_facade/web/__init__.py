"""Cross-cutting HTTP concerns of the facade's routes: CORS (:mod:`.cors`), the access log
(:mod:`.accesslog`) and the audit trail's hook (:mod:`.audit`). The top layer: nothing in the facade imports it but the app wiring."""
