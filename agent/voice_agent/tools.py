"""The agent's tools as plain functions: easy to test, wrapped as LLM tools in `assistant.py`."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ToolInputError(ValueError):
    """The model passed an argument the tool cannot use; the message is safe to show it."""


def current_time(timezone: str, *, now: datetime | None = None) -> str:
    """Tell the current local time in an IANA time zone.

    Args:
        timezone: IANA name such as "Europe/Paris" or "UTC".
        now: an aware datetime to format instead of the clock (tests).

    Returns:
        A sentence such as "It is 14:05 on Monday 23 November 2026 in Europe/Paris (UTC+01:00)."

    Raises:
        ToolInputError: when the zone name is unknown.
    """
    try:
        zone = ZoneInfo(timezone.strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolInputError(f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris") from exc
    local = (now or datetime.now(tz=zone)).astimezone(zone)
    offset = local.strftime("%z")
    return (
        f"It is {local:%H:%M} on {local:%A} {local.day} {local:%B %Y} in {zone.key} "
        f"(UTC{offset[:3]}:{offset[3:]})."
    )


@dataclass(frozen=True)
class FaqEntry:
    """One FAQ entry: the canonical question, its answer and the words that select it."""

    question: str
    answer: str
    keywords: frozenset[str]


_WORD = re.compile(r"[a-z0-9]+")


class Faq:
    """A small FAQ loaded from a TOML file (`[[entry]]` with question, answer, keywords)."""

    def __init__(self, entries: list[FaqEntry]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path) -> Faq:
        """Read the FAQ file.

        Raises:
            OSError: the file cannot be read.
            ValueError: the TOML is malformed or an entry lacks question/answer.
        """
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        entries = []
        for index, raw in enumerate(data.get("entry", [])):
            if not raw.get("question") or not raw.get("answer"):
                raise ValueError(f"{path}: entry {index} needs a question and an answer")
            words = set(_WORD.findall(raw["question"].lower()))
            words.update(k.lower() for k in raw.get("keywords", []))
            entries.append(FaqEntry(raw["question"], raw["answer"], frozenset(words)))
        return cls(entries)

    def lookup(self, question: str) -> str:
        """Answer a free-text question with the best-matching entry (word overlap).

        Returns:
            The entry's answer, or a sentence saying nothing matched.
        """
        words = set(_WORD.findall(question.lower()))
        best = max(self.entries, key=lambda e: len(words & e.keywords), default=None)
        if best is None or not words & best.keywords:
            return "The FAQ has no answer to that question."
        return best.answer
