"""Command line: `python -m voice_agent start` runs the worker (production mode).

Settings are checked first so that a bad environment gives one clear line per mistake
and exit code 2, not a traceback; missing Gemini credentials only warn, because the
worker still registers and tells callers it is not configured. The files a call reads
(FAQ, CA bundle, clips) are read too: a bad one stops the worker before it registers,
rather than every job after it took a call. While the worker starts, the knowledge folder
is indexed if it changed and the MCP servers are tried: problems there are warnings.
"""

from __future__ import annotations

import atexit
import os
import ssl
import sys
import tempfile
import threading
from pathlib import Path
import tomllib
import wave
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from .settings import AgentSettings


def check_files(settings: AgentSettings) -> str | None:
    """Read every file a call needs (FAQ, Gemini CA bundle, the clips) as a job would;
    one line saying what is wrong with the first bad one, or None."""
    from .link import load_clip
    from .model import model_ssl_context
    from .tools import Faq

    checks = (("AGENT_FAQ_PATH", settings.faq_path, lambda: Faq.load(settings.faq_path)),
              ("GEMINI_CA_FILE", settings.gemini_ca_file, lambda: model_ssl_context(settings.gemini_ca_file)),
              ("AGENT_FILLER_WAV", settings.filler_wav, lambda: load_clip(settings.filler_wav)),
              ("AGENT_GIVE_UP_WAV", settings.give_up_wav, lambda: load_clip(settings.give_up_wav)),
              ("AGENT_BUDGET_SPENT_WAV", settings.budget_spent_wav, lambda: load_clip(settings.budget_spent_wav)))
    for name, path, load in checks:
        try:
            load()
        except (OSError, ValueError, ssl.SSLError, wave.Error, tomllib.TOMLDecodeError) as exc:
            return f"{name}={path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def main(argv: list[str]) -> int:
    """Validate settings, then hand over to livekit-agents' `start` command."""
    # Gemini does turn detection: do not load local turn-detector weights in each worker.
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    from .settings import AgentSettings, describe_errors

    try:
        settings = AgentSettings()
    except ValidationError as exc:
        for line in describe_errors(exc):
            print(f"voice_agent: {line}", file=sys.stderr)
        return 2
    # livekit-agents reads its loop monitor's threshold from the environment, in each job.
    os.environ.setdefault("LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", str(settings.loop_block_warn_ms))
    missing = settings.missing_model_credentials()
    if missing:
        print(f"voice_agent: warning: {missing}; calls will be told the agent is not configured", file=sys.stderr)

    if settings.worker_metrics_port:
        try:
            _serve_metrics(settings)
        except OSError as exc:
            print(f"voice_agent: metrics port {settings.metrics_host}:{settings.worker_metrics_port} "
                  f"(AGENT_METRICS_PORT + worker): {exc.strerror or exc}", file=sys.stderr)
            return 2

    command = argv or ["start"]
    if command[0] != "start":
        print("usage: python -m voice_agent start [--log-level LEVEL]", file=sys.stderr)
        return 2
    problem = check_files(settings)
    if problem:
        # Refuse to register: a job would take a call, then fail on the file mid-call.
        print(f"voice_agent: cannot start: {problem}", file=sys.stderr)
        return 2

    from .plugin_adapter import UntestedVersionError, check_versions

    try:
        check_versions()  # plugin_adapter.py reaches into these libraries' private members
    except UntestedVersionError as exc:
        print(f"voice_agent: {exc}", file=sys.stderr)
        return 2

    from livekit.agents.__main__ import main as agents_main

    from . import server
    from .operator_tools import preload

    # Index the knowledge folder and try the MCP servers while the worker starts: a large
    # folder must not hold up registration (calls use the previous index until it is done).
    preload(settings)
    threading.Thread(target=_check_operator_tools, args=(settings,), name="operator-tools-check", daemon=True).start()
    if settings.ready_file is not None:
        settings.ready_file.unlink(missing_ok=True)  # set again by the registration (server.py)
    # Not `cli.run_app(server)` as in LiveKit's agent starter: in livekit-agents 1.8 that is the
    # deprecated rich CLI (`cli._legacy`), which parses sys.argv itself and would take over the
    # argument checks above; `livekit.agents.__main__` is the thin interface it points to
    # instead, and runs the same AgentServer (`server.server`, found in server.py).
    try:
        return agents_main(["start", server.__file__, "--log-level", settings.log_level, *command[1:]]) or 0
    finally:
        if settings.ready_file is not None:
            settings.ready_file.unlink(missing_ok=True)


def _check_operator_tools(settings: Any) -> None:
    """`operator_tools.check_at_start`, its findings one line each on stderr."""
    from .operator_tools import check_at_start

    if settings.knowledge_dir is not None:
        print(f"voice_agent: knowledge: checking {settings.knowledge_dir} (index {settings.knowledge_index_path})",
              file=sys.stderr, flush=True)
    try:
        notes, warnings = check_at_start(settings)
    except Exception as exc:  # a bug here must not go unnoticed, nor stop the worker
        notes, warnings = [], [f"checking KNOWLEDGE_DIR and MCP_SERVERS failed: {type(exc).__name__}: {exc}"]
    for line in notes:
        print(f"voice_agent: {line}", file=sys.stderr, flush=True)
    for line in warnings:
        print(f"voice_agent: warning: {line}", file=sys.stderr, flush=True)
def _serve_metrics(settings: AgentSettings) -> None:
    """Point prometheus_client's multiprocess mode at this worker's directory (before anything
    imports prometheus_client: it reads the variable at import), then serve the metrics. The
    discovery file (AGENT_METRICS_TARGETS_DIR) goes when the worker exits."""
    base = settings.metrics_dir or Path(tempfile.gettempdir()) / f"voice-agent-metrics-{os.getuid()}"
    directory = base / f"worker-{settings.worker_index}"
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # livekit-agents empties it at start
    from .metrics import serve, target_file

    port = serve(settings.metrics_host, settings.worker_metrics_port, settings.metrics_targets_dir)
    if settings.metrics_targets_dir is not None:
        atexit.register(target_file(settings.metrics_targets_dir, port).unlink, missing_ok=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
