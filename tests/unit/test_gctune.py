"""Garbage-collector tuning of the worker and the hub (hitl_sip.gctune)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hitl_sip.gctune import PauseMeter, tune
from hitl_sip.metrics import Registry


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_every_collection_is_timed_by_generation() -> None:
    registry = Registry()
    meter = PauseMeter(registry)
    meter.install()
    try:
        gc.collect(0)
        gc.collect(2)
    finally:
        meter.remove()
    assert meter not in gc.callbacks
    hist = meter.histogram
    assert hist.get(generation="0") >= 1
    assert hist.get(generation="2") >= 1
    assert meter.longest > 0
    assert b"hitl_sip_gc_pause_seconds_bucket" in registry.render()


def test_tune_freezes_the_start_up_heap(restore_gc: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HITL_SIP_GC", raising=False)
    alive: list[list[int]] = [[] for _ in range(10)]  # containers: the collector tracks them
    assert tune("test") is True
    assert gc.get_freeze_count() >= len(alive)


def test_stock_leaves_cpythons_settings(restore_gc: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_SIP_GC", "stock")
    before = gc.get_threshold()
    assert tune("test") is False
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
