"""The worker's connection to the hub: a websocket carrying JSON messages both ways.

Outgoing messages queue in a bounded buffer while the hub is unreachable and are sent in
order after the reconnect; the newest ``hello`` is always re-sent first so the hub's registry
is rebuilt after a hub restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class HubLink:
    def __init__(
        self,
        url: str,
        token: str,
        hello: Callable[[], dict[str, Any]],
        on_message: Callable[[dict[str, Any]], None] | None = None,
        max_backlog: int = 2000,
    ) -> None:
        self.url = url
        self.token = token
        self.hello = hello
        self.on_message = on_message
        self._backlog: deque[dict[str, Any]] = deque(maxlen=max_backlog)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._drained = asyncio.Event()
        self.dropped = 0

    def send(self, message: dict[str, Any]) -> None:
        self._drained.clear()
        if len(self._backlog) == self._backlog.maxlen:
            self.dropped += 1
        self._backlog.append(message)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hub-link")

    async def close(self, flush_timeout: float = 2.0) -> None:
        if self._task is None:
            return
        if self.connected.is_set() and self._backlog:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), flush_timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        backoff = 0.2
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.ws_connect(self.url, headers=headers, heartbeat=10) as ws:
                        backoff = 0.2
                        await ws.send_json(self.hello())
                        self.connected.set()
                        log.info("connected to the hub at %s", self.url)
                        reader = asyncio.create_task(self._read(ws))
                        try:
                            await self._write(ws, reader)
                        finally:
                            reader.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await reader
                except (aiohttp.ClientError, OSError, ConnectionError) as e:
                    log.warning("hub unreachable (%s); retrying in %.1fs", e, backoff)
                finally:
                    self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None]) -> None:
        while not reader.done():
            while self._backlog:
                await ws.send_json(self._backlog[0])
                self._backlog.popleft()
            self._drained.set()
            self._wake.clear()
            wake = asyncio.create_task(self._wake.wait())
            done, _ = await asyncio.wait({wake, reader}, return_when=asyncio.FIRST_COMPLETED)
            if wake not in done:
                wake.cancel()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                log.warning("ignored a malformed message from the hub")
                continue
            if self.on_message is not None and isinstance(data, dict):
                self.on_message(data)
