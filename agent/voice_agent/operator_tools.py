"""The operator's own knowledge and MCP tools, set up for one call.

`open_for_call` runs at the start of a call, next to the room claim: it opens the
knowledge index and connects to the MCP servers (each within `MCP_CONNECT_TIMEOUT_S`).
`CallTools.install` then gives the agent the tools, before the session starts (Gemini
Live takes its tool declarations at setup): `search_knowledge` when the index holds
passages, and each MCP server's allowed tools. All of them run through one `ToolGuard`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import Agent, AgentSession, llm
from voice_calls.records import LIFECYCLE, SOURCES

from . import mcp_tools
from .knowledge import KnowledgeBase
from .knowledge_tool import KNOWLEDGE_INSTRUCTIONS, ReplySources, search_tool
from .settings import AgentSettings
from .tool_guard import ToolGuard

logger = logging.getLogger("voice_agent")

#: `(kind, data)` sink for the call record: `CallRecorder.event`.
RecordEvent = Callable[[str, dict[str, Any]], None]


@dataclass
class CallTools:
    """The knowledge base and MCP connections of one call.

    Attributes:
        knowledge: the open index, or None (no folder, no passages, no index yet).
        mcp: the MCP servers that answered, and why the others did not.
        results: passages per search (`KNOWLEDGE_RESULTS`).
        filler_after_s: the filler plays for a tool still running after this long.
    """

    knowledge: KnowledgeBase | None
    mcp: mcp_tools.McpConnections
    results: int
    filler_after_s: float
    names: list[str] = field(default_factory=list)

    @property
    def instructions(self) -> str:
        """What to add to the agent's instructions for these tools ("" when none)."""
        return f" {KNOWLEDGE_INSTRUCTIONS}" if self.knowledge is not None else ""

    async def install(
        self,
        assistant: Agent,
        session: AgentSession,
        *,
        ready: Any,
        tell: Callable[[str], Awaitable[None]],
        play_filler: Callable[[], None],
        record: RecordEvent | None = None,
    ) -> None:
        """Add the tools to `assistant` (before `session.start`) and follow `session` for sources.

        Args:
            ready: the greeting guard's event (`Assistant.greeting_done`).
            tell: writes a line in the caller's transcript.
            play_filler: plays the filler clip.
            record: the call record's event sink, if the call is recorded.
        """
        event: RecordEvent = record or (lambda _kind, _data: None)
        for server, reason in self.mcp.failures:
            event(LIFECYCLE, {"event": "mcp_unavailable", "server": server, "reason": reason})
        guard = ToolGuard(
            ready=ready,
            play_filler=play_filler,
            filler_after_s=self.filler_after_s,
            on_event=lambda name, fields: event(LIFECYCLE, {"event": name, **fields}),
        )
        tools: list[llm.Tool] = []
        if self.knowledge is not None:
            sources = ReplySources(tell=tell, record=lambda data: event(SOURCES, data))
            sources.attach(session)
            tools.append(search_tool(self.knowledge, guard, sources, results=self.results))
        taken = [_tool_name(t) for t in [*assistant.tools, *tools]]
        tools += self.mcp.function_tools(guard, taken=taken)
        self.names = [_tool_name(t) for t in tools]
        if tools:
            await assistant.update_tools([*assistant.tools, *tools])
            logger.info("operator tools for this call: %s", ", ".join(self.names))

    async def aclose(self, *_args: Any) -> None:
        """Close the MCP connections and the index (a job shutdown callback)."""
        await self.mcp.aclose()
        if self.knowledge is not None:
            self.knowledge.close()


async def open_for_call(settings: AgentSettings) -> CallTools:
    """Open the knowledge index and connect the MCP servers for a call; never raises for
    a missing index or an unreachable server (those are logged and left out)."""
    knowledge = KnowledgeBase.open(settings.knowledge_index_path) if settings.knowledge_dir else None
    mcp = await mcp_tools.connect(settings.mcp_servers, timeout_s=settings.mcp_connect_timeout_s)
    for server, reason in mcp.failures:
        logger.warning("MCP server %s is unavailable for this call: %s", server, reason)
    for server, tool in mcp.missing_tools:
        logger.warning("MCP server %s does not offer the allowed tool %s", server, tool)
    return CallTools(knowledge, mcp, settings.knowledge_results, settings.tool_filler_after_s)


def _tool_name(tool: Any) -> str:
    if llm.tool_context.is_raw_function_tool(tool):
        return llm.tool_context.get_raw_function_info(tool).name
    if llm.tool_context.is_function_tool(tool):
        return llm.tool_context.get_function_info(tool).name
    return getattr(tool, "id", "")


def call_modules(settings: AgentSettings) -> tuple[str, ...]:
    """Modules a call imports lazily for these settings, for the worker's forkserver to import
    once (`preload_modules`): the MCP SDK takes seconds of CPU to import, which inside a call's
    process blocks its event loop at the call's start."""
    return ("livekit.agents.llm.mcp",) if settings.mcp_servers else ()


def preload(settings: AgentSettings) -> None:
    """Import what `check_at_start` will need (the MCP SDK, the document readers), in the
    calling thread: Python's imports must not race between threads, and `check_at_start`
    runs beside the worker's own start."""
    if settings.mcp_servers:
        import livekit.agents.llm.mcp  # noqa: F401
    if settings.knowledge_dir is not None:
        from .documents import load_readers

        load_readers()


def check_at_start(settings: AgentSettings) -> tuple[list[str], list[str]]:
    """The worker's start: index the knowledge folder if it changed, and try each MCP server.

    Nothing here is fatal: a missing folder or an unreachable server only costs its tools.

    Returns:
        `(notes, warnings)`: one line each (what was indexed; each problem found).
    """
    import asyncio

    from .knowledge import ensure_index

    notes: list[str] = []
    warnings: list[str] = []
    if settings.knowledge_dir is not None:
        try:
            report = ensure_index(settings.knowledge_dir, settings.knowledge_index_path)
        except OSError as exc:
            where = exc.filename or settings.knowledge_dir
            warnings.append(f"KNOWLEDGE_DIR: {exc.strerror or exc} ({where}): no search_knowledge tool")
        else:
            warnings += [f"KNOWLEDGE_DIR: skipped {source}: {reason}" for source, reason in report.skipped]
            if report.rebuilt:
                notes.append(f"knowledge: indexed {report.passages} passage(s) from {report.files} file(s) "
                             f"of {settings.knowledge_dir} in {report.seconds:.1f} s")
            else:
                notes.append(f"knowledge: {settings.knowledge_dir} unchanged, {report.passages} passage(s) indexed")
            if not report.passages:
                warnings.append(f"KNOWLEDGE_DIR: no readable document in {settings.knowledge_dir}: "
                                "no search_knowledge tool")

    async def probe() -> mcp_tools.McpConnections:
        connections = await mcp_tools.connect(settings.mcp_servers, timeout_s=settings.mcp_connect_timeout_s)
        await connections.aclose()
        return connections

    if settings.mcp_servers:
        connections = asyncio.run(probe())
        warnings += [f"MCP_SERVERS: {name} is unreachable ({reason}); calls will try it again"
                     for name, reason in connections.failures]
        warnings += [f"MCP_SERVERS: {name} does not offer the allowed tool {tool}"
                     for name, tool in connections.missing_tools]
    return notes, warnings
