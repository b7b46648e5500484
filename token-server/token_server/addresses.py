"""Where an address or URL lets connections come from: this machine only, or anywhere.

The settings' checks (an exposed bind address, a webhook or OIDC issuer URL), the OIDC
discovery and the security middleware's loopback test share these.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str) -> bool:
    """Whether `host` (an address, ``[v6]`` or ``localhost``) only accepts connections from
    this machine. Empty, ``0.0.0.0``, ``::`` and host names count as reachable from outside."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or all interfaces ("", "0.0.0.0", "::"): reachable from outside


def is_https_or_loopback(url: str) -> bool:
    """Whether `url` is https, or http to a loopback host (this machine only)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))
