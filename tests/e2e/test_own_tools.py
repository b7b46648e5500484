"""The operator's own knowledge and MCP tools in real calls.

A stack of this module's own: the agent's `KNOWLEDGE_DIR` is a folder the test writes
(Markdown, HTML, text and a PDF built with fpdf2), and `MCP_SERVERS` names a local MCP
server (the `mcp` SDK's own) on both transports: `find_order` over HTTP+SSE, the slow
`monthly_report` over streamable HTTP, and `delete_all_orders` on no allow-list. The
Gemini Live stand-in plays the model: on the caller's spoken turn it calls one tool, then
answers from the result as a model told to cite its sources (or apologise) would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts import stack
from tests.audio import synthesize
from tests.corpus import RETURNS, WARRANTY, write_corpus
from tests.e2e.caller import MIC_SAMPLE_RATE, Caller
from tests.e2e.harness import ProcessStack, running_stack
from tests.ports import free_port
from voice_agent.link import FILLER_TEXT
from tests.e2e.test_call import read_call_record, session_for
from tests.standins.gemini_live import (
    GeminiLiveStandin,
    SessionRecord,
    StandinConfig,
    ToolCallSpec,
    TurnInput,
    default_responder,
)
from tests.standins.mcp_server import FAST_TOOL, FORBIDDEN_TOOL, ORDER_STATUS, SLOW_TOOL, McpStandin

pytestmark = pytest.mark.e2e

TOKEN = "orders-" + "t" * 32
#: The slow tool's budget in MCP_SERVERS, and how long it would really take.
SLOW_TIMEOUT_S, SLOW_TOOL_S = 2.0, 30.0
APOLOGY = "Sorry, that system is not answering right now."
GREETING = "Greet the caller on behalf of Acme Heating in one short sentence."


def cite_or_apologise(turn: TurnInput) -> str:
    """The stand-in's model: answer from a tool's result briefly, naming its first source."""
    output = turn.tool_output or ""
    if turn.tool_name is None:
        return default_responder(turn)
    if turn.tool_error or output.startswith('{"error"'):
        return APOLOGY
    if output.startswith("Passages from the documents"):
        return f"According to {output.split('[1] ', 1)[1].splitlines()[0]}, here is the answer."
    return f"The system says: {output}"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeminiLiveStandin]:
    server = GeminiLiveStandin(StandinConfig(responder=cite_or_apologise),
                               cert_dir=tmp_path_factory.mktemp("own-tools-certs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpStandin]:
    server = McpStandin(token=TOKEN, slow_s=SLOW_TOOL_S, ports=(free_port(), free_port()))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def knowledge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("knowledge"))


@pytest.fixture(scope="module")
def own_stack(
    model: GeminiLiveStandin, mcp_server: McpStandin, knowledge_dir: Path,
    tmp_path_factory: pytest.TempPathFactory, log_dir: Path,
) -> Iterator[ProcessStack]:
    servers = [
        {"name": "orders", "url": mcp_server.sse_url, "bearer_token": TOKEN, "allowed_tools": [FAST_TOOL]},
        {"name": "reports", "url": mcp_server.streamable_url, "headers": {"Authorization": f"Bearer {TOKEN}"},
         "allowed_tools": [SLOW_TOOL], "timeout_s": SLOW_TIMEOUT_S},
    ]
    extra = {
        "KNOWLEDGE_DIR": str(knowledge_dir),
        "MCP_SERVERS": json.dumps(servers),
        "MCP_CONNECT_TIMEOUT_S": "10",  # a busy test machine; the servers answer in milliseconds
        "AGENT_TOOL_FILLER_AFTER_S": "0.5",
        "AGENT_GREETING": GREETING,
    }
    with running_stack(model.base_url, str(model.ca_file), tmp_path_factory.mktemp("own-tools-state"),
                       log_dir / "own-tools", extra) as processes:
        # The worker indexes the folder while it registers: the first call needs the index.
        assert processes.wait_for_log("agent", "voice_agent: knowledge: indexed", timeout_s=120)
        yield processes


@pytest.fixture
def tool_call(model: GeminiLiveStandin) -> Iterator[Any]:
    """`tool_call(name, **args)` makes the stand-in call that tool on the caller's turn."""
    config = model.config

    def use(name: str, response_timeout_s: float = 15.0, **args: Any) -> None:
        model.config = dataclasses.replace(
            config, tool_call=ToolCallSpec(name=name, args=args, response_timeout_s=response_timeout_s)
        )

    yield use
    model.config = config


