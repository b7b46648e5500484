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

# One process: the in-memory stores (no REDIS_URL) and the per-process metrics assume it.
workers = 1
worker_class = "gevent"
#: Connections one worker serves at once (greenlets), slow or not.
worker_connections = 1000
#: Seconds an idle keep-alive connection stays open.
keepalive = 5
accesslog = "-"
control_socket_disable = True
