"""Application factory for the imaging FHIR facade; ``python app.py`` runs the dev server."""
from __future__ import annotations

import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import WSGIRequestHandler

from fhir_facade import config as facade_config


def create_app(test_config: dict | None = None) -> Flask:
    """Build the facade's Flask application.

    Parameters
    ----------
    test_config : dict, optional
        Configuration that overrides the values read from the environment
        (see ``fhir_facade.config.from_environ``); tests pass a temporary
        database URL and a fake PACS URL here.

    Returns
    -------
    flask.Flask
        The wired application: database, SMART authorization server, FHIR API
        and DICOMweb proxy. The factory makes no network calls and creates no
        tables (``flask --app app init-db`` does).
    """
    app = Flask(__name__)
    app.config.from_mapping(facade_config.from_environ(os.environ))
    if test_config:
        app.config.update(test_config)

    import fhir_facade
    import smart

    # '//fhir/...' must be a 404, not a redirect to a Location built from the Host header.
    app.url_map.merge_slashes = False

    smart.init_app(app)
    fhir_facade.init_app(app)
    proxies = int(app.config.get("FACADE_TRUSTED_PROXIES") or 0)
    if proxies > 0:
        # X-Forwarded-* is believed only from the configured number of proxies (login
        # throttling counts client addresses); URLs the facade writes come from
        # FACADE_PUBLIC_URL, never from Host or X-Forwarded-Host.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=0, x_port=0, x_prefix=0)
    return app


class _QuietRequestHandler(WSGIRequestHandler):
    """Dev-server handler that leaves request logging to ``fhir_facade.web.accesslog``.

    Werkzeug's own line holds the concrete path and query, which can name patients.
    """

    def log_request(self, code="-", size="-"):
        pass

    def parse_request(self) -> bool:
        """Answer an HTTP/1.0 request as HTTP/1.0: werkzeug would chunk a streamed body for
        it, an encoding HTTP/1.0 does not have (RFC 9112 Section 7.1)."""
        parsed = super().parse_request()
        if parsed and self.request_version == "HTTP/1.0":
            self.protocol_version = "HTTP/1.0"  # this connection's handler only
        return parsed


if __name__ == "__main__":
    _app = create_app()
    _app.run(host=_app.config["FACADE_HOST"], port=_app.config["FACADE_PORT"], threaded=True,
             request_handler=_QuietRequestHandler)