async def ask(
    stack_: ProcessStack, model: GeminiLiveStandin, until: Callable[[list[str]], bool] | None = None
) -> tuple[SessionRecord, list[str], str]:
    """One call: greeting, a spoken question, the tool round trip and the answer.

    Args:
        until: hang up once the agent's transcript lines satisfy it (default: the answer came).

    Returns:
        The model session, the agent's transcript lines and the room.
    """
    started = time.monotonic()
    async with Caller(stack_.token_url, name="Ada") as caller:
        await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 30, "the greeting's audio")
        session_id = session_for(model, started).session_id
        model.wait_for(lambda s: [x for x in s if x.session_id == session_id and x.turns[0].turn_complete_at], 20)
        spoke_until = await caller.say(synthesize("Can you look that up for me?", MIC_SAMPLE_RATE))

        def answered(all_: list[SessionRecord]) -> bool:
            session = next(x for x in all_ if x.session_id == session_id)
            return any(t.kind == "audio" and t.turn_complete_at for t in session.turns)

        await asyncio.to_thread(model.wait_for, answered, 45)
        await caller.wait_until(lambda: caller.agent_audio.first_audible_after(spoke_until) is not None, 15,
                                "the answer's audio")
        agent = caller.agent_identity() or ""

        def lines() -> list[str]:
            return [t.text for t in caller.transcript_of(agent)]

        await caller.wait_until(lambda: (until or (lambda got: len(got) >= 2))(lines()), 20,
                                "the answer in the transcript")
        room = str(caller.token["room_name"])
    session = next(s for s in model.sessions if s.session_id == session_id)
    assert not session.errors, session.errors
    return session, lines(), room


async def record_of(stack_: ProcessStack, room: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The call's record from the records API, once `ready(record)` holds (it is written as the call goes)."""
    deadline = time.monotonic() + 15
    while True:
        record = await asyncio.to_thread(read_call_record, stack_, room)
        if ready(record) or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.25)


