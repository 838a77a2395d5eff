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
# No gunicorn access log: concrete paths and query strings can name patients. The app logs
# each request by route template instead (fhir_facade/accesslog.py, logger facade.access).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("FACADE_LOG_LEVEL", "info")
# Behind a TLS-terminating proxy, set FORWARDED_ALLOW_IPS to its address so X-Forwarded-* is trusted.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
