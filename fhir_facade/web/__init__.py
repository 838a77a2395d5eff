"""Cross-cutting HTTP concerns of the facade's routes: CORS (:mod:`.cors`) and the access log
(:mod:`.accesslog`). The top layer: nothing in the facade imports it but the app wiring."""
