"""A deterministic TTS engine for unit tests (livekit-style ``FakeTTS``).

``FakeTts`` answers every request with a sine tone whose length is proportional to the text
(60 ms per character by default) and whose pitch is derived from the text and voice, so
different requests give different, reproducible PCM. It records every call, can be told to
fail the next requests, and can hold synthesis until a test releases it, so concurrency is
tested with events rather than sleeps.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["FakeTts", "TtsCall"]


@dataclass(frozen=True)
class TtsCall:
    """One ``synthesize`` request as the engine received it."""

    text: str
    sample_rate: int
    voice: str | None


class FakeTts:
    """A :class:`~hitl_sip.speech.base.TtsEngine` returning a tone per request.

    ``release``, when given, is awaited by every synthesis after it has been recorded and
    ``started`` has been set: a test can start several requests, ``await fake.started.wait()``
    and inspect them before letting them finish with ``release.set()``. Whitespace-only text
    gives empty PCM, as the real engines do.
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        ms_per_char: float = 60.0,
        amplitude: int = 8000,
        release: asyncio.Event | None = None,
    ) -> None:
        if ms_per_char <= 0:
            raise ValueError(f"ms_per_char must be positive, got {ms_per_char}")
        if not 0 < amplitude <= 32767:
            raise ValueError(f"amplitude must be in 1..32767, got {amplitude}")
        self.name = name
        self.ms_per_char = ms_per_char
        self.amplitude = amplitude
        self.release = release
        self.calls: list[TtsCall] = []
        self.started = asyncio.Event()
        self.completed = 0
        self._failures: list[BaseException] = []

    def fail_next(self, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` requests raise ``error`` (after being recorded)."""
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        self._failures.extend([error] * times)

    def expected_pcm(self, text: str, sample_rate: int, voice: str | None = None) -> bytes:
        """The PCM a successful request for these arguments returns."""
        if sample_rate < 1:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        if not text.strip():
            return b""
        count = round(len(text) * self.ms_per_char / 1000 * sample_rate)
        # 300..1250 Hz in 50 Hz steps, chosen by a stable hash of the request
        seed = zlib.crc32(f"{voice}\0{text}".encode("utf-8", "surrogatepass"))
        frequency = 300.0 + 50.0 * (seed % 20)
        t = np.arange(count, dtype=np.float64) / sample_rate
        tone = self.amplitude * np.sin(2 * math.pi * frequency * t)
        return np.round(tone).astype("<i2").tobytes()

    async def synthesize(self, text: str, sample_rate: int, voice: str | None = None) -> bytes:
        self.calls.append(TtsCall(text, sample_rate, voice))
        self.started.set()
        if self.release is not None:
            await self.release.wait()
        if self._failures:
            raise self._failures.pop(0)
        pcm = self.expected_pcm(text, sample_rate, voice)
        self.completed += 1
        return pcm
