"""Metrics: prometheus_client registries, worker snapshots over JSON, the hub's exposition."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.metrics import Registry, WorkerCollector, parse_snapshot
from hitl_sip.protocol.worker import Hello, parse_worker_message

Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of an exposition, by name and labels, read by prometheus_client's parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, Labels]:
    return name, frozenset(labels.items())


def hub_with_worker(snapshot: Any, worker_id: str = "w1") -> WorkerRegistry:
    """A hub registry holding ``snapshot`` as the latest status of a connected worker, both
    messages read from JSON text as on the worker link."""
    hub = WorkerRegistry()
    hello = parse_worker_message(json.dumps({"type": "hello", "workerId": worker_id}))
    assert isinstance(hello, Hello)
    hub.connected(worker_id, hello)
    hub.handle(worker_id, parse_worker_message(json.dumps({"type": "status",
                                                           "metrics": snapshot})))
    return hub


def test_a_counter_past_two_million_renders_its_exact_value() -> None:
    r = Registry()
    calls = r.counter("hitl_sip_calls_total", "Calls by outcome", ["outcome"])
    for _ in range(2_000):
        calls.inc(1_000, outcome="completed")
    calls.inc(1_234_567, outcome="failed")
    text = r.render().decode()
    assert "# TYPE hitl_sip_calls_total counter" in text
    assert "_created" not in text
    values = samples(text)
    assert values[key("hitl_sip_calls_total", outcome="completed")] == 2_000_000.0
    assert values[key("hitl_sip_calls_total", outcome="failed")] == 1_234_567.0
    assert calls.get(outcome="completed") == 2_000_000


def test_worker_counters_cross_json_and_the_hub_with_exact_values() -> None:
    worker = Registry()
    calls = worker.counter("hitl_sip_calls_total", "Calls by outcome", ["outcome"])
    calls.inc(1_234_567, outcome="completed")
    calls.inc(2_000_000, outcome="failed")
    worker.counter("hitl_sip_dtmf_events_total", "DTMF digits").inc(123_456_789)
    worker.gauge("hitl_sip_active_calls", "Active calls").set(3)
    hub = hub_with_worker(worker.snapshot())
    hub.worker_restarts.inc(2)

    text = hub.metrics.render().decode()
    values = samples(text)
    assert values[key("hitl_sip_calls_total", worker="w1", outcome="completed")] == 1_234_567.0
    assert values[key("hitl_sip_calls_total", worker="w1", outcome="failed")] == 2_000_000.0
    assert values[key("hitl_sip_dtmf_events_total", worker="w1")] == 123_456_789.0
    assert values[key("hitl_sip_active_calls", worker="w1")] == 3.0
    assert values[key("hitl_sip_hub_worker_restarts_total")] == 2.0
    assert values[key("hitl_sip_hub_bad_worker_metrics_total")] == 0.0
    assert "1.23457e+06" not in text
    assert "# TYPE hitl_sip_calls_total counter" in text
    assert "_created" not in text


def test_a_disconnected_worker_leaves_the_exposition() -> None:
    worker = Registry()
    worker.gauge("hitl_sip_active_calls", "Active calls").set(1)
    hub = hub_with_worker(worker.snapshot())
    assert key("hitl_sip_active_calls", worker="w1") in samples(hub.metrics.render().decode())
    hub.disconnected("w1")
    assert "hitl_sip_active_calls" not in hub.metrics.render().decode()


def test_families_from_several_workers_are_merged_under_one_header() -> None:
    snapshots = []
    for worker_id, value in (("w1", 1), ("w2", 2)):
        r = Registry()
        r.gauge("hitl_sip_active_calls", "Active calls").set(value)
        snapshots.append((worker_id, parse_snapshot(json.loads(json.dumps(r.snapshot())))[0]))
    hub = Registry()
    hub.register(WorkerCollector(lambda: snapshots))
    text = hub.render().decode()
    assert text.count("# TYPE hitl_sip_active_calls gauge") == 1
    values = samples(text)
    assert values[key("hitl_sip_active_calls", worker="w1")] == 1.0
    assert values[key("hitl_sip_active_calls", worker="w2")] == 2.0


def test_histogram_buckets_sum_and_count_parse_locally_and_from_a_worker() -> None:
    worker = Registry()
    latency = worker.histogram("hitl_sip_answer_seconds", "Answer delay", ["trunk"],
                               buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 3.0):
        latency.observe(value, trunk="a")
    local = samples(worker.render().decode())
    hub = hub_with_worker(worker.snapshot())
    remote = samples(hub.metrics.render().decode())
    for values, extra in ((local, {}), (remote, {"worker": "w1"})):
        for le, count in (("0.1", 1.0), ("1.0", 3.0), ("+Inf", 4.0)):
            assert values[key("hitl_sip_answer_seconds_bucket", trunk="a", le=le, **extra)] == count
        assert values[key("hitl_sip_answer_seconds_count", trunk="a", **extra)] == 4.0
        assert values[key("hitl_sip_answer_seconds_sum", trunk="a", **extra)] == 4.05
    assert latency.get(trunk="a") == 4


@pytest.mark.parametrize("value", ['say "hi"\nnow', "back\\slash", 'all "\\\n" three'])
def test_label_values_with_quotes_backslashes_and_newlines_are_escaped(value: str) -> None:
    r = Registry()
    r.counter("m_total", "help", ["reason"]).inc(reason=value)
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    assert f'm_total{{reason="{escaped}"}} 1.0' in r.render().decode()
    assert samples(r.render().decode()) == {key("m_total", reason=value): 1.0}
    hub = hub_with_worker(r.snapshot(), worker_id=value)
    assert samples(hub.metrics.render().decode())[key("m_total", worker=value, reason=value)] == 1


GOOD = {"name": "hitl_sip_dtmf_events_total", "help": "DTMF", "kind": "counter", "labels": [],
        "samples": [[[], 5]]}
MALFORMED: list[Any] = [
    "not an object",
    {**GOOD, "name": "bad name"},
    {**GOOD, "name": "hitl_sip_calls"},  # a counter without _total
    {**GOOD, "name": "hitl_sip_x_total", "kind": "summary"},
    {**GOOD, "name": "hitl_sip_x_total", "samples": [[[], -1]]},  # a counter going down
    {**GOOD, "name": "hitl_sip_x_total", "samples": [[[], "5"]]},
    {**GOOD, "name": "hitl_sip_x_total", "samples": [[[], True]]},
    {**GOOD, "name": "hitl_sip_x_total", "samples": [[[], 10**400]]},
    {**GOOD, "name": "hitl_sip_x_total", "samples": [[["extra"], 1]]},
    {**GOOD, "name": "hitl_sip_x_total", "labels": ["worker"], "samples": [[["w9"], 1]]},
    {**GOOD, "name": "hitl_sip_x_total", "labels": ["a", "a"], "samples": []},
    {**GOOD, "name": "hitl_sip_x_total", "labels": ["__a"], "samples": []},
    {**GOOD, "name": "hitl_sip_x_total", "labels": ["a"], "samples": [[["\ud800"], 1]]},
    {**GOOD, "name": "hitl_sip_x_total", "labels": ["a"], "samples": [[["v"], 1], [["v"], 2]]},
    {**GOOD, "name": "hitl_sip_x_total", "samples": "many"},
    {"name": "hitl_sip_h", "help": "", "kind": "histogram", "labels": [], "buckets": [1, 0.5],
     "samples": []},
    {"name": "hitl_sip_h", "help": "", "kind": "histogram", "labels": [], "buckets": [1],
     "samples": [[[], {"counts": [2, 1], "sum": 1}]]},  # not cumulative
    {"name": "hitl_sip_h", "help": "", "kind": "histogram", "labels": [], "buckets": [1],
     "samples": [[[], {"counts": [1], "sum": 1}]]},  # +Inf missing
    GOOD,  # the same family twice
]


def test_malformed_worker_metric_families_are_skipped_and_counted() -> None:
    hub = hub_with_worker([GOOD, *MALFORMED])
    text = hub.metrics.render().decode()
    values = samples(text)
    assert values[key("hitl_sip_dtmf_events_total", worker="w1")] == 5.0
    assert values[key("hitl_sip_hub_bad_worker_metrics_total")] == len(MALFORMED)
    assert "hitl_sip_x_total" not in text and "hitl_sip_h_" not in text


def test_a_worker_family_named_like_a_hub_metric_is_left_out() -> None:
    impostor = {**GOOD, "name": "hitl_sip_hub_worker_restarts_total", "samples": [[[], 99]]}
    hub = hub_with_worker([impostor])
    text = hub.metrics.render().decode()
    assert text.count("# TYPE hitl_sip_hub_worker_restarts_total counter") == 1
    assert samples(text)[key("hitl_sip_hub_worker_restarts_total")] == 0.0


def test_wrong_labels_and_names_are_rejected() -> None:
    r = Registry()
    m = r.counter("m_total", "help", ["outcome"])
    with pytest.raises(ValueError, match="expected labels"):
        m.inc(result="x")
    with pytest.raises(ValueError, match="expected labels"):
        m.inc()
    with pytest.raises(ValueError, match="already registered"):
        r.counter("m_total", "again")
    with pytest.raises(ValueError, match="must end in _total"):
        r.counter("m", "a counter named like a gauge")


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
