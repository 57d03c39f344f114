"""Text-to-speech with the espeak-ng command-line program, run as an asyncio subprocess.

Each request runs ``espeak-ng --stdout --stdin`` with the text on stdin (no shell, nothing
the text contains can become an option), reads the WAV it writes to stdout (22 050 Hz,
whose RIFF sizes are placeholders because it streams), and then, off the event loop:

1. trims silence: espeak-ng starts with ~50 ms and ends with ~350 ms of silence, which
   would delay the first audible frame of every reply; ``lead_ms``/``tail_ms`` are kept;
2. resamples to the requested rate (8000 or 16000 Hz for telephony; any rate works);
3. normalises to ``target_rms_dbfs`` (−20 dBFS RMS, peaks under −1 dBFS, 5 ms fades at
   the ends), the level of the prompts in ``rtp/`` made by ``rtp/generate.py``.

Text that is empty or only whitespace yields empty PCM without running espeak-ng (so does
text with nothing to pronounce, such as ``"..."``); text longer than ``max_chars`` raises
``ValueError``. Control characters are replaced by spaces and runs of whitespace
(including newlines) collapse to one space. At most ``max_concurrency`` espeak-ng
processes run at once; further requests wait their turn.

Errors: a missing or non-executable program, or an unknown voice, raise
``SpeechError(retryable=False)``; a crash, non-zero exit, malformed output or timeout
raise ``SpeechError(retryable=True)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import struct
import time

import numpy as np
import numpy.typing as npt

from hitl_sip.errors import SpeechError
from hitl_sip.media.wav import resample

__all__ = ["EspeakTts"]

log = logging.getLogger(__name__)

_VOICE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.\-/]{0,63}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_STDERR_LIMIT = 300

PEAK_LIMIT_DBFS = -1.0
FADE_SECONDS = 0.005
# Relative to the clip's peak: quieter samples at the ends count as silence (−50 dB).
SILENCE_BELOW_PEAK_DB = -50.0


class EspeakTts:
    """A :class:`~hitl_sip.speech.base.TtsEngine` backed by the espeak-ng program."""

    name = "espeak"

    def __init__(
        self,
        *,
        executable: str = "espeak-ng",
        voice: str = "en-us",
        words_per_minute: int = 160,
        pitch: int = 50,
        target_rms_dbfs: float = -20.0,
        lead_ms: float = 10.0,
        tail_ms: float = 100.0,
        max_chars: int = 2000,
        max_concurrency: int = 4,
        timeout: float = 10.0,
    ) -> None:
        _check_voice(voice)
        if not 80 <= words_per_minute <= 450:
            raise ValueError(f"words_per_minute must be in 80..450, got {words_per_minute}")
        if not 0 <= pitch <= 99:
            raise ValueError(f"pitch must be in 0..99, got {pitch}")
        if not -60.0 <= target_rms_dbfs <= 0.0:
            raise ValueError(f"target_rms_dbfs must be in -60..0, got {target_rms_dbfs}")
        if lead_ms < 0 or tail_ms < 0:
            raise ValueError(f"lead_ms and tail_ms must be >= 0, got {lead_ms}, {tail_ms}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.executable = executable
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.pitch = pitch
        self.target_rms_dbfs = target_rms_dbfs
        self.lead_ms = lead_ms
        self.tail_ms = tail_ms
        self.max_chars = max_chars
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrency)

    @property
    def cache_namespace(self) -> str:
        """The settings that change the audio, for :class:`~hitl_sip.speech.tts.cache.CachedTts`."""
        return (
            f"voice={self.voice};wpm={self.words_per_minute};pitch={self.pitch};"
            f"rms={self.target_rms_dbfs:g};lead={self.lead_ms:g};tail={self.tail_ms:g}"
        )

    async def synthesize(self, text: str, sample_rate: int, voice: str | None = None) -> bytes:
        if sample_rate < 1:
            raise ValueError(f"sample rate must be positive, got {sample_rate}")
        if len(text) > self.max_chars:
            raise ValueError(f"text is {len(text)} characters long, the limit is {self.max_chars}")
        voice = self.voice if voice is None else voice
        _check_voice(voice)
        spoken = " ".join(_CONTROL_RE.sub(" ", text).split())
        if not spoken:
            return b""

        started = time.monotonic()
        async with self._slots:
            waited = time.monotonic() - started
            wav = await self._run(spoken, voice)
        pcm = await asyncio.to_thread(self._process, wav, sample_rate)
        log.debug(
            "espeak-ng: %d chars -> %.2f s at %d Hz in %.0f ms (%.0f ms queued)",
            len(spoken),
            len(pcm) / 2 / sample_rate,
            sample_rate,
            (time.monotonic() - started) * 1000,
            waited * 1000,
            extra={"redact": {"text": spoken}},
        )
        return pcm

    def _command(self, voice: str) -> list[str]:
        return [
            self.executable,
            "--stdout",
            "--stdin",
            "-b",
            "1",  # input is UTF-8
            "-v",
            voice,
            "-s",
            str(self.words_per_minute),
            "-p",
            str(self.pitch),
        ]

    async def _run(self, text: str, voice: str) -> bytes:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command(voice),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
            raise SpeechError(
                f"espeak-ng cannot be run as {self.executable!r}: {e.strerror or e} "
                "(install espeak-ng or set the executable path)",
                retryable=False,
            ) from e
        except OSError as e:  # e.g. EAGAIN/ENOMEM when forking under load
            raise SpeechError(f"espeak-ng could not be started: {e}", retryable=True) from e

        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await proc.communicate(text.encode("utf-8", "replace"))
        except TimeoutError as e:
            raise SpeechError(
                f"espeak-ng did not finish within {self.timeout:g} s", retryable=True
            ) from e
        finally:
            if proc.returncode is None:  # timed out or cancelled: leave no process behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

        if proc.returncode != 0:
            detail = stderr.decode("utf-8", "replace").strip()[:_STDERR_LIMIT]
            if proc.returncode is not None and proc.returncode < 0:
                reason = f"was killed by signal {-proc.returncode}"
            else:
                reason = f"exited with status {proc.returncode}"
            unknown_voice = "voice" in detail.lower() and "not exist" in detail.lower()
            raise SpeechError(
                f"espeak-ng {reason}" + (f": {detail}" if detail else ""),
                retryable=not unknown_voice,
            )
        return stdout

    def _process(self, wav: bytes, sample_rate: int) -> bytes:
        rate, pcm = parse_streamed_wav(wav)
        samples = np.frombuffer(pcm, dtype="<i2")
        trimmed = trim_silence(samples, rate, self.lead_ms / 1000, self.tail_ms / 1000)
        if trimmed.size == 0:
            return b""
        resampled = resample(trimmed.astype("<i2").tobytes(), rate, sample_rate)
        return normalize(resampled, sample_rate, self.target_rms_dbfs)


def _check_voice(voice: str) -> None:
    if not _VOICE_RE.fullmatch(voice):
        raise ValueError(
            f"espeak-ng voice name {voice!r} is invalid "
            "(letters, digits and _+.-/ only, at most 64 characters)"
        )


def parse_streamed_wav(data: bytes) -> tuple[int, bytes]:
    """Parse espeak-ng's stdout WAV: ``(rate, mono s16le PCM)``.

    espeak-ng streams, so its RIFF and data sizes are placeholders (~2 GiB): the data chunk
    is taken to run to the end of the output. Raises SpeechError (retryable) otherwise.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SpeechError(
            f"espeak-ng wrote {len(data)} bytes that are not a WAV file", retryable=True
        )
    pos = 12
    fmt: bytes | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        if chunk_id == b"data":
            if fmt is None:
                break
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", fmt)
            if (tag, channels, bits) != (1, 1, 16) or rate < 1:
                raise SpeechError(
                    f"espeak-ng wrote WAV format {tag}, {channels} channel(s), {bits} bits "
                    f"at {rate} Hz; expected mono 16-bit PCM",
                    retryable=False,
                )
            body = data[pos + 8 : pos + 8 + size]
            return rate, body[: len(body) - len(body) % 2]
        if chunk_id == b"fmt ":
            fmt = data[pos + 8 : pos + 8 + size]
            if len(fmt) < 16:
                break
        pos += 8 + size + (size & 1)
    raise SpeechError("espeak-ng output has no usable 'fmt ' and 'data' chunks", retryable=True)


