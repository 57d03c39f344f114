"""Metrics registry and Prometheus text rendering."""

from __future__ import annotations

import threading

import pytest

from hitl_sip.metrics import Registry, render


def test_counters_with_labels_render_in_prometheus_text() -> None:
    r = Registry()
    calls = r.counter("hitl_sip_calls_total", "Calls by outcome", ["outcome"])
    calls.inc(outcome="completed")
    calls.inc(2, outcome="cancelled")
    active = r.gauge("hitl_sip_active_calls", "Active calls")
    active.set(3)
    text = render([({"worker": "w1"}, r.snapshot())])
    assert "# TYPE hitl_sip_calls_total counter" in text
    assert 'hitl_sip_calls_total{worker="w1",outcome="completed"} 1' in text
    assert 'hitl_sip_calls_total{worker="w1",outcome="cancelled"} 2' in text
    assert 'hitl_sip_active_calls{worker="w1"} 3' in text


def test_families_from_several_workers_are_merged_under_one_header() -> None:
    snaps = []
    for worker in ("w1", "w2"):
        r = Registry()
        r.gauge("hitl_sip_active_calls", "Active calls").set(1)
        snaps.append(({"worker": worker}, r.snapshot()))
    text = render(snaps)
    assert text.count("# TYPE hitl_sip_active_calls gauge") == 1
    assert 'hitl_sip_active_calls{worker="w2"} 1' in text


def test_label_values_are_escaped() -> None:
    r = Registry()
    r.counter("m_total", "help", ["reason"]).inc(reason='say "hi"\nnow')
    assert 'm_total{reason="say \\"hi\\"\\nnow"} 1' in render([({}, r.snapshot())])


def test_wrong_labels_are_rejected() -> None:
    r = Registry()
    m = r.counter("m_total", "help", ["outcome"])
    with pytest.raises(ValueError, match="expected labels"):
        m.inc(result="x")
    with pytest.raises(ValueError, match="already registered"):
        r.counter("m_total", "again")


def test_increments_from_many_threads_are_not_lost() -> None:
    m = Registry().counter("m_total", "help")

    def bump() -> None:
        for _ in range(10_000):
            m.inc()

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.get() == 40_000
