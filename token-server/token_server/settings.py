"""The token server's one settings object, read from the environment.

Variable names carry no prefix: they are the stack's shared environment (the same
`.env` feeds livekit-server, the agent worker and this server).
"""

from __future__ import annotations

import re
import sys

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: LiveKit's `--dev` secret (`devkey: secret`); never acceptable outside a laptop.
LIVEKIT_DEV_SECRET = "secret"
#: livekit-server itself complains about shorter secrets outside dev mode.
MIN_SECRET_LENGTH = 32
#: Exit status when the configuration is refused. 4 is gunicorn's APP_LOAD_ERROR: the
#: arbiter halts ("App failed to load.") instead of respawning the worker forever.
CONFIG_ERROR_EXIT_CODE = 4

_AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


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

    # --- Token and room ---------------------------------------------------------------
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

    @field_validator("livekit_api_secret")
    @classmethod
    def _strong_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret == LIVEKIT_DEV_SECRET:
            raise ValueError("is LiveKit's dev default; generate a real one (e.g. `openssl rand -base64 36`)")
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters long")
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


def describe_settings_error(error: ValidationError) -> str:
    """One line naming each refused variable, e.g. ``LIVEKIT_API_SECRET must be ...``.

    Never includes the offending values (one of them may be the secret).
    """
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        name = str(item["loc"][0]) if item["loc"] else "settings"
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
