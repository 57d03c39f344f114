"""Call quality per leg: packet loss, jitter, late frames and an estimated MOS.

The MOS is ITU-T G.107's E-model in the simplified form of Cole & Rosenbluth ("Voice over
IP performance monitoring", 2001), with G.113's loss robustness for the codec:

* effective one-way delay ``d = delay + 2 * jitter + 10 ms`` (a jitter buffer holds about
  twice the jitter; 10 ms of packetisation and processing);
* delay impairment ``Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)``;
* equipment impairment with packet loss ``Ie_eff = Ie + (95 - Ie) Ppl / (Ppl + Bpl)``, where
  ``Ppl`` is the percentage of frames lost *or too late to play* (both are gaps to the
  listener): G.711 with concealment Ie 0, Bpl 25.1; Opus (wideband at 32 kb/s and above,
  with in-band FEC) Ie 0, Bpl 30 — an estimate, G.113 lists none;
* ``R = 93.2 - Id - Ie_eff``, and ``MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)`` clamped
  to 1 … 4.5 (a clean G.711 call scores about 4.4).

:class:`LegMeter` turns the cumulative counters a leg exposes (packets expected and lost,
frames late, the current jitter) into the figures of the last interval.
"""

from __future__ import annotations

from dataclasses import dataclass

BPL = {"pcmu": 25.1, "pcma": 25.1, "opus": 30.0}


def r_factor(loss_pct: float, jitter_ms: float, delay_ms: float = 0.0,
             codec: str = "pcmu") -> float:
    d = max(0.0, delay_ms) + 2 * max(0.0, jitter_ms) + 10.0
    i_d = 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)
    ppl = min(100.0, max(0.0, loss_pct))
    i_e = (95.0 * ppl / (ppl + BPL.get(codec.lower(), 25.1))) if ppl else 0.0
    return max(0.0, min(100.0, 93.2 - i_d - i_e))


def mos(loss_pct: float, jitter_ms: float, delay_ms: float = 0.0, codec: str = "pcmu") -> float:
    """The estimated MOS (1 … 4.5) of a leg with these impairments."""
    r = r_factor(loss_pct, jitter_ms, delay_ms, codec)
    return round(max(1.0, min(4.5, 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))), 2)


@dataclass(frozen=True)
class LegQualityFigures:
    """One leg over one interval."""

    loss_pct: float  # packets lost on the wire
    late_pct: float  # frames that came too late to play (or never came) at the listener
    jitter_ms: float
    mos: float


@dataclass
class LegMeter:
    """Differences of a leg's cumulative counters between two readings."""

    codec: str = "pcmu"
    expected: int = 0
    lost: int = 0
    frames: int = 0
    late: int = 0

    def read(self, *, expected: int, lost: int, frames: int, late: int, jitter_ms: float,
             delay_ms: float = 0.0) -> LegQualityFigures | None:
        """The interval since the last reading (None when nothing was expected in it)."""
        d_expected, d_lost = expected - self.expected, max(0, lost - self.lost)
        d_frames, d_late = frames - self.frames, max(0, late - self.late)
        self.expected, self.lost, self.frames, self.late = expected, lost, frames, late
        if d_expected <= 0 and d_frames <= 0:
            return None
        loss = 100.0 * d_lost / d_expected if d_expected > 0 else 0.0
        late_pct = 100.0 * d_late / d_frames if d_frames > 0 else 0.0
        return LegQualityFigures(
            loss_pct=round(min(100.0, loss), 2), late_pct=round(min(100.0, late_pct), 2),
            jitter_ms=round(jitter_ms, 1),
            mos=mos(min(100.0, loss + late_pct), jitter_ms, delay_ms, self.codec))
