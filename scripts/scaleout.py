"""Several facade instances (gunicorn, the production config) behind nginx, on loopback, for the
scale-out test and benchmark.

:class:`Instance` is one ``gunicorn -c gunicorn.conf.py "app:create_app()"`` on a free port;
:class:`Nginx` is Debian's nginx with a configuration and prefix of its own in a temporary
folder, one worker process, an ``upstream`` of the instances in round robin, and each answer
marked with the instance that served it (``X-Facade-Upstream``, from ``$upstream_addr``).
Never the system service: nginx is started with ``-p`` / ``-c`` / ``daemon off``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devpacs import LOOPBACK, free_port, stop_process  # one port probe and one stop for every throwaway server

ROOT = Path(__file__).resolve().parent.parent

#: Response header nginx adds: the ``host:port`` of the instance that answered.
UPSTREAM_HEADER = "X-Facade-Upstream"

#: Seconds to wait for a process to answer after it was started.
START_TIMEOUT = 60.0

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # As long request lines as gunicorn accepts (WADO-RS frame lists, QIDO-RS queries).
    large_client_header_buffers 4 16k;
    upstream facade {{
{servers}
        keepalive 32;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://facade;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # Buffering on (nginx's default), as the README advises: a slow client then holds
            # an nginx buffer, not one of the instance's threads.
            proxy_read_timeout 300s;
            add_header {header} $upstream_addr always;
        }}
    }}
}}
"""


class LaunchError(RuntimeError):
    """An instance or nginx did not start; the message holds the tail of its log."""


def _answers(port: int, path: str) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _wait(process: subprocess.Popen, port: int, path: str, log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LaunchError(f"{what} exited with status {process.returncode}:\n{_tail(log)}")
        if _answers(port, path):
            return
        time.sleep(0.2)
    raise LaunchError(f"{what} did not answer {path} within {START_TIMEOUT} s:\n{_tail(log)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Instance:
    """One facade instance: gunicorn with ``gunicorn.conf.py`` on a free loopback port.

    Parameters
    ----------
    env : dict
        The facade's environment (``FACADE_DATABASE_URL``, ``FACADE_PACS_URL``,
        ``FACADE_PUBLIC_URL``, ...); ``FACADE_HOST`` and ``FACADE_PORT`` are set here.
    workdir : pathlib.Path
        Folder for the instance's log (``gunicorn.log``).
    """

    def __init__(self, env: dict, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env, FACADE_HOST=LOOPBACK, FACADE_PORT=str(self.port), HOME=str(self.workdir))
        self.env.pop("XDG_RUNTIME_DIR", None)
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """``host:port``, as nginx's ``$upstream_addr`` names this instance."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gunicorn.log"

    def start(self) -> "Instance":
        """Start gunicorn and wait until ``/fhir/metadata`` answers 200."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            _wait(self.process, self.port, "/fhir/metadata", self.log_path, f"gunicorn on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM gunicorn (graceful), SIGKILL after 30 s."""
        stop_process(self.process, 30.0)


class Nginx:
    """Debian's nginx in front of *upstreams* (``host:port`` strings), round robin, on a free port.

    Parameters
    ----------
    upstreams : list of str
        The instances' addresses (:attr:`Instance.address`).
    port : int, optional
        Where nginx listens on 127.0.0.1; a free port by default (choose it first when the
        instances must know their public URL).
    """

    def __init__(self, upstreams: list[str], port: int | None = None) -> None:
        self.upstreams = list(upstreams)
        self.port = port or free_port()
        self.prefix: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The load balancer's base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    @staticmethod
    def binary() -> str | None:
        """The nginx binary (Debian puts it in /usr/sbin), or None."""
        return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)

    def config(self) -> str:
        """The nginx.conf text."""
        servers = "\n".join(f"        server {address};" for address in self.upstreams)
        return NGINX_CONF.format(prefix=self.prefix, servers=servers, host=LOOPBACK, port=self.port,
                                 header=UPSTREAM_HEADER)

    def start(self) -> "Nginx":
        """Write the configuration into a fresh prefix and start nginx in the foreground."""
        binary = self.binary()
        if binary is None:
            raise LaunchError("nginx is not installed (Debian package nginx-light)")
        self.prefix = Path(tempfile.mkdtemp(prefix="devnginx-"))
        self.prefix.chmod(0o755)  # nginx's worker runs as nobody
        (self.prefix / "nginx.conf").write_text(self.config())
        log = self.prefix / "error.log"
        self.process = subprocess.Popen(
            [binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.prefix / "stderr.log", "wb"),
            start_new_session=True)
        try:
            _wait(self.process, self.port, "/fhir/metadata", log, f"nginx on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop nginx (SIGTERM: fast shutdown) and delete its prefix."""
        stop_process(self.process, 30.0)
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None
