"""The token server's one settings object, read from the environment.

Variable names carry no prefix: they are the stack's shared environment (the same
`.env` feeds livekit-server, the agent worker and this server).
"""

from __future__ import annotations

import re
import sys
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from voice_calls.credentials import LIVEKIT_DEV_SECRET, MIN_SECRET_LENGTH

from .addresses import is_https_or_loopback, is_loopback_host
from .key_strength import is_weak
from .telephony import LOCAL_LIVEKIT_URL, TelephonySettings

#: Exit status when the configuration is refused. 4 is gunicorn's APP_LOAD_ERROR: the
#: arbiter halts ("App failed to load.") instead of respawning the worker forever.
CONFIG_ERROR_EXIT_CODE = 4

_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: What a caller may show the agent besides speaking (`VIDEO_INPUT`); see `tokens.publish_sources`.
VideoInput = Literal["off", "camera", "screen", "both"]
#: How callers prove who they are (`TOKEN_AUTH_MODE`); see `auth`.
AuthMode = Literal["open", "shared-key", "oidc"]
#: ID token signature algorithms an operator may allow: asymmetric only, so a token can
#: never be signed with something the server publishes (no HS*, no `none`).
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: Shortest accepted shared API key (same bar as the LiveKit secret).
MIN_SHARED_KEY_LENGTH = MIN_SECRET_LENGTH


