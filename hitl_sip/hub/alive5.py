"""The alive5 connector: one python-socketio client per chat thread (PROTOCOL.md §4).

Work in progress (issue 6): :class:`ThreadLink` speaks the ``alive5_voice_agent`` profile
for one thread — handshake query, ``init_voice_agent`` → ack gating, ``post_message`` →
``post_message_ack`` one at a time (so each ack belongs to the message in flight),
``save_crm_data``, ``end_voice_chat``. Every name is a field of :class:`Alive5Profile`.
The durable outbox that drives it (order, retries, restart) comes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlencode

import socketio

from hitl_sip.config import Alive5Config

log = logging.getLogger(__name__)


class Alive5Error(Exception):
    """alive5 unreachable, refusing, or not acknowledging in time (always retryable)."""


# The profile is the configuration section: every name is a key of [alive5].
Alive5Profile = Alive5Config


class ThreadLink:
    """One thread's connection to alive5."""

    def __init__(self, profile: Alive5Profile, thread_id: str, crm_id: str) -> None:
        self.profile = profile
        self.thread_id = thread_id
        self.crm_id = crm_id
        self.voice_agent_id = ""
        self.sio = socketio.AsyncClient(reconnection=False)
        self._acks: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        p = profile
        for event in (p.event_init_ack, p.event_post_ack, p.event_crm_ack):
            self.sio.on(event, self._ack_handler(event))

    def _ack_handler(self, event: str) -> Any:
        async def on_ack(data: Any = None) -> None:
            self._acks.put_nowait((event, data if isinstance(data, dict) else {}))
        return on_ack

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and bool(self.voice_agent_id)

    async def _await_ack(self, event: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.profile.ack_timeout):
                while True:
                    kind, data = await self._acks.get()
                    if kind == event:
                        return data
        except TimeoutError as e:
            raise Alive5Error(f"no {event} within {self.profile.ack_timeout:.0f}s") from e

    async def open(self) -> None:
        """Connect and initialise; posts may follow once this returns."""
        p = self.profile
        query = {p.query_type: p.query_type_value, p.query_api_key: p.api_key,
                 p.query_thread: self.thread_id, p.query_crm: self.crm_id}
        if p.channel_id:
            query[p.query_channel] = p.channel_id
        try:
            await self.sio.connect(f"{p.url}?{urlencode(query)}", socketio_path=p.path,
                                   transports=["websocket"], wait_timeout=p.ack_timeout)
        except (socketio.exceptions.ConnectionError, OSError) as e:
            await self.close()
            raise Alive5Error(f"cannot connect to {p.url}: {e}") from e
        await self.sio.emit(p.event_init, {"thread_id": self.thread_id, "crm_id": self.crm_id,
                                           "channel_id": p.channel_id})
        ack = await self._await_ack(p.event_init_ack)
        self.voice_agent_id = str(ack.get("voice_agent_id") or "")
        if not self.voice_agent_id:
            raise Alive5Error(f"{p.event_init_ack} without a voice_agent_id: {ack}")

    async def post(self, role: str, text: str, key: str) -> str:
        """Post one turn and wait for its acknowledgement; returns alive5's message id."""
        p = self.profile
        payload: dict[str, Any] = {"thread_id": self.thread_id, "crm_id": self.crm_id,
                                   p.field_content: text, p.field_type: p.message_type,
                                   p.field_key: key}
        if role != "caller":  # the bot's and the human agent's turns carry the voice agent
            payload[p.field_voice_agent] = self.voice_agent_id
        if p.field_sender:
            payload[p.field_sender] = {"caller": p.sender_caller, "bot": p.sender_bot,
                                       "agent": p.sender_agent}.get(role, role)
        try:
            await self.sio.emit(p.event_post, payload)
        except socketio.exceptions.SocketIOError as e:
            raise Alive5Error(f"post failed: {e}") from e
        ack = await self._await_ack(p.event_post_ack)
        return str(ack.get("message_id") or "")

    async def save_crm(self, key: str, value: Any) -> None:
        p = self.profile
        await self.sio.emit(p.event_crm, {"crm_id": self.crm_id, "key": key, "value": value})
        await self._await_ack(p.event_crm_ack)

    async def end(self, end_by: str, text: str = "") -> None:
        await self.sio.emit(self.profile.event_end, {
            "thread_id": self.thread_id, "voice_agent_id": self.voice_agent_id,
            "end_by": end_by, self.profile.field_content: text})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


