"""Fixtures that start real things: the Gemini Live stand-in and the native stack's processes.

Logs of every process go to `artifacts/logs/` (kept by CI; under `./scripts/test`, whose
pytest-xdist workers each run stacks of their own, to `artifacts/logs/<worker>/`); a failing
start shows the tail.

Order: test files run longest first, so that pytest-xdist's workers, which take whole files
in collection order (`--dist loadfile`), do not start a long file last. A file's time is
its time in the last run here (pytest's cache), else its time in `file-seconds.json` (a
three-worker run's, committed, like pytest-split's `.test_durations`; refresh it from
`.pytest_cache/v/voice-appliance/file-seconds` when files change a lot), else a guess.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import stack
from tests.fixtures import standin_fixture
from tests.e2e.harness import ProcessStack, running_stack
from tests.standins.gemini_live import GeminiLiveStandin

ARTIFACTS = stack.ROOT / "artifacts"

#: pytest's cache key of the seconds each test file took (setup, call and teardown) last run.
FILE_SECONDS_KEY = "voice-appliance/file-seconds"
#: Seconds per test file from a whole run (the order's fallback where the cache has none).
FILE_SECONDS = Path(__file__).with_name("file-seconds.json")
#: A file's weight when neither knows it: end-to-end files take minutes.
E2E_FILE_GUESS_S = 100.0

_file_seconds: defaultdict[str, float] = defaultdict(float)


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest test files first; a file's tests stay together and in their order."""
    cache = getattr(config, "cache", None)  # None with -p no:cacheprovider
    known: dict[str, float] = {
        **json.loads(FILE_SECONDS.read_text(encoding="utf-8")),
        **(cache.get(FILE_SECONDS_KEY, {}) if cache else {}),
    }

    def seconds(item: pytest.Item) -> float:
        guess = E2E_FILE_GUESS_S if item.get_closest_marker("e2e") else 0.0
        return known.get(_file(item.nodeid), guess)

    items.sort(key=seconds, reverse=True)  # stable: equal weights keep the collection order


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up each file's time (under pytest-xdist, the controller sees every worker's reports)."""
    _file_seconds[_file(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Keep this run's file times for the next run's order (the controller's or a lone run's)."""
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _file_seconds:
        return
    known = cache.get(FILE_SECONDS_KEY, {})
    cache.set(FILE_SECONDS_KEY, {**known, **{f: round(s, 1) for f, s in _file_seconds.items()}})


#: Calls the shared stack's worker takes at once (AGENT_MAX_CALLS).
SHARED_STACK_LINES = 64


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """A folder CI keeps: logs, screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def log_dir(artifacts: Path, worker_id: str) -> Path:
    """Where this session's processes write their logs: `artifacts/logs/`, or under
    pytest-xdist the worker's own folder in it (`worker_id` is pytest-xdist's: gw0, gw1, ...,
    or "master" without workers), so that no two stacks append to one file."""
    return artifacts / "logs" if worker_id == "master" else artifacts / "logs" / worker_id


#: The Gemini Live stand-in, serving TLS on 127.0.0.1 for the whole session.
standin = standin_fixture("standin", "session")


@pytest.fixture(scope="session")
def native_stack(
    standin: GeminiLiveStandin, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[ProcessStack]:
    """Redis, livekit-server, token server, agent worker and front door, from the Procfile."""
    for tool in ("redis-server", "livekit-server", "caddy", "gunicorn"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not on PATH: run the tests with ./scripts/test")
    # Many tests mint tokens they never join with; each holds a line for the join window
    # (admission control, token_server/admission.py). Lines enough that only the capacity
    # tests, on stacks of their own, meet a full house.
    with running_stack(
        standin.base_url, str(standin.ca_file), tmp_path_factory.mktemp("state"), log_dir,
        extra={"AGENT_MAX_CALLS": str(SHARED_STACK_LINES)},
    ) as processes:
        yield processes