def trim_silence(
    samples: npt.NDArray[np.int16], rate: int, lead: float, tail: float
) -> npt.NDArray[np.int16]:
    """Cut silence (50 dB below the peak) at both ends, keeping ``lead``/``tail`` seconds."""
    if samples.size == 0:
        return samples
    magnitude = np.abs(samples.astype(np.int32))
    peak = int(magnitude.max())
    if peak == 0:
        return samples[:0]
    threshold = max(1, peak * 10 ** (SILENCE_BELOW_PEAK_DB / 20))
    loud = np.flatnonzero(magnitude >= threshold)
    start = max(0, int(loud[0]) - round(lead * rate))
    end = min(samples.size, int(loud[-1]) + 1 + round(tail * rate))
    return samples[start:end]


def normalize(pcm: bytes, rate: int, target_rms_dbfs: float) -> bytes:
    """Scale to ``target_rms_dbfs`` RMS (peaks under −1 dBFS), with 5 ms fades at the ends."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    fade = min(round(FADE_SECONDS * rate), samples.size // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        samples[:fade] *= ramp
        samples[-fade:] *= ramp[::-1]
    rms = math.sqrt(float(np.mean(samples * samples))) if samples.size else 0.0
    if rms == 0.0:
        return pcm
    peak = float(np.max(np.abs(samples)))
    gain = 32768.0 * 10 ** (target_rms_dbfs / 20) / rms
    gain = min(gain, 32768.0 * 10 ** (PEAK_LIMIT_DBFS / 20) / peak)
    return np.clip(np.round(samples * gain), -32768, 32767).astype("<i2").tobytes()