class Outbox:
    """Delivers stored turns to alive5: per thread, in order, until acknowledged.

    Turns are in the thread store (``delivery = 'pending'``) before anything is sent, so a
    hub restart resumes them (:meth:`resume`); each is posted with its stable key
    (``<callId>:<seq>``) and marked delivered on its ack, so a resend after a lost ack is
    recognisable. A thread's worker retries with backoff (0.5 s doubling to
    ``max_backoff``) and never touches the call path: the hub only stores and wakes it.
    """

    def __init__(self, store: Any, profile: Alive5Profile, *, max_backoff: float | None = None,
                 idle_close: float = 60.0, crm_id: Any = None) -> None:
        self.store = store
        self.profile = profile
        self.max_backoff = profile.max_backoff if max_backoff is None else max_backoff
        self.idle_close = idle_close
        self.crm_id = crm_id or (lambda thread_id: "")
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._crm: dict[str, list[tuple[str, Any]]] = {}
        self.failures = 0

    def set_crm(self, thread_id: str, items: list[tuple[str, Any]]) -> None:
        """Caller details for the thread, saved (``save_crm_data``) after each init."""
        self._crm[thread_id] = [(k, v) for k, v in items if v]

    def notify(self, thread_id: str) -> None:
        """Something new to deliver for ``thread_id`` (a turn or the end was stored)."""
        self._wake.setdefault(thread_id, asyncio.Event()).set()
        task = self._workers.get(thread_id)
        if task is None or task.done():
            self._workers[thread_id] = asyncio.get_running_loop().create_task(
                self._run(thread_id), name=f"alive5-{thread_id}")

    async def resume(self) -> int:
        """After a restart: start a worker for every thread with undelivered items."""
        threads = await self.store.pending_threads()
        for thread_id in threads:
            self.notify(thread_id)
        return len(threads)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)

    async def _run(self, thread_id: str) -> None:
        wake = self._wake.setdefault(thread_id, asyncio.Event())
        link: ThreadLink | None = None
        backoff = 0.5
        try:
            while True:
                wake.clear()
                turns = await self.store.pending(thread_id)
                end = await self.store.pending_end(thread_id)
                if not turns and end is None:
                    try:
                        async with asyncio.timeout(self.idle_close):
                            await wake.wait()
                    except TimeoutError:
                        return
                    continue
                try:
                    if link is None or not link.connected:
                        if link is not None:
                            await link.close()
                        link = ThreadLink(self.profile, thread_id, self.crm_id(thread_id))
                        await link.open()
                        for key, value in self._crm.get(thread_id, []):
                            await link.save_crm(key, value)
                    for turn in turns:
                        message_id = await link.post(turn.role, turn.text, turn.key)
                        await self.store.mark_delivered(turn.key, message_id)
                    if end is not None and not turns:
                        await link.end(end[0], end[1])
                        await self.store.mark_end_delivered(thread_id)
                        self._crm.pop(thread_id, None)
                        return
                    backoff = 0.5
                except Alive5Error as e:
                    self.failures += 1
                    log.warning("alive5 delivery for thread %s failed (%s): retrying in "
                                "%.1fs", thread_id, e, backoff)
                    if turns:
                        await self.store.mark_failed_attempt(turns[0].key, str(e))
                    if link is not None:
                        await link.close()
                        link = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            # forget the thread first (a long-lived hub keeps nothing per past call), so a
            # turn stored while the link closes starts a new worker instead of being missed
            if self._workers.get(thread_id) is asyncio.current_task():
                del self._workers[thread_id]
                self._wake.pop(thread_id, None)
            if link is not None:
                await link.close()
