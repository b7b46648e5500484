"""Command line: `python -m voice_agent start` runs the worker (production mode).

Settings are checked first so that a bad environment gives one clear line and
exit code 2, not a traceback; missing Gemini credentials only warn, because the
worker still registers and tells callers it is not configured.
"""

from __future__ import annotations

import os
import sys

from pydantic import ValidationError


def main(argv: list[str]) -> int:
    """Validate settings, then hand over to livekit-agents' `start` command."""
    # Gemini does turn detection: do not load local turn-detector weights in each worker.
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    from .settings import AgentSettings

    try:
        settings = AgentSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'/'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        print(f"voice_agent: invalid settings: {problems}", file=sys.stderr)
        return 2
    missing = settings.missing_model_credentials()
    if missing:
        print(f"voice_agent: warning: {missing}; calls will be told the agent is not configured", file=sys.stderr)

    command = argv or ["start"]
    if command[0] != "start":
        print("usage: python -m voice_agent start [--log-level LEVEL]", file=sys.stderr)
        return 2

    from livekit.agents.__main__ import main as agents_main

    from .resilience import UntestedPluginError, check_plugin_version

    try:
        check_plugin_version()
    except UntestedPluginError as exc:
        print(f"voice_agent: {exc}", file=sys.stderr)
        return 2
    from . import server
    if settings.ready_file is not None:
        settings.ready_file.unlink(missing_ok=True)  # set again by the registration (server.py)
    try:
        return agents_main(["start", server.__file__, "--log-level", settings.log_level, *command[1:]]) or 0
    finally:
        if settings.ready_file is not None:
            settings.ready_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
