"""A stand-in for alive5's voice-agent Socket.IO interface (PROTOCOL.md §4), for tests.

A real python-socketio server (aiohttp) in a thread of its own, on 127.0.0.1 and a free
port. It checks the handshake query (``type=voice_agent``, ``x-a5-apikey``, ``thread_id``,
``crm_id``), answers ``init_voice_agent`` with ``init_voice_agent_ack``, stores every
``post_message`` (de-duplicated on ``message_key`` when the sender gives one, as a real
thread would show a resend twice otherwise — the tests count duplicates) and answers
``post_message_ack``; ``save_crm_data`` and ``end_voice_chat`` are stored too and answered
with ``save_crm_data_ack`` and ``end_voice_chat_ack``. It can be stopped and started again
on the same port to play an outage or a restart, and play faults per event: a handler that
raises (no ack), one that drops the connection, or one that stores but never acknowledges
(:meth:`Alive5StandIn.fail_next`, :attr:`Alive5StandIn.unacked`).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import socketio
from aiohttp import web

from tests.support.net import free_port

API_KEY = "a5-test-key-0123456789"


@dataclass
class Alive5Thread:
    thread_id: str
    crm_id: str = ""
    channel_id: str = ""  # from the handshake's query
    voice_agent_id: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    resent: list[str] = field(default_factory=list)  # the message_key of each duplicate
    resent_at: list[float] = field(default_factory=list)  # time.monotonic() of each duplicate
    crm: dict[str, Any] = field(default_factory=dict)
    ended: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    end_acks: int = 0


class SilentEnd(Exception):
    """Raised by the stand-in's end handler to withhold every acknowledgement."""


