"""Throwaway Orthanc PACS with the DICOMweb plugin for the demo and the test suite."""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

#: Debian packages that provide the ``Orthanc`` binary and the DICOMweb plugin.
DEBIAN_PACKAGES = ("orthanc", "orthanc-dicomweb")

#: Where the Debian packages (and a source build) put the DICOMweb plugin.
PLUGIN_GLOBS = (
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/local/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
)

#: The Debian package installs the server in /usr/sbin, which is not on every PATH.
BINARY_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/local/bin"]
)

LOOPBACK = "127.0.0.1"

#: Seconds to wait for Orthanc to answer QIDO-RS after it was started.
START_TIMEOUT = 30.0

#: Seconds a request to Orthanc may take before it is abandoned.
HTTP_TIMEOUT = 30.0


class OrthancError(RuntimeError):
    """Orthanc could not be installed, started or reached."""

    def __init__(self, message: str = "Orthanc failed", log_tail: str = "") -> None:
        if log_tail:
            message = f"{message}\n--- last lines of the Orthanc log ---\n{log_tail}"
        super().__init__(message)


def find_binary() -> str | None:
    """Locate the ``Orthanc`` server binary.

    Returns
    -------
    str or None
        Absolute path of the binary, or None when it is not installed. Also
        looks in ``/usr/sbin``, where the Debian package puts it.
    """
    return shutil.which("Orthanc", path=BINARY_SEARCH_PATH)


def find_plugin() -> str:
    """Locate the Orthanc DICOMweb plugin shared library.

    Returns
    -------
    str
        Path of ``libOrthancDicomWeb.so*`` (the versioned file when several
        names exist, e.g. ``/usr/lib/orthanc/libOrthancDicomWeb.so.1.7``).

    Raises
    ------
    FileNotFoundError
        If no candidate in :data:`PLUGIN_GLOBS` exists.
    """
    for pattern in PLUGIN_GLOBS:
        # Longest name first: the versioned file rather than a symlink to it.
        matches = sorted(glob.glob(pattern), key=len, reverse=True)
        for match in matches:
            if os.path.isfile(match):
                return match
    raise FileNotFoundError(
        "Orthanc DICOMweb plugin (libOrthancDicomWeb.so*) not found in "
        + ", ".join(PLUGIN_GLOBS)
    )


def _plugin_present() -> bool:
    try:
        find_plugin()
    except FileNotFoundError:
        return False
    return True


