"""The two speech seams: streaming speech-to-text and text-to-speech (STYLE.md, livekit-like).

STT: ``engine.stream(sample_rate)`` returns an :class:`SttStream`; the caller pushes 20 ms
PCM frames (s16le mono at ``sample_rate``) with :meth:`SttStream.push_frame` (never blocks,
never raises for a full buffer: it drops the oldest audio and counts it), calls
:meth:`SttStream.flush` to force the pending utterance out as a FINAL,
:meth:`SttStream.end_input` when no more audio will come (the stream then emits what is
pending and ends), and ``await stream.aclose()`` to stop it. Events are read with
``async for event in stream``; the iteration ends after end_input/aclose, or raises
:class:`~hitl_sip.errors.SpeechError` (``retryable`` says whether a new stream may work).

TTS: ``await engine.synthesize(text, sample_rate)`` returns s16le mono PCM at that rate;
engines cache by (text, voice, rate). Errors raise SpeechError with ``retryable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable


class SpeechEventType(StrEnum):
    START_OF_SPEECH = "start_of_speech"
    INTERIM = "interim"
    FINAL = "final"
    END_OF_SPEECH = "end_of_speech"


@dataclass(frozen=True)
class SpeechEvent:
    type: SpeechEventType
    text: str = ""
    confidence: float | None = None
    # seconds of audio pushed into this stream when the event's speech ended (for FINAL and
    # END_OF_SPEECH) or started (START_OF_SPEECH): lets callers measure latency on the audio
    # clock rather than on wall time
    audio_time: float = 0.0


@runtime_checkable
class SttStream(Protocol):
    def push_frame(self, pcm: bytes) -> None: ...

    async def flush(self) -> None: ...

    def end_input(self) -> None: ...

    async def aclose(self) -> None: ...

    def __aiter__(self) -> AsyncIterator[SpeechEvent]: ...


@runtime_checkable
class SttEngine(Protocol):
    name: str

    def stream(self, sample_rate: int, language: str = "en-US") -> SttStream: ...


@runtime_checkable
class TtsEngine(Protocol):
    name: str

    async def synthesize(self, text: str, sample_rate: int, voice: str | None = None) -> bytes: ...
