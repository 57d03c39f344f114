"""The alive5 connector: one python-socketio client per chat thread (PROTOCOL.md §4).

:class:`ThreadLink` speaks the ``alive5_voice_agent`` profile for one thread — handshake
query, ``init_voice_agent`` → ack gating, ``post_message`` → ``post_message_ack`` one at a
time (so each ack belongs to the message in flight), ``save_crm_data`` →
``save_crm_data_ack``, ``end_voice_chat`` → ``end_voice_chat_ack``. Every name is a field of
:class:`Alive5Profile`. Every emit and every wait for an ack fails as :class:`Alive5Error`.

:class:`Outbox` drives the links from the thread store: order, retries, restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import Annotated, Any
from urllib.parse import urlencode

import socketio
from pydantic import BaseModel, BeforeValidator, ConfigDict

from hitl_sip.config import Alive5Config
from hitl_sip.hub.threads import ThreadStore, Turn
from hitl_sip.supervise import RestartCounter, supervised

log = logging.getLogger(__name__)


class Alive5Error(Exception):
    """alive5 unreachable, refusing, or not acknowledging in time (always retryable)."""


# The profile is the configuration section: every name is a key of [alive5].
Alive5Profile = Alive5Config

def _text(value: object) -> str:
    """An id alive5 may send as a string or a number; anything else is no id."""
    if isinstance(value, str):
        return value[:256]
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


Alive5Id = Annotated[str, BeforeValidator(_text)]


class Alive5Ack(BaseModel):
    """What the hub reads of an alive5 acknowledgement (the rest is ignored, never logged:
    its values may be personal)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    voice_agent_id: Alive5Id = ""
    message_id: Alive5Id = ""


_DISCONNECTED = ""  # put in the ack queue when the connection drops
_END_ACKED = "\0end"  # put there when alive5 acknowledges end_voice_chat's emit itself
END_ATTEMPTS = 3  # ends sent on a live connection without any ack before giving up


class EndNotAcknowledged(Alive5Error):
    """``end_voice_chat`` was sent on a live connection but not acknowledged in time."""


class ThreadLink:
    """One thread's connection to alive5."""

    def __init__(self, profile: Alive5Profile, thread_id: str, crm_id: str) -> None:
        self.profile = profile
        self.thread_id = thread_id
        self.crm_id = crm_id
        self.voice_agent_id = ""
        self.sio = socketio.AsyncClient(reconnection=False)
        self._acks: asyncio.Queue[tuple[str, Alive5Ack]] = asyncio.Queue()
        p = profile
        for event in (p.event_init_ack, p.event_post_ack, p.event_crm_ack, p.event_end_ack):
            if event:
                self.sio.on(event, self._ack_handler(event))
        self.sio.on("disconnect", self._on_disconnect)

    def _ack_handler(self, event: str) -> Any:
        async def on_ack(data: Any = None) -> None:
            self._acks.put_nowait((event, Alive5Ack.model_validate(
                data if isinstance(data, dict) else {})))
        return on_ack

    async def _on_disconnect(self, *reason: Any) -> None:
        self._acks.put_nowait((_DISCONNECTED, Alive5Ack()))  # whoever waits for an ack stops now

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and bool(self.voice_agent_id)

    async def _emit(self, event: str, payload: dict[str, Any]) -> None:
        try:
            await self.sio.emit(event, payload)
        except (socketio.exceptions.SocketIOError, OSError) as e:
            raise Alive5Error(f"{event} not sent: {e}") from e

    async def _await_ack(self, event: str, also: str = "") -> Alive5Ack:
        try:
            async with asyncio.timeout(self.profile.ack_timeout):
                while True:
                    kind, data = await self._acks.get()
                    if kind == event or (also and kind == also):
                        return data
                    if kind == _DISCONNECTED:
                        raise Alive5Error(f"disconnected while waiting for {event}")
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
        await self._emit(p.event_init, {"thread_id": self.thread_id, "crm_id": self.crm_id,
                                        "channel_id": p.channel_id})
        ack = await self._await_ack(p.event_init_ack)
        self.voice_agent_id = ack.voice_agent_id
        if not self.voice_agent_id:
            raise Alive5Error(f"{p.event_init_ack} without a voice_agent_id")

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
                                       "agent": p.sender_agent,
                                       "supervisor": p.sender_agent}.get(role, role)
        await self._emit(p.event_post, payload)
        ack = await self._await_ack(p.event_post_ack)
        return ack.message_id

    async def save_crm(self, key: str, value: Any) -> None:
        p = self.profile
        await self._emit(p.event_crm, {"crm_id": self.crm_id, "key": key, "value": value})
        await self._await_ack(p.event_crm_ack)

    async def end(self, end_by: str, text: str = "") -> None:
        """End the thread; returns once alive5 acknowledged it: by the ``event_end_ack``
        event or by a Socket.IO acknowledgement of the emit, whichever comes first
        (``event_end_ack = ""``: alive5 sends none, sent is done). No acknowledgement in
        ``ack_timeout`` on a live connection raises :class:`EndNotAcknowledged`."""
        p = self.profile
        payload = {"thread_id": self.thread_id, "voice_agent_id": self.voice_agent_id,
                   "end_by": end_by, p.field_content: text}
        try:
            await self.sio.emit(p.event_end, payload, callback=lambda *data: (
                self._acks.put_nowait((_END_ACKED, Alive5Ack()))))
        except (socketio.exceptions.SocketIOError, OSError) as e:
            raise Alive5Error(f"{p.event_end} not sent: {e}") from e
        if not p.event_end_ack:
            return
        try:
            await self._await_ack(p.event_end_ack, also=_END_ACKED)
        except Alive5Error as e:
            if self.sio.connected:
                raise EndNotAcknowledged(str(e)) from e
            raise

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