def ensure_installed() -> None:
    """Install Orthanc and its DICOMweb plugin from Debian packages when missing.

    Runs ``apt-get update`` then ``apt-get install -y orthanc orthanc-dicomweb``
    non-interactively, as root or through ``sudo -n``. Nothing happens when the
    ``Orthanc`` binary and the plugin are both present. The Debian package also
    installs (and may start) a system service on port 8042; this module never
    uses it and always starts its own process with its own configuration.

    Raises
    ------
    OrthancError
        If the packages are missing and cannot be installed (no apt-get, not
        root and no password-less sudo, or apt-get failed).
    """
    if find_binary() and _plugin_present():
        return
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise OrthancError(
            "Orthanc or its DICOMweb plugin is missing and apt-get is not available; "
            "install the packages " + " ".join(DEBIAN_PACKAGES) + " by hand"
        )
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise OrthancError("installing Orthanc needs root (or sudo)")
        prefix = [sudo, "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    commands = (
        prefix + [apt_get, "update"],
        prefix + [apt_get, "install", "-y", *DEBIAN_PACKAGES],
    )
    for command in commands:
        print("devpacs: " + " ".join(command), file=sys.stderr, flush=True)
        result = subprocess.run(command, env=env, check=False)
        if result.returncode != 0:
            raise OrthancError(f"{' '.join(command)!r} exited with status {result.returncode}")
    if not find_binary() or not _plugin_present():
        raise OrthancError("apt-get succeeded but Orthanc or its DICOMweb plugin is still missing")


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on *host* right now.

    Parameters
    ----------
    host : str, optional
        Address to probe, loopback by default.

    Returns
    -------
    int
        A port number chosen by the kernel. Another process may take it before
        the caller binds it; :class:`Orthanc` retries with a new port when that
        happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, timeout: float, signal_number: int = signal.SIGTERM) -> None:
    """Stop a throwaway server: send it *signal_number* (SIGTERM unless told), wait up to *timeout*
    seconds, then SIGKILL it and reap it. Nothing happens when it is not running.

    Parameters
    ----------
    process : subprocess.Popen or None
        The server's process.
    timeout : float
        Seconds to wait after the signal before SIGKILL.
    signal_number : int, optional
        The signal asking it to stop.
    """
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal_number)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM the child when the parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Orthanc:
    """One Orthanc process with a private configuration, storage and log.

    Parameters
    ----------
    workdir : str or pathlib.Path
        Folder for ``orthanc.json``, ``orthanc.log`` and the ``storage/`` and
        ``index/`` folders; created when missing. Reusing a workdir keeps the
        stored instances.
    http_port : int, optional
        HTTP port; a free loopback port when omitted.
    dicom_port : int, optional
        DICOM port written to the configuration. The DICOM server is disabled
        (``DicomServerEnabled: false``), so nothing listens on it.
    start_timeout : float, optional
        Seconds to wait for QIDO-RS to answer 200.
    encoding : str, optional
        Orthanc's ``DefaultEncoding``: the character set of its QIDO-RS answers. ``Utf8``
        (the default here) answers every stored character; Orthanc's own default,
        ``Latin1``, silently drops what ISO_IR 100 cannot hold (the facade must be safe
        with both: tests start one of each).

    Notes
    -----
    Orthanc 1.10 has no option to bind its HTTP server to one address: it
    listens on all interfaces. ``RemoteAccessAllowed: false`` makes it answer
    every request that does not come from the loopback interface with 403, and
    ``AuthenticationEnabled: false`` keeps it credential-free for local use.
    The DICOM (DIMSE) server is turned off, so nothing else listens.

    Examples
    --------
    >>> with Orthanc("/tmp/pacs") as pacs:            # doctest: +SKIP
    ...     requests.get(pacs.dicomweb_url + "/studies")
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        http_port: int | None = None,
        dicom_port: int | None = None,
        start_timeout: float = START_TIMEOUT,
        encoding: str = "Utf8",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.encoding = encoding
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.start_timeout = start_timeout
        self._fixed_port = http_port is not None
        self.process: subprocess.Popen | None = None

    # -- addresses --------------------------------------------------------

    @property
    def url(self) -> str:
        """Orthanc REST root, e.g. ``http://127.0.0.1:8042``."""
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb base (QIDO-RS, WADO-RS, STOW-RS), e.g. ``http://127.0.0.1:8042/dicom-web``."""
        return self.url + "/dicom-web"

    @property
    def config_path(self) -> Path:
        """Path of the configuration file this process is started with."""
        return self.workdir / "orthanc.json"

    @property
    def log_path(self) -> Path:
        """Path of the file that receives Orthanc's stdout and stderr."""
        return self.workdir / "orthanc.log"

    # -- configuration ----------------------------------------------------

    def config(self) -> dict:
        """Build the Orthanc configuration for this process.

        Returns
        -------
        dict
            JSON-serialisable Orthanc 1.10 configuration: loopback-only
            access, no authentication, no DICOM server, storage and index
            under :attr:`workdir`, and the DICOMweb plugin 1.7 mounted at
            ``/dicom-web/`` with full study and series metadata.
        """
        if self.http_port is None:
            self.http_port = free_port()
        if self.dicom_port is None:
            self.dicom_port = free_port()
        return {
            "Name": "facade-devpacs",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "Plugins": [find_plugin()],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "RegisteredUsers": {},
            "SslEnabled": False,
            "WebDavEnabled": False,
            "OrthancExplorerEnabled": True,
            # Orthanc serves one connection per thread, kept-alive ones included: fewer threads
            # than the facade's gunicorn threads (2 workers x 16 here) plus the tests' own
            # clients leave connections queued until a thread is free (30 s and more under load).
            "HttpThreadsCount": 64,
            "DicomServerEnabled": False,
            "DicomPort": self.dicom_port,
            "DicomAet": "DEVPACS",
            # Test runs are throwaway: no job persistence, no lingering jobs.
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "OverwriteInstances": False,
            "DeidentifyLogs": True,
            # QIDO-RS answers in this character set; Latin1 (Orthanc's default) drops
            # every character ISO_IR 100 lacks from PatientIDs and names.
            "DefaultEncoding": self.encoding,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
                # "Full" reads every instance from storage: exact but slowest;
                # plugin 1.7 also knows "MainDicomTags" and "Extrapolate".
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }

    def write_config(self) -> Path:
        """Create :attr:`workdir` and write :meth:`config` to :attr:`config_path`.

        Returns
        -------
        pathlib.Path
            The configuration file.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2) + "\n")
        return self.config_path

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "Orthanc":
        """Start Orthanc and wait until ``GET /dicom-web/studies`` answers 200.

        Returns
        -------
        Orthanc
            ``self``, running.

        Raises
        ------
        OrthancError
            If the binary is missing, the process exits early, or QIDO-RS does
            not answer 200 within :attr:`start_timeout` seconds. The message
            carries the tail of Orthanc's log.
        """
        if self.running:
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except OrthancError:
                # A free port can be taken between probing and binding: retry
                # on a fresh one unless the caller asked for a specific port.
                if attempt + 1 == attempts:
                    raise
                self.http_port = None
                self.dicom_port = None
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        binary = find_binary()
        if binary is None:
            raise OrthancError("the Orthanc binary is not installed (run devpacs.ensure_installed())")
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        def exited() -> bool:
            return self.process.poll() is not None

        try:
            wait_until_ready(self.url, self.start_timeout, gone=exited)
        except OrthancError as exc:
            if exited():
                raise OrthancError(
                    f"Orthanc exited with status {self.process.returncode} while starting "
                    f"on port {self.http_port}",
                    self.log_tail(),
                ) from None
            raise OrthancError(str(exc), self.log_tail()) from None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate Orthanc, wait for it, and kill it when it does not exit in time.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait after SIGTERM before SIGKILL.
        """
        stop_process(self.process, timeout)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of Orthanc's log ('' when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "Orthanc":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def wait_until_ready(orthanc_url: str, timeout: float = START_TIMEOUT, gone=None) -> None:
    """Wait until Orthanc's QIDO-RS ``GET {url}/dicom-web/studies`` answers 200.

    Parameters
    ----------
    orthanc_url : str
        Orthanc REST root (a DICOMweb base ending in ``/dicom-web`` is accepted).
    timeout : float, optional
        Seconds to wait.
    gone : callable, optional
        Returns True when the server process has exited, to stop waiting early.

    Raises
    ------
    OrthancError
        If no 200 arrives within *timeout*, or *gone* returns True.
    """
    studies = rest_root(orthanc_url) + "/dicom-web/studies"
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if gone is not None and gone():
            raise OrthancError(f"Orthanc exited before {studies} answered")
        try:
            response = requests.get(studies, timeout=2)
            if response.status_code == 200:
                return
            last_error = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last_error = type(exc).__name__
        time.sleep(0.1)
    raise OrthancError(f"Orthanc did not answer QIDO-RS on {studies} within {timeout:g} s ({last_error})")


