"""The agent worker's one settings object, read from the process environment.

The stack passes `.env` in (honcho, compose, the tests), so the process environment is the
one source; nothing here reads files of its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, HttpUrl, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from voice_calls import pricing

#: Default FAQ shipped with the package (TOML, `[[entry]]` tables).
DEFAULT_FAQ_PATH = Path(__file__).with_name("faq.toml")
#: "One moment, please." (espeak-ng, 24 kHz mono PCM16 WAV): played while the model reconnects.
DEFAULT_FILLER_WAV = Path(__file__).parent / "clips" / "one_moment.wav"
#: What the model is asked to say first (`AGENT_GREETING`); the caller's name is added when known.
DEFAULT_GREETING = "Greet the caller warmly in one short sentence and offer help."
#: Where the knowledge index lives unless KNOWLEDGE_INDEX_PATH says otherwise.
DEFAULT_KNOWLEDGE_INDEX = Path.home() / ".cache" / "voice-agent" / "knowledge.sqlite"


class McpServerConfig(BaseModel):
    """One entry of `MCP_SERVERS` (a JSON list): an MCP server whose tools the agent may use.

    Example: `{"name": "orders", "url": "https://orders.internal/mcp", "bearer_token": "...",
    "allowed_tools": ["find_order"], "timeout_s": 8}`.
    """

    model_config = ConfigDict(extra="forbid")

    #: A short name for logs and the call record (letters, digits, `_`, `-`).
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    #: The server's endpoint, http:// or https://.
    url: HttpUrl
    #: "streamable_http" or "sse"; unset: "sse" when the URL path ends in /sse, else streamable HTTP.
    transport: Literal["streamable_http", "sse"] | None = None
    #: Sent as `Authorization: Bearer <token>`.
    bearer_token: SecretStr | None = None
    #: Other request headers (values are kept out of logs).
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: The only tools of this server the model is offered (its other tools are never declared).
    allowed_tools: list[str] = Field(min_length=1)
    #: A tool call that takes longer is cancelled and the model gets an error result, seconds.
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @property
    def transport_type(self) -> Literal["streamable_http", "sse"]:
        if self.transport is not None:
            return self.transport
        return "sse" if urlsplit(str(self.url)).path.rstrip("/").endswith("/sse") else "streamable_http"

    def request_headers(self) -> dict[str, str]:
        """The HTTP headers to send (secrets revealed: for the transport only)."""
        headers = {k: v.get_secret_value() for k, v in self.headers.items()}
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        return headers
#: "Sorry, I can't reach my voice service right now. Please call again later." (espeak-ng, as above).
DEFAULT_GIVE_UP_WAV = Path(__file__).parent / "clips" / "give_up.wav"
#: "Sorry, this line has used its call budget for now. Please call again later." (espeak-ng,
#: as above): what a phone caller hears when a cost cap is reached.
DEFAULT_BUDGET_SPENT_WAV = Path(__file__).parent / "clips" / "budget_spent.wav"


#: Calls a worker takes per CPU core by default (README "Capacity": on a 2-core VM, four calls
#: at once were all greeted and answered; from six on, callers waited many seconds or not at all).
CALLS_PER_CORE = 2


def default_max_calls() -> int:
    """`CALLS_PER_CORE` times the CPUs this process may run on (its affinity, not the host's)."""
    return CALLS_PER_CORE * max(1, len(os.sched_getaffinity(0)))


class AgentSettings(BaseSettings):
    """Everything the worker reads from its environment.

    Names are the stack's shared environment variables (no prefix), so the same
    `.env` feeds the token server, livekit-server and this worker.

    Raises:
        pydantic.ValidationError: when a required variable is missing or malformed;
            `voice_agent.__main__` turns that into a one-line message.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # LiveKit: where the worker registers (signalling URL, ws:// or wss://).
    livekit_url: str = Field(validation_alias="LIVEKIT_URL")
    livekit_api_key: str = Field(validation_alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(validation_alias="LIVEKIT_API_SECRET")
    #: Explicit dispatch name; the token server dispatches by the same value (from `.env`).
    agent_name: str = Field(validation_alias="AGENT_NAME", min_length=1)

    # Gemini Live. Either an API key (Gemini Developer API) or Vertex AI credentials.
    google_api_key: SecretStr | None = Field(default=None, validation_alias="GOOGLE_API_KEY")
    use_vertexai: bool = Field(default=False, validation_alias="GOOGLE_GENAI_USE_VERTEXAI")
    google_cloud_project: str | None = Field(default=None, validation_alias="GOOGLE_CLOUD_PROJECT")
    google_application_credentials: Path | None = Field(
        default=None, validation_alias="GOOGLE_APPLICATION_CREDENTIALS"
    )
    #: Another Gemini Live endpoint (e.g. a regional proxy or a test stand-in), `https://host:port`.
    gemini_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_BASE_URL", "GOOGLE_GEMINI_BASE_URL")
    )
    #: Extra CA bundle (PEM) to trust for the Gemini endpoint, added to the system store.
    gemini_ca_file: Path | None = Field(default=None, validation_alias="GEMINI_CA_FILE")
    gemini_model: str = Field(
        default="gemini-2.5-flash-native-audio-preview-12-2025", validation_alias="GEMINI_MODEL"
    )
    gemini_voice: str = Field(default="Puck", validation_alias="GEMINI_VOICE")
    gemini_temperature: float = Field(default=0.8, ge=0.0, le=2.0, validation_alias="GEMINI_TEMPERATURE")
    instructions: str = Field(
        default=(
            "You are a friendly, concise voice assistant running on a private, self-hosted "
            "appliance. Answer in one or two short spoken sentences. Use the tools for the "
            "current time and for questions about the appliance."
        ),
        validation_alias="AGENT_INSTRUCTIONS",
    )

    #: What the agent is asked to say first (the caller's name is added when known).
    greeting: str = Field(default=DEFAULT_GREETING, min_length=1, validation_alias="AGENT_GREETING")

    #: Context-window compression (sliding window) starts at this many tokens; unset: the
    #: service's default. Lets audio sessions run past the ~15-minute cap without a 1007 close.
    gemini_compression_trigger_tokens: int | None = Field(
        default=None, gt=0, validation_alias="GEMINI_COMPRESSION_TRIGGER_TOKENS"
    )

    # Turn-taking: Gemini Live's own voice activity detection (setup.realtimeInputConfig).
    # The model decides when the caller has finished; these are the largest latency lever.
    #: Silence after speech before the turn ends, ms (`silenceDurationMs`). Shorter answers
    #: sooner but may cut in on a caller who pauses mid-sentence.
    gemini_vad_silence_ms: int | None = Field(
        default=500, ge=0, le=10_000, validation_alias="GEMINI_VAD_SILENCE_MS"
    )
    #: Speech needed before the start of speech is committed, ms (`prefixPaddingMs`);
    #: unset: the service's default.
    gemini_vad_prefix_padding_ms: int | None = Field(
        default=None, ge=0, le=10_000, validation_alias="GEMINI_VAD_PREFIX_PADDING_MS"
    )
    #: How readily speech is detected (`startOfSpeechSensitivity`): high detects (and barges
    #: in) sooner, low ignores more noise; unset: the service's default.
    gemini_vad_start_sensitivity: Literal["high", "low"] | None = Field(
        default=None, validation_alias="GEMINI_VAD_START_SENSITIVITY"
    )
    #: How readily speech is ended (`endOfSpeechSensitivity`). Set explicitly because the
    #: defaults differ: high on the Gemini API, low on Vertex AI (slower to answer).
    gemini_vad_end_sensitivity: Literal["high", "low"] | None = Field(
        default="high", validation_alias="GEMINI_VAD_END_SENSITIVITY"
    )
    #: Barge-in: the caller's speech interrupts the agent's reply (`activityHandling`
    #: START_OF_ACTIVITY_INTERRUPTS); false lets replies finish (NO_INTERRUPTION).
    gemini_barge_in: bool = Field(default=True, validation_alias="GEMINI_BARGE_IN")

    #: The caller's audio goes to the model in chunks this long, ms (livekit-plugins-google's
    #: own is 50 ms; shorter reaches the model sooner, for a few more WebSocket messages).
    model_input_chunk_ms: int = Field(default=20, ge=10, le=100, validation_alias="AGENT_MODEL_INPUT_CHUNK_MS")
    #: Pace the agent's transcript to its speech (livekit-agents' synchronizer, which estimates
    #: the speaking rate from the audio: about a tenth of a call's CPU). Off: the text goes out
    #: as the model sends it, which Gemini interleaves with its audio.
    transcript_sync: bool = Field(default=False, validation_alias="AGENT_TRANSCRIPT_SYNC")
    #: livekit-agents' event-loop monitor warns of a job's loop blocked this long, ms, and
    #: wakes every fifth of it (at least 20 ms, at most 50 ms): at 250 a call's CPU is about 8 %
    #: lower than at its default 100 (README "Capacity"). 0 turns the monitor off. Exported as
    #: LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS unless that is set already.
    loop_block_warn_ms: int = Field(default=250, ge=0, le=10_000, validation_alias="AGENT_LOOP_BLOCK_WARN_MS")

    # Vision (vision.py): what the caller may show the model besides speaking.
    #: `off`, `camera`, `screen` (screen share) or `both`; the token server grants the same.
    video_input: Literal["off", "camera", "screen", "both"] = Field(default="off", validation_alias="VIDEO_INPUT")
    #: At most this many frames per second go to the model (Gemini Live looks at about one).
    video_input_max_fps: float = Field(default=1.0, gt=0, le=5, validation_alias="VIDEO_INPUT_MAX_FPS")
    #: Frames are scaled down (never up) to at most this many pixels on their longest side.
    video_input_max_px: int = Field(default=1024, ge=64, le=4096, validation_alias="VIDEO_INPUT_MAX_PX")

    # Model connection faults (see resilience.py).
    #: Keep retrying a failed Gemini handshake (refused, 429, 5xx, stalled) this long, seconds.
    model_retry_give_up_s: float = Field(default=60.0, gt=0, validation_alias="AGENT_MODEL_RETRY_GIVE_UP_S")
    #: One handshake (TCP, TLS, upgrade, setupComplete) may take this long, seconds.
    model_connect_timeout_s: float = Field(default=10.0, gt=0, validation_alias="AGENT_MODEL_CONNECT_TIMEOUT_S")
    #: Reconnect this long before a GoAway's timeLeft runs out, seconds.
    model_go_away_margin_s: float = Field(default=2.0, ge=0, validation_alias="AGENT_MODEL_GO_AWAY_MARGIN_S")
    #: Play the filler clip when the model has been away this long, seconds.
    filler_after_s: float = Field(default=1.0, ge=0, validation_alias="AGENT_FILLER_AFTER_S")
    filler_wav: Path = Field(default=DEFAULT_FILLER_WAV, validation_alias="AGENT_FILLER_WAV")
    #: While the model stays away, the filler plays again this often, seconds.
    filler_repeat_s: float = Field(default=8.0, gt=0, validation_alias="AGENT_FILLER_REPEAT_S")
    #: Said when the model is given up on during a call (24 kHz mono PCM16 WAV).
    give_up_wav: Path = Field(default=DEFAULT_GIVE_UP_WAV, validation_alias="AGENT_GIVE_UP_WAV")

    # Call records and continuity (records.py): unset REDIS_URL turns both off.
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    #: The job holding a room refreshes its claim every `room_claim_refresh_s`; the claim
    #: expires after `room_claim_ttl_s` without one. A job whose process died is found at
    #: once (its Redis connections close, claims.py); one whose event loop stalled keeps its
    #: room until its claim has been missing for another TTL, so a busy box does not lose calls.
    room_claim_ttl_s: float = Field(default=10.0, gt=0, validation_alias="AGENT_ROOM_CLAIM_TTL_S")
    #: A caller whose connection dropped may come back within this long (LiveKit's
    #: departure timeout is 20 s) and find the same conversation.
    caller_return_timeout_s: float = Field(default=20.0, ge=0, validation_alias="AGENT_CALLER_RETURN_TIMEOUT_S")
    #: How many times a call whose agent vanished is handed to a new job.
    max_redispatches: int = Field(default=3, ge=0, validation_alias="AGENT_MAX_REDISPATCHES")
    #: A call's record is deleted this many days after the call ended (records.py).
    records_retention_days: float = Field(default=30.0, gt=0, le=3650, validation_alias="RECORDS_RETENTION_DAYS")
    #: Events kept per call (turns, tool calls, usage, life cycle); the oldest go first.
    records_max_events_per_call: int = Field(
        default=10_000, ge=100, le=1_000_000, validation_alias="RECORDS_MAX_EVENTS_PER_CALL"
    )

    #: Phone calls: where `transfer_call` sends a caller who asks for a person (SIP REFER):
    #: `+15551234567`, `tel:...` or `sip:...`; empty: no transfer tool.
    sip_transfer_to: str = Field(default="", validation_alias="SIP_TRANSFER_TO")

    # Call life cycle.
    #: A call ends after this long from the caller joining, s (0: no limit); the agent says
    #: so `max_call_warning_s` before, then says goodbye (guards.py).
    max_call_s: float = Field(default=3600.0, ge=0, validation_alias="AGENT_MAX_CALL_S")
    max_call_warning_s: float = Field(default=60.0, ge=0, validation_alias="AGENT_MAX_CALL_WARNING_S")
    #: The cost caps (USD per UTC day and month; 0: none), the token server's settings: web
    #: calls are refused there, but phone calls come in through livekit-sip, so the agent
    #: checks them as an inbound phone call starts, and the caller hears `budget_spent_wav`.
    daily_budget_usd: float = Field(default=0.0, ge=0, validation_alias="TOKEN_DAILY_BUDGET_USD")
    monthly_budget_usd: float = Field(default=0.0, ge=0, validation_alias="TOKEN_MONTHLY_BUDGET_USD")
    budget_spent_wav: Path = Field(default=DEFAULT_BUDGET_SPENT_WAV, validation_alias="AGENT_BUDGET_SPENT_WAV")
    participant_timeout_s: float = Field(default=30.0, gt=0, validation_alias="AGENT_PARTICIPANT_TIMEOUT_S")
    faq_path: Path = Field(default=DEFAULT_FAQ_PATH, validation_alias="AGENT_FAQ_PATH")

    # Worker process.
    health_host: str = Field(default="0.0.0.0", validation_alias="AGENT_HEALTH_HOST")
    #: 0: any free port (compose replicas on the host network); the ready file says which.
    health_port: int = Field(default=8081, ge=0, le=65535, validation_alias="AGENT_HEALTH_PORT")
    #: This worker's number among several on one host (the native run's AGENT_WORKERS:
    #: supervisord's process_num, 0-based); it serves health on `health_port + worker_index`.
    worker_index: int = Field(default=0, ge=0, le=1000, validation_alias="AGENT_WORKER_INDEX")
    #: Concurrent calls one worker takes before LiveKit dispatches elsewhere. Load is counted in
    #: calls, not CPU: the SFU shares the box, and its CPU bursts would close the worker to
    #: new calls at random (livekit-agents' default load is system CPU, threshold 0.7).
    #: Default: `CALLS_PER_CORE` per CPU this process may run on.
    max_calls: int = Field(default_factory=lambda: default_max_calls(), ge=1, le=1000, validation_alias="AGENT_MAX_CALLS")
    #: Where a call runs: `process` (one process per call, livekit-agents' default: a crash or
    #: a stall stays in its call) or `thread` (calls share the worker's process).
    job_executor: Literal["process", "thread"] = Field(default="process", validation_alias="AGENT_JOB_EXECUTOR")
    #: Processes kept started and waiting for a call (process executor), so a call does not
    #: wait for one to start; unset: livekit-agents' default (one per CPU).
    idle_processes: int | None = Field(default=None, ge=0, le=100, validation_alias="AGENT_IDLE_PROCESSES")
    #: A call's process must be ready within this long, s (livekit-agents' default is 10 s; on a
    #: busy small machine a process can take longer, and one killed at 10 s is started again).
    process_start_timeout_s: float = Field(default=30.0, gt=0, validation_alias="AGENT_PROCESS_START_TIMEOUT_S")
    drain_timeout_s: int = Field(default=600, ge=0, validation_alias="AGENT_DRAIN_TIMEOUT_S")
    log_level: str = Field(default="INFO", validation_alias="AGENT_LOG_LEVEL")

    # The operator's own knowledge and tools (README "Make it yours"; knowledge.py, mcp_tools.py).
    #: A folder of Markdown, text, HTML and PDF documents for `search_knowledge`; unset: no such tool.
    knowledge_dir: Path | None = Field(default=None, validation_alias="KNOWLEDGE_DIR")
    #: The search index of `knowledge_dir` (a SQLite file, rebuilt when the folder changed).
    knowledge_index_path: Path = Field(default=DEFAULT_KNOWLEDGE_INDEX, validation_alias="KNOWLEDGE_INDEX_PATH")
    #: Passages one search returns to the model.
    knowledge_results: int = Field(default=3, ge=1, le=10, validation_alias="KNOWLEDGE_RESULTS")
    #: The operator's MCP servers, a JSON list of `McpServerConfig` objects.
    mcp_servers: Annotated[list[McpServerConfig], NoDecode] = Field(
        default_factory=list, validation_alias="MCP_SERVERS"
    )
    #: Connecting to one MCP server (and listing its tools) at a call's start may take this long, seconds.
    mcp_connect_timeout_s: float = Field(default=3.0, gt=0, le=60, validation_alias="MCP_CONNECT_TIMEOUT_S")
    #: A knowledge or MCP tool still running after this long gets the filler clip, seconds.
    tool_filler_after_s: float = Field(default=1.5, ge=0, validation_alias="AGENT_TOOL_FILLER_AFTER_S")
    #: Written with the worker id once LiveKit has accepted the registration, removed at
    #: start and at exit: a readiness probe (`GET /` answers OK before registration).
    ready_file: Path | None = Field(default=None, validation_alias="AGENT_READY_FILE")

    # Metrics (metrics.py) and cost (voice_calls.pricing).
    #: Prometheus metrics of worker N on `metrics_port + N` (`GET /metrics`); 0: off.
    metrics_port: int = Field(default=9300, ge=0, le=65535, validation_alias="AGENT_METRICS_PORT")
    #: Where the metrics server listens: loopback unless Prometheus runs on another machine.
    metrics_host: str = Field(default="127.0.0.1", validation_alias="AGENT_METRICS_HOST")
    #: Where the call processes write their metrics (prometheus_client multiprocess mode);
    #: worker N uses `metrics_dir/worker-N`. Unset: a directory under the system's temp dir.
    metrics_dir: Path | None = Field(default=None, validation_alias="AGENT_METRICS_DIR")
    #: Prometheus's file-based discovery (compose, where replicas share the host's network): with
    #: a folder here, the worker takes the first free port from its metrics port upward and
    #: writes `agent-<port>.json` there naming it (removed when the worker exits).
    metrics_targets_dir: Path | None = Field(default=None, validation_alias="AGENT_METRICS_TARGETS_DIR")
    #: The model's prices, USD per million tokens (`input_audio=3.00,output_audio=12.00,...`;
    #: pairs not given keep the published defaults, see voice_calls.pricing).
    model_prices_usd_per_mtok: str = Field(default="", validation_alias="MODEL_PRICES_USD_PER_MTOK")

    @field_validator("model_prices_usd_per_mtok")
    @classmethod
    def _prices(cls, value: str) -> str:
        pricing.parse_prices(value)
        return value

    @property
    def model_prices(self) -> dict[tuple[str, str], float]:
        """(direction, modality) -> USD per million tokens."""
        return pricing.parse_prices(self.model_prices_usd_per_mtok)

    @property
    def worker_metrics_port(self) -> int:
        """This worker's metrics port: `metrics_port + worker_index`, or 0 (off)."""
        return self.metrics_port + self.worker_index if self.metrics_port else 0

    @property
    def worker_health_port(self) -> int:
        """The TCP port this worker's health server binds: `health_port + worker_index`, or 0 (any)."""
        return self.health_port + self.worker_index if self.health_port else 0

    @field_validator("knowledge_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _parse_mcp_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return []
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON list of servers ({exc.msg} at character {exc.pos})") from None
        if isinstance(value, list):
            names = [s.get("name") for s in value if isinstance(s, dict)]
            repeated = sorted({n for n in names if n is not None and names.count(n) > 1})
            if repeated:
                raise ValueError(f"server names must be unique: {', '.join(map(str, repeated))}")
        return value
    @property
    def room_claim_refresh_s(self) -> float:
        """How often a job refreshes its room claim, seconds (it also reconnects Redis)."""
        return min(1.0, self.room_claim_ttl_s / 3)

    def missing_model_credentials(self) -> str | None:
        """Say what is missing for Gemini, or None when credentials are configured.

        Returns:
            A one-line, human-readable description of the missing settings.
        """
        if self.use_vertexai:
            if not self.google_cloud_project:
                return "GOOGLE_GENAI_USE_VERTEXAI is set but GOOGLE_CLOUD_PROJECT is missing"
            return None
        if self.google_api_key is None or not self.google_api_key.get_secret_value():
            return (
                "no Gemini credentials: set GOOGLE_API_KEY (or GOOGLE_GENAI_USE_VERTEXAI=1 "
                "with GOOGLE_CLOUD_PROJECT) in .env"
            )
        return None


def describe_errors(error: ValidationError) -> list[str]:
    """One line per mistake, naming the setting as people write it in `.env`:
    `invalid setting MCP_SERVERS[0].url: Input should be a valid URL, ...`."""
    lines = []
    for err in error.errors():
        where = ""
        for part in err["loc"]:
            where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
        lines.append(f"invalid setting {where or 'settings'}: {err['msg']}")
    return lines
