#!/usr/bin/env python3
"""Container health probe: `appliance-healthcheck [--ready-file PATH] URL`.

Exits 0 when URL answers 2xx within 2 s (and PATH exists, when given), else 1 with one
line saying why, which `docker inspect` shows under State.Health.
"""

from __future__ import annotations

import argparse
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
