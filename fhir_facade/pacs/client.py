"""The PACS client: one pooled ``requests.Session`` speaking DICOMweb (PS3.18) to the PACS."""
from __future__ import annotations

import email.parser
import http.client
import logging
import re
import socket
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

import requests
from flask import Flask, current_app
from requests.adapters import HTTPAdapter
import urllib3
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from fhir_facade.pacs import metrics

log = logging.getLogger(__name__)

#: Media type of QIDO-RS and metadata answers (PS3.18 Section 8.7.3.5.1).
DICOM_JSON = "application/dicom+json"
#: StudyInstanceUID the readiness probe asks for: a UUID-derived UID (PS3.5 Annex B.2) no study has.
PROBE_UID = "2.25.0"
#: An HTTP field name (RFC 9110 Section 5.1: a token).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class PacsError(Exception):
    """The PACS could not answer; ``status`` is the HTTP status the facade should return."""

    status = 502
    default_message = "the PACS returned an invalid answer"

    def __init__(self, message: str | None = None, *, upstream_status: int | None = None):
        super().__init__(message or self.default_message)
        self.upstream_status = upstream_status

    @property
    def headers(self) -> dict[str, str]:
        """Response headers that go with :attr:`status` (``Retry-After`` for 503, RFC 9110 Section 10.2.3)."""
        return {"Retry-After": "5"} if self.status == 503 else {}


class PacsUnavailable(PacsError):
    """The PACS refused the connection or is not reachable (answered as 503 + Retry-After)."""

    status = 503
    default_message = "the PACS is unavailable"


class PacsTimeout(PacsError):
    """The PACS did not answer in time (answered as 504)."""

    status = 504
    default_message = "the PACS did not answer in time"


#: Characters a QIDO-RS value keeps as they are in the request line: requests and urllib3
#: leave them unencoded, so a PACS that does not percent-decode queries (Orthanc 1.10) still
#: reads them right. ``*`` and ``?`` are the QIDO-RS wildcards (PS3.18 Section 8.3.4.6.1).
_QUERY_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$'()*+,;=:@/?")


#: Matching keys whose commas are part of the value. A PACS may read a comma as a list of
#: values (PS3.18 Section 8.3.4.1 allows that for UIDs; Orthanc 1.10 does it for any key), so
#: for these a comma is sent as the ``?`` wildcard; their callers filter the answer exactly.
LITERAL_COMMA_KEYS = frozenset({"PatientID", "00100020", "AccessionNumber", "00080050"})


def qido_value(value: str, literal_commas: bool = False) -> str:
    """A QIDO-RS matching value that survives a PACS that does not percent-decode the query.

    Any other character becomes the single-character wildcard ``?`` (a run of non-ASCII
    characters becomes ``*``), so the PACS matches a superset; callers that need exact
    matches (PatientID, AccessionNumber) filter the answer themselves.

    Parameters
    ----------
    value : str
        The value as the client or the facade means it, e.g. ``Doe^John``.
    literal_commas : bool
        The value's commas are characters, not a list separator: send them as ``?``.

    Returns
    -------
    str
        e.g. ``Doe?John``.
    """
    out = []
    for char in value:
        if char == "," and literal_commas:
            out.append("?")
        elif char in _QUERY_SAFE:
            out.append(char)
        elif ord(char) < 0x80:
            out.append("?")
        elif not out or out[-1] != "*":
            out.append("*")
    return "".join(out)


def query_string(params: Sequence[tuple[str, str]] | Mapping | None) -> str:
    """Build ``name=value&...`` with :func:`qido_value` values (names are keywords or tags)."""
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    return "&".join(f"{qido_value(str(name))}={qido_value(str(value), str(name) in LITERAL_COMMA_KEYS)}"
                    for name, value in items)