def reindex(stack_: ProcessStack) -> str:
    """`./scripts/knowledge index`, as an operator runs it, against this stack's settings."""
    result = subprocess.run([str(stack.ROOT / "scripts" / "knowledge"), "index"], env=stack_.env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_a_question_is_answered_from_the_document_that_holds_it(
    own_stack: ProcessStack, model: GeminiLiveStandin, tool_call: Any
) -> None:
    tool_call("search_knowledge", query=RETURNS.question)
    session, lines, room = await ask(own_stack, model, until=lambda got: any(l.startswith("Sources: ") for l in got))
    record = await record_of(own_stack, room, lambda r: any(t.get("sources") for t in r["turns"]))

    assert session.setup is not None
    assert GREETING in session.turns[0].text and "Ada" in session.turns[0].text  # AGENT_GREETING
    offered = session.setup.function_names
    assert {"search_knowledge", FAST_TOOL, SLOW_TOOL} <= set(offered) and FORBIDDEN_TOOL not in offered
    assert "call search_knowledge first" in session.setup.system_instruction
    # The tool's result went back under the call's id, with the right passage and its source.
    [call] = session.tool_calls
    assert call.name == "search_knowledge" and call.error is None
    output = call.response["output"]  # type: ignore[index]
    assert output.split("\n\n")[1].startswith(f"[1] {RETURNS.citation}\n") and RETURNS.answer in output
    assert [r.id for r in session.tool_responses if r.matched] == [call.id]
    # The caller reads the answer and where it came from; the record keeps both.
    assert any(RETURNS.citation in line and line.startswith("According to") for line in lines), lines
    assert any(line.startswith(f"Sources: {RETURNS.citation}") for line in lines), lines
    answer = next(t for t in record["turns"] if t["role"] == "assistant" and t.get("sources"))
    assert answer["sources"][0] == RETURNS.citation and "According to" in answer["text"]
    assert record["tool_calls"][0]["name"] == "search_knowledge"


async def test_reindexing_picks_up_a_changed_document(
    own_stack: ProcessStack, model: GeminiLiveStandin, knowledge_dir: Path, tool_call: Any
) -> None:
    warranty = knowledge_dir / "warranty.md"
    warranty.write_text(warranty.read_text().replace("seven-year", "ten-year"))
    assert "indexed" in reindex(own_stack)
    assert "up to date" in reindex(own_stack)  # nothing changed since

    tool_call("search_knowledge", query=WARRANTY.question)
    session, _lines, _room = await ask(own_stack, model)
    output = session.tool_calls[0].response["output"]  # type: ignore[index]
    assert f"[1] {WARRANTY.citation}\nThe HP-200 heat pump carries a ten-year parts warranty" in output


async def test_an_empty_folder_means_no_search_tool(
    own_stack: ProcessStack, model: GeminiLiveStandin, knowledge_dir: Path
) -> None:
    aside = knowledge_dir.parent / "aside"
    shutil.move(knowledge_dir, aside)
    knowledge_dir.mkdir()
    try:
        reindex(own_stack)
        started = time.monotonic()
        async with Caller(own_stack.token_url, name="Ada") as caller:
            await caller.wait_until(lambda: caller.agent_audio.audible_seconds() > 0.5, 30, "the greeting's audio")
            setup = session_for(model, started).setup
        assert setup is not None
        assert "search_knowledge" not in setup.function_names and FAST_TOOL in setup.function_names
        assert "search_knowledge" not in setup.system_instruction
    finally:
        shutil.rmtree(knowledge_dir)
        shutil.move(aside, knowledge_dir)
        reindex(own_stack)


async def test_an_mcp_tool_answers_by_call_id(
    own_stack: ProcessStack, model: GeminiLiveStandin, mcp_server: McpStandin, tool_call: Any
) -> None:
    tool_call(FAST_TOOL, order_id="A-1017")
    session, lines, room = await ask(own_stack, model)
    record = await record_of(own_stack, room, lambda r: bool(r["tool_calls"]))

    [call] = session.tool_calls
    assert call.response == {"output": f"Order A-1017: {ORDER_STATUS}."}
    assert [r.id for r in session.tool_responses if r.matched] == [call.id]
    assert any(ORDER_STATUS in line for line in lines), lines
    assert mcp_server.calls_of(FAST_TOOL)[-1].arguments == {"order_id": "A-1017"}
    assert [(t["name"], t["is_error"]) for t in record["tool_calls"]] == [(FAST_TOOL, False)]
    assert not mcp_server.calls_of(FORBIDDEN_TOOL)


async def test_a_slow_mcp_tool_times_out_with_the_filler_then_an_apology(
    own_stack: ProcessStack, model: GeminiLiveStandin, mcp_server: McpStandin, tool_call: Any
) -> None:
    tool_call(SLOW_TOOL, month="2026-10")
    session, lines, room = await ask(own_stack, model, until=lambda got: APOLOGY in got)
    record = await record_of(own_stack, room, lambda r: bool(r["tool_calls"]))

    [call] = session.tool_calls
    assert call.error is None, "the model waited for an answer that never came"
    waited = (call.responded_at or 0) - call.issued_at
    assert SLOW_TIMEOUT_S <= waited < SLOW_TIMEOUT_S + 3, waited
    assert f"{SLOW_TOOL} did not answer within {SLOW_TIMEOUT_S:g} seconds" in call.response["error"]  # type: ignore[index]
    assert [r.id for r in session.tool_responses if r.matched] == [call.id]
    # The caller heard "One moment, please." while waiting, then the apology.
    assert FILLER_TEXT in lines and APOLOGY in lines, lines
    assert lines.index(FILLER_TEXT) < lines.index(APOLOGY)
    # The record notes it, and the server was told to stop.
    assert [(t["name"], t["is_error"]) for t in record["tool_calls"]] == [(SLOW_TOOL, True)]
    noted = [e["event"] for e in record["events"] if e.get("tool") == SLOW_TOOL]
    assert noted == ["tool_filler_played", "tool_timeout"]
    deadline = time.monotonic() + 10
    while mcp_server.calls_of(SLOW_TOOL)[-1].outcome == "running" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert mcp_server.calls_of(SLOW_TOOL)[-1].outcome == "cancelled"
