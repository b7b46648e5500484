#!/usr/bin/env python3
"""Container health probe: `appliance-healthcheck [--ready-file PATH] URL`.

Exits 0 when URL answers 2xx within 2 s (and PATH exists, when given), else 1 with one
line saying why, which `docker inspect` shows under State.Health. A `{health_port}` in URL
is taken from the ready file (the agent's: JSON `{"worker_id", "health_port"}`), for
workers that bind any free port (compose replicas on the host network).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="appliance-healthcheck")
    parser.add_argument("url")
    parser.add_argument("--ready-file", type=Path, help="must exist too (e.g. the agent's registration marker)")
    args = parser.parse_args(argv)
    if args.ready_file is not None and not args.ready_file.exists():
        print(f"not ready: {args.ready_file} is missing", file=sys.stderr)
        return 1
    if "{health_port}" in args.url:
        try:
            port = int(json.loads(args.ready_file.read_text())["health_port"]) if args.ready_file else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            port = None
            print(f"not ready: {args.ready_file} has no health_port ({exc})", file=sys.stderr)
        if port is None:
            return 1
        args.url = args.url.replace("{health_port}", str(port))
    try:
        with urllib.request.urlopen(args.url, timeout=2) as response:
            if 200 <= response.status < 300:
                return 0
            print(f"{args.url}: HTTP {response.status}", file=sys.stderr)
    except OSError as exc:
        print(f"{args.url}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
