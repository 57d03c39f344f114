"""Finding a reference utterance inside a recording made through a real SIP stack.

The reference is checked in half-second pieces rather than as one block: pjmedia's adaptive
jitter buffer sometimes drops or inserts 10 ms while it settles, and a single such step in
the middle of an utterance costs a whole-utterance correlation up to half its score (0.69
and 0.79 seen on loopback) although every word arrived. Each intact piece still scores ~1.0
(unrelated speech: < 0.65), and the pieces must line up in time.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hitl_sip.testing.analysis import best_correlation, rms_dbfs

PIECE_SECONDS = 0.5
#: Intact pieces score ~1.0 after the round trip; unrelated speech scores up to ~0.65.
PIECE_MATCH = 0.8
#: A jitter-buffer step moves the rest of the audio by 10-20 ms.
MAX_DRIFT_S = 0.06


@dataclass
class Piece:
    start_s: float  # where the piece sits in the reference
    score: float
    delay_s: float  # where it was found in the recording, minus start_s


def find_pieces(haystack: bytes, needle: bytes, rate: int) -> list[Piece]:
    """Locate each non-silent ``PIECE_SECONDS`` piece of ``needle`` inside ``haystack``."""
    size = round(PIECE_SECONDS * rate) * 2
    pieces = []
    for at in range(0, len(needle) - size + 1, size):
        chunk = needle[at : at + size]
        if rms_dbfs(chunk) < -40:
            continue
        score, offset = best_correlation(haystack, chunk, rate)
        start = at / 2 / rate
        pieces.append(Piece(start, score, offset - start))
    return pieces


def unexplained(pieces: list[Piece]) -> list[Piece]:
    """Spoiled pieces that no jitter step accounts for.

    A piece spoiled by a step sits between intact neighbours found at different delays (the
    step happened inside it). On a loaded 2-core machine pjmedia may take a 10 ms step out and
    put it back a second later (0.025 -> 0.015 -> 0.025 s seen in CI), spoiling two pieces;
    a spoiled piece whose neighbours agree, or that has no intact neighbour, is a real loss.
    """
    lost = []
    for i, piece in enumerate(pieces):
        if piece.score >= PIECE_MATCH:
            continue
        before = pieces[i - 1] if i > 0 else None
        after = pieces[i + 1] if i + 1 < len(pieces) else None
        stepped = (
            before is not None and after is not None
            and before.score >= PIECE_MATCH and after.score >= PIECE_MATCH
            and abs(before.delay_s - after.delay_s) >= 0.005
        )
        if not stepped:
            lost.append(piece)
    return lost


def assert_contains(
    haystack: bytes, needle: bytes, rate: int, *, starts_within: tuple[float, float], what: str
) -> None:
    """``needle`` is in ``haystack`` in order, allowing one spoiled piece, or more when each
    sits on a jitter step (:func:`unexplained`)."""
    whole, _ = best_correlation(haystack, needle, rate)
    pieces = find_pieces(haystack, needle, rate)
    report = f"{what}: whole-needle corr {whole:.2f}; pieces " + ", ".join(
        f"{p.start_s:.1f}s={p.score:.2f}@{p.delay_s:+.3f}" for p in pieces
    )
    intact = [p for p in pieces if p.score >= PIECE_MATCH]
    assert len(pieces) >= 4, report
    assert len(intact) >= len(pieces) - 1 or not unexplained(pieces), report
    delays = [p.delay_s for p in intact]
    assert max(delays) - min(delays) <= MAX_DRIFT_S, f"pieces out of line; {report}"
    low, high = starts_within
    assert low <= delays[0] <= high, f"starts at {delays[0]:.2f} s; {report}"




def recording_channels(path: Path) -> tuple[int, bytes, bytes]:
    """A call's two-channel recording (hitl_sip.worker.recorder, WAV): its rate, what the
    caller sent (left) and what the caller heard (right), each mono s16le."""
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2, f"{path}: {w.getnchannels()} channels, not 2"
        rate, data = w.getframerate(), w.readframes(w.getnframes())
    both = np.frombuffer(data, dtype="<i2").reshape(-1, 2)
    return rate, both[:, 0].tobytes(), both[:, 1].tobytes()


def caller_channel(path: Path) -> tuple[int, bytes]:
    """The recording's left channel: what the caller sent."""
    rate, left, _ = recording_channels(path)
    return rate, left
