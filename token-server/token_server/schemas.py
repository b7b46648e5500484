"""The token request body: a pydantic model and its error messages.

Limits come from `Settings` through the validation context (`RequestLimits`), so one
model serves every configuration.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from .settings import Settings

#: Characters allowed in a caller-chosen identity (length is a setting, default 64).
IDENTITY_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Identities the agent workers use; a caller may not take them.
RESERVED_IDENTITY_PREFIX = "agent-"
#: Attribute keys LiveKit and livekit-agents reserve (`lk.agent.state`, ...).
RESERVED_ATTRIBUTE_PREFIX = "lk."
ATTRIBUTE_KEY_MAX_LENGTH = 64
ATTRIBUTE_VALUE_MAX_LENGTH = 256
#: Fields of LiveKit's standard request that only the server may choose.
SERVER_CHOSEN_FIELDS = ("room_name", "room_config")
#: Punctuation a display name may hold besides letters, combining marks, digits and spaces.
#: The name reaches the model (the greeting): nothing that reads as syntax or a rule.
NAME_PUNCTUATION = ".,'\u2019-()+"


@dataclass(frozen=True)
class RequestLimits:
    """Size limits for one request (lengths in characters, metadata in UTF-8 bytes)."""

    identity_max_length: int = 64
    name_max_length: int = 64
    metadata_max_bytes: int = 512
    attributes_max_items: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        """The limits configured in `settings`."""
        return cls(
            identity_max_length=settings.participant_identity_max_length,
            name_max_length=settings.participant_name_max_length,
            metadata_max_bytes=settings.participant_metadata_max_bytes,
            attributes_max_items=settings.participant_attributes_max_items,
        )


def _limits(info: ValidationInfo) -> RequestLimits:
    context = info.context or {}
    limits = context.get("limits")
    return limits if isinstance(limits, RequestLimits) else RequestLimits()


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid_value", message)


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(ch) in {"Cc", "Zl", "Zp"} for ch in text)


def clean_display_name(value: str) -> str:
    """`value` without format characters (Unicode Cf: bidi overrides, zero-width spaces and
    joiners), NFC-normalised, with runs of spaces made one and the ends trimmed."""
    kept = "".join(ch for ch in unicodedata.normalize("NFC", value) if unicodedata.category(ch) != "Cf")
    return " ".join(kept.split())


def display_name_problem(value: str) -> str | None:
    """Why a cleaned display name (`clean_display_name`) is not acceptable, or None."""
    if not value:
        return "must not be blank"
    if any(not (unicodedata.category(ch)[0] in "LMZ" or unicodedata.category(ch) == "Nd" or ch in NAME_PUNCTUATION)
           for ch in value):
        return f"may contain only letters, digits, spaces and {' '.join(NAME_PUNCTUATION)}"
    return None


def identity_problem(value: str, max_length: int) -> str | None:
    """Why `value` is not an acceptable caller-chosen identity, or None when it is.

    Used for the body's ``participant_identity`` (open mode) and the trusted backend's
    ``X-Participant-Identity`` header (shared-key mode).
    """
    if not 1 <= len(value) <= max_length:
        return f"must be 1-{max_length} characters long"
    if not IDENTITY_PATTERN.match(value):
        return "may contain only letters, digits, '_', '.' and '-'"
    if value.lower().startswith(RESERVED_IDENTITY_PREFIX):
        return f"may not start with '{RESERVED_IDENTITY_PREFIX}' (reserved for agents)"
    return None


class TokenRequest(BaseModel):
    """Body of ``POST /api/token``: LiveKit's standard token request, minus the fields
    the server chooses (`room_name`, `room_config`: refused, or for a `room_config` that only
    names our agent ignored, before this model runs).

    Every field is optional; JSON ``null`` counts as absent. Validate with
    ``TokenRequest.model_validate(data, context={"limits": RequestLimits(...)})``.

    Raises:
        pydantic.ValidationError: unknown field, wrong type, or a value out of its limits;
            `describe_request_error` turns it into one message.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: Caller's identity: letters, digits, ``_ . -``; not starting with ``agent-``.
    participant_identity: str | None = None
    #: Display name: letters, digits, spaces and `NAME_PUNCTUATION`; format characters are
    #: removed (`clean_display_name`).
    participant_name: str | None = None
    #: Opaque participant metadata (UTF-8 bytes limited).
    participant_metadata: str | None = None
    #: Participant attributes, string to string; ``lk.`` keys are reserved.
    participant_attributes: dict[str, str] | None = None

    @field_validator("participant_identity")
    @classmethod
    def _identity(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        problem = identity_problem(value, _limits(info).identity_max_length)
        if problem:
            raise _invalid(problem)
        return value

    @field_validator("participant_name")
    @classmethod
    def _name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        limit = _limits(info).name_max_length
        if _has_control_characters(value):
            raise _invalid("must not contain control characters or line breaks")
        value = clean_display_name(value)
        problem = display_name_problem(value)
        if problem:
            raise _invalid(problem)
        if len(value) > limit:
            raise _invalid(f"must be at most {limit} characters long")
        return value

    @field_validator("participant_metadata")
    @classmethod
    def _metadata(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        limit = _limits(info).metadata_max_bytes
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise _invalid(f"must be at most {limit} bytes (UTF-8)")
        return value

    @field_validator("participant_attributes")
    @classmethod
    def _attributes(cls, value: dict[str, str] | None, info: ValidationInfo) -> dict[str, str] | None:
        if value is None:
            return None
        limit = _limits(info).attributes_max_items
        if len(value) > limit:
            raise _invalid(f"must have at most {limit} entries")
        for key, item in value.items():
            if not 1 <= len(key) <= ATTRIBUTE_KEY_MAX_LENGTH or _has_control_characters(key):
                raise _invalid(
                    f"keys must be 1-{ATTRIBUTE_KEY_MAX_LENGTH} characters without control characters"
                )
            if key.startswith(RESERVED_ATTRIBUTE_PREFIX):
                raise _invalid(f"key {key!r} uses the reserved prefix '{RESERVED_ATTRIBUTE_PREFIX}'")
            if len(item) > ATTRIBUTE_VALUE_MAX_LENGTH:
                raise _invalid(f"value of {key!r} must be at most {ATTRIBUTE_VALUE_MAX_LENGTH} characters")
        return value


_FRIENDLY = {
    "extra_forbidden": "unknown field (allowed: {allowed})",
    "string_type": "must be a string",
    "dict_type": "must be an object mapping strings to strings",
}


def describe_request_error(error: ValidationError) -> str:
    """One readable message naming every refused field, e.g.
    ``participant_identity: may contain only letters, ...; colour: unknown field (...)``.

    Input values are never echoed back.
    """
    allowed = ", ".join(TokenRequest.model_fields)
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        template = _FRIENDLY.get(item["type"])
        message = template.format(allowed=allowed) if template else str(item["msg"])
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def _present(mapping: dict[str, Any]) -> dict[str, Any]:
    """`mapping` without the entries that count as absent: JSON ``null`` and ``""`` (the
    protobuf default, which some SDKs' JSON encoders write out)."""
    return {key: value for key, value in mapping.items() if value is not None and value != ""}


def only_names_agent(room_config: Any, agent_name: str) -> bool:
    """True when `room_config` asks for `agent_name` and nothing else:
    ``{"agents": [{"agent_name": agent_name}]}``.

    That is what livekit-client's ``TokenSource.endpoint`` sends when the app passes
    ``agentName`` (LiveKit's agent-starter-react does whenever ``AGENT_NAME`` is set). The
    token server dispatches that agent anyway, so such a request changes nothing.
    """
    if not isinstance(room_config, dict) or set(_present(room_config)) != {"agents"}:
        return False
    agents = room_config["agents"]
    return (
        isinstance(agents, list)
        and len(agents) == 1
        and isinstance(agents[0], dict)
        and _present(agents[0]) == {"agent_name": agent_name}
    )


def server_chosen_fields(data: dict[str, Any], agent_name: str | None = None) -> list[str]:
    """Names of the server-chosen fields present (and not null) in a request body, except
    a ``room_config`` that only names `agent_name` (`only_names_agent`), which is harmless."""
    return [
        name
        for name in SERVER_CHOSEN_FIELDS
        if data.get(name) is not None
        and not (name == "room_config" and agent_name and only_names_agent(data[name], agent_name))
    ]


def describe_server_chosen(refused: list[str], agent_name: str) -> str:
    """The message of the ``403 field_not_allowed`` answer for the server-chosen fields in
    `refused`: what each one may be instead."""
    why = {
        "room_name": "room_name: chosen by the server (every call gets a fresh room); leave it out",
        "room_config": (
            "room_config: chosen by the server; leave it out, or ask for this appliance's agent "
            f'and nothing else: {{"agents": [{{"agent_name": "{agent_name}"}}]}}'
        ),
    }
    return "; ".join(why[name] for name in refused)
