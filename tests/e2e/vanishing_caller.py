"""A caller in a process of its own, for tests that make a caller vanish without hanging up.

    python -m tests.e2e.vanishing_caller TOKEN_URL NAME "QUESTION"

It joins a call through the token endpoint (`tests.e2e.caller.Caller`), waits for the
greeting, asks QUESTION, waits for the answer, then keeps the call open until it is
killed. Progress goes to stdout, one JSON object a line:

    {"event": "joined", "room": ..., "identity": ..., "server_url": ...}
    {"event": "greeted"}
    {"event": "answered", "agent": agent identity, "lines": [agent transcript lines so far]}

A test freezes (SIGSTOP: nothing more leaves the machine, as when the network drops) or
kills (SIGKILL) this process: LiveKit sees a client that went silent, not one that left.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tests.audio import synthesize
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller


def _emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _call(token_url: str, name: str, question: str) -> None:
    async with Caller(token_url, name=name) as caller:
        _emit("joined", room=caller.room.name, identity=caller.identity, server_url=caller.token["server_url"])
        await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 60, "the greeting")
        await asyncio.sleep(3.0)  # the greeting plays to its end
        _emit("greeted")
        spoke_until = await caller.say(synthesize(question, MIC_SAMPLE_RATE))
        await caller.wait_until(
            lambda: caller.agent_audio.first_audible_after(spoke_until + 0.3) is not None, 60, "the answer"
        )
        await asyncio.sleep(3.0)  # the answer plays to its end
        _emit("answered", agent=caller.agent_identity(),
              lines=[t.text for t in caller.transcripts if t.identity != caller.identity])
        await asyncio.Event().wait()  # on the call until killed


def main(argv: list[str]) -> int:
    token_url, name, question = argv
    asyncio.run(_call(token_url, name, question))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