def start(
    workdir: str | os.PathLike, http_port: int | None = None, dicom_port: int | None = None
) -> Orthanc:
    """Start an :class:`Orthanc` in *workdir* and return it running.

    Parameters
    ----------
    workdir : str or pathlib.Path
        Folder for configuration, log, storage and index.
    http_port : int, optional
        HTTP port; a free loopback port when omitted.
    dicom_port : int, optional
        DICOM port written to the configuration (the DICOM server is disabled).

    Returns
    -------
    Orthanc
        The running process; call :meth:`Orthanc.stop` or use it as a context manager.
    """
    return Orthanc(workdir, http_port=http_port, dicom_port=dicom_port).start()


# -- storing ------------------------------------------------------------


def rest_root(url: str) -> str:
    """Return the Orthanc REST root for *url*, accepting the DICOMweb base too.

    Parameters
    ----------
    url : str
        ``http://127.0.0.1:8042`` or ``http://127.0.0.1:8042/dicom-web``.

    Returns
    -------
    str
        The URL without trailing slash and without a trailing ``/dicom-web``.
    """
    url = url.rstrip("/")
    if url.endswith("/dicom-web"):
        url = url[: -len("/dicom-web")]
    return url


def to_part10(ds) -> bytes:
    """Encode a pydicom Dataset as a DICOM Part-10 file (PS3.10 Section 7.1).

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        The dataset. ``ds.file_meta.TransferSyntaxUID`` must be set; missing
        Media Storage SOP Class/Instance UIDs are taken from the dataset.

    Returns
    -------
    bytes
        128-byte preamble, ``DICM``, File Meta Information and the dataset.
    """
    from pydicom import dcmwrite

    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def post_instance(orthanc_url: str, body: bytes, session: requests.Session | None = None) -> dict | str:
    """Send one file to Orthanc's ``POST /instances`` and report what happened.

    Parameters
    ----------
    orthanc_url : str
        Orthanc REST root (a DICOMweb base ending in ``/dicom-web`` is accepted).
    body : bytes
        The file's content, normally Part-10.
    session : requests.Session, optional
        Session to reuse across many calls.

    Returns
    -------
    dict or str
        Orthanc's JSON answer when it accepted the file (``ID``, ``Path``,
        ``ParentPatient``, ``ParentStudy``, ``ParentSeries`` and ``Status``:
        ``"Success"``, or ``"AlreadyStored"`` when the SOPInstanceUID is
        already there and the new file was dropped), else Orthanc's reason for
        refusing it (HTTP 4xx), e.g. ``"Cannot parse an invalid DICOM file
        (size: 9 bytes)"``.

    Raises
    ------
    OrthancError
        If Orthanc cannot be reached or answers a server error (5xx).
    """
    url = rest_root(orthanc_url) + "/instances"
    http = session or requests
    try:
        response = http.post(
            url, data=body, headers={"Content-Type": "application/dicom"}, timeout=HTTP_TIMEOUT
        )
    except requests.RequestException as exc:
        raise OrthancError(f"cannot reach Orthanc at {url}: {exc}") from exc
    if 400 <= response.status_code < 500:
        try:
            error = response.json()
        except ValueError:
            return f"HTTP {response.status_code}"
        return str(error.get("Details") or error.get("Message") or f"HTTP {response.status_code}")
    if response.status_code != 200:
        raise OrthancError(
            f"Orthanc answered HTTP {response.status_code} to POST /instances: "
            f"{response.text[:500]}"
        )
    return response.json()


