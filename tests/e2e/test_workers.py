"""Several agent workers on one machine (`AGENT_WORKERS=2` in the native run).

The stack is this module's own: two workers under supervisord, as `./scripts/run` starts
them. Which worker serves a call is read from each worker's own `GET /worker` (livekit-agents'
worker info: `active_jobs`), on the health port its ready file names.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from scripts import stack
from tests.e2e.caller import Caller
from tests.e2e.harness import ProcessStack, worker_info, worker_process
from tests.e2e.calls import answered_once_more, greeted
from tests.fixtures import stack_fixture
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = pytest.mark.e2e

WORKERS = 2
#: Workers start side by side, each importing livekit-agents and the Google plugin: on a busy
#: machine that takes minutes, not the single worker's seconds (s).
START_TIMEOUT_S = 300
#: A job process starting on a busy machine (imports, model connect) before the greeting (s).
JOB_START_TIMEOUT_S = 180


# A drain long enough for the test's calls on a slow machine: the drained worker's call
# must outlive the new ones.
workers_stack = stack_fixture(
    "workers_stack", "workers", {"AGENT_WORKERS": str(WORKERS), "AGENT_DRAIN_TIMEOUT_S": "600"},
    timeout_s=START_TIMEOUT_S,
)


def active_jobs(stack_: ProcessStack) -> list[int]:
    """Live calls per worker, from each worker's own `GET /worker`."""
    return [int(worker_info(f).get("active_jobs", 0)) for f in stack.agent_ready_files(stack_.env)]


async def wait_jobs(stack_: ProcessStack, expected: list[int], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (jobs := active_jobs(stack_)) != expected:
        assert time.monotonic() < deadline, f"active jobs per worker: {jobs}, expected {expected}"
        await asyncio.sleep(0.3)


def test_each_worker_registers_with_its_own_health_port(workers_stack: ProcessStack) -> None:
    base = int(workers_stack.env["AGENT_HEALTH_PORT"])
    workers = [stack.agent_worker_health(f) for f in stack.agent_ready_files(workers_stack.env)]
    assert all(workers), workers
    assert [port for _, port in workers] == [base + i for i in range(WORKERS)]
    assert len({worker_id for worker_id, _ in workers}) == WORKERS, "one LiveKit registration each"
    for i in range(WORKERS):
        assert worker_info(stack.agent_ready_files(workers_stack.env)[i])["agent_name"] == workers_stack.env["AGENT_NAME"]


async def test_a_draining_worker_takes_no_new_calls_while_the_other_does(
    workers_stack: ProcessStack, standin: GeminiLiveStandin
) -> None:
    await wait_jobs(workers_stack, [0] * WORKERS)
    started = time.monotonic()
    async with Caller(workers_stack.token_url, name="Ada") as first:
        await first.wait_until(lambda: first.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
        await greeted(first, standin, started)
        # One job serves the call (a slow start may have had a second dispatch leave at once).
        deadline = time.monotonic() + 60
        while sorted(jobs := active_jobs(workers_stack)) != [0, 1]:
            assert time.monotonic() < deadline, f"active jobs per worker: {jobs}"
            await asyncio.sleep(0.5)
        busy = jobs.index(1)
        pid = worker_process(workers_stack.processes["agent"].pid, busy)
        log = workers_stack.log_dir / "agent.log"
        logged_before = log.stat().st_size
        os.kill(pid, signal.SIGTERM)  # drain: finish the live call, take no new one
        await first.wait_until(lambda: b"draining worker" in log.read_bytes()[logged_before:], 30, "the drain")
        # A new call goes to the other worker while this one drains ...
        started = time.monotonic()
        async with Caller(workers_stack.token_url, name="Bob") as later:
            await later.wait_until(lambda: later.agent_audio.audible_seconds() > 0.5, JOB_START_TIMEOUT_S, "the greeting")
            await greeted(later, standin, started)
            jobs = active_jobs(workers_stack)
            # (the other worker may hold two jobs for a moment: a repeated dispatch that leaves)
            assert jobs[busy] == 1 and jobs[1 - busy] >= 1, jobs
        await wait_jobs(workers_stack, [1 if i == busy else 0 for i in range(WORKERS)])
        # ... and the draining worker's own call goes on.
        await answered_once_more(first, standin, started)
        assert worker_process(workers_stack.processes["agent"].pid, busy) == pid
    # Its last call over, the drained worker exits and supervisord starts it again.
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if worker_process(workers_stack.processes["agent"].pid, busy) != pid:
                break
        except LookupError:
            pass
        assert time.monotonic() < deadline, workers_stack.log_tail("agent")
        await asyncio.sleep(0.5)
    workers_stack.wait_healthy(["agent"], START_TIMEOUT_S)
