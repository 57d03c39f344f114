"""A scripted STT engine for unit tests: deterministic, no threads, no model.

Two ways to get a FINAL out of a :class:`FakeSttStream`:

* **voice-activated script** — ``FakeStt(["hello", "agent please"])``: a pushed frame whose
  peak amplitude reaches ``speech_threshold`` is voice, anything quieter is silence. The
  first voiced frame emits START_OF_SPEECH; ``end_silence_frames`` silent frames in a row
  after voice end the utterance with FINAL (the next scripted text, shared by every stream
  of the engine, so a restarted stream carries on with the script) and END_OF_SPEECH.
  When the script is used up the utterance ends without a FINAL, as a real engine does
  for noise. :func:`speech_frame` and :func:`silence_frame` build suitable frames;
* **explicit** — ``stream.say("agent", after_frames=N)`` emits START, FINAL and END
  (with ``interim`` first, if given) once N more frames have been pushed (at once for 0),
  whatever the audio.

Events go straight into the stream's queue from ``push_frame``/``say``, so after those
calls return the events are ready to read. ``audio_time`` follows the pushed audio:
START at the start of the first voiced frame, FINAL/END at the end of the last one.

Failures: ``FakeStt(fail_with=err)`` makes every stream raise ``err`` from iteration
once it has received ``fail_after_frames`` frames (0: right away);
``FakeStt(failures=[err, None, ...])`` does so for the 1st, 2nd, ... stream only (later
streams work); ``stream.fail(err)`` fails one stream now. ``engine.streams`` lists every
stream created, with the frames each received in ``stream.frames``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import QueuedEvents, SpeechEvent, SpeechEventType

__all__ = ["FakeStt", "FakeSttStream", "silence_frame", "speech_frame"]

_Posted = SpeechEvent | SpeechError | None


def speech_frame(sample_rate: int = 8000, ms: int = 20, amplitude: int = 8000) -> bytes:
    """A 440 Hz tone frame: voice to :class:`FakeStt` (and to most VADs, loosely)."""
    samples = sample_rate * ms // 1000
    t = np.arange(samples) / sample_rate
    tone = amplitude * np.sin(2 * np.pi * 440.0 * t)
    return np.round(tone).astype("<i2").tobytes()


def silence_frame(sample_rate: int = 8000, ms: int = 20) -> bytes:
    return bytes(sample_rate * ms // 1000 * 2)


@dataclass
class _Scheduled:
    text: str
    interim: str | None
    at_frame: int


class FakeStt:
    """The scripted engine; see the module docstring."""

    def __init__(
        self,
        utterances: Iterable[str] = (),
        *,
        fail_with: SpeechError | None = None,
        failures: Sequence[SpeechError | None] = (),
        fail_after_frames: int = 0,
        speech_threshold: int = 1000,
        end_silence_frames: int = 10,
        name: str = "fake",
    ) -> None:
        self.name = name
        self.utterances: deque[str] = deque(utterances)
        self.fail_with = fail_with
        self.failures = list(failures)
        self.fail_after_frames = fail_after_frames
        self.speech_threshold = speech_threshold
        self.end_silence_frames = end_silence_frames
        self.streams: list[FakeSttStream] = []

    def stream(self, sample_rate: int, language: str = "en-US") -> FakeSttStream:
        index = len(self.streams)
        failure = self.failures[index] if index < len(self.failures) else self.fail_with
        stream = FakeSttStream(self, sample_rate, language, failure)
        self.streams.append(stream)
        return stream

    def next_utterance(self) -> str | None:
        return self.utterances.popleft() if self.utterances else None


class FakeSttStream(QueuedEvents):
    def __init__(
        self, engine: FakeStt, sample_rate: int, language: str, failure: SpeechError | None
    ) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self.language = language
        self.frames: list[bytes] = []
        self.flushes = 0
        self.dropped_frames = 0
        self.input_ended = False
        self.closed = False
        self.failed = False
        self._failure = failure
        self._events: asyncio.Queue[_Posted] = asyncio.Queue()
        self._audio_time = 0.0
        self._in_speech = False
        self._silent_frames = 0
        self._last_voice_end = 0.0
        self._scheduled: list[_Scheduled] = []
        if failure is not None and engine.fail_after_frames == 0:
            self.fail(failure)

    # -- scripting --------------------------------------------------------------------------
    def say(self, text: str, after_frames: int = 0, *, interim: str | None = None) -> None:
        """Emit START, [INTERIM], FINAL ``text`` and END once ``after_frames`` more frames came."""
        self._scheduled.append(_Scheduled(text, interim, len(self.frames) + after_frames))
        self._run_scheduled()

    def fail(self, error: SpeechError) -> None:
        """End the stream with ``error`` (raised from iteration after pending events)."""
        if not self._finished:
            self.failed = True
            self._events.put_nowait(error)

    @property
    def queued(self) -> int:
        """Events (and the end or error marker) waiting to be read."""
        return self._events.qsize()

    # -- the SttStream API ------------------------------------------------------------------
    def push_frame(self, pcm: bytes) -> None:
        if len(pcm) % 2:
            raise ValueError(f"PCM length must be whole 16-bit samples, got {len(pcm)} bytes")
        if self._finished or self.input_ended:
            return
        self.frames.append(pcm)
        start = self._audio_time
        self._audio_time += len(pcm) / 2 / self.sample_rate
        if (
            self._failure is not None
            and self.engine.fail_after_frames
            and len(self.frames) >= self.engine.fail_after_frames
        ):
            self.fail(self._failure)
            return
        self._detect_voice(pcm, start)
        self._run_scheduled()

    async def flush(self) -> None:
        self.flushes += 1
        if not self._finished and self._in_speech:
            self._end_utterance(self._audio_time)

    def end_input(self) -> None:
        if self._finished or self.input_ended:
            return
        self.input_ended = True
        if self._in_speech:
            self._end_utterance(self._audio_time)
        self._events.put_nowait(None)

    async def aclose(self) -> None:
        self.closed = True
        self._events.put_nowait(None)

    def _stream_closed(self) -> bool:
        return self.closed

    # -- internals --------------------------------------------------------------------------
    @property
    def _finished(self) -> bool:
        return self.closed or self.failed

    def _emit(self, kind: SpeechEventType, text: str = "", audio_time: float = 0.0) -> None:
        self._events.put_nowait(SpeechEvent(kind, text, audio_time=audio_time))

    def _detect_voice(self, pcm: bytes, start: float) -> None:
        samples = np.frombuffer(pcm, dtype="<i2")
        voiced = bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) >= (
            self.engine.speech_threshold
        )
        if voiced:
            self._silent_frames = 0
            self._last_voice_end = self._audio_time
            if not self._in_speech:
                self._in_speech = True
                self._emit(SpeechEventType.START_OF_SPEECH, audio_time=start)
        elif self._in_speech:
            self._silent_frames += 1
            if self._silent_frames >= self.engine.end_silence_frames:
                self._end_utterance(self._last_voice_end)

    def _end_utterance(self, audio_time: float) -> None:
        self._in_speech = False
        self._silent_frames = 0
        text = self.engine.next_utterance()
        if text:
            self._emit(SpeechEventType.FINAL, text, audio_time)
        self._emit(SpeechEventType.END_OF_SPEECH, audio_time=audio_time)

    def _run_scheduled(self) -> None:
        due = [s for s in self._scheduled if s.at_frame <= len(self.frames)]
        if not due or self._finished:
            return
        self._scheduled = [s for s in self._scheduled if s.at_frame > len(self.frames)]
        for scheduled in due:
            if not self._in_speech:
                self._emit(SpeechEventType.START_OF_SPEECH, audio_time=self._audio_time)
            if scheduled.interim is not None:
                self._emit(SpeechEventType.INTERIM, scheduled.interim, self._audio_time)
            self._emit(SpeechEventType.FINAL, scheduled.text, self._audio_time)
            self._emit(SpeechEventType.END_OF_SPEECH, audio_time=self._audio_time)
            self._in_speech = False
            self._silent_frames = 0
