"""HTTP hygiene for every response: the client address behind the front door, security
headers, the CORS allow-list, and open mode's refusal to serve other machines.

* Client address: werkzeug's `ProxyFix` trusts ``X-Forwarded-For`` from exactly
  `TOKEN_TRUSTED_PROXY_HOPS` proxies (1: Caddy, which overwrites what the client sent).
  With 0 the socket's peer address is used.
* Headers: ``nosniff``, no framing, no referrer, a ``default-src 'none'`` CSP (the API
  serves no documents), same-origin resource and opener policies, and HSTS when the
  request came over HTTPS.
* CORS: only origins listed in `TOKEN_CORS_ORIGINS` get ``Access-Control-Allow-Origin``
  (POST, with the request headers LiveKit's token sources send: ``Content-Type``, plus
  ``X-Sandbox-Id`` from LiveKit's starter apps, and ``Authorization`` for shared-key and
  OIDC callers); others get no CORS headers, so browsers keep the answer from them.
* Open mode serves this machine only. `Settings` refuses a non-loopback
  `TOKEN_SERVER_HOST`; on top of that, a request is refused with 403
  ``open_mode_local_only`` when it reached this process on a non-loopback local address
  (gunicorn bound wider than the setting says) or when any address in its chain is not
  loopback: the socket's peer and every address the forwarding headers name
  (``X-Forwarded-For``, ``Forwarded``, ``X-Real-IP``), whatever `TOKEN_TRUSTED_PROXY_HOPS`
  says, since Caddy itself listens on every interface and a hop count that does not
  match the real proxies would otherwise trust the wrong one. `TOKEN_ALLOW_OPEN_PUBLIC=true`
  lifts both.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from .errors import ApiError
from .addresses import is_loopback_host
from .settings import Settings

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000"
CORS_METHODS = "POST"
#: Request headers a listed origin may send. livekit-client's ``TokenSource.endpoint`` sends
#: ``Content-Type: application/json`` plus the headers its caller adds; LiveKit's
#: agent-starter-react adds ``X-Sandbox-Id`` (empty off LiveKit Cloud), which we ignore.
CORS_HEADERS = "Authorization, Content-Type, X-Sandbox-Id"
CORS_MAX_AGE_S = 600


def _is_https() -> bool:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.scheme == "https" or forwarded == "https"


def local_address(environ: dict[str, Any]) -> str | None:
    """The address this connection arrived on (gunicorn's socket), or None if unknown."""
    sock = environ.get("gunicorn.socket")
    try:
        name = sock.getsockname() if sock is not None else None
    except OSError:
        return None
    if isinstance(name, tuple) and name:
        return str(name[0])
    return None  # a unix socket: local by nature


_FORWARDED_FOR = re.compile(r'(?i)(?:^|[;,\s])for=("[^"]*"|[^;,\s]*)')


def _address(value: str) -> str:
    """``"[2001:db8::1]:4711"`` -> ``2001:db8::1``; ``"192.0.2.1"`` stays (a ``Forwarded``
    node); anything else comes back unchanged and is not loopback."""
    value = value.strip().strip('"')
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # IPv4 with a port
        return value.split(":", 1)[0]
    return value


def client_chain(req: Request) -> list[str]:
    """Every address `req` says it came from: the socket's peer (as gunicorn saw it, before
    `ProxyFix`), then each ``X-Forwarded-For`` hop, each ``Forwarded: for=`` node and
    ``X-Real-IP``. Unparsable entries are kept as they are (so they are not loopback)."""
    original = req.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR", req.environ.get("REMOTE_ADDR"))
    chain = [original] if original else []
    chain += [hop for hop in req.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    chain += _FORWARDED_FOR.findall(req.headers.get("Forwarded", ""))
    chain += [req.headers["X-Real-IP"]] if "X-Real-IP" in req.headers else []
    return [_address(hop) for hop in chain]


def init_app(app: Flask, settings: Settings) -> None:
    """Install the proxy fix, header and CORS hooks, and the open-mode guard on `app`."""
    if settings.token_trusted_proxy_hops:
        hops = settings.token_trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]

    allowed_origins = settings.cors_origins
    guard_open_mode = settings.token_auth_mode == "open" and not settings.token_allow_open_public

    if guard_open_mode:

        @app.before_request
        def _open_mode_local_only() -> None:
            local = local_address(request.environ)
            if (local is not None and not is_loopback_host(local.split("%")[0])) or not all(
                is_loopback_host(hop) for hop in client_chain(request)
            ):
                raise ApiError(
                    403,
                    "open_mode_local_only",
                    "this token server runs without authentication (TOKEN_AUTH_MODE=open) and only "
                    "serves this machine; its operator can set up shared-key or oidc authentication",
                )

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if _is_https():
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        origin = request.headers.get("Origin", "").rstrip("/")
        if allowed_origins and request.path.startswith("/api/"):
            response.vary.add("Origin")
            if origin in allowed_origins:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Expose-Headers"] = "Retry-After"
                response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE_S)
        return response