class _PacsRetry(Retry):
    """The PACS client's retry policy: as configured, except that a timeout is final.

    ``read=1`` is there for a pooled connection the PACS closed meanwhile, ``connect=2`` for
    a refused connection; a PACS that accepted the request (or the connection) and then said
    nothing for the whole timeout would otherwise get it again, and the client its 504 after
    two or three times the configured time.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, ReadTimeoutError):
            raise error
        if isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError):
            raise MaxRetryError(_pool, url, error)  # the PACS host said nothing for the whole timeout
        return super().increment(method, url, response, error, _pool, _stacktrace)


def is_timeout(exc: BaseException) -> bool:
    """Whether a failed exchange with the PACS failed because the PACS said nothing in time."""
    cause = _root_cause(exc)
    # urllib3's NewConnectionError (refused, unreachable) is a ConnectTimeoutError too.
    return (isinstance(cause, (socket.timeout, ReadTimeoutError, ConnectTimeoutError))
            and not isinstance(cause, NewConnectionError))


#: What reading a PACS answer's body raises when the PACS fails.
READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def broken_answer(response: requests.Response, exc: BaseException) -> PacsError:
    """Close the PACS answer *response*, whose body could not be read (*exc*, one of
    :data:`READ_ERRORS`); return the error to answer with: :class:`PacsTimeout` (504) when
    the PACS stalled for the whole timeout, else :class:`PacsError` (502). Counted in
    ``facade_pacs_errors`` (:mod:`fhir_facade.pacs.metrics`)."""
    error = _broken(response, exc)
    path = urlsplit(response.request.url).path if response.request is not None and response.request.url else ""
    metrics.count_pacs_error(metrics.operation(path), _error_kind(error))
    return error


def _broken(response: requests.Response, exc: BaseException) -> PacsError:
    response.close()
    if is_timeout(exc):
        return PacsTimeout()
    return PacsError("the PACS broke off its answer")


def _error_kind(error: PacsError) -> str:
    """The ``error`` label of a PACS failure (:data:`fhir_facade.pacs.metrics.ERRORS`)."""
    if isinstance(error, PacsUnavailable):
        return "unavailable"
    if isinstance(error, PacsTimeout):
        return "timeout"
    return "invalid"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost error behind a requests/urllib3 error (its ``reason``, args or cause chain)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None:
            inner = exc.__cause__ or exc.__context__
        if inner is None:
            return exc
        exc = inner
    return exc


class PacsClient:
    """DICOMweb client for the PACS behind the facade.

    One instance per application, created in :func:`init_app`; it owns a pooled
    session so connections to the PACS are reused across requests.

    Parameters
    ----------
    base_url : str
        DICOMweb base of the PACS, without trailing slash
        (e.g. ``http://127.0.0.1:8042/dicom-web``).
    username, password : str, optional
        HTTP basic credentials added to every PACS request (never forwarded
        from, or shown to, clients).
    timeout : float
        Connect and read timeout in seconds.
    pool_size : int
        Connections kept open to the PACS.
    """

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 timeout: float = 30.0, pool_size: int = 32):
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        #: scheme://host[:port] of the PACS, used to recognise PACS URLs in answers.
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self.session = requests.Session()
        # The PACS address is configured, never taken from proxy variables or .netrc.
        self.session.trust_env = False
        if username is not None:
            self.session.auth = (username, password or "")
        # Idempotent GETs are retried on overload answers (PS3.18 Section 8.6.2 lists 503) and
        # once on a pooled connection the PACS closed meanwhile (Orthanc keeps idle ones 1 s).
        retry = _PacsRetry(total=2, connect=2, read=1, status=2, backoff_factor=0.05,
                           status_forcelist=(429, 503, 504), allowed_methods=("GET", "HEAD"),
                           raise_on_status=False, respect_retry_after_header=False)
        self.adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)

    def url(self, path: str) -> str:
        """Return the PACS URL for a DICOMweb *path* (``studies/1.2/series``)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def get(self, path: str, params: Sequence[tuple[str, str]] | Mapping | None = None,
            headers: Mapping[str, str] | None = None, stream: bool = False,
            timeout: float | None = None) -> requests.Response:
        """Send a GET to the PACS.

        Parameters
        ----------
        path : str
            Path below the DICOMweb base.
        params : sequence of (name, value) or mapping, optional
            Query parameters; a sequence keeps repeated names in order.
        headers : mapping, optional
            Request headers (e.g. ``Accept``).
        stream : bool
            Leave the body unread so it can be relayed chunk by chunk.
        timeout : float, optional
            Connect and read timeout in seconds for this request (default: the client's).

        Returns
        -------
        requests.Response
            Whatever status the PACS answered; the caller decides. Each request is timed
            (``facade_pacs_request_duration_seconds``) and each failure or 5xx answer counted
            (``facade_pacs_errors``) by operation kind, never by URL.

        Raises
        ------
        PacsUnavailable
            Connection refused, reset or closed without an answer (also after one retry).
        PacsTimeout
            No answer, or no more of the body unless *stream*, within the timeout (not retried).
        PacsError
            An answer that is not HTTP (over 100 header lines, a header line over 64 KiB), or
            unless *stream*, a body cut short.
        """
        kind = metrics.operation(path)
        started = time.perf_counter()
        try:
            response = self._send(path, params, headers, stream, self.timeout if timeout is None else timeout)
        except PacsError as exc:
            metrics.count_pacs_error(kind, _error_kind(exc))
            raise
        metrics.observe_pacs(kind, time.perf_counter() - started)
        if response.status_code >= 500:
            metrics.count_pacs_error(kind, "server_error")
        return response

    def _send(self, path: str, params, headers, stream: bool, timeout: float) -> requests.Response:
        # A prepared request sent straight through the pooled adapter: the Session's cookie,
        # hook, redirect and environment machinery costs ~0.25 ms a request and does nothing
        # for a PACS (redirects are not followed; credentials come from our configuration).
        # Only the steps a GET without a body or cookies needs are run: an empty cookie jar
        # and its header cost another ~0.05 ms.
        request = requests.PreparedRequest()
        try:
            query = query_string(params)
            url = f"{self.url(path)}?{query}" if query else self.url(path)
            request.prepare_method("GET")
            request.prepare_url(url, None)
            request.prepare_headers(headers)
            request.prepare_auth(self.session.auth, url)
            response = self.adapter.send(request, stream=stream, timeout=timeout)
        except requests.Timeout as exc:
            log.warning("PACS timeout")
            raise PacsTimeout() from exc
        except requests.ConnectionError as exc:
            cause = _root_cause(exc)
            if is_timeout(exc):
                log.warning("PACS timeout")
                raise PacsTimeout() from exc
            if isinstance(cause, http.client.HTTPException) and not isinstance(cause, http.client.RemoteDisconnected):
                # It answered, but not HTTP (more than 100 header lines, a line over 64 KiB, a bad status line).
                log.warning("PACS answered malformed HTTP: %s", type(cause).__name__)
                raise PacsError() from exc
            log.warning("PACS unreachable: %s", type(exc).__name__)
            raise PacsUnavailable() from exc
        except requests.RequestException as exc:
            raise PacsError() from exc
        if not stream:
            # The adapter leaves the body unread; read here, its failures are the PACS's too.
            try:
                response.content
            except READ_ERRORS as exc:
                error = _broken(response, exc)
                if isinstance(error, PacsTimeout):
                    log.warning("PACS timeout")
                raise error from exc
        return response

    def ping(self, timeout: float = 2.0) -> bool:
        """Whether the PACS answers a cheap QIDO-RS query within *timeout* seconds.

        Asks for a study UID no PACS holds (``StudyInstanceUID=2.25.0``, ``limit=1``): an
        indexed look-up answered with an empty list (PS3.18 Section 10.6). For the readiness
        probe (``GET /readyz``).

        Parameters
        ----------
        timeout : float
            Connect and read timeout in seconds.

        Returns
        -------
        bool
            ``True`` for a 2xx answer; ``False`` when the PACS is unreachable, silent, or
            answers anything else (a 401 means the facade cannot use it either).
        """
        try:
            response = self.get("studies", params=[("StudyInstanceUID", PROBE_UID), ("limit", "1")],
                                headers={"Accept": DICOM_JSON}, timeout=timeout)
        except PacsError:
            return False
        response.close()
        return 200 <= response.status_code < 300

    def qido(self, path: str, params: Sequence[tuple[str, str]] | Mapping | None = None) -> list[dict]:
        """Run a QIDO-RS query and return its DICOM JSON datasets (PS3.18 Section 10.6).

        Parameters
        ----------
        path : str
            ``studies``, ``studies/{uid}/series``, ``studies/{uid}/instances``, ...
        params : sequence or mapping, optional
            Matching keys and ``includefield``/``limit``/``offset``.

        Returns
        -------
        list of dict
            DICOM JSON objects (PS3.18 Annex F); empty for 204 or 404.

        Raises
        ------
        PacsError, PacsUnavailable, PacsTimeout
            The PACS failed or answered something that is not DICOM JSON.
        """
        return self._dicom_json(path, params, "a query")

    def metadata(self, path: str) -> list[dict]:
        """Retrieve WADO-RS metadata and return its DICOM JSON datasets (PS3.18 Section 10.4.1.1.2).

        Parameters
        ----------
        path : str
            ``studies/{uid}/metadata``, ``studies/{uid}/series/{uid}/metadata``, ...

        Returns
        -------
        list of dict
            One DICOM JSON object per instance (PS3.18 Annex F), bulk data as
            ``BulkDataURI``; empty for 204 or 404.

        Raises
        ------
        PacsError, PacsUnavailable, PacsTimeout
            The PACS failed or answered something that is not DICOM JSON.
        """
        return self._dicom_json(path, None, "a metadata request")

    def _dicom_json(self, path: str, params, what: str) -> list[dict]:
        response = self.get(path, params=params, headers={"Accept": DICOM_JSON})
        if response.status_code in (204, 404):
            return []
        if response.status_code == 503:
            raise PacsUnavailable(upstream_status=503)
        if response.status_code == 504:
            raise PacsTimeout(upstream_status=504)
        if response.status_code != 200:
            raise PacsError(f"the PACS answered {response.status_code} to {what}",
                            upstream_status=response.status_code)
        return [item for item in dicom_json_array(response) if isinstance(item, dict)]


def dicom_json_array(response: requests.Response) -> list:
    """The body of a 200 DICOM JSON answer (PS3.18 Annex F) as a list; empty for an empty body.

    Raises
    ------
    PacsError
        If the body is not JSON, or not a JSON array.
    """
    if not response.content.strip():
        return []
    try:
        body = response.json()
    except ValueError as exc:
        raise PacsError("the PACS answered with invalid DICOM JSON") from exc
    if not isinstance(body, list):
        raise PacsError("the PACS answered with DICOM JSON that is not an array")
    return body


def _parse_headers(fp, _class=http.client.HTTPMessage):
    """``http.client.parse_headers`` without parsing a body that is not there.

    The standard version hands the header block to a full MIME parser, which compiles a
    regular expression for the boundary of every ``multipart/related`` answer; PACS use a
    fresh random boundary per answer, so that costs ~0.5 ms a response. Parsing headers only
    gives the same ``HTTPMessage``. Plain ``name: value`` lines, which is what PACS send,
    are stored as the parser would store them (name as sent, value without the leading
    blanks and the line end) without going through it; any other line (folded, without a
    colon, not ASCII, with a carriage return that does not end it, which the parser reads as
    a line end) leaves the whole block to the parser, so errors and defects are its.
    """
    lines = http.client._read_headers(fp)
    message = _class()
    for line in lines:
        if line in (b"\r\n", b"\n", b""):
            break
        name, colon, value = line.partition(b":")
        if (not colon or not name or not line.isascii() or line[:1] in (b" ", b"\t")
                or line.count(b"\r") > line.endswith(b"\r\n") or not _TOKEN.fullmatch(name)):
            text = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=_class).parsestr(text, headersonly=True)
        message.set_raw(name.decode("ascii"), value.lstrip(b" \t").rstrip(b"\r\n").decode("ascii"))
    message.set_payload("")  # as the parser leaves it: no body read
    return message


def init_app(app: Flask) -> None:
    """Create the application's :class:`PacsClient` from its configuration.

    urllib3 logs its retries and connections with the request line, and a PACS request line
    holds query keys (``PatientID=...``): below ERROR its records are not let out.
    """
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if hasattr(http.client, "_read_headers"):
        http.client.parse_headers = _parse_headers
    app.extensions["pacs"] = PacsClient(
        app.config["FACADE_PACS_URL"],
        username=app.config.get("FACADE_PACS_USER"),
        password=app.config.get("FACADE_PACS_PASSWORD"),
        timeout=float(app.config.get("FACADE_PACS_TIMEOUT", 30.0)),
    )


def get_pacs() -> PacsClient:
    """Return the current application's PACS client."""
    return current_app.extensions["pacs"]
