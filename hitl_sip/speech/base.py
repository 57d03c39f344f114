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

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, Self, runtime_checkable

from hitl_sip.errors import SpeechError


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


class QueuedEvents:
    """``async for`` over an engine's event queue, shared by the STT streams.

    The stream puts :class:`SpeechEvent` items on ``_events``; ``None`` ends the iteration
    and a :class:`SpeechError` is raised to the consumer (both once: afterwards iteration
    is over). ``_stream_closed`` tells whether ``aclose()`` was called.
    """

    _events: asyncio.Queue[SpeechEvent | SpeechError | None]
    _exhausted: bool = False

    def _stream_closed(self) -> bool:
        raise NotImplementedError

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SpeechEvent:
        if self._stream_closed() or self._exhausted:
            raise StopAsyncIteration
        item = await self._events.get()
        if item is None or self._stream_closed():
            self._exhausted = True
            raise StopAsyncIteration
        if isinstance(item, SpeechError):
            self._exhausted = True
            raise item
        return item
