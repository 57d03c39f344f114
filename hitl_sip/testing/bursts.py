"""Marked audio for latency and alignment measurements: 100 ms tone bursts every 500 ms.

The caller's 440 Hz burst starts at frame 0 of every 25-frame cycle, the agent's 1 kHz one
at frame :data:`AGENT_OFFSET`; :func:`onsets` finds where bursts start in what a party
heard (a loud frame after at least 150 ms of quiet) and counts dropouts (a quiet frame
inside a burst). Used by ``bench/bridge_latency.py``, ``bench/supervision.py`` and the
recording test.
"""

from __future__ import annotations

import math

import numpy as np

from hitl_sip.testing.agent import SAMPLES
from hitl_sip.testing.analysis import rms_dbfs

CYCLE = 25  # frames: one burst every 500 ms
BURST = 5  # frames: 100 ms
AGENT_OFFSET = 12
ON_DBFS, OFF_DBFS = -35.0, -45.0


def caller_source(n: int) -> bytes:
    if n % CYCLE >= BURST:
        return bytes(320)
    t = (np.arange(160) + n * 160) / 8000
    return (np.sin(2 * math.pi * 440 * t) * 0.25 * 32767).astype("<i2").tobytes()


def agent_source(n: int) -> np.ndarray:
    if not AGENT_OFFSET <= n % CYCLE < AGENT_OFFSET + BURST:
        return np.zeros(SAMPLES, dtype=np.int16)
    t = (np.arange(SAMPLES) + n * SAMPLES) / 48000
    return (np.sin(2 * math.pi * 1000 * t) * 0.25 * 32767).astype(np.int16)


def onsets(frames: list[tuple[float, bytes]]) -> tuple[list[float], int]:
    """Arrival times of the frames where a burst starts (loud after at least 150 ms of
    quiet), and how many dropouts (a quiet frame inside a burst) there were."""
    out: list[float] = []
    dropouts = 0
    last_loud: float | None = None
    quiet_in_burst = False
    for arrival, pcm in frames:
        level = rms_dbfs(pcm)
        if level > ON_DBFS:
            if last_loud is None or arrival - last_loud > 0.15:
                out.append(arrival)
            elif quiet_in_burst:
                dropouts += 1
            quiet_in_burst = False
            last_loud = arrival
        elif level < OFF_DBFS and last_loud is not None and arrival - last_loud < 0.06:
            quiet_in_burst = True
    return out, dropouts


