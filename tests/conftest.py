"""Fixtures that start real things: the Gemini Live stand-in and the native stack's processes.

Logs of every process go to `artifacts/logs/` (kept by CI); a failing start shows the tail.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import stack
from tests.fixtures import standin_fixture
from tests.e2e.harness import ProcessStack, running_stack
from tests.standins.gemini_live import GeminiLiveStandin

ARTIFACTS = stack.ROOT / "artifacts"

#: Calls the shared stack's worker takes at once (AGENT_MAX_CALLS).
SHARED_STACK_LINES = 64


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """A folder CI keeps: logs, screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


#: The Gemini Live stand-in, serving TLS on 127.0.0.1 for the whole session.
standin = standin_fixture("standin", "session")


@pytest.fixture(scope="session")
def native_stack(
    standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> Iterator[ProcessStack]:
    """Redis, livekit-server, token server, agent worker and front door, from the Procfile."""
    for tool in ("redis-server", "livekit-server", "caddy", "gunicorn"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: run the tests with ./scripts/test")
    # Many tests mint tokens they never join with; each holds a line for the join window
    # (admission control, token_server/admission.py). Lines enough that only the capacity
    # tests, on stacks of their own, meet a full house.
    with running_stack(
        standin.base_url, str(standin.ca_file), tmp_path_factory.mktemp("state"), artifacts / "logs",
        extra={"AGENT_MAX_CALLS": str(SHARED_STACK_LINES)},
    ) as processes:
        yield processes