def store_file(orthanc_url: str, path_or_bytes, session: requests.Session | None = None) -> dict | None:
    """Store one DICOM file in Orthanc through its REST API (``POST /instances``).

    Parameters
    ----------
    orthanc_url : str
        Orthanc REST root (a DICOMweb base ending in ``/dicom-web`` is accepted).
    path_or_bytes : str, os.PathLike or bytes
        A Part-10 file, by path or content.
    session : requests.Session, optional
        Session to reuse across many calls.

    Returns
    -------
    dict or None
        Orthanc's answer (see :func:`post_instance`), or None when Orthanc
        refuses the file (not Part-10, not DICOM, unreadable).

    Raises
    ------
    OrthancError
        If Orthanc cannot be reached or answers a server error.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        body = bytes(path_or_bytes)
    else:
        body = Path(path_or_bytes).read_bytes()
    answer = post_instance(orthanc_url, body, session=session)
    return answer if isinstance(answer, dict) else None


def store_dataset(orthanc_url: str, ds, session: requests.Session | None = None) -> dict | None:
    """Encode a pydicom Dataset as Part-10 and store it in Orthanc.

    Parameters
    ----------
    orthanc_url : str
        Orthanc REST root.
    ds : pydicom.dataset.Dataset
        Dataset with ``file_meta.TransferSyntaxUID`` set (see :func:`to_part10`).
    session : requests.Session, optional
        Session to reuse across many calls.

    Returns
    -------
    dict or None
        As :func:`store_file`.
    """
    return store_file(orthanc_url, to_part10(ds), session=session)


# -- command line -------------------------------------------------------


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _cmd_start(args: argparse.Namespace) -> int:
    ensure_installed()
    # Stop cleanly on SIGTERM too (scripts/demo's trap sends it; a background
    # job of a non-interactive shell ignores SIGINT).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    pacs = Orthanc(args.workdir, http_port=args.port)
    try:
        pacs.start()
        if args.load_samples:
            import samples

            summary = samples.load_samples(pacs.url)
            print(samples.describe(summary), flush=True)
        print(f"Orthanc REST:  {pacs.url}", flush=True)
        print(f"DICOMweb base: {pacs.dicomweb_url}", flush=True)
        print(f"Log:           {pacs.log_path}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        while pacs.running:
            time.sleep(0.5)
        # Ctrl-C in a terminal reaches Orthanc too, which then exits with 0.
        status = pacs.process.returncode
        if status != 0:
            print(f"devpacs: Orthanc exited with status {status}", file=sys.stderr)
        return 0 if status == 0 else 1
    except KeyboardInterrupt:
        return 0
    except OrthancError as exc:
        print(f"devpacs: {exc}", file=sys.stderr)
        return 1
    finally:
        # A process-group stop delivers SIGINT and SIGTERM together: the second must not
        # interrupt the shutdown of the first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pacs.stop()


def _cmd_ensure_installed(args: argparse.Namespace) -> int:
    try:
        ensure_installed()
    except OrthancError as exc:
        print(f"devpacs: {exc}", file=sys.stderr)
        return 1
    print(f"Orthanc: {find_binary()}\nDICOMweb plugin: {find_plugin()}")
    return 0


def _cmd_wait(args: argparse.Namespace) -> int:
    def gone() -> bool:
        if args.pid is None:
            return False
        try:
            os.kill(args.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    try:
        wait_until_ready(args.url, args.timeout, gone=gone)
    except OrthancError as exc:
        print(f"devpacs: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``devpacs`` command line (``start``, ``wait``, ``ensure-installed``).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="devpacs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser(
        "start", help="run Orthanc on loopback in the foreground until Ctrl-C"
    )
    start_parser.add_argument("--workdir", default="var/orthanc", help="default: %(default)s")
    start_parser.add_argument("--port", type=int, default=8042, help="HTTP port (default: %(default)s)")
    start_parser.add_argument(
        "--load-samples", action="store_true", help="store the sample studies once Orthanc is up"
    )
    start_parser.set_defaults(func=_cmd_start)
    wait_parser = commands.add_parser("wait", help="wait until Orthanc at URL answers QIDO-RS")
    wait_parser.add_argument("url", help="Orthanc REST root, e.g. http://127.0.0.1:8042")
    wait_parser.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds (default: %(default)s)")
    wait_parser.add_argument("--pid", type=int, help="give up as soon as this process has exited")
    wait_parser.set_defaults(func=_cmd_wait)
    install_parser = commands.add_parser(
        "ensure-installed", help="apt-get install orthanc orthanc-dicomweb when missing"
    )
    install_parser.set_defaults(func=_cmd_ensure_installed)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
