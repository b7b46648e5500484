"""``python -m tests.standins.gemini_live``: the Gemini Live stand-in as a process."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

from . import __doc__ as package_doc
from .config import StandinConfig
from .server import GeminiLiveStandin
from .tools import ToolCallSpec


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.standins.gemini_live``: serve until Ctrl-C or SIGTERM.

    Prints ``base_url=...`` and ``ca_file=...`` lines on stdout once listening.
    """
    parser = argparse.ArgumentParser(description=package_doc.splitlines()[0] if package_doc else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9443, help="0 picks a free port")
    parser.add_argument(
        "--cert-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "gemini-standin",
        help="where the CA PEM (and its key) is kept; reused across runs",
    )
    defaults = StandinConfig()
    parser.add_argument("--vad-threshold-dbfs", type=float, default=defaults.vad_threshold_dbfs)
    parser.add_argument("--vad-min-speech-ms", type=int, default=defaults.vad_min_speech_ms)
    parser.add_argument("--vad-silence-ms", type=int, default=defaults.vad_silence_ms)
    parser.add_argument("--reply-pacing", type=float, default=defaults.reply_pacing)
    parser.add_argument("--response-delay-ms", type=int, default=defaults.response_delay_ms)
    parser.add_argument("--answer-at-speech-start", action="store_true",
                        help="reply as soon as speech starts (no end-of-speech wait)")
    parser.add_argument("--reply-audio", choices=("speech", "tone"), default=defaults.reply_audio)
    parser.add_argument("--tool-call", metavar="NAME", help="call this declared function on each audio turn")
    parser.add_argument("--tool-args", metavar="JSON", default="{}", help="arguments for --tool-call")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    config = StandinConfig(
        vad_threshold_dbfs=args.vad_threshold_dbfs,
        vad_min_speech_ms=args.vad_min_speech_ms,
        vad_silence_ms=args.vad_silence_ms,
        reply_pacing=args.reply_pacing,
        response_delay_ms=args.response_delay_ms,
        answer_at_speech_start=args.answer_at_speech_start,
        reply_audio=args.reply_audio,
        tool_call=ToolCallSpec(args.tool_call, json.loads(args.tool_args)) if args.tool_call else None,
    )
    standin = GeminiLiveStandin(config, host=args.host, port=args.port, cert_dir=args.cert_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    standin.start()
    print(f"base_url={standin.base_url}", flush=True)
    print(f"ca_file={standin.ca_file}", flush=True)
    while not stop.wait(0.5):
        pass
    standin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
