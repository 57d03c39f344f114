"""best_correlation finds a prompt inside a recording, and only when it is really there."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from hitl_sip.media.g711 import ulaw_decode, ulaw_encode
from hitl_sip.media.wav import resample
from hitl_sip.testing.analysis import best_correlation, dominant_frequency, rms_dbfs

RATE = 8000


def _speechlike(seed: int, seconds: float) -> npt.NDArray[np.float64]:
    """Band-limited noise shaped into ~4 Hz syllables: enough like speech for these tests."""
    rng = np.random.default_rng(seed)
    count = round(seconds * RATE)
    spectrum = np.fft.rfft(rng.normal(size=count))
    freqs = np.fft.rfftfreq(count, 1 / RATE)
    spectrum[(freqs < 200) | (freqs > 3500)] = 0
    carrier = np.fft.irfft(spectrum, count)
    t = np.arange(count) / RATE
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None)
    signal = carrier * syllables
    scaled: npt.NDArray[np.float64] = signal * 6000 / np.sqrt(np.mean(signal**2))
    return scaled


def _pcm(samples: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def _recording(needle: npt.NDArray[np.float64], at: float, seconds: float, gain: float) -> bytes:
    rng = np.random.default_rng(99)
    out = rng.normal(scale=20, size=round(seconds * RATE))  # line hiss
    start = round(at * RATE)
    out[start : start + len(needle)] += gain * needle
    return _pcm(out)


def test_finds_the_needle_at_its_offset_despite_a_level_change() -> None:
    needle = _speechlike(1, 1.5)
    score, offset = best_correlation(_recording(needle, 2.345, 6, 0.1), _pcm(needle), RATE)
    assert score > 0.9
    assert offset == pytest.approx(2.345, abs=1 / RATE)


def test_match_survives_a_g711_and_resampling_round_trip() -> None:
    needle = _speechlike(2, 2.0)
    through_phone = ulaw_decode(ulaw_encode(_recording(needle, 1.0, 5, 0.5)))
    upsampled = resample(through_phone, RATE, 16000)
    reference = resample(_pcm(needle), RATE, 16000)
    score, offset = best_correlation(upsampled, reference, 16000)
    assert score > 0.8
    assert offset == pytest.approx(1.0, abs=0.001)


def test_unrelated_audio_scores_low() -> None:
    recording = _recording(_speechlike(3, 2.0), 1.0, 5, 1.0)
    score, _ = best_correlation(recording, _pcm(_speechlike(4, 2.0)), RATE)
    assert score < 0.2


def test_near_silence_before_the_match_cannot_win() -> None:
    needle = _speechlike(5, 1.0)
    rng = np.random.default_rng(6)
    quiet = rng.normal(scale=0.5, size=10 * RATE)  # almost digital silence
    quiet[8 * RATE : 9 * RATE] += 0.3 * needle
    score, offset = best_correlation(_pcm(quiet), _pcm(needle), RATE)
    assert offset == pytest.approx(8.0, abs=1 / RATE)
    assert score > 0.9


def test_digital_silence_after_loud_audio_produces_no_spurious_peak() -> None:
    # A call recording ends in exact zeros once RTP stops; those windows have (almost) no
    # energy, and an unfloored normalization would score them as a perfect match.
    loud_then_silent = np.concatenate([_speechlike(9, 4.0), np.zeros(6 * RATE)])
    score, _ = best_correlation(_pcm(loud_then_silent), _pcm(_speechlike(5, 0.5)), RATE)
    assert score < 0.2


def test_all_zero_haystack_scores_zero() -> None:
    assert best_correlation(bytes(2 * RATE), _pcm(_speechlike(7, 0.5)), RATE)[0] == 0.0


def test_haystack_shorter_than_needle_scores_the_overlap_only() -> None:
    needle = _speechlike(8, 2.0)
    score, offset = best_correlation(_pcm(needle[: RATE // 2]), _pcm(needle), RATE)
    assert offset == 0.0
    assert 0.3 < score < 0.7  # a quarter of the needle: about sqrt(1/4) of the energy


def test_empty_or_silent_needle_is_rejected() -> None:
    with pytest.raises(ValueError, match="needle is empty"):
        best_correlation(bytes(100), b"", RATE)
    with pytest.raises(ValueError, match="needle is silent"):
        best_correlation(bytes(100), bytes(100), RATE)


def test_rms_dbfs_of_reference_signals() -> None:
    full_scale_square = np.array([32767, -32768] * 100, dtype="<i2").tobytes()
    assert rms_dbfs(full_scale_square) == pytest.approx(0.0, abs=0.01)
    t = np.arange(RATE) / RATE
    half_scale_sine = _pcm(16384 * np.sin(2 * np.pi * 1000 * t))
    assert rms_dbfs(half_scale_sine) == pytest.approx(-9.03, abs=0.02)
    assert rms_dbfs(bytes(320)) == -math.inf
    assert rms_dbfs(b"") == -math.inf


def test_dominant_frequency_of_a_tone() -> None:
    t = np.arange(RATE) / RATE
    assert dominant_frequency(_pcm(8000 * np.sin(2 * np.pi * 1234.5 * t)), RATE) == (
        pytest.approx(1234.5, abs=0.5)
    )
