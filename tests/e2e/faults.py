"""The fault tests' own stack and Gemini Live stand-in (test_model_faults.py,
test_worker_faults.py): each test module that imports these fixtures gets a stack of its
own, so its faults do not disturb other tests, and the two modules can run in parallel.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ProcessStack, running_stack
from tests.fixtures import standin_fixture
from tests.standins.gemini_live import GeminiLiveStandin
from tests.standins.slow_link import SlowLink

fault_standin = standin_fixture("fault_standin", "module")


@pytest.fixture(scope="module")
def fault_link(fault_standin: GeminiLiveStandin) -> Iterator[SlowLink]:
    """The agent's network path to the model: no delay unless a test sets one."""
    with SlowLink(target_port=fault_standin.port) as link:
        yield link


@pytest.fixture(scope="module")
def fault_stack(
    fault_standin: GeminiLiveStandin, fault_link: SlowLink, tmp_path_factory: pytest.TempPathFactory,
    log_dir: Path,
) -> Iterator[ProcessStack]:
    """A stack of this module's own (its agent is drained, killed and restarted here)."""
    extra = {
        "AGENT_MODEL_RETRY_GIVE_UP_S": "30",
        "AGENT_DRAIN_TIMEOUT_S": "25",  # a short grace period for the drain test
    }
    with running_stack(
        f"https://127.0.0.1:{fault_link.port}", str(fault_standin.ca_file), tmp_path_factory.mktemp("fault-state"),
        log_dir / "faults", extra,
    ) as processes:
        # A worker registers before its idle job process is ready; on a busy machine the
        # first call would wait minutes for one, which no test here is about.
        processes.wait_for_log("agent", '"process initialized"', 300)
        yield processes


@pytest.fixture(autouse=True)
def fast_link(fault_link: SlowLink) -> Iterator[None]:
    """Every test starts and ends with an undelayed model link."""
    fault_link.delay_s = 0.0
    yield
    fault_link.delay_s = 0.0


@pytest.fixture(autouse=True)
def healthy_standin(fault_standin: GeminiLiveStandin) -> Iterator[None]:
    """Every test starts and ends with the stand-in serving normally."""
    fault_standin.accept_handshakes()
    yield
    fault_standin.accept_handshakes()
