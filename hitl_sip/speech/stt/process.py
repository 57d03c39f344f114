"""Run the embedded recogniser in a child process: the media worker keeps its GIL.

pocketsphinx holds the GIL while it decodes, and ``end_utt`` on a long utterance takes
hundreds of ms (about 1 s after 47 s of speech). In the media worker's process that stalls
pjmedia's clock callbacks and the event loop: with three bridged calls (six streams) the
worker saturated one core and dropped 9–18 % of its frames, and bridge latency went from
~20 ms to 40–80 ms (bench/README.md). :class:`ProcessStt` keeps the same
:class:`~hitl_sip.speech.base.SttEngine` seam but runs the engine's streams in one child
process (``spawn``: the parent has pjsua2's threads), talking over a pipe. With ``gate``
the voice-activity gate (:class:`~hitl_sip.speech.stt.vad.VadGatedStt`) runs there too, in
front of the decoders: Silero's scoring was a third of a full worker's CPU (issue 19), and
what the gate drops never had to cross anyway once audio goes in batches.


parent → child ``("open", id, rate)``, ``("audio", [(id, pcm), ...])``, ``("flush", id)``,
``("end", id)``, ``("close", id)``, ``("preload", rate, count)``, ``("stop",)``;
child → parent ``("event", id, type, text, confidence, audio_time)``, ``("flushed", id)``,
``("done", id, error or None, retryable)``.

A writer thread sends (``push_frame`` never blocks the loop) and a reader thread delivers
to the streams' event queues. Audio goes in batches of :data:`BATCH_SECONDS` (80 ms: four
frames), and the streams go together: when one stream's batch is full, every open
stream's pending audio goes in the same message (a bridged call has two streams, a worker
up to eight: one writer wake-up, one pickle and one pipe write for all of them instead of
one each). No stream's audio waits longer than its own batch did. A flush or the end of
input sends what is pending first, so the recogniser sees every sample in order and a
phase change's FINAL is not held back.
A preload (the worker's decoders and detectors, seconds of work at its start) runs beside
the child's message loop: a call that opens and ends meanwhile is served at once.

If the child dies, every open stream ends with a retryable
:class:`SpeechError` (the call's :class:`ResilientStt` opens a new one) and the next
``stream()`` starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import (
    QueuedEvents,
    SpeechEvent,
    SpeechEventType,
    SttEngine,
    SttStream,
)
from hitl_sip.speech.stt.vad import VadGatedStt, VadSettings

log = logging.getLogger(__name__)

#: audio crosses to the speech process in batches of this much (issue 19: one message per
#: 20 ms frame cost a writer-thread wake-up, a pickle and a pipe write per frame and stream)
BATCH_SECONDS = 0.08
#: the speech process's niceness above its worker's (CFS weight ~1/3 of the worker's)
SPEECH_NICE = 5


class ProcessStt:
    """An :class:`SttEngine` whose streams run in a child process (see module docstring)."""

    name = "pocketsphinx"

    def __init__(self, pool_size: int = 2, gate: VadSettings | None = None,
                 speed: str = "accurate") -> None:
        self.pool_size = pool_size
        self.speed = speed  # the decoders' search preset (pocketsphinx_engine.SPEED_PRESETS)
        self.gate = gate  # the voice-activity gate, run in the child in front of the decoders
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._streams: dict[int, _RemoteStream] = {}
        self._ids = itertools.count(1)
        self._preloads: list[tuple[int, int]] = []
        self._writer: threading.Thread | None = None

    # -- the child ------------------------------------------------------------------------

    def _ensure_child(self) -> Connection:
        with self._lock:
            if self._proc is not None and self._proc.is_alive() and self._conn is not None:
                return self._conn
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_child_main,
                               args=(child, self.pool_size, self.gate, self.speed),
                               name="hitl-sip-stt", daemon=True)
            proc.start()
            child.close()
            self._proc, self._conn = proc, parent
            self._outbox = queue.SimpleQueue()
            for rate, count in self._preloads:
                self._outbox.put(("preload", rate, count))
            self._writer = threading.Thread(target=self._write, args=(parent, self._outbox),
                                            name="stt-proc-writer", daemon=True)
            self._writer.start()
            threading.Thread(target=self._read, args=(parent, self._outbox),
                             name="stt-proc-reader", daemon=True).start()
            log.info("speech recognition runs in process %d", proc.pid)
            return parent

    def _write(self, conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
        while True:
            message = outbox.get()
            if message is None:
                return
            try:
                conn.send(message)
            except (OSError, ValueError):
                return

    def _read(self, conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            stream = self._streams.get(message[1]) if message[0] != "preloaded" else None
            if stream is not None:
                stream._deliver(message)
        with self._lock:
            if self._conn is conn:
                self._conn = None
                log.warning("the speech process ended: open streams restart")
        outbox.put(None)
        for stream in list(self._streams.values()):
            if stream._conn is conn:
                stream._deliver(("done", stream.id, "the speech process ended", True))

    def _send(self, message: Any) -> None:
        self._outbox.put(message)

    def _send_audio(self, full: _RemoteStream) -> None:
        """``full``'s batch and every other open stream's pending audio, in one message
        (on the loop)."""
        others = [s for s in list(self._streams.values()) if s is not full]
        batch = [audio for stream in (full, *others)
                 if (audio := stream._take_pending()) is not None]
        if batch:
            self._send(("audio", batch))

    # -- the SttEngine API ----------------------------------------------------------------

    def preload(self, sample_rate: int, count: int) -> None:
        """Start the child and load ``count`` decoders for ``sample_rate`` there."""
        self._preloads = [(sample_rate, count)]
        self._ensure_child()

    def stream(self, sample_rate: int, language: str = "en-US") -> SttStream:
        conn = self._ensure_child()
        stream = _RemoteStream(self, next(self._ids), sample_rate, conn,
                               asyncio.get_running_loop())
        self._streams[stream.id] = stream
        self._send(("open", stream.id, sample_rate))
        return stream

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            conn, self._conn = self._conn, None
        # Ask the child to stop, after whatever is queued, and close our end only once it
        # has gone: closing it is no EOF for the child while our reader thread sits in
        # recv() on that socket (the kernel keeps it open for the blocked call), so the
        # child held on until the kill below — 2 s of every worker's stop.
        self._outbox.put(("stop",))
        self._outbox.put(None)
        writer = self._writer
        if writer is not None:
            writer.join(1)
        if proc is not None:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(1)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()


class _RemoteStream(QueuedEvents):
    def __init__(self, engine: ProcessStt, stream_id: int, sample_rate: int,
                 conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.id = stream_id
        self.sample_rate = sample_rate
        self._conn = conn
        self._loop = loop
        self._events = asyncio.Queue()
        self._flushes: list[asyncio.Future[None]] = []
        self._pending = bytearray()
        self._batch_bytes = max(2, int(sample_rate * BATCH_SECONDS) * 2)
        self._closed = False
        self._ended = False
        self._done = False

    def _stream_closed(self) -> bool:
        return self._closed

    def push_frame(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError(f"PCM length must be whole 16-bit samples, got {len(pcm)} bytes")
        if self._ended or self._closed or self._done:
            return
        # batched: one message (one writer wake-up, one pipe write) per BATCH_SECONDS, and
        # it takes the other streams' pending audio along
        self._pending += pcm
        if len(self._pending) >= self._batch_bytes:
            self.engine._send_audio(self)

    def _take_pending(self) -> tuple[int, bytes] | None:
        if not self._pending:
            return None
        audio = (self.id, bytes(self._pending))
        self._pending.clear()
        return audio

    def _send_pending(self) -> None:
        """This stream's pending audio alone, now (before its flush or end)."""
        audio = self._take_pending()
        if audio is not None:
            self.engine._send(("audio", [audio]))

    async def flush(self) -> None:
        if self._ended or self._closed or self._done:
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._flushes.append(future)
        self._send_pending()
        self.engine._send(("flush", self.id))
        await future

    def end_input(self) -> None:
        if not self._ended:
            self._ended = True
            self._send_pending()
            self.engine._send(("end", self.id))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self.engine._send(("close", self.id))
        self._finish(None)

    # reader thread → loop
    def _deliver(self, message: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone at shutdown
            self._loop.call_soon_threadsafe(self._on_message, message)

    def _on_message(self, message: Any) -> None:
        kind = message[0]
        if kind == "event":
            _, _, type_, text, confidence, audio_time = message
            self._events.put_nowait(SpeechEvent(SpeechEventType(type_), text, confidence,
                                                audio_time))
        elif kind == "flushed":
            if self._flushes:
                future = self._flushes.pop(0)
                if not future.done():
                    future.set_result(None)
        elif kind == "done":
            error = message[2]
            self._finish(SpeechError(error, retryable=bool(message[3])) if error else None)

    def _finish(self, item: SpeechError | None) -> None:
        if self._done:
            return
        self._done = True
        self.engine._streams.pop(self.id, None)
        for future in self._flushes:
            if not future.done():
                future.set_result(None)
        self._flushes.clear()
        self._events.put_nowait(item)


# -- the child process ------------------------------------------------------------------------


def _child_main(conn: Connection, pool_size: int, gate: VadSettings | None = None,
                speed: str = "accurate") -> None:
    """Entry point of the speech process: serve streams until the pipe closes."""
    # below the media worker: when the cores are short, the trunk's 20 ms clock and the
    # bridge run first and the recogniser catches up (it buffers, pocketsphinx_engine)
    with contextlib.suppress(OSError):
        os.nice(SPEECH_NICE)
    asyncio.run(_serve(conn, pool_size, gate, speed))


async def _serve(conn: Connection, pool_size: int, gate: VadSettings | None = None,
                 speed: str = "accurate") -> None:
    from hitl_sip.speech.stt.pocketsphinx_engine import PocketsphinxStt  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    decoders = PocketsphinxStt(pool_size=pool_size, speed=speed)
    engine: SttEngine = decoders
    if gate is not None:
        engine = VadGatedStt(decoders, gate)
    streams: dict[int, SttStream] = {}
    tasks: dict[int, asyncio.Task[None]] = {}
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    send_lock = threading.Lock()
    flushing: set[asyncio.Task[None]] = set()

    def send(message: Any) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                loop.call_soon_threadsafe(inbox.put_nowait, None)
                return
            loop.call_soon_threadsafe(inbox.put_nowait, message)

    async def pump(stream_id: int, stream: SttStream) -> None:
        error: str | None = None
        retryable = True
        try:
            async for event in stream:
                send(("event", stream_id, event.type.value, event.text, event.confidence,
                      event.audio_time))
        except SpeechError as e:
            error, retryable = str(e), e.retryable
        except Exception as e:  # report, do not kill the other streams
            error, retryable = f"{type(e).__name__}: {e}", True
        streams.pop(stream_id, None)
        tasks.pop(stream_id, None)
        send(("done", stream_id, error, retryable))

    async def flush(stream_id: int, stream: SttStream) -> None:
        with contextlib.suppress(SpeechError):
            await stream.flush()
        send(("flushed", stream_id))

    async def preload(rate: int, count: int) -> None:
        """Decoders for the bot phase, detectors for both legs (the pools take locks)."""
        try:
            await asyncio.to_thread(decoders.preload, rate, count)
            if isinstance(engine, VadGatedStt):
                await asyncio.to_thread(engine.preload, rate, 2 * count)
        except Exception:  # streams still get theirs, loaded when they open
            log.exception("speech preload failed")

    background: set[asyncio.Task[None]] = set()
    threading.Thread(target=read, name="stt-child-reader", daemon=True).start()
    while True:
        message = await inbox.get()
        if message is None:
            break
        kind = message[0]
        if kind == "stop":
            break
        if kind == "preload":  # in the background: a call's stream must not wait for it
            loading = loop.create_task(preload(message[1], message[2]))
            background.add(loading)
            loading.add_done_callback(background.discard)
            continue
        if kind == "audio":
            for stream_id, pcm in message[1]:
                target = streams.get(stream_id)
                if target is not None:
                    target.push_frame(pcm)
            continue
        stream_id = message[1]
        if kind == "open":
            stream = engine.stream(message[2])
            streams[stream_id] = stream
            tasks[stream_id] = loop.create_task(pump(stream_id, stream))
            continue
        found = streams.get(stream_id)
        if found is None:
            continue
        if kind == "flush":
            flushing.add(loop.create_task(flush(stream_id, found)))
            flushing = {t for t in flushing if not t.done()}
        elif kind == "end":
            found.end_input()
        elif kind == "close":
            streams.pop(stream_id, None)
            await found.aclose()
            task = tasks.pop(stream_id, None)
            if task is not None:
                task.cancel()
    for remaining in list(streams.values()):
        with contextlib.suppress(Exception):
            await remaining.aclose()
