"""Streaming integer-ratio resampling for 20 ms frames, with no frame of buffering.

libswresample (behind PyAV's ``AudioResampler``) returns fewer samples than a frame on its
first call (its filter delay); anything that cuts its output into whole frames then holds
almost one frame back for the rest of the call — 20 ms of latency per conversion. aiortc's
encoders do exactly that when the frame's rate is not the codec's. The bridge converts
8/16 kHz ⇄ 48 kHz itself: a windowed-sinc FIR, polyphase for interpolation, with the
filter's state carried between frames, so each input frame yields exactly one output frame
and the only delay is the filter's group delay (about 1 ms).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

TAPS_PER_PHASE = 16


def _lowpass(ratio: int) -> npt.NDArray[np.float64]:
    """Windowed-sinc lowpass at the lower rate's Nyquist (0.9 of it), at the higher rate."""
    n = TAPS_PER_PHASE * ratio
    t = np.arange(n) - (n - 1) / 2
    cutoff = 0.45 / ratio  # cycles per sample at the higher rate
    h: npt.NDArray[np.float64] = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, 8.0)
    return h / float(h.sum())


class FirResampler:
    """Mono int16 ``rate_in`` → ``rate_out`` where one divides the other."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in == rate_out:
            raise ValueError("no resampling needed")
        high, low = max(rate_in, rate_out), min(rate_in, rate_out)
        if high % low:
            raise ValueError(f"{rate_in} -> {rate_out} is not an integer ratio")
        self.ratio = high // low
        self.up = rate_out > rate_in
        self.h = _lowpass(self.ratio)
        if self.up:
            # polyphase: phase p takes taps p, p + ratio, ... (gain ratio restores level)
            self.phases = [self.h[p::self.ratio] * self.ratio for p in range(self.ratio)]
            self.history = np.zeros(TAPS_PER_PHASE - 1)
        else:
            self.history = np.zeros(len(self.h) - 1)

    def process(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        x = np.concatenate([self.history, samples.astype(np.float64)])
        if self.up:
            n = len(samples)
            out = np.empty(n * self.ratio)
            for p, taps in enumerate(self.phases):
                out[p::self.ratio] = np.convolve(x, taps, mode="valid")[:n]
            self.history = x[len(x) - (TAPS_PER_PHASE - 1):]
        else:
            filtered = np.convolve(x, self.h, mode="valid")
            # keep the decimation phase across frames: frames are whole multiples of ratio
            out = filtered[:: self.ratio]
            self.history = x[len(x) - (len(self.h) - 1):]
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)
