"""A slow network between a client and a server: a TCP relay that delays every byte.

The agent reaches the Gemini Live stand-in through it (TLS passes through untouched), so
a test can give the model link a long round trip at any moment, as a congested or distant
network would. Each direction is delayed by `delay_s` (the round trip grows by twice that);
bytes keep their order.

    with SlowLink(target_port=standin.port) as link:   # serves 127.0.0.1:link.port
        link.delay_s = 0.4
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable


class SlowLink:
    """A TCP relay on 127.0.0.1 to `target_host:target_port` that delays each direction.

    Args:
        target_port: the server's port.
        target_host: the server's address.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        #: One-way delay added in each direction, seconds; change it at any time.
        self.delay_s = 0.0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen on a free port (`port`) in a background thread."""
        started = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._relay, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="slow-link", daemon=True)
        self._thread.start()
        started.wait(10)

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> SlowLink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward in order, each chunk `delay_s` after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((time.monotonic() + self.delay_s, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            sender.cancel()
            writer.close()
        finally:
            with contextlib.suppress(Exception):
                await _quietly(sender)


async def _quietly(awaitable: Awaitable[object]) -> None:
    with contextlib.suppress(BaseException):
        await awaitable
