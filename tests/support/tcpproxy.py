"""A TCP proxy a test can cut: a network blip on one client's connections, on demand.

:class:`TcpProxy` listens on 127.0.0.1 (a free port) and forwards each connection to a
target (the hub's HTTP port). :meth:`TcpProxy.cut` aborts every live connection, both the
client's side and the target's side (a reset, as when a NAT or Wi-Fi drops the flow), and
keeps accepting new connections, so the client sees its sockets die and then reconnects
through the same proxy. A browser that loads the dashboard through the proxy has its
Socket.IO connection cut this way while its WebRTC media (UDP, straight to the worker) is
not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["TcpProxy"]

CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.accepted = 0  # connections accepted so far
        self.cuts = 0  # connections aborted by cut()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def live(self) -> int:
        """Connections open right now."""
        return len(self._links)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def cut(self) -> int:
        """Aborts every live connection (both sides); new ones are still accepted. Returns
        how many were cut."""
        links = list(self._links)
        for link in links:
            link.abort()
        self._links.difference_update(links)
        self.cuts += len(links)
        return len(links)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()  # the handlers see their links end and return
        handlers = list(self._handlers)
        if handlers:
            _, stuck = await asyncio.wait(handlers, timeout=2.0)
            for task in stuck:  # e.g. still connecting to the target
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.accepted += 1
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except (OSError, asyncio.CancelledError):
                writer.transport.abort()
                return
            link = _Link(writer, up_writer)
            self._links.add(link)
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            try:
                await asyncio.gather(*link.tasks)
            except asyncio.CancelledError:
                pass  # close(): asyncio's server callback must not see a cancelled handler
            finally:
                self._links.discard(link)
                for t in link.tasks:
                    t.cancel()
                await asyncio.gather(*link.tasks, return_exceptions=True)
                link.abort()
        finally:
            self._handlers.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copies one direction until EOF (then half-closes the other side) or an error."""
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    if writer.can_write_eof():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            writer.transport.abort()
