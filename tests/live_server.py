"""Test helper: serve a Flask app on a free loopback port in a background thread (real HTTP)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from werkzeug.serving import make_server


@contextmanager
def live_server(app, host: str = "127.0.0.1", port: int = 0):
    """Yield the base URL (``http://127.0.0.1:PORT``) of *app* served by werkzeug, threaded.

    Pass *port* (e.g. from ``devpacs.free_port()``) when the app must know its public URL first.
    """
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
