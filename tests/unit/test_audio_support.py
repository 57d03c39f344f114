"""The integration tests' audio matcher tolerates jitter steps, and only those."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.audio import assert_contains

RATE = 8000


def speech_like(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(int(seconds * RATE))
    scaled: np.ndarray = (noise / np.max(np.abs(noise)) * 12000).astype("<i2")
    return scaled


def step(audio: np.ndarray, at_s: float, ms: int) -> np.ndarray:
    """Insert (ms > 0) or drop (ms < 0) ``ms`` of audio at ``at_s``, as a jitter buffer does."""
    at = int(at_s * RATE)
    n = abs(ms) * RATE // 1000
    if ms > 0:
        return np.concatenate([audio[:at], np.zeros(n, "<i2"), audio[at:]])
    return np.concatenate([audio[:at], audio[at + n :]])


def recorded(audio: np.ndarray, delay_s: float = 0.02) -> bytes:
    lead = np.zeros(int(delay_s * RATE), "<i2")
    return np.concatenate([lead, audio, np.zeros(RATE, "<i2")]).tobytes()


def test_two_jitter_steps_out_and_back_pass() -> None:
    ref = speech_like(3.0)
    got = step(step(ref, 1.2, -10), 2.2, +10)  # CI: 0.025 -> 0.015 -> 0.025 s
    assert_contains(recorded(got), ref.tobytes(), RATE, starts_within=(0.0, 1.0), what="x")


def test_two_lost_pieces_without_a_step_fail() -> None:
    ref = speech_like(3.0)
    got = ref.copy()
    got[int(0.6 * RATE) : int(0.9 * RATE)] = 0
    got[int(1.6 * RATE) : int(1.9 * RATE)] = 0
    with pytest.raises(AssertionError):
        assert_contains(recorded(got), ref.tobytes(), RATE, starts_within=(0.0, 1.0), what="x")


def test_other_audio_fails() -> None:
    ref = speech_like(3.0)
    with pytest.raises(AssertionError):
        assert_contains(recorded(speech_like(3.0, seed=2)), ref.tobytes(), RATE,
                        starts_within=(0.0, 1.0), what="x")
