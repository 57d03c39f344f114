"""The E-model estimate and the per-interval leg figures (hitl_sip.media.quality)."""

from __future__ import annotations

import pytest

from hitl_sip.media.quality import LegMeter, mos, r_factor


def test_a_clean_g711_leg_scores_about_4_4_and_impairments_only_lower_it() -> None:
    assert mos(0, 0) == pytest.approx(4.4, abs=0.05)
    assert r_factor(0, 0) == pytest.approx(92.96, abs=0.01)  # 93.2 - 0.024 * 10
    losses = [mos(loss, 0) for loss in (0, 1, 2, 5, 10, 20)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 3.0
    jitters = [mos(0, j) for j in (0, 20, 50, 100, 200)]
    assert jitters == sorted(jitters, reverse=True) and jitters[-1] < 4.0
    assert mos(5, 30) < mos(5, 0) < mos(0, 0)
    assert mos(100, 1000) == 1.0  # clamped


def test_the_meter_reports_each_interval_not_the_whole_call() -> None:
    meter = LegMeter()
    assert meter.read(expected=0, lost=0, frames=0, late=0, jitter_ms=0) is None
    first = meter.read(expected=100, lost=10, frames=90, late=0, jitter_ms=12.0)
    assert first is not None and (first.loss_pct, first.late_pct) == (10.0, 0.0)
    second = meter.read(expected=200, lost=10, frames=190, late=19, jitter_ms=2.0)
    assert second is not None and (second.loss_pct, second.late_pct) == (0.0, 19.0)
    assert second.mos == mos(19.0, 2.0)  # late frames are gaps to the listener too
    assert first.mos > second.mos
