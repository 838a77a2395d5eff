"""Production server configuration: ``gunicorn -c gunicorn.conf.py "app:create_app()"``.

Threaded workers suit the facade: most of a request's time is spent waiting on the PACS or
streaming its answer, so a few processes with many threads each keep every core busy without
holding a process per download.
"""
import multiprocessing
import os

bind = f"{os.environ.get('FACADE_HOST', '127.0.0.1')}:{os.environ.get('FACADE_PORT', '8080')}"
workers = int(os.environ.get("FACADE_WORKERS", multiprocessing.cpu_count()))
worker_class = os.environ.get("FACADE_WORKER_CLASS", "gthread")
threads = int(os.environ.get("FACADE_THREADS", 16))
# Seconds a worker may go silent before it is restarted; streaming keeps the heartbeat alive.
timeout = 120
graceful_timeout = 30
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


def post_fork(server, worker):
    """Turn on zero-copy relaying where gunicorn speaks HTTP/1.x itself; keep buffers off mmap.

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
