"""Throwaway PostgreSQL cluster for the test suite, the demo and the benchmarks.

A cluster of our own (Debian's ``postgresql`` binaries under ``/usr/lib/postgresql/*/bin``):
``initdb`` in a temporary folder, ``postgres`` on a free loopback port with its unix socket in
that folder, never the system service. PostgreSQL refuses to run as root, so when we are root
the cluster belongs to Debian's ``postgres`` user (or ``FACADE_PG_OS_USER``).
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devpacs import LOOPBACK, free_port, stop_process  # one port probe and one stop for every throwaway server

#: The Debian package that provides initdb and postgres.
DEBIAN_PACKAGE = "postgresql"


#: Seconds to wait for the server to accept connections.
START_TIMEOUT = 30.0

#: Role and database the facade uses in the cluster (trust authentication, loopback only).
ROLE = "facade"
DATABASE = "facade"


class PostgresError(RuntimeError):
    """PostgreSQL could not be installed, initialised, started or reached."""

    def __init__(self, message: str = "PostgreSQL failed", log_tail: str = "") -> None:
        if log_tail:
            message = f"{message}\n--- last lines of the PostgreSQL log ---\n{log_tail}"
        super().__init__(message)


def find_bin_dir() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/<major>/bin`` holding ``initdb`` and ``postgres``.

    Returns
    -------
    pathlib.Path or None
        None when no PostgreSQL server is installed.
    """
    found = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        major = Path(path).parent.name
        if os.access(Path(path, "initdb"), os.X_OK) and os.access(Path(path, "postgres"), os.X_OK):
            found.append((int(major) if major.isdigit() else 0, Path(path)))
    return max(found)[1] if found else None


def ensure_installed() -> None:
    """Install Debian's ``postgresql`` when no server binaries are found (as root or ``sudo -n``).

    The package also creates (and may start) the system cluster; this module never uses it.

    Raises
    ------
    PostgresError
        If the package is missing and cannot be installed.
    """
    if find_bin_dir() is not None:
        return
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise PostgresError(f"PostgreSQL is missing and apt-get is not available; install {DEBIAN_PACKAGE}")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (prefix + [apt_get, "update"],
                    prefix + [apt_get, "install", "-y", "--no-install-recommends", DEBIAN_PACKAGE]):
        print("devpg: " + " ".join(command), file=sys.stderr, flush=True)
        if subprocess.run(command, env=env, check=False).returncode != 0:
            raise PostgresError(f"{' '.join(command)!r} failed")
    if find_bin_dir() is None:
        raise PostgresError("apt-get succeeded but initdb/postgres are still missing")


def _os_user() -> pwd.struct_passwd | None:
    """The OS user the cluster runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("FACADE_PG_OS_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise PostgresError(f"running as root needs a non-root OS user {name!r} for PostgreSQL "
                            "(Debian's postgresql package creates 'postgres'; or set FACADE_PG_OS_USER)") from None


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM the child when the parent dies (``prctl(PR_SET_PDEATHSIG)``).

    Runs in the child after it became the cluster's OS user, which may not read our Python
    installation: nothing is imported here, the C library was loaded by the parent.
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)


class PostgreSQL:
    """One PostgreSQL cluster in a temporary folder, on a loopback port of its own.

    Parameters
    ----------
    port : int, optional
        TCP port on 127.0.0.1; a free one by default (kept across :meth:`stop`/:meth:`start`).

    Use as a context manager, or :meth:`start` / :meth:`stop` / :meth:`destroy`.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self.user = _os_user()

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the facade's database (driver psycopg 3)."""
        return self.url_of(DATABASE)

    def url_of(self, database: str) -> str:
        """SQLAlchemy URL of *database* in this cluster."""
        return f"postgresql+psycopg://{ROLE}@{LOOPBACK}:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.workdir / "postgres.log"

    def _popen_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self, bin_dir: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="devpg-"))
        (self.workdir / "socket").mkdir()
        if self.user is not None:
            for path in (self.workdir, self.workdir / "socket"):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        result = subprocess.run(
            [str(bin_dir / "initdb"), "-D", str(self.workdir / "data"), "-U", ROLE, "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            cwd=self.workdir, capture_output=True, text=True, check=False, **self._popen_user())
        if result.returncode != 0:
            raise PostgresError(f"initdb failed with status {result.returncode}", result.stdout + result.stderr)

    def start(self) -> "PostgreSQL":
        """Initialise the cluster (first time), start the server and create the facade's database.

        Returns
        -------
        PostgreSQL
            ``self``, accepting connections.

        Raises
        ------
        PostgresError
            If the binaries are missing, initdb fails or the server does not start in time.
        """
        if self.running:
            return self
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise PostgresError("PostgreSQL is not installed (run devpg.ensure_installed())")
        first = self.workdir is None
        if first:
            self._initdb(bin_dir)
        fixed = self.port is not None
        for attempt in range(1 if fixed else 3):
            if not fixed:
                self.port = free_port()
            try:
                self._start_once(bin_dir)
                break
            except PostgresError:
                if fixed or attempt == 2:
                    raise
        if first:
            self._create_database(DATABASE)
        return self

    def _start_once(self, bin_dir: Path) -> None:
        with open(self.log_path, "ab") as log:
            if self.user is not None:
                os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
            self.process = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.workdir / "data"), "-p", str(self.port),
                 "-h", LOOPBACK, "-k", str(self.workdir / "socket"),
                 # A throwaway cluster: durability is not needed, speed is.
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=200"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,
                **self._popen_user())
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresError(f"postgres exited with status {self.process.returncode}", self.log_tail())
            if self._accepts():
                return
            time.sleep(0.1)
        self.stop()
        raise PostgresError(f"postgres did not accept connections within {START_TIMEOUT} s", self.log_tail())

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(host=LOOPBACK, port=self.port, user=ROLE, dbname="postgres", connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def _create_database(self, name: str, template: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(host=LOOPBACK, port=self.port, user=ROLE, dbname="postgres", autocommit=True) as conn:
            statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template:
                statement = statement + sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """Create an empty database *name* and return its SQLAlchemy URL."""
        self._create_database(name)
        return self.url_of(name)

    @property
    def running(self) -> bool:
        """Whether the server was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server ("fast" shutdown: SIGINT), keeping the cluster for a later :meth:`start`."""
        stop_process(self.process, timeout, signal.SIGINT)

    def destroy(self) -> None:
        """Stop the server and delete the cluster's folder."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_tail(self, lines: int = 40) -> str:
        """The last *lines* lines of the server's log ('' when there is none)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return ""

    def __enter__(self) -> "PostgreSQL":
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc_info) -> None:
        self.destroy()


def main(argv: list[str] | None = None) -> int:
    """``devpg.py ensure-installed`` | ``devpg.py start`` (prints the URL, serves until Ctrl-C)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("ensure-installed", "start"))
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        ensure_installed()
        if args.command == "ensure-installed":
            return 0
        with PostgreSQL(args.port) as cluster:
            print(cluster.url, flush=True)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            try:
                while cluster.running:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return 0
    except PostgresError as exc:
        print(f"devpg: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