class Alive5StandIn:
    def __init__(self, port: int | None = None, api_key: str = API_KEY) -> None:
        self.port = port or free_port(kind=1)  # TCP
        self.api_key = api_key
        self.threads: dict[str, Alive5Thread] = {}
        self.refused: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()  # wait_for predicates may call thread()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started = threading.Event()
        self._sio: socketio.AsyncServer | None = None
        self._sessions: dict[str, str] = {}
        self._faults: dict[str, list[str]] = {}
        # events stored but never acknowledged while listed here
        self.unacked: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Alive5StandIn:
        self._started.clear()
        self._thread = threading.Thread(target=self._run, name="alive5-standin", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the alive5 stand-in did not start")
        return self

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None:
            return
        async def shutdown() -> None:
            sio = self._sio
            if sio is not None:  # close the websockets first: cleanup waits for them
                for sid in list(self._sessions):
                    await sio.disconnect(sid)
            await runner.cleanup()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = self._runner = None

    def __enter__(self) -> Alive5StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        sio = socketio.AsyncServer(async_mode="aiohttp")
        self._sio = sio
        self._sessions = {}
        app = web.Application()
        sio.attach(app)
        self._handlers(sio)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        loop.run_until_complete(site.start())
        self._runner = runner
        self._started.set()
        loop.run_forever()
        loop.close()

    # -- the contract ---------------------------------------------------------------------

    def thread(self, thread_id: str) -> Alive5Thread:
        with self._lock:
            return self.threads.setdefault(thread_id, Alive5Thread(thread_id))

    def _stored(self, event: str, thread_id: str, record: dict[str, Any]) -> None:
        """Called, with the lock held, once an event is stored and before it is
        acknowledged: ``post`` (``data``, ``at``, ``dup``: a resent key), ``crm`` (``key``,
        ``value``) or ``end`` (``data``, ``at``, ``acked``). A stand-in that must survive
        a SIGKILL journals it here (tests/support/alive5_proc.py)."""

    def fail_next(self, event: str, *faults: str) -> None:
        """The next occurrences of ``event`` fail, one fault each: ``raise`` (the handler
        raises: nothing stored, no ack), ``disconnect`` (the server drops the connection:
        nothing stored) or ``silent`` (stored, not acknowledged)."""
        if not set(faults) <= {"raise", "disconnect", "silent"}:
            raise ValueError(f"unknown fault in {faults}")
        with self._lock:
            self._faults.setdefault(event, []).extend(faults)

    def _fault(self, event: str) -> str:
        with self._lock:
            queued = self._faults.get(event)
            if queued:
                return queued.pop(0)
            return "silent" if event in self.unacked else ""

    async def _faulted(self, sio: socketio.AsyncServer, sid: str, event: str) -> str:
        """Play the next fault planned for ``event`` and return it: ``raise`` raises here,
        ``disconnect`` has dropped the connection (the handler stops), ``silent`` is for
        the handler to honour after storing, "" is none."""
        fault = self._fault(event)
        if fault == "raise":
            raise RuntimeError(f"alive5 stand-in: {event} failed (a planned fault)")
        if fault == "disconnect":
            await sio.disconnect(sid)
        return fault

    def wait_for(self, predicate: Any, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return
            time.sleep(0.05)
        raise AssertionError(f"alive5 stand-in: timed out waiting for {what}: {self.threads}")

    def _handlers(self, sio: socketio.AsyncServer) -> None:
        sessions = self._sessions

        @sio.event  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            if query.get("type") != "voice_agent" or query.get("x-a5-apikey") != self.api_key:
                self.refused.append(str(query))
                return False
            thread = self.thread(query.get("thread_id", ""))
            with self._lock:
                thread.crm_id = query.get("crm_id", "")
                thread.channel_id = query.get("channel_id", "")
                thread.connections += 1
            sessions[sid] = thread.thread_id
            return True

        @sio.event  # type: ignore[untyped-decorator]
        async def disconnect(sid: str) -> None:
            sessions.pop(sid, None)

        @sio.on("init_voice_agent")  # type: ignore[untyped-decorator]
        async def init(sid: str, data: dict[str, Any]) -> None:
            thread = self.thread(str(data.get("thread_id")))
            with self._lock:
                thread.voice_agent_id = thread.voice_agent_id or f"va-{next(self._ids)}"
            await sio.emit("init_voice_agent_ack", {
                "status": "ok", "voice_agent_id": thread.voice_agent_id,
                "thread_id": thread.thread_id, "crm_id": data.get("crm_id")}, to=sid)

        @sio.on("post_message")  # type: ignore[untyped-decorator]
        async def post(sid: str, data: dict[str, Any]) -> None:
            fault = await self._faulted(sio, sid, "post_message")
            if fault == "disconnect":
                return
            thread = self.thread(str(data.get("thread_id")))
            key = data.get("message_key")
            with self._lock:
                now = time.monotonic()
                resent = bool(key) and any(m.get("message_key") == key for m in thread.messages)
                if resent:
                    thread.duplicates += 1
                    thread.resent.append(str(key))
                    thread.resent_at.append(now)
                else:  # when it arrived, for the transcript-lag benchmark
                    thread.messages.append({**data, "_received": now})
                self._stored("post", thread.thread_id, {"data": data, "at": now, "dup": resent})
                message_id = f"m-{next(self._ids)}"
            if fault == "silent":
                return
            await sio.emit("post_message_ack", {"timestamp": time.time(),
                                                "message_id": message_id,
                                                "message_key": key}, to=sid)

        @sio.on("save_crm_data")  # type: ignore[untyped-decorator]
        async def crm(sid: str, data: dict[str, Any]) -> None:
            fault = await self._faulted(sio, sid, "save_crm_data")
            if fault == "disconnect":
                return
            thread = self.thread(sessions.get(sid, ""))
            with self._lock:
                thread.crm[str(data.get("key"))] = data.get("value")
                self._stored("crm", thread.thread_id,
                             {"key": str(data.get("key")), "value": data.get("value")})
            if fault != "silent":
                await sio.emit("save_crm_data_ack", {"key": data.get("key")}, to=sid)

        @sio.on("end_voice_chat")  # type: ignore[untyped-decorator]
        async def end(sid: str, data: dict[str, Any]) -> None:
            fault = await self._faulted(sio, sid, "end_voice_chat")
            if fault == "disconnect":
                return
            thread = self.thread(str(data.get("thread_id")))
            with self._lock:
                now = time.monotonic()
                thread.ended.append({**data, "_received": now})
                if fault != "silent":
                    thread.end_acks += 1
                self._stored("end", thread.thread_id,
                             {"data": data, "at": now, "acked": fault != "silent"})
            if fault == "silent":
                # python-socketio acknowledges every handled emit that asked for it (the
                # hub's end does): a handler that raises sends no acknowledgement at all
                raise SilentEnd("end_voice_chat stored, deliberately not acknowledged")
            await sio.emit("end_voice_chat_ack", {"status": "ok",
                                                  "thread_id": thread.thread_id}, to=sid)