def split_list(value: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (comma-separated setting values)."""
    return [item.strip() for item in value.split(",") if item.strip()]


class Settings(BaseSettings):
    """Everything the token server reads from its environment.

    Durations are in seconds. Build it with keyword arguments (field names) in tests,
    or from the environment with `Settings()` / `load_settings_or_exit()`.

    Raises:
        pydantic.ValidationError: a required variable is missing or a value is refused
            (e.g. a dev-default or short `LIVEKIT_API_SECRET`).
    """

    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, env_ignore_empty=True, frozen=True
    )

    # --- LiveKit credentials and the URL handed to clients -------------------------
    livekit_api_key: str = Field(validation_alias="LIVEKIT_API_KEY", min_length=1)
    livekit_api_secret: SecretStr = Field(validation_alias="LIVEKIT_API_SECRET")
    #: `server_url` returned to clients (`ws://` or `wss://`). Empty: derived per request
    #: from `X-Forwarded-Proto` (or the scheme) and `Host`, because the front door proxies
    #: LiveKit's `/rtc` on the page's own origin.
    livekit_public_url: str = Field(default="", validation_alias="LIVEKIT_PUBLIC_URL")

    # --- Dispatch -----------------------------------------------------------------
    #: The worker's explicit dispatch name; no default here (it lives in `.env.example`).
    agent_name: str = Field(validation_alias="AGENT_NAME")
    #: livekit-server's server API (the URL workers register with), for `dispatch_guard`.
    livekit_url: str = Field(default=LOCAL_LIVEKIT_URL, validation_alias="LIVEKIT_URL")
    #: A caller whose room no worker has taken within this long is told so and the room
    #: closed (it is dispatched again meanwhile); see `dispatch_guard`.
    token_no_agent_notice_seconds: float = Field(
        default=3.0, ge=1.0, le=300.0, validation_alias="TOKEN_NO_AGENT_NOTICE_SECONDS"
    )
    #: A worker took the call but its agent never joined, or the agent left and none came
    #: back: told and closed after this long (a job process may take a while to start).
    token_agent_join_timeout_seconds: float = Field(
        default=60.0, ge=2.0, le=600.0, validation_alias="TOKEN_AGENT_JOIN_TIMEOUT_SECONDS"
    )

    # --- Phone calls: the SIP_* variables (`telephony`) ---------------------------------
    telephony: TelephonySettings = Field(default_factory=TelephonySettings)

    # --- Token and room ---------------------------------------------------------------
    #: Video a caller may publish for the model to see: `off` (microphone only), `camera`,
    #: `screen` (screen share) or `both`. The agent reads the same variable.
    video_input: VideoInput = Field(default="off", validation_alias="VIDEO_INPUT")
    token_ttl_seconds: int = Field(default=600, ge=10, le=3600, validation_alias="TOKEN_TTL_SECONDS")
    #: Seconds LiveKit keeps a room that nobody has joined yet.
    room_empty_timeout_seconds: int = Field(
        default=60, ge=1, le=3600, validation_alias="ROOM_EMPTY_TIMEOUT_SECONDS"
    )
    #: Seconds LiveKit keeps a room after the last participant left (covers a rejoin).
    room_departure_timeout_seconds: int = Field(
        default=20, ge=0, le=3600, validation_alias="ROOM_DEPARTURE_TIMEOUT_SECONDS"
    )
    #: Caller + agent + one slot so a restarted agent can rejoin.
    room_max_participants: int = Field(default=3, ge=2, le=100, validation_alias="ROOM_MAX_PARTICIPANTS")

    # --- Request limits ---------------------------------------------------------------
    participant_identity_max_length: int = Field(
        default=64, ge=8, le=128, validation_alias="PARTICIPANT_IDENTITY_MAX_LENGTH"
    )
    participant_name_max_length: int = Field(
        default=64, ge=1, le=256, validation_alias="PARTICIPANT_NAME_MAX_LENGTH"
    )
    participant_metadata_max_bytes: int = Field(
        default=512, ge=0, le=4096, validation_alias="PARTICIPANT_METADATA_MAX_BYTES"
    )
    participant_attributes_max_items: int = Field(
        default=8, ge=0, le=64, validation_alias="PARTICIPANT_ATTRIBUTES_MAX_ITEMS"
    )
    #: Largest accepted request body (bytes); larger ones get 413.
    token_max_request_bytes: int = Field(
        default=8192, ge=256, le=65536, validation_alias="TOKEN_MAX_REQUEST_BYTES"
    )

    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")

    # --- Who may get a token (see README "Security") ---------------------------------
    #: `open`: anyone on this machine (other machines only if allowed below);
    #: `shared-key`: a backend holding one of `TOKEN_SHARED_KEYS`; `oidc`: a user with a
    #: valid ID token from the configured issuer.
    token_auth_mode: AuthMode = Field(default="open", validation_alias="TOKEN_AUTH_MODE")
    #: The address gunicorn listens on: the Procfile (and the container image) run
    #: ``gunicorn --bind $TOKEN_SERVER_HOST:$TOKEN_SERVER_PORT``. `open` mode refuses a
    #: non-loopback address unless `token_allow_open_public`.
    token_server_host: str = Field(default="127.0.0.1", validation_alias="TOKEN_SERVER_HOST")
    token_allow_open_public: bool = Field(default=False, validation_alias="TOKEN_ALLOW_OPEN_PUBLIC")
    #: `shared-key` mode: comma-separated bearer keys (several, to rotate), each at least
    #: 32 characters.
    token_shared_keys: SecretStr = Field(default=SecretStr(""), validation_alias="TOKEN_SHARED_KEYS")
    #: Operators' bearer keys for the call-records API (`GET /api/calls`), comma-separated,
    #: each at least 32 characters; empty turns the API off. Separate from the token keys:
    #: records hold every caller's transcript.
    records_api_keys: SecretStr = Field(default=SecretStr(""), validation_alias="RECORDS_API_KEYS")
    #: `oidc` mode: expected `iss` (comma-separated when a provider uses several spellings),
    #: expected `aud` (comma-separated: any one matches), the JWKS URL (empty: discovered
    #: from the first issuer's ``/.well-known/openid-configuration``), allowed algorithms,
    #: clock leeway and how long fetched keys are cached (seconds).
    oidc_issuer: str = Field(default="", validation_alias="OIDC_ISSUER")
    oidc_audience: str = Field(default="", validation_alias="OIDC_AUDIENCE")
    oidc_jwks_url: str = Field(default="", validation_alias="OIDC_JWKS_URL")
    oidc_algorithms: str = Field(default="RS256,ES256", validation_alias="OIDC_ALGORITHMS")
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300, validation_alias="OIDC_LEEWAY_SECONDS")
    oidc_jwks_cache_seconds: int = Field(
        default=300, ge=10, le=86400, validation_alias="OIDC_JWKS_CACHE_SECONDS"
    )

    # --- Limits -------------------------------------------------------------------------
    #: Rate limits and session records live here (``redis://...``); empty: in this process's
    #: memory (one gunicorn worker only; lost on restart).
    redis_url: SecretStr = Field(default=SecretStr(""), validation_alias="REDIS_URL")
    #: Token requests per client address and per identity (Flask-Limiter notation,
    #: ``;``-separated: ``"10/minute;100/hour"``).
    token_rate_limit_per_address: str = Field(
        default="60/minute;600/hour", validation_alias="TOKEN_RATE_LIMIT_PER_ADDRESS"
    )
    token_rate_limit_per_identity: str = Field(
        default="10/minute;100/hour", validation_alias="TOKEN_RATE_LIMIT_PER_IDENTITY"
    )
    #: Calls one identity may have at once: tokens not used yet (for the join window below)
    #: plus rooms joined and not yet left (from LiveKit's webhooks).
    token_max_sessions_per_identity: int = Field(
        default=3, ge=1, le=1000, validation_alias="TOKEN_MAX_SESSIONS_PER_IDENTITY"
    )
    #: How long a joined call counts at most when LiveKit never reports that it ended.
    token_session_max_seconds: int = Field(
        default=3600, ge=60, le=86400, validation_alias="TOKEN_SESSION_MAX_SECONDS"
    )
    #: Admission control (`admission`): refuse calls with ``503 at_capacity`` when the agent
    #: workers (which publish their capacity in the same Redis) have no room for another.
    #: Needs `REDIS_URL`; off, every call gets a room even if no agent will come.
    token_admission_control: bool = Field(default=True, validation_alias="TOKEN_ADMISSION_CONTROL")
    #: How long an admitted call holds its place while the caller joins and the agent starts,
    #: and how long an unused token counts against its identity's session cap.
    token_join_window_seconds: int = Field(
        default=30, ge=5, le=600, validation_alias="TOKEN_JOIN_WINDOW_SECONDS"
    )
    #: ``Retry-After`` of an ``at_capacity`` refusal: when the page tries again by itself.
    token_busy_retry_after_seconds: int = Field(
        default=5, ge=1, le=300, validation_alias="TOKEN_BUSY_RETRY_AFTER_SECONDS"
    )
    #: Budgets (`budgets`; need `REDIS_URL`, where the agents add up usage): once today's or
    #: this month's estimated model cost (USD, UTC periods) reaches its cap, new calls get
    #: ``503 budget_exhausted``; an identity that has talked this many minutes today gets
    #: ``429 minutes_exhausted``. 0: no cap. Live calls always finish.
    token_daily_budget_usd: float = Field(default=0.0, ge=0, validation_alias="TOKEN_DAILY_BUDGET_USD")
    token_monthly_budget_usd: float = Field(default=0.0, ge=0, validation_alias="TOKEN_MONTHLY_BUDGET_USD")
    token_daily_minutes_per_identity: float = Field(
        default=0.0, ge=0, validation_alias="TOKEN_DAILY_MINUTES_PER_IDENTITY"
    )
    #: Reverse proxies in front of this server whose ``X-Forwarded-For`` is trusted for the
    #: client address (1: the native front door, Caddy). 0 when clients connect directly.
    token_trusted_proxy_hops: int = Field(default=1, ge=0, le=5, validation_alias="TOKEN_TRUSTED_PROXY_HOPS")
    #: Browser origins allowed to call the API cross-origin (comma-separated, exact
    #: ``scheme://host[:port]``); empty: same origin only (no CORS headers).
    token_cors_origins: str = Field(default="", validation_alias="TOKEN_CORS_ORIGINS")

    # --- Derived views of the raw values -------------------------------------------------

    @property
    def shared_keys(self) -> list[str]:
        """`TOKEN_SHARED_KEYS` as a list (secrets: never log them)."""
        return split_list(self.token_shared_keys.get_secret_value())

    @property
    def records_keys(self) -> list[str]:
        """`RECORDS_API_KEYS` as a list (secrets: never log them)."""
        return split_list(self.records_api_keys.get_secret_value())

    @property
    def oidc_issuers(self) -> list[str]:
        return split_list(self.oidc_issuer)

    @property
    def oidc_audiences(self) -> list[str]:
        return split_list(self.oidc_audience)

    @property
    def oidc_algorithm_list(self) -> list[str]:
        return split_list(self.oidc_algorithms)

    @property
    def cors_origins(self) -> frozenset[str]:
        return frozenset(origin.rstrip("/") for origin in split_list(self.token_cors_origins))

    @property
    def exposed(self) -> bool:
        """Whether `token_server_host` accepts connections from other machines."""
        return not is_loopback_host(self.token_server_host)

    @field_validator("livekit_api_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret == LIVEKIT_DEV_SECRET:
            raise ValueError("is LiveKit's dev default; generate a real one (e.g. `openssl rand -base64 36`)")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters long")
        if is_weak(secret):
            raise ValueError("must be random (e.g. `openssl rand -base64 36`), not a repeated pattern")
        return value

    @field_validator("livekit_public_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.match(r"^wss?://[^\s/?#]+(/[^\s?#]*)?$", value):
            raise ValueError("must be a ws:// or wss:// URL (or empty to derive it per request)")
        return value

    @field_validator("agent_name")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        if not _AGENT_NAME.match(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_', '.', '-'")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("token_rate_limit_per_address", "token_rate_limit_per_identity")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            if not parse_many(value):
                raise ValueError
        except ValueError:
            raise ValueError('must be rate limits such as "10/minute;100/hour"') from None
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _algorithms(cls, value: str) -> str:
        algorithms = split_list(value)
        refused = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if not algorithms or refused:
            raise ValueError(
                f"must list asymmetric algorithms only (any of {', '.join(sorted(ASYMMETRIC_ALGORITHMS))})"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL (or empty for in-memory)")
        return value

    @field_validator("token_cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        for origin in split_list(value):
            if origin == "*" or not re.match(r"^https?://[^/\s?#]+/?$", origin):
                raise ValueError("must be exact origins such as https://app.example.org (no '*')")
        return value

    @model_validator(mode="after")
    def _records_keys_are_strong(self) -> Settings:
        keys = self.records_keys
        if any(len(key) < MIN_SHARED_KEY_LENGTH for key in keys):
            raise ValueError(f"RECORDS_API_KEYS: every key must be at least {MIN_SHARED_KEY_LENGTH} characters long")
        if any(is_weak(key) for key in keys):
            raise ValueError("RECORDS_API_KEYS: every key must be random (e.g. `openssl rand -base64 36`)")
        if self.livekit_api_secret.get_secret_value() in keys:
            raise ValueError("RECORDS_API_KEYS must not contain LIVEKIT_API_SECRET")
        if set(keys) & set(self.shared_keys):
            raise ValueError(
                "a key in both TOKEN_SHARED_KEYS and RECORDS_API_KEYS would let a backend that asks "
                "for tokens read every call's transcript: give operators keys of their own"
            )
        return self

    @model_validator(mode="after")
    def _auth_mode_is_complete(self) -> Settings:
        """Each mode's own requirements; messages name the variables, never their values."""
        if self.token_auth_mode == "open":
            if self.exposed and not self.token_allow_open_public:
                raise ValueError(
                    f"TOKEN_AUTH_MODE=open refuses to listen on TOKEN_SERVER_HOST={self.token_server_host or '(all)'}, "
                    "which is reachable from other machines: anyone could get tokens and spend the "
                    "model budget. Use TOKEN_AUTH_MODE=shared-key or oidc, listen on 127.0.0.1, or set "
                    "TOKEN_ALLOW_OPEN_PUBLIC=true to accept that"
                )
        elif self.token_auth_mode == "shared-key":
            keys = self.shared_keys
            if not keys:
                raise ValueError("TOKEN_AUTH_MODE=shared-key needs TOKEN_SHARED_KEYS")
            if any(len(key) < MIN_SHARED_KEY_LENGTH for key in keys):
                raise ValueError(f"TOKEN_SHARED_KEYS: every key must be at least {MIN_SHARED_KEY_LENGTH} characters long")
            if any(is_weak(key) for key in keys):
                raise ValueError("TOKEN_SHARED_KEYS: every key must be random (e.g. `openssl rand -base64 36`)")
            if self.livekit_api_secret.get_secret_value() in keys:
                raise ValueError("TOKEN_SHARED_KEYS must not contain LIVEKIT_API_SECRET")
        else:
            if not self.oidc_issuers or not self.oidc_audiences:
                raise ValueError("TOKEN_AUTH_MODE=oidc needs OIDC_ISSUER and OIDC_AUDIENCE")
            # Keys are fetched from OIDC_JWKS_URL, or discovered from the first issuer.
            name, url = ("OIDC_JWKS_URL", self.oidc_jwks_url) if self.oidc_jwks_url else ("OIDC_ISSUER", self.oidc_issuers[0])
            if not is_https_or_loopback(url):
                raise ValueError(f"{name} must be an https:// URL (http:// only on this machine)")
        return self


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each refused variable, e.g. ``LIVEKIT_API_SECRET must be ...``.

    Never includes the offending values (one of them may be the secret).
    """
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        if not item["loc"]:  # a rule across variables: its message names them
            problems.append(str(item["msg"]).removeprefix("Value error, "))
            continue
        name = str(item["loc"][0])
        field = Settings.model_fields.get(name)
        if field is not None and isinstance(field.validation_alias, str):
            name = field.validation_alias
        name = name.upper()
        if item["type"] == "missing":
            problems.append(f"{name} is not set")
        else:
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{name} {message[:1].lower()}{message[1:]}")
    return "; ".join(problems)


def load_settings_or_exit() -> Settings:
    """Read `Settings` from the environment, or stop the process.

    On a refused configuration, prints one line to stderr
    (``token-server: configuration refused: ...``) and raises
    ``SystemExit(CONFIG_ERROR_EXIT_CODE)``: no traceback, and under gunicorn the
    master halts rather than respawning workers.
    """
    try:
        return Settings()  # type: ignore[call-arg]  # required values come from the env
    except ValidationError as error:
        print(f"token-server: configuration refused: {describe_settings_error(error)}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(CONFIG_ERROR_EXIT_CODE) from None
