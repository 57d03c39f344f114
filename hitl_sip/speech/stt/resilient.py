"""An STT stream that survives retryable engine failures by starting a new inner stream.

:class:`ResilientStream` is itself an :class:`~hitl_sip.speech.base.SttStream`. It owns
one inner stream at a time (created by ``engine.stream``) and a task that forwards the
inner events. When the inner stream fails with a retryable
:class:`~hitl_sip.errors.SpeechError` (or ends without having been told to), it calls
``on_restart(error)``, waits a backoff (``initial_backoff`` doubling up to
``max_backoff``; back to the start once a new stream delivers an event) and opens a new
inner stream. More than ``max_restarts`` restarts within ``restart_window`` seconds, or a
non-retryable error, ends the stream with a non-retryable SpeechError for the consumer.

Audio keeps flowing meanwhile: every pushed frame also goes into a replay buffer holding
the audio since the last FINAL/END_OF_SPEECH, at most ``replay_seconds`` (oldest dropped;
frames lost that way while no inner stream listens are counted in ``dropped_frames``). A
new inner stream first gets that buffer, so the words of an interrupted utterance are
recognised again rather than lost.

Nothing bogus reaches the consumer: START_OF_SPEECH and END_OF_SPEECH alternate strictly
(a START repeated by the new stream for replayed audio is dropped), and ``audio_time`` is
converted from the inner stream's clock to this stream's (the inner clock starts at the
first replayed frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import QueuedEvents, SpeechEvent, SpeechEventType, SttEngine, SttStream

__all__ = ["ResilientStream", "ResilientStt"]

logger = logging.getLogger(__name__)

_Posted = SpeechEvent | SpeechError | None


class ResilientStt:
    """An engine whose streams are :class:`ResilientStream` around ``engine``'s streams."""

    def __init__(
        self,
        engine: SttEngine,
        *,
        on_restart: Callable[[SpeechError], None] | None = None,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_restarts: int = 6,
        restart_window: float = 60.0,
        replay_seconds: float = 2.0,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self._on_restart = on_restart
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._replay_seconds = replay_seconds

    def stream(self, sample_rate: int, language: str = "en-US") -> ResilientStream:
        return ResilientStream(
            self.engine,
            sample_rate,
            language,
            on_restart=self._on_restart,
            initial_backoff=self._initial_backoff,
            max_backoff=self._max_backoff,
            max_restarts=self._max_restarts,
            restart_window=self._restart_window,
            replay_seconds=self._replay_seconds,
        )


class ResilientStream(QueuedEvents):
    """See the module docstring. Create it from a coroutine: it starts a task."""

    def __init__(
        self,
        engine: SttEngine,
        sample_rate: int,
        language: str = "en-US",
        *,
        on_restart: Callable[[SpeechError], None] | None = None,
        initial_backoff: float = 0.2,
        max_backoff: float = 5.0,
        max_restarts: int = 6,
        restart_window: float = 60.0,
        replay_seconds: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError(
                f"need 0 < initial_backoff <= max_backoff, got {initial_backoff}, {max_backoff}"
            )
        if max_restarts < 0:
            raise ValueError(f"max_restarts must not be negative, got {max_restarts}")
        self.engine = engine
        self.sample_rate = sample_rate
        self.language = language
        self.restarts = 0
        self.dropped_frames = 0
        self._on_restart = on_restart
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._sleep = sleep
        self._clock = clock
        self._max_replay_bytes = int(replay_seconds * sample_rate) * 2
        self._replay: deque[tuple[float, bytes]] = deque()
        self._replay_bytes = 0
        self._pushed = 0.0  # seconds of audio pushed so far
        self._inner: SttStream | None = None
        self._offset = 0.0  # our audio time at the inner stream's time zero
        self._in_speech = False
        self._input_ended = False
        self._closed = False
        self._restart_times: deque[float] = deque()
        self._events: asyncio.Queue[_Posted] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(self._open()))

    # -- the SttStream API ----------------------------------------------------------------
    def push_frame(self, pcm: bytes) -> None:
        if self._closed or self._input_ended:
            return
        self._replay.append((self._pushed, pcm))
        self._replay_bytes += len(pcm)
        self._pushed += len(pcm) / 2 / self.sample_rate
        while self._replay_bytes > self._max_replay_bytes:
            _, dropped = self._replay.popleft()
            self._replay_bytes -= len(dropped)
            if self._inner is None:
                self.dropped_frames += 1
        if self._inner is not None:
            self._inner.push_frame(pcm)

    async def flush(self) -> None:
        """Flush the current inner stream; the FINAL follows in the iteration."""
        if self._inner is not None and not self._closed:
            await self._inner.flush()

    def end_input(self) -> None:
        if self._input_ended:
            return
        self._input_ended = True
        if self._inner is not None:
            self._inner.end_input()

    async def aclose(self) -> None:
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._inner is not None:  # the task was cancelled before it took the stream over
            inner, self._inner = self._inner, None
            await inner.aclose()
        self._events.put_nowait(None)

    def _stream_closed(self) -> bool:
        return self._closed

    # -- supervision ----------------------------------------------------------------------
    async def _run(self, first: SttStream | SpeechError) -> None:
        consecutive = 0
        opened = first
        try:
            while True:
                error, healthy = await self._attempt(opened)
                if error is None:
                    break
                if healthy:
                    consecutive = 0
                self._admit_restart(error)
                delay = min(self._max_backoff, self._initial_backoff * 2**consecutive)
                consecutive += 1
                logger.warning(
                    "stt %s: stream failed (%s); restart %d in %.1f s",
                    self.engine.name,
                    error,
                    self.restarts,
                    delay,
                )
                if self._on_restart is not None:
                    try:
                        self._on_restart(error)
                    except Exception:
                        logger.exception("stt %s: on_restart hook failed", self.engine.name)
                await self._sleep(delay)
                opened = self._open()
        except SpeechError as e:
            self._events.put_nowait(e)
        else:
            self._events.put_nowait(None)

    def _admit_restart(self, error: SpeechError) -> None:
        """Count a restart, or raise the error that ends the stream."""
        if not error.retryable:
            raise error
        now = self._clock()
        while self._restart_times and now - self._restart_times[0] >= self._restart_window:
            self._restart_times.popleft()
        if len(self._restart_times) >= self._max_restarts:
            raise SpeechError(
                f"{self.engine.name}: giving up after {len(self._restart_times)} restarts "
                f"in {self._restart_window:.0f} s; last error: {error}",
                retryable=False,
            ) from error
        self._restart_times.append(now)
        self.restarts += 1

    def _open(self) -> SttStream | SpeechError:
        """A new inner stream, fed the replay buffer; or the error creating it."""
        try:
            inner = self.engine.stream(self.sample_rate, self.language)
        except SpeechError as e:
            return e
        self._inner = inner
        self._offset = self._replay[0][0] if self._replay else self._pushed
        for _, pcm in self._replay:
            inner.push_frame(pcm)
        if self._input_ended:
            inner.end_input()
        return inner

    async def _attempt(self, inner: SttStream | SpeechError) -> tuple[SpeechError | None, bool]:
        """Run one inner stream to its end: (the error that ended it, whether it worked)."""
        if isinstance(inner, SpeechError):
            return inner, False
        healthy = False
        try:
            async for event in inner:
                healthy = True
                self._forward(event)
        except SpeechError as e:
            return e, healthy
        finally:
            self._inner = None
            await inner.aclose()
        if self._input_ended:
            return None, healthy
        unexpected = SpeechError(f"{self.engine.name}: stream ended unexpectedly", retryable=True)
        return unexpected, healthy

    def _forward(self, event: SpeechEvent) -> None:
        kind = event.type
        if kind is SpeechEventType.START_OF_SPEECH:
            if self._in_speech:
                return
            self._in_speech = True
        elif kind is SpeechEventType.END_OF_SPEECH:
            if not self._in_speech:
                return
            self._in_speech = False
        audio_time = self._offset + event.audio_time
        if kind in (SpeechEventType.FINAL, SpeechEventType.END_OF_SPEECH):
            self._forget_until(audio_time)
        self._events.put_nowait(
            SpeechEvent(kind, event.text, event.confidence, audio_time=audio_time)
        )

    def _forget_until(self, audio_time: float) -> None:
        """Drop replay audio the inner stream has fully recognised."""
        while self._replay:
            start, pcm = self._replay[0]
            if start + len(pcm) / 2 / self.sample_rate > audio_time + 1e-9:
                break
            self._replay.popleft()
            self._replay_bytes -= len(pcm)
