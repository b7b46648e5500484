"""MCP tools over real HTTP against the `mcp` SDK's own server, and the settings that name them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import ToolError, llm
from pydantic import ValidationError

from tests.ports import free_port
from tests.standins.mcp_server import FAST_TOOL, FORBIDDEN_TOOL, ORDER_STATUS, SLOW_TOOL, McpStandin
from voice_agent import mcp_tools
from voice_agent.operator_tools import check_at_start
from voice_agent.settings import AgentSettings, McpServerConfig
from voice_agent.tool_guard import ToolGuard

TOKEN = "orders-token-" + "x" * 20
#: Connecting may take a while on a busy test machine; a refused connection still fails at once.
CONNECT_TIMEOUT_S = 15.0
BASE_ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "APIkey",
    "LIVEKIT_API_SECRET": "s" * 40,
    "AGENT_NAME": "voice-agent",
}


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpStandin]:
    server = McpStandin(token=TOKEN, slow_s=30, ports=(free_port(), free_port()))
    server.start()
    yield server
    server.stop()


def config(url: str, **overrides: Any) -> McpServerConfig:
    fields = {"name": "orders", "url": url, "bearer_token": TOKEN, "allowed_tools": [FAST_TOOL, SLOW_TOOL],
              "timeout_s": 1.0, **overrides}
    return McpServerConfig.model_validate(fields)


class Events:
    """A ToolGuard for tests: records its events and filler plays; the greeting is over."""

    def __init__(self, filler_after_s: float = 0.3) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.fillers = 0
        self.ready = asyncio.Event()
        self.ready.set()
        self.guard = ToolGuard(ready=self.ready, play_filler=self._filler, filler_after_s=filler_after_s,
                               on_event=lambda name, fields: self.events.append((name, fields)))

    def _filler(self) -> None:
        self.fillers += 1


def names(tools: list[llm.Tool]) -> list[str]:
    return [llm.tool_context.get_raw_function_info(t).name for t in tools]


@pytest.mark.parametrize("transport", ["streamable_http", "sse"])
async def test_allowed_tools_answer_and_the_others_are_never_offered(mcp_server: McpStandin, transport: str) -> None:
    url = mcp_server.streamable_url if transport == "streamable_http" else mcp_server.sse_url
    connections = await mcp_tools.connect([config(url)], timeout_s=CONNECT_TIMEOUT_S)
    try:
        assert connections.failures == [] and connections.servers[0].config.transport_type == transport
        tools = connections.function_tools(Events(filler_after_s=30).guard)
        assert sorted(names(tools)) == sorted([FAST_TOOL, SLOW_TOOL])  # not FORBIDDEN_TOOL
        schema = llm.tool_context.get_raw_function_info(tools[names(tools).index(FAST_TOOL)]).raw_schema
        assert schema["parameters"]["required"] == ["order_id"]
        answer = await tools[names(tools).index(FAST_TOOL)]({"order_id": "A-1017"})
        assert answer == f"Order A-1017: {ORDER_STATUS}."
    finally:
        await connections.aclose()
    assert not mcp_server.calls_of(FORBIDDEN_TOOL)


async def test_a_slow_tool_gets_the_filler_then_times_out_and_is_cancelled(mcp_server: McpStandin) -> None:
    events = Events(filler_after_s=0.3)
    connections = await mcp_tools.connect([config(mcp_server.streamable_url, timeout_s=1.5)], timeout_s=CONNECT_TIMEOUT_S)
    try:
        [slow] = [t for t in connections.function_tools(events.guard) if names([t]) == [SLOW_TOOL]]
        started = time.monotonic()
        with pytest.raises(ToolError, match=rf"{SLOW_TOOL} did not answer within 1.5 seconds. Apologise"):
            await slow({"month": "2026-10"})
        assert 1.5 <= time.monotonic() - started < 5
        assert events.fillers == 1
        assert [name for name, _ in events.events] == ["tool_filler_played", "tool_timeout"]
        # The SDK cancelled the request: the server stopped working on it.
        deadline = time.monotonic() + 10
        while mcp_server.calls_of(SLOW_TOOL)[-1].outcome == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert mcp_server.calls_of(SLOW_TOOL)[-1].outcome == "cancelled"
    finally:
        await connections.aclose()


async def test_a_tool_waits_for_the_greeting(mcp_server: McpStandin) -> None:
    events = Events(filler_after_s=30)
    events.ready.clear()
    connections = await mcp_tools.connect([config(mcp_server.streamable_url)], timeout_s=CONNECT_TIMEOUT_S)
    try:
        [fast] = [t for t in connections.function_tools(events.guard) if names([t]) == [FAST_TOOL]]
        before = len(mcp_server.calls_of(FAST_TOOL))
        call = asyncio.ensure_future(fast({"order_id": "B-2"}))
        await asyncio.sleep(0.5)
        assert not call.done() and len(mcp_server.calls_of(FAST_TOOL)) == before
        events.ready.set()
        assert "B-2" in await asyncio.wait_for(call, 10)
    finally:
        await connections.aclose()


async def test_servers_that_cannot_be_used_are_left_out_at_once(mcp_server: McpStandin) -> None:
    started = time.monotonic()
    connections = await mcp_tools.connect(
        [config(mcp_server.streamable_url, name="wrong_token", bearer_token="nope"),
         config(f"http://127.0.0.1:{free_port()}/mcp", name="down"),
         config(mcp_server.sse_url, name="orders_sse", allowed_tools=[FAST_TOOL, "no_such_tool"])],
        timeout_s=CONNECT_TIMEOUT_S,
    )
    try:
        assert time.monotonic() - started < CONNECT_TIMEOUT_S
        assert [name for name, _reason in connections.failures] == ["wrong_token", "down"]
        assert "ConnectError" in dict(connections.failures)["down"]
        assert connections.missing_tools == [("orders_sse", "no_such_tool")]
        assert names(connections.function_tools(Events().guard, taken=["get_current_time"])) == [FAST_TOOL]
        # Two servers offering one name: the model sees it once.
        assert names(connections.function_tools(Events().guard, taken=[FAST_TOOL])) == []
    finally:
        await connections.aclose()


def test_mcp_servers_setting_is_a_json_list_checked_field_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MCP_SERVERS", json.dumps([
        {"name": "crm", "url": "https://crm.example.org/mcp", "bearer_token": "crm-secret", "allowed_tools": ["a"]},
        {"name": "legacy", "url": "http://10.0.0.5:8000/sse", "headers": {"X-Api-Key": "k"}, "allowed_tools": ["b"]},
    ]))
    settings = AgentSettings()
    crm, legacy = settings.mcp_servers
    assert (crm.transport_type, legacy.transport_type) == ("streamable_http", "sse")
    assert crm.request_headers() == {"Authorization": "Bearer crm-secret"}
    assert legacy.request_headers() == {"X-Api-Key": "k"}
    assert "crm-secret" not in repr(settings)

    monkeypatch.setenv("MCP_SERVERS", '[{"name": "crm", "url": "ftp://x", "allowed_tools": []}, {"name": "crm"}]')
    with pytest.raises(ValidationError, match="server names must be unique"):
        AgentSettings()
    monkeypatch.setenv("MCP_SERVERS", '[{"name": "crm", "url": "ftp://x", "allowed_tools": []}]')
    with pytest.raises(ValidationError) as error:
        AgentSettings()
    assert {e["loc"] for e in error.value.errors()} == {("MCP_SERVERS", 0, "url"), ("MCP_SERVERS", 0, "allowed_tools")}
    monkeypatch.setenv("MCP_SERVERS", "[{name: crm}]")
    with pytest.raises(ValidationError, match="not a JSON list of servers"):
        AgentSettings()
    monkeypatch.setenv("MCP_SERVERS", "")
    assert AgentSettings().mcp_servers == []


def test_the_worker_start_warns_about_each_problem_and_goes_on(
    mcp_server: McpStandin, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KNOWLEDGE_DIR", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("KNOWLEDGE_INDEX_PATH", str(tmp_path / "index.sqlite"))
    monkeypatch.setenv("MCP_CONNECT_TIMEOUT_S", str(CONNECT_TIMEOUT_S))
    monkeypatch.setenv("MCP_SERVERS", json.dumps([
        {"name": "orders", "url": mcp_server.streamable_url, "bearer_token": TOKEN, "allowed_tools": [FAST_TOOL, "refund"]},
        {"name": "down", "url": f"http://127.0.0.1:{free_port()}/mcp", "allowed_tools": ["x"]},
    ]))
    notes, warnings = check_at_start(AgentSettings())
    assert notes == []
    assert len(warnings) == 3, warnings
    assert warnings[0] == f"KNOWLEDGE_DIR: no such folder ({tmp_path / 'no-such-folder'}): no search_knowledge tool"
    assert warnings[1].startswith("MCP_SERVERS: down is unreachable (ConnectError")
    assert warnings[2] == "MCP_SERVERS: orders does not offer the allowed tool refund"

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "faq.md").write_text("# Opening hours\nWe open at nine.\n")
    monkeypatch.setenv("KNOWLEDGE_DIR", str(tmp_path / "docs"))
    monkeypatch.setenv("MCP_SERVERS", "")
    notes, warnings = check_at_start(AgentSettings())
    assert warnings == [] and notes[0].startswith("knowledge: indexed 1 passage(s) from 1 file(s)")
    notes, warnings = check_at_start(AgentSettings())  # unchanged: not indexed again
    assert warnings == [] and notes == [f"knowledge: {tmp_path / 'docs'} unchanged, 1 passage(s) indexed"]
