"""Production server configuration: ``gunicorn -c gunicorn.conf.py "app:create_app()"``.

Threaded workers suit the facade: most of a request's time is spent waiting on the PACS or
streaming its answer, so a few processes with many threads each keep every core busy without
holding a process per download.
"""
import multiprocessing
import os
import shutil
import tempfile

bind = f"{os.environ.get('FACADE_HOST', '127.0.0.1')}:{os.environ.get('FACADE_PORT', '8080')}"
workers = int(os.environ.get("FACADE_WORKERS", multiprocessing.cpu_count()))
worker_class = os.environ.get("FACADE_WORKER_CLASS", "gthread")
threads = int(os.environ.get("FACADE_THREADS", 16))
# Seconds a worker may go silent before it is restarted; streaming keeps the heartbeat alive.
timeout = 120
# On SIGTERM the master closes its listening sockets and each worker stops accepting, finishes
# the requests in flight (a whole study streaming to a slow client among them) and exits; what
# is still running after this many seconds is cut off (SIGKILL).
graceful_timeout = int(os.environ.get("FACADE_GRACEFUL_TIMEOUT", 30))
keepalive = 5
# Longest request line accepted (bytes; gunicorn's maximum, its default is 4094): WADO-RS frame
# lists (up to fhir_facade.dicomweb.api.MAX_FRAME_LIST numbers) and QIDO-RS queries live in the URL.
limit_request_line = 8190
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which a
# second instance on the machine would take over; give it a path of its own to use gunicornc.
if os.environ.get("FACADE_CONTROL_SOCKET"):
    control_socket = os.environ["FACADE_CONTROL_SOCKET"]
else:
    control_socket_disable = True
# No gunicorn access log: concrete paths and query strings can name patients. The app logs
# each request by route template instead (fhir_facade/web/accesslog.py, logger facade.access).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("FACADE_LOG_LEVEL", "info")
# Behind a TLS-terminating proxy, set FORWARDED_ALLOW_IPS to its address so X-Forwarded-* is trusted.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# The worker heartbeat file is touched on every turn of a worker's loop; on a disk-backed /tmp
# that can wait behind the file system's journal (gunicorn's docs advise /dev/shm).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

#: Buffers up to this size (bytes) come from malloc's heap rather than a fresh mmap.
MMAP_THRESHOLD = 4 * 1024 * 1024
#: Free heap memory (bytes) a worker keeps before handing it back to the kernel.
TRIM_THRESHOLD = 8 * 1024 * 1024


def _close_listeners_when_stopping(worker):
    """Refuse new connections as soon as a worker begins its graceful stop.

    On SIGTERM the master closes its listening sockets, and a gthread worker stops polling
    its copies but keeps them open until its last request is done: meanwhile the kernel
    still completes new connections into the backlog, where nobody will ever accept them (a
    client waits, then sees a reset). Closing the worker's copies when it stops accepting
    makes a new connection refused at once, so a load balancer moves on to another instance;
    requests in flight carry on. (gunicorn closes them again at the end: closing is idempotent.)
    """
    stop_accepting = getattr(worker, "set_accept_enabled", None)
    if stop_accepting is None:  # not a gthread worker
        return

    def set_accept_enabled(enabled):
        stop_accepting(enabled)
        if not enabled and not worker.alive:
            for listener in worker.sockets:
                listener.close()

    worker.set_accept_enabled = set_accept_enabled


def post_fork(server, worker):
    """Turn on zero-copy relaying where gunicorn speaks HTTP/1.x itself; keep buffers off mmap;
    refuse new connections from the start of a graceful stop (:func:`_close_listeners_when_stopping`).

    Splicing part bodies (``fhir_facade/dicomweb/zerocopy.py``) writes HTTP/1.1 chunk framing beside
    gunicorn's own, which is only right when gunicorn frames the answer itself: not behind
    its uWSGI protocol or HTTP/2.

    glibc serves allocations above its mmap threshold (128 KiB, raised as such blocks are
    freed) with mmap and gives them back with munmap: every frame or chunk relayed then
    costs page faults and page clearing (measured: about a third of a worker's CPU per
    512 KB frame). A fixed threshold above the buffer sizes reuses heap memory instead;
    the trim threshold bounds what stays resident.
    """
    from fhir_facade.dicomweb import zerocopy

    _close_listeners_when_stopping(worker)
    cfg = worker.cfg
    if os.environ.get("FACADE_ZERO_COPY", "1") != "0":  # FACADE_ZERO_COPY=0: read and write as usual
        zerocopy.enable(cfg.protocol, getattr(cfg, "http_protocols", ["h1"]), getattr(cfg, "http2_cleartext", "off"))
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: keep its defaults


# --- Prometheus metrics from every worker (fhir_facade/web/metrics.py) -----------------------
# prometheus-client's multiprocess mode: each worker writes its values to files in
# PROMETHEUS_MULTIPROC_DIR and a scrape of any worker reads them all. Unless the operator names
# one, each gunicorn instance makes its own (on /dev/shm where there is one) and removes it on
# exit. It must be set before a worker imports prometheus_client, so here, in the master.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="facade-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    # Remembered in the environment: a reload (SIGHUP) reads this file again.
    os.environ["FACADE_OWN_METRICS_DIR"] = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    """Start the metrics from zero: files a previous run left would be read as live workers'."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.remove(os.path.join(folder, name))


def child_exit(server, worker):
    """Drop a dead worker's live gauges (active streams); its counters stay in the totals."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics folder this instance made."""
    own = os.environ.get("FACADE_OWN_METRICS_DIR")
    if own and own == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(own, ignore_errors=True)


def worker_exit(server, worker):
    """Write the audit events this worker still holds (queued, or frames being aggregated) before
    it exits: a graceful stop loses none (smart/audit/recorder.py)."""
    from smart.audit import close_all

    close_all()


def post_worker_init(worker):
    """Move what the worker holds once the app is loaded (modules, pydicom's and fhir.resources'
    tables, the app) out of the garbage collector's reach (:func:`gc.freeze`): a full collection,
    which a request allocating many objects sets off (a DICOMDIR of a new study), then walks what
    the request made, not the hundreds of thousands of objects that live as long as the worker."""
    import gc

    gc.collect()
    gc.freeze()
