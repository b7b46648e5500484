"""gunicorn's settings for the token server: the Procfile runs
``gunicorn -c token-server/gunicorn.conf.py``, the container image reads it as
``/app/gunicorn.conf.py`` (gunicorn's default file in its working directory). Where it
listens stays on each command line (``--bind $TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT``).

One worker process with gevent: every connection is a greenlet, so a client that sends
its headers or body slowly holds a few kilobytes, not one of a handful of threads (with
8 threads, 8 such clients took the endpoint away from everyone). The front door also
reads whole request bodies before it proxies them and cuts slow clients off
(`docker/front-door.caddy`); this covers the clients that reach gunicorn directly on
loopback (livekit-server's webhooks, anyone on this machine).

Kept outside the `token_server` package on purpose: gunicorn's master reads this file,
and importing the package there would load ssl, redis and livekit-api before gevent's
monkey-patching in the worker.
"""

import os
import shutil
import tempfile

# One process by default: the in-memory stores (no REDIS_URL) assume it. With Redis, set
# WEB_CONCURRENCY (gunicorn's own variable) for more; the metrics then add up every worker's.
workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
worker_class = "gevent"
#: Connections one worker serves at once (greenlets), slow or not.
worker_connections = 1000
#: Seconds an idle keep-alive connection stays open.
keepalive = 5
accesslog = "-"
control_socket_disable = True


def on_starting(server: object) -> None:
    """Several workers: prometheus_client's multiprocess mode, in a directory emptied at
    every start (``PROMETHEUS_MULTIPROC_DIR`` if set, else a new temporary one). Set here,
    in the master, so each worker has it before it imports prometheus_client. (No hook marks
    dead workers: the token server has no live gauges, and a dead worker's counts still count.)
    """
    if workers < 2:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    else:
        directory = _made_here["dir"] = tempfile.mkdtemp(prefix="token-server-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def on_exit(server: object) -> None:
    """Remove the temporary metrics directory `on_starting` made (not one it was given)."""
    if _made_here.get("dir"):
        shutil.rmtree(_made_here["dir"], ignore_errors=True)


_made_here: dict[str, str] = {}
