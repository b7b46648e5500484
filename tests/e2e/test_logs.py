"""Logs you can follow across services: one grep of a call's room name over the token
server's and the agent's logs shows its token, its dispatch, the model link and its end, as
JSON lines with the same keys (voice_calls.logs)."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from voice_calls import logs

from tests.e2e.caller import Caller
from tests.e2e.calls import greeted
from tests.e2e.harness import ProcessStack
from tests.standins.gemini_live import GeminiLiveStandin

pytestmark = pytest.mark.e2e


def grep(path: Path, needle: str) -> list[dict]:
    """The lines of a log that contain `needle`, each parsed as the JSON object it must be."""
    found = []
    for line in path.read_text(errors="replace").splitlines():
        if needle in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                pytest.fail(f"{path.name}: a line about {needle} is not a JSON object: {line[:300]}")
    return found


def at(line: dict) -> datetime:
    return datetime.fromisoformat(line["timestamp"])


def the(lines: list[dict], event: str) -> dict:
    matching = [line for line in lines if line.get(logs.EVENT) == event]
    assert matching, f"no {event} line among {[line.get(logs.EVENT) or line.get('message') for line in lines]}"
    return matching[0]


async def test_one_grep_of_the_room_follows_a_call_across_services(
    native_stack: ProcessStack, standin: GeminiLiveStandin
) -> None:
    started = time.monotonic()
    async with Caller(native_stack.token_url, name="Ada") as caller:
        await greeted(caller, standin, started)
        room = caller.token["room_name"]
    # The caller hung up: the agent's job ends and says so.
    agent_log, token_log = native_stack.log_dir / "agent.log", native_stack.log_dir / "token-server.log"
    deadline = time.monotonic() + 30
    while not any(line.get(logs.EVENT) == logs.CALL_ENDED for line in grep(agent_log, room)):
        assert time.monotonic() < deadline, f"no {logs.CALL_ENDED} for {room}:\n{native_stack.log_tail('agent')}"
        time.sleep(0.5)

    token_lines, agent_lines = grep(token_log, room), grep(agent_log, room)
    assert all(line[logs.ROOM] == room for line in token_lines + agent_lines)
    issued = the(token_lines, logs.TOKEN_ISSUED)
    assert issued[logs.PARTICIPANT] == caller.identity
    dispatched, linked, ended = (the(agent_lines, event) for event in
                                 (logs.CALL_DISPATCHED, logs.MODEL_CONNECTED, logs.CALL_ENDED))
    job = dispatched[logs.JOB]
    assert job.startswith("AJ_") and linked[logs.JOB] == ended[logs.JOB] == job
    # The model link opens while the agent waits for the caller (to greet at once), so its
    # line may come before the caller is known; the end always names them.
    assert linked.get(logs.PARTICIPANT) in (None, caller.identity) and ended[logs.PARTICIPANT] == caller.identity
    assert ended["reason"] == "caller left"
    assert at(issued) <= at(dispatched) <= at(linked) <= at(ended)
    # LiveKit's own webhooks, as the token server logs them, carry the same keys.
    joined = [line for line in token_lines if line.get("livekit_event") == "participant_joined"
              and line.get(logs.PARTICIPANT) == caller.identity]
    assert joined, "the token server logged no participant_joined webhook for the caller"
