"""A team's MCP server, for tests: the `mcp` SDK's own server (`MCPServer`, formerly FastMCP).

It serves the same tools over both HTTP transports an operator may point `MCP_SERVERS` at:
streamable HTTP at ``http://127.0.0.1:PORT/mcp`` and HTTP+SSE at ``http://127.0.0.1:PORT2/sse``
(uvicorn, on a background thread). Every request must carry ``Authorization: Bearer
<token>`` (else HTTP 401), so a test also proves the agent sends the configured token.

Tools:

* ``find_order(order_id)``: answers at once with the order's status (``ORDER_STATUS``);
* ``monthly_report(month)``: sleeps ``slow_s`` seconds before answering: the slow one;
* ``delete_all_orders()``: never to be offered to a model (left off allow-lists).

Each call is kept in :attr:`McpStandin.calls` with how it ended: ``"answered"``, or
``"cancelled"`` when the client gave up (the SDK sends ``notifications/cancelled``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

#: What `find_order` says about an order (with the order's number in front).
ORDER_STATUS = "shipped on 20 November by parcel post, arriving on Friday"
#: The tools an allow-list may name, and the one it must not.
FAST_TOOL, SLOW_TOOL, FORBIDDEN_TOOL = "find_order", "monthly_report", "delete_all_orders"


@dataclass
class ToolCall:
    """A tool call the server received.

    Attributes:
        name / arguments: as called.
        started_at / ended_at: ``time.monotonic()``.
        outcome: ``"running"``, ``"answered"`` or ``"cancelled"``.
    """

    name: str
    arguments: dict[str, Any]
    started_at: float
    ended_at: float | None = None
    outcome: str = "running"


class _RequireBearer:
    """ASGI middleware: HTTP requests without the expected bearer token get 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != self.expected:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"bearer token required"})
            return
        await self.app(scope, receive, send)


class McpStandin:
    """The MCP server on two free ports of 127.0.0.1 (streamable HTTP and SSE).

    Args:
        token: the bearer token clients must send.
        slow_s: how long `monthly_report` takes, seconds.
        ports: (streamable HTTP port, SSE port).
    """

    def __init__(self, *, token: str, slow_s: float, ports: tuple[int, int]) -> None:
        self.token = token
        self.slow_s = slow_s
        self.ports = ports
        self.calls: list[ToolCall] = []
        self._lock = threading.Lock()
        self._servers: list[uvicorn.Server] = []
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.server = self._build()

    @property
    def streamable_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}/mcp"

    @property
    def sse_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[1]}/sse"

    def calls_of(self, name: str) -> list[ToolCall]:
        with self._lock:
            return [c for c in self.calls if c.name == name]

    def _build(self) -> MCPServer:
        server = MCPServer("orders", instructions="The shop's order system.")

        @server.tool()
        async def find_order(order_id: str) -> str:
            """Find an order by its number and say where it is.

            Args:
                order_id: the order number, as the customer reads it.
            """
            call = self._begin(FAST_TOOL, {"order_id": order_id})
            self._end(call, "answered")
            return f"Order {order_id}: {ORDER_STATUS}."

        @server.tool()
        async def monthly_report(month: str) -> str:
            """Compile the sales report of a month (slow).

            Args:
                month: the month, as YYYY-MM.
            """
            call = self._begin(SLOW_TOOL, {"month": month})
            try:
                await asyncio.sleep(self.slow_s)
            except BaseException:
                self._end(call, "cancelled")
                raise
            self._end(call, "answered")
            return f"Report for {month}: 1,234 orders."

        @server.tool()
        async def delete_all_orders() -> str:
            """Delete every order in the system."""
            self._end(self._begin(FORBIDDEN_TOOL, {}), "answered")
            return "All orders deleted."

        return server

    def _begin(self, name: str, arguments: dict[str, Any]) -> ToolCall:
        call = ToolCall(name, arguments, time.monotonic())
        with self._lock:
            self.calls.append(call)
        return call

    def _end(self, call: ToolCall, outcome: str) -> None:
        with self._lock:
            call.ended_at, call.outcome = time.monotonic(), outcome

    def start(self, timeout_s: float = 15.0) -> None:
        """Serve on a background thread; returns once both ports accept connections."""
        apps = [self.server.streamable_http_app(), self.server.sse_app()]
        for app, port in zip(apps, self.ports, strict=True):
            config = uvicorn.Config(_RequireBearer(app, self.token), host="127.0.0.1", port=port,
                                    log_level="warning", lifespan="on")
            self._servers.append(uvicorn.Server(config))
        self._thread = threading.Thread(target=self._run, name="mcp-standin", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not all(s.started for s in self._servers):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP stand-in did not start")
            time.sleep(0.05)

    def _run(self) -> None:
        async def serve_all() -> None:
            await asyncio.gather(*(s.serve() for s in self._servers))

        asyncio.run(serve_all())

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