class Outbox:
    """Delivers stored turns to alive5: per thread, in order, until acknowledged.

    Turns are in the thread store (``delivery = 'pending'``) before anything is sent, so a
    hub restart resumes them (:meth:`start`); each is posted with its stable key
    (``<callId>:<seq>``) and marked delivered on its ack, so a resend after a lost ack is
    recognisable. The end (``end_voice_chat``) is marked delivered on its ack too. The
    caller's CRM data is stored with the thread and saved after each ``init``.

    Each thread has a sender task of its own, so a failing thread holds up no other. A
    sender retries alive5 and SQLite errors itself with backoff (0.5 s doubling to
    ``max_backoff``); anything else ends it, and a supervisor restarts it
    (:func:`~hitl_sip.supervise.supervised`). A sweep every ``sweep_interval`` seconds
    starts a sender for any thread with something undelivered and none running. The call
    path never waits for alive5: the hub only stores and wakes the sender (:meth:`notify`).
    """

    def __init__(self, store: ThreadStore, profile: Alive5Profile, *,
                 max_backoff: float | None = None, idle_close: float = 60.0,
                 sweep_interval: float = 5.0, restarts: RestartCounter | None = None,
                 end_attempts: int = END_ATTEMPTS) -> None:
        self.store = store
        self.end_attempts = end_attempts
        self.profile = profile
        self.max_backoff = profile.max_backoff if max_backoff is None else max_backoff
        self.idle_close = idle_close
        self.sweep_interval = sweep_interval
        self.restarts = restarts
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        # this run's CRM data, also in the store (read from there after a restart)
        self._crm: dict[str, tuple[str, list[tuple[str, Any]]]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.failures = 0

    async def set_crm(self, thread_id: str, crm_id: str, items: list[tuple[str, Any]]) -> None:
        """The thread's ``crm_id`` (handshake) and caller details (``save_crm_data`` after
        each init), kept in the store for a restarted hub."""
        crm = (crm_id, [(k, v) for k, v in items if v])
        self._crm[thread_id] = crm
        try:
            await self.store.set_crm(thread_id, *crm)
        except sqlite3.Error as e:  # this run still has them; a restart would not
            log.error("alive5: CRM data of thread %s not stored: %s", thread_id, e)

    async def _crm_of(self, thread_id: str) -> tuple[str, list[tuple[str, Any]]]:
        crm = self._crm.get(thread_id)
        if crm is None:
            crm = await self.store.crm(thread_id) or ("", [])
        return crm

    def notify(self, thread_id: str) -> None:
        """Something new to deliver for ``thread_id`` (a turn or the end was stored)."""
        self._wake.setdefault(thread_id, asyncio.Event()).set()
        task = self._workers.get(thread_id)
        if task is None or task.done():
            self._workers[thread_id] = asyncio.get_running_loop().create_task(
                self._worker(thread_id), name=f"alive5-{thread_id}")

    async def start(self) -> int:
        """Resume what a previous run left undelivered; start the periodic sweep. Returns
        the number of threads resumed (0 when the store could not tell: the sweep will)."""
        try:
            resumed = await self.resume()
        except sqlite3.Error as e:
            log.error("alive5: the outbox could not be read (%s): the sweep will retry", e)
            resumed = 0
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                supervised("alive5 sweep", self._sweep_forever, kind="alive5_sweep",
                           backoff=(0.5, self.max_backoff), restarts=self.restarts),
                name="alive5-sweep")
        return resumed

    async def resume(self) -> int:
        """Start a sender for every thread with undelivered items and none running."""
        threads = await self.store.pending_threads()
        started = 0
        for thread_id in threads:
            task = self._workers.get(thread_id)
            if task is None or task.done():
                self.notify(thread_id)
                started += 1
        return started

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                started = await self.resume()
            except sqlite3.Error as e:
                log.warning("alive5 sweep: the outbox could not be read: %s", e)
                continue
            if started:
                log.info("alive5 sweep: delivery restarted for %d threads", started)

    async def close(self) -> None:
        tasks = list(self._workers.values())
        if self._sweeper is not None:
            tasks.append(self._sweeper)
            self._sweeper = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _worker(self, thread_id: str) -> None:
        try:
            await supervised(f"alive5 thread {thread_id}", lambda: self._deliver(thread_id),
                             kind="alive5_thread", backoff=(0.5, self.max_backoff),
                             restarts=self.restarts)
        finally:
            # forget the thread (a long-lived hub keeps nothing per past call); nothing is
            # awaited between the sender's last look at its wake-up and here, so a turn
            # stored from now on starts a new sender
            if self._workers.get(thread_id) is asyncio.current_task():
                del self._workers[thread_id]
                self._wake.pop(thread_id, None)
                self._crm.pop(thread_id, None)  # the store keeps it

    async def _deliver(self, thread_id: str) -> None:
        """Deliver the thread's pending turns, then its end; return once it is ended (or
        idle for ``idle_close``). alive5 and SQLite errors are retried here."""
        wake = self._wake.setdefault(thread_id, asyncio.Event())
        link: ThreadLink | None = None
        backoff = 0.5
        try:
            while True:
                wake.clear()
                in_flight: Turn | None = None  # what a failure is recorded on
                end: tuple[str, str] | None = None
                try:
                    turns = await self.store.pending(thread_id)
                    end = await self.store.pending_end(thread_id)
                    wrapups = await self.store.wrapups(thread_id, pending=True)
                    if not turns and end is None and not wrapups:
                        if not await self._woken(wake):  # idle: let the link go
                            if link is not None:
                                await link.close()
                                link = None
                            if not wake.is_set():
                                return
                        continue
                    in_flight = turns[0] if turns else None
                    link = await self._connected(link, thread_id)
                    for turn in turns:
                        in_flight = turn
                        message_id = await link.post(turn.role, turn.text, turn.key)
                        await self.store.mark_delivered(turn.key, message_id)
                    for wrapup in wrapups:  # the agent's wrap-up: CRM data (§6)
                        await link.save_crm("disposition", wrapup.disposition)
                        await link.save_crm("agent_note", wrapup.note)
                        await self.store.mark_wrapup_delivered(wrapup.call_id, wrapup.at)
                    if end is not None and not turns:
                        try:
                            await link.end(*end)
                        except EndNotAcknowledged as e:
                            if not await self._end_given_up(thread_id, e):
                                raise
                        await self.store.mark_end_delivered(thread_id)
                        await link.close()
                        link = None
                        if not wake.is_set():
                            return
                    backoff = 0.5
                except (Alive5Error, sqlite3.Error) as e:
                    self.failures += 1
                    log.warning("alive5 delivery for thread %s failed (%s): retrying in "
                                "%.1fs", thread_id, e, backoff)
                    await self._note_failure(thread_id, in_flight, end, e)
                    if link is not None:
                        await link.close()
                        link = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            if link is not None:
                await link.close()

    async def _end_given_up(self, thread_id: str, error: EndNotAcknowledged) -> bool:
        """alive5 took ``end_voice_chat`` on a live connection but acknowledged it neither
        way, ``end_attempts`` times: it is counted as delivered (PROTOCOL.md §4 names no
        ack for it), so a server that never acknowledges ends is not sent them forever."""
        state = await self.store.end_state(thread_id)
        attempts = (state or {}).get("attempts", 0) + 1
        if attempts < self.end_attempts:
            return False
        log.warning("alive5: thread %s: %s after %d attempts on a live connection; the end "
                    "is counted as delivered", thread_id, error, attempts)
        return True

    async def _woken(self, wake: asyncio.Event) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.idle_close):
                await wake.wait()
        return wake.is_set()

    async def _connected(self, link: ThreadLink | None, thread_id: str) -> ThreadLink:
        """The thread's link, (re)opened and its CRM data saved when it is not up."""
        if link is not None and link.connected:
            return link
        if link is not None:
            await link.close()
        crm_id, items = await self._crm_of(thread_id)
        link = ThreadLink(self.profile, thread_id, crm_id)
        try:
            await link.open()
            for key, value in items:
                await link.save_crm(key, value)
        except BaseException:
            await link.close()
            raise
        return link

    async def _note_failure(self, thread_id: str, turn: Turn | None,
                            end: tuple[str, str] | None, error: Exception) -> None:
        """Record the failed attempt on the turn in flight, else the end (best effort: the
        store itself may be what failed)."""
        try:
            if turn is not None:
                await self.store.mark_failed_attempt(turn.key, str(error))
            elif end is not None:
                await self.store.mark_end_failed_attempt(thread_id, str(error))
        except sqlite3.Error as e:
            log.warning("alive5: failed attempt for thread %s not recorded: %s", thread_id, e)
