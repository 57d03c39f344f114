"""The supervisors' board (PROTOCOL.md §6 ``board_subscribe`` / ``board``).

A supervisor or admin subscribes; the acknowledgement carries the board now, and every
change after it — a call started, queued, taken, ended; an agent connected, away, busy —
sends the whole board again to every subscriber. Changes are coalesced (at most one
``board`` per :data:`COALESCE` seconds), so a burst of events costs one message.

The board shows this hub's live calls (with those other hubs mirror) and the agents
connected to this hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from hitl_sip.protocol.agent import (
    Board,
    BoardAgent,
    BoardCall,
    BoardMonitor,
    call_quality_now,
)
from hitl_sip.protocol.worker import CallState

if TYPE_CHECKING:
    from hitl_sip.hub.core import Hub
    from hitl_sip.hub.routing import Router

log = logging.getLogger(__name__)

COALESCE = 0.2  # seconds

Send = Callable[[str, Board], Awaitable[None]]  # subscriber agent id, the board


class BoardFeed:
    def __init__(self, hub: Hub, router: Router, send: Send,
                 monitors: Callable[[str], list[BoardMonitor]] = lambda call_id: []) -> None:
        self.hub = hub
        self.router = router
        self.send = send
        self.monitors = monitors  # the supervisors on a call (hitl_sip.hub.supervision)
        self.subscribers: set[str] = set()  # agent ids
        self._pending: asyncio.Task[None] | None = None

    def snapshot(self) -> Board:
        now = time.monotonic()
        calls = [
            BoardCall(
                call_id=c.call_id, thread_id=c.thread_id, state=c.state.value,
                caller=c.caller, called=c.called, trunk=c.trunk,
                received_at=c.received_at, worker_id=c.worker_id, agent_id=c.agent_id,
                metadata=c.metadata,
                waiting_sec=(round(now - c.queued_at, 1) if c.state is CallState.QUEUED
                             and c.queued_at is not None else None),
                queue=c.handoff.queue if c.handoff else None,
                monitors=self.monitors(c.call_id),
                quality=call_quality_now(c.quality))
            for c in self.hub.registry.calls.values() if c.state is not CallState.ENDED]
        agents = [BoardAgent(**a.model().model_dump())
                  for a in self.router.agents.values() if a.sids]
        return Board(calls=calls, agents=agents)

    def subscribe(self, agent_id: str) -> Board:
        self.subscribers.add(agent_id)
        return self.snapshot()

    def unsubscribe(self, agent_id: str) -> None:
        self.subscribers.discard(agent_id)

    def changed(self) -> None:
        """Something on the board changed: send it soon (once for a burst)."""
        if not self.subscribers or (self._pending is not None and not self._pending.done()):
            return
        self._pending = asyncio.get_running_loop().create_task(self._send_soon())

    async def _send_soon(self) -> None:
        await asyncio.sleep(COALESCE)
        board = self.snapshot()
        for agent_id in list(self.subscribers):
            try:
                await self.send(agent_id, board)
            except Exception:  # one subscriber's socket must not stop the others
                log.exception("board not sent to %s", agent_id)

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
