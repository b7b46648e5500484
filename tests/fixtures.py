"""Fixture factories shared by the test modules (benches and the load test use `tests.e2e.calls`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.e2e.calls import call_standin
from tests.e2e.harness import ProcessStack, running_stack
from tests.standins.gemini_live import GeminiLiveStandin


def standin_fixture(name: str, scope: Literal["session", "module"]) -> Callable[..., Any]:
    """A fixture `name` that serves the whole-call tests' Gemini Live stand-in (`call_standin`)
    for `scope`, with its certificate in a temporary folder; assign it to a module-level name."""

    @pytest.fixture(scope=scope, name=name)
    def _standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeminiLiveStandin]:
        with call_standin(tmp_path_factory.mktemp(f"{name}-certs")) as server:
            yield server

    return _standin


def stack_fixture(name: str, logs: str, extra: Mapping[str, str] | None = None, *,
                  timeout_s: float = 90.0) -> Callable[..., Any]:
    """A module-scoped fixture `name` running a native stack of its own against the session's
    stand-in (`running_stack`), logging to ``{log_dir}/{logs}`` (the `log_dir` fixture), with `extra` settings,
    given `timeout_s` to start; assign it to a module-level name."""

    @pytest.fixture(scope="module", name=name)
    def _stack(
        standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
    ) -> Iterator[ProcessStack]:
        with running_stack(standin.base_url, str(standin.ca_file), tmp_path_factory.mktemp(f"{logs}-state"),
                           log_dir / logs, extra, timeout_s=timeout_s) as processes:
            yield processes

    return _stack
