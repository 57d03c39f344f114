"""Audio measurements used to prove what a call actually carried.

``best_correlation`` answers "does this recording contain that prompt, and where?" after
the audio has crossed a real SIP stack (G.711, resampling, level changes): a normalized
cross-correlation computed with FFTs, band-limited to the telephone band by default, with
each haystack window's energy floored so near-silence cannot produce spurious peaks.
Real matches score roughly 0.5–0.95; unrelated speech stays well below 0.2.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["best_correlation", "dominant_frequency", "rms_dbfs"]

#: Haystack windows quieter than this fraction of the loudest window (−30 dB) are scored
#: as if they had this energy, so that silence and hiss cannot look like a match.
_ENERGY_FLOOR = 1e-3
_BAND_TAPER_HZ = 100.0


def _samples(pcm: bytes, name: str) -> npt.NDArray[np.float64]:
    if len(pcm) % 2:
        raise ValueError(f"{name}: PCM length must be a whole number of samples, got {len(pcm)}")
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _band_limit(
    signal: npt.NDArray[np.float64], rate: int, band: tuple[float, float]
) -> npt.NDArray[np.float64]:
    """Zero-phase band-pass via an FFT mask with raised-cosine edges."""
    low, high = band
    # Pad by 100 ms so the filter's ringing does not wrap around the circular FFT.
    size = 1 << int(len(signal) + rate // 10).bit_length()
    spectrum = np.fft.rfft(signal, size)
    freqs = np.fft.rfftfreq(size, 1.0 / rate)
    rise = np.clip((freqs - (low - _BAND_TAPER_HZ)) / _BAND_TAPER_HZ, 0.0, 1.0)
    fall = np.clip(((high + _BAND_TAPER_HZ) - freqs) / _BAND_TAPER_HZ, 0.0, 1.0)
    mask = (0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))
    return np.fft.irfft(spectrum * mask, size)[: len(signal)]


def best_correlation(
    haystack: bytes,
    needle: bytes,
    rate: int,
    *,
    band: tuple[float, float] | None = (300.0, 3400.0),
) -> tuple[float, float]:
    """Where ``needle`` best matches inside ``haystack``: (coefficient 0..1, offset seconds).

    Both are mono s16le PCM at ``rate``. The coefficient is the peak absolute normalized
    cross-correlation, so it ignores gain and polarity; the offset is where the needle
    starts in the haystack. ``band`` (Hz) limits both signals first (default: the G.711
    telephone band, which makes 16 kHz references comparable with 8 kHz-sourced audio);
    ``None`` compares the full band with the needle's mean removed. A haystack shorter
    than the needle is padded with silence at its end, so the needle is only tried at
    offset 0: the score drops in proportion to what is missing only when the haystack
    starts where the needle starts.
    """
    if rate < 1:
        raise ValueError(f"sample rate must be positive, got {rate}")
    hay = _samples(haystack, "haystack")
    ref = _samples(needle, "needle")
    if not len(ref):
        raise ValueError("needle is empty")
    if band is not None:
        low, high = band
        if not 0 <= low < high:
            raise ValueError(f"invalid band {band!r}: need 0 <= low < high")
        band = (low, min(high, rate / 2 - _BAND_TAPER_HZ))
        if band[1] <= low:
            raise ValueError(f"band {low}-{high} Hz is empty at a sample rate of {rate} Hz")
        ref = _band_limit(ref, rate, band)
        if len(hay):
            hay = _band_limit(hay, rate, band)
    else:
        ref = ref - ref.mean()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy <= 0.0:
        raise ValueError("needle is silent (no energy in the compared band)")
    if len(hay) < len(ref):
        hay = np.concatenate([hay, np.zeros(len(ref) - len(hay))])

    length = len(ref)
    lags = len(hay) - length + 1
    size = 1 << int(len(hay) + length - 2).bit_length()
    cross = np.fft.irfft(np.fft.rfft(hay, size) * np.conj(np.fft.rfft(ref, size)), size)[:lags]
    cumulative = np.concatenate([[0.0], np.cumsum(hay * hay)])
    window_energy = np.maximum(cumulative[length:] - cumulative[:-length], 0.0)
    floor = max(_ENERGY_FLOOR * float(window_energy.max()), 1e-9 * length)
    score = np.abs(cross) / np.sqrt(np.maximum(window_energy, floor) * ref_energy)
    best = int(np.argmax(score))
    return min(float(score[best]), 1.0), best / rate


def rms_dbfs(pcm: bytes) -> float:
    """RMS level in dB relative to full scale (a full-scale square wave is 0 dBFS).

    Silence (or no samples) is ``-inf``.
    """
    samples = _samples(pcm, "pcm")
    if not len(samples):
        return -math.inf
    rms = math.sqrt(float(np.mean(samples * samples)))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


def dominant_frequency(pcm: bytes, rate: int) -> float:
    """The frequency (Hz) of the strongest spectral peak, interpolated between FFT bins."""
    samples = _samples(pcm, "pcm")
    if len(samples) < 4:
        raise ValueError(f"need at least 4 samples to estimate a frequency, got {len(samples)}")
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * np.hanning(len(samples))))
    peak = int(np.argmax(spectrum[1:])) + 1
    shift = 0.0
    if 0 < peak < len(spectrum) - 1:
        left, mid, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2 * mid + right
        if denominator != 0:
            shift = 0.5 * float(left - right) / float(denominator)
    return (peak + shift) * rate / len(samples)
