"""Tools from the operator's MCP servers (`MCP_SERVERS`), offered to the model next to ours.

Transport and protocol are livekit-agents' (`livekit.agents.llm.mcp.MCPServerHTTP`, over
the `mcp` SDK): streamable HTTP or HTTP+SSE, with a bearer token or other headers. What
this module adds, per call:

* connect to every server at the call's start, in parallel, each within
  `MCP_CONNECT_TIMEOUT_S`; a server that does not answer is left out of this call (a
  warning, and a `mcp_unavailable` event in the call record), the call goes on;
* offer only the tools named in the server's `allowed_tools` (the others are never
  declared to the model) and never two tools of the same name;
* run each tool call through `ToolGuard` (greeting guard, filler, the server's
  `timeout_s`, errors as error results), so a slow or failing server never hangs a call;
* close the connections when the call ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import llm

from .settings import McpServerConfig
from .tool_guard import ToolGuard

logger = logging.getLogger("voice_agent.mcp")

#: How long closing one server's connection may take at the end of a call, seconds.
CLOSE_TIMEOUT_S = 3.0


@dataclass
class ConnectedServer:
    """One MCP server of a call, connected, with the allowed tools it offers."""

    config: McpServerConfig
    server: Any  # livekit.agents.llm.mcp.MCPServerHTTP
    tools: list[Any]  # its RawFunctionTools, filtered by the allow-list

    @property
    def tool_names(self) -> list[str]:
        return [llm.tool_context.get_raw_function_info(t).name for t in self.tools]


@dataclass
class McpConnections:
    """The MCP servers of one call: the ones that answered and why the others did not.

    Attributes:
        servers: connected servers, in `MCP_SERVERS` order.
        failures: `(server name, reason)` for each server left out of this call.
        missing_tools: `(server name, tool)` for allowed tools the server does not offer.
    """

    servers: list[ConnectedServer] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    missing_tools: list[tuple[str, str]] = field(default_factory=list)

    def function_tools(self, guard: ToolGuard, *, taken: Sequence[str] = ()) -> list[llm.Tool]:
        """The servers' allowed tools as tools for the agent, each run through `guard`.

        Args:
            taken: names already used by other tools; an MCP tool of the same name is
                skipped (with a warning), as is a second MCP tool of one name.
        """
        names = set(taken)
        tools: list[llm.Tool] = []
        for connected in self.servers:
            for tool in connected.tools:
                info = llm.tool_context.get_raw_function_info(tool)
                if info.name in names:
                    logger.warning("MCP server %s: tool %s skipped: another tool has that name",
                                   connected.config.name, info.name)
                    continue
                names.add(info.name)
                tools.append(_guarded(tool, info, guard, connected.config))
        return tools

    async def aclose(self) -> None:
        """Close every connection (each within `CLOSE_TIMEOUT_S`)."""
        await asyncio.gather(*(_close(c) for c in self.servers), return_exceptions=True)
        self.servers = []


async def connect(configs: Sequence[McpServerConfig], *, timeout_s: float) -> McpConnections:
    """Connect to every server in parallel and list its allowed tools.

    Never raises for a server's fault: a server that refuses, fails or takes longer than
    `timeout_s` seconds is reported in `failures`.
    """
    results = await asyncio.gather(*(_connect_one(c, timeout_s) for c in configs))
    connections = McpConnections()
    for config, result in zip(configs, results, strict=True):
        if isinstance(result, str):
            connections.failures.append((config.name, result))
            continue
        connections.servers.append(result)
        offered = set(result.tool_names)
        connections.missing_tools += [(config.name, t) for t in config.allowed_tools if t not in offered]
    return connections


async def _connect_one(config: McpServerConfig, timeout_s: float) -> ConnectedServer | str:
    """The connected server, or a one-line reason why it could not be used."""
    from livekit.agents.llm.mcp import MCPServerHTTP

    server = MCPServerHTTP(
        url=str(config.url),
        transport_type=config.transport_type,
        allowed_tools=list(config.allowed_tools),
        headers=config.request_headers(),
        timeout=timeout_s,
        # the per-request read timeout: a backstop behind ToolGuard's own timeout
        client_session_timeout_seconds=config.timeout_s + timeout_s,
        tool_result_resolver=text_result,
    )
    try:
        await asyncio.wait_for(server.initialize(), timeout_s)
        tools = await asyncio.wait_for(server.list_tools(), timeout_s)
    except TimeoutError:
        await _close_quietly(server)
        return f"no answer within {timeout_s:g} s"
    except Exception as exc:  # httpx, MCP and OS errors: the server is unusable for this call
        await _close_quietly(server)
        return _reason(exc)
    return ConnectedServer(config, server, list(tools))


def text_result(context: Any) -> str:
    """A tool's MCP result as the model reads it: its text parts, one per line (other parts,
    such as images, as their JSON). `context` is livekit-agents' `MCPToolResultContext`."""
    parts = [
        part.text if getattr(part, "type", None) == "text" else part.model_dump_json(by_alias=True, exclude_none=True)
        for part in context.result.content
    ]
    if not parts and context.result.structured_content is not None:
        return json.dumps(context.result.structured_content, ensure_ascii=False)
    return "\n".join(parts) if parts else f"{context.tool_name} returned nothing."


def _guarded(tool: Any, info: Any, guard: ToolGuard, config: McpServerConfig) -> llm.Tool:
    """The MCP tool with the same schema, its calls run through `guard` within the server's timeout."""

    async def call(raw_arguments: dict[str, Any]) -> Any:
        start: Callable[[], Awaitable[Any]] = lambda: tool(raw_arguments)  # noqa: E731
        return await guard.run(info.name, start, timeout_s=config.timeout_s)

    return llm.function_tool(call, raw_schema=info.raw_schema)


async def _close(connected: ConnectedServer) -> None:
    await _close_quietly(connected.server)


async def _close_quietly(server: Any) -> None:
    try:
        await asyncio.wait_for(server.aclose(), CLOSE_TIMEOUT_S)
    except BaseException as exc:  # noqa: BLE001 - a dead connection may fail to close in many ways
        if isinstance(exc, asyncio.CancelledError) and asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise
        logger.debug("closing an MCP connection: %r", exc)


def _reason(exc: BaseException) -> str:
    """One line for an exception, unwrapping anyio's exception groups (the SDK's task groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200] if text != type(exc).__name__ else text
