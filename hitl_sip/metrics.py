"""Metrics: prometheus_client underneath, a small typed front, and worker snapshots.

Each process keeps a :class:`Registry` with its own ``CollectorRegistry`` (never the global
one). A media worker ships :meth:`Registry.snapshot` (plain JSON, exact values) to the hub in
its ``status`` messages; the hub checks each snapshot with :func:`parse_snapshot` when it
arrives and a :class:`WorkerCollector` renders every connected worker's latest one under a
``worker`` label. Metrics may be updated from the pjsua2 thread and the media clock thread:
prometheus_client's values carry their own locks.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import prometheus_client
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as MetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

# ``_created`` series (when each counter was made) would double the exposition for nothing a
# dashboard uses. The switch is process-wide and read at each collection (the function has no
# annotations, hence the ignore).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
WORKER_LABEL = "worker"
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

Kind = Literal["counter", "gauge", "histogram"]
LabelValues = tuple[str, ...]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# prometheus_client's own ``le`` formatting, so worker histograms read like local ones
# (utils.floatToGoString carries no annotations)
_format_le: Callable[[float], str] = floatToGoString


class _Metric:
    kind: Kind

    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 registry: CollectorRegistry) -> None:
        self.name = name
        self.help = help
        self.labels = labels
        self._registry = registry

    def _check(self, labels: dict[str, str]) -> None:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {tuple(labels)}")

    def get(self, **labels: str) -> float:
        """The current value (0 when never set); meant for tests and benchmarks."""
        self._check(labels)
        value = self._registry.get_sample_value(self.name, {k: str(v) for k, v in labels.items()})
        return 0.0 if value is None else value

    def _plain_samples(self, metric: prometheus_client.Counter | prometheus_client.Gauge,
                       ) -> list[list[Any]]:
        return [[[s.labels[n] for n in self.labels], s.value]
                for family in metric.collect() for s in family.samples if s.name == self.name]

    def snapshot(self) -> dict[str, Any]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 registry: CollectorRegistry) -> None:
        # prometheus_client names a counter's samples <name>_total whatever it is given
        if not name.endswith("_total"):
            raise ValueError(f"{name}: a counter's name must end in _total")
        super().__init__(name, help, labels, registry)
        self._metric = prometheus_client.Counter(name, help, labels, registry=registry)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._check(labels)
        (self._metric.labels(**labels) if self.labels else self._metric).inc(amount)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "help": self.help, "kind": self.kind,
                "labels": list(self.labels), "samples": self._plain_samples(self._metric)}


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 registry: CollectorRegistry) -> None:
        super().__init__(name, help, labels, registry)
        self._metric = prometheus_client.Gauge(name, help, labels, registry=registry)

    def _child(self, labels: dict[str, str]) -> prometheus_client.Gauge:
        self._check(labels)
        return self._metric.labels(**labels) if self.labels else self._metric

    def set(self, value: float, **labels: str) -> None:
        self._child(labels).set(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).dec(amount)

    def set_function(self, read: Callable[[], float]) -> None:
        """An unlabelled gauge read at each scrape (a size someone else keeps)."""
        self._child({}).set_function(read)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "help": self.help, "kind": self.kind,
                "labels": list(self.labels), "samples": self._plain_samples(self._metric)}


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, labels: tuple[str, ...],
                 registry: CollectorRegistry, buckets: Iterable[float]) -> None:
        super().__init__(name, help, labels, registry)
        self.buckets = tuple(sorted(float(b) for b in buckets if b != math.inf))
        self._metric = prometheus_client.Histogram(
            name, help, labels, registry=registry, buckets=(*self.buckets, math.inf)
        )

    def observe(self, value: float, **labels: str) -> None:
        self._check(labels)
        (self._metric.labels(**labels) if self.labels else self._metric).observe(value)

    def get(self, **labels: str) -> float:
        """The number of observations."""
        self._check(labels)
        value = self._registry.get_sample_value(self.name + "_count",
                                                {k: str(v) for k, v in labels.items()})
        return 0.0 if value is None else value

    def snapshot(self) -> dict[str, Any]:
        counts: dict[LabelValues, list[float]] = {}
        sums: dict[LabelValues, float] = {}
        for family in self._metric.collect():
            for s in family.samples:
                key = tuple(s.labels[n] for n in self.labels)
                if s.name == self.name + "_bucket":  # cumulative, in bound order, +Inf last
                    counts.setdefault(key, []).append(s.value)
                elif s.name == self.name + "_sum":
                    sums[key] = s.value
        return {"name": self.name, "help": self.help, "kind": self.kind,
                "labels": list(self.labels), "buckets": list(self.buckets),
                "samples": [[list(k), {"counts": c, "sum": sums.get(k, 0.0)}]
                            for k, c in counts.items()]}


_M = TypeVar("_M", bound=_Metric)


class Registry:
    """One process's metrics: a private ``CollectorRegistry`` and typed metric objects."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        self._metrics: dict[str, _Metric] = {}

    def counter(self, name: str, help: str, labels: Iterable[str] = ()) -> Counter:
        self._free(name)
        return self._keep(Counter(name, help, tuple(labels), self._registry))

    def gauge(self, name: str, help: str, labels: Iterable[str] = ()) -> Gauge:
        self._free(name)
        return self._keep(Gauge(name, help, tuple(labels), self._registry))

    def histogram(self, name: str, help: str, labels: Iterable[str] = (),
                  buckets: Iterable[float] = DEFAULT_BUCKETS) -> Histogram:
        self._free(name)
        return self._keep(Histogram(name, help, tuple(labels), self._registry, buckets))

    def _free(self, name: str) -> None:
        if name in self._metrics:
            raise ValueError(f"metric {name} already registered")

    def _keep(self, metric: _M) -> _M:
        self._metrics[metric.name] = metric
        return metric

    def __contains__(self, name: object) -> bool:
        return name in self._metrics

    def register(self, collector: Collector) -> None:
        """Add a custom collector (the hub's :class:`WorkerCollector`) to the exposition."""
        self._registry.register(collector)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every metric as JSON-ready data with exact values (what a worker sends the hub)."""
        return [m.snapshot() for m in self._metrics.values()]

    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4) of this registry."""
        return prometheus_client.generate_latest(self._registry)


# --- worker snapshots on the hub -------------------------------------------------------------


@dataclass(frozen=True)
class HistogramValue:
    counts: tuple[float, ...]  # cumulative: one per bucket bound, then the total (+Inf)
    sum: float


@dataclass(frozen=True)
class Family:
    """One metric family of a worker's snapshot, checked by :func:`parse_snapshot`."""

    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...]
    buckets: tuple[float, ...]  # histogram bucket bounds, +Inf implied
    samples: tuple[tuple[LabelValues, float | HistogramValue], ...]


def parse_snapshot(raw: list[Any]) -> tuple[list[Family], int]:
    """The well-formed families of a worker's snapshot, and how many entries were skipped."""
    families: list[Family] = []
    skipped = 0
    for entry in raw:
        try:
            family = _parse_family(entry)
            if any(f.name == family.name for f in families):
                raise ValueError(f"{family.name}: repeated")
        except ValueError as e:
            skipped += 1
            log.debug("skipped a worker metric family: %s", e)
            continue
        families.append(family)
    return families, skipped


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string")
    value.encode()  # a lone surrogate from JSON raises UnicodeEncodeError (a ValueError)
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number")
    try:
        return float(value)
    except OverflowError as e:
        raise ValueError(f"{what} is too large") from e


def _parse_family(entry: object) -> Family:
    if not isinstance(entry, dict):
        raise ValueError("not an object")
    name = _text(entry.get("name"), "name")
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad metric name {name!r}")
    help = _text(entry.get("help", ""), f"{name}: help")
    kind = entry.get("kind")
    if kind not in ("counter", "gauge", "histogram"):
        raise ValueError(f"{name}: unknown kind {kind!r}")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"{name}: a counter's name must end in _total")
    labels = entry.get("labels", [])
    if not isinstance(labels, list):
        raise ValueError(f"{name}: labels is not a list")
    label_names = tuple(_text(n, f"{name}: a label name") for n in labels)
    reserved = {WORKER_LABEL, "le"} if kind == "histogram" else {WORKER_LABEL}
    if (len(set(label_names)) != len(label_names)
            or any(not _LABEL.fullmatch(n) or n.startswith("__") or n in reserved
                   for n in label_names)):
        raise ValueError(f"{name}: bad label names {label_names}")
    buckets: tuple[float, ...] = ()
    if kind == "histogram":
        raw_buckets = entry.get("buckets")
        if not isinstance(raw_buckets, list):
            raise ValueError(f"{name}: buckets is not a list")
        buckets = tuple(_number(b, f"{name}: a bucket bound") for b in raw_buckets)
        if (not all(math.isfinite(b) for b in buckets)
                or any(a >= b for a, b in itertools.pairwise(buckets))):
            raise ValueError(f"{name}: bucket bounds must be finite and increasing")
    raw_samples = entry.get("samples")
    if not isinstance(raw_samples, list):
        raise ValueError(f"{name}: samples is not a list")
    samples: dict[LabelValues, float | HistogramValue] = {}
    for sample in raw_samples:
        if not isinstance(sample, list) or len(sample) != 2 or not isinstance(sample[0], list):
            raise ValueError(f"{name}: a sample is not [label values, value]")
        key = tuple(_text(v, f"{name}: a label value") for v in sample[0])
        if len(key) != len(label_names):
            raise ValueError(f"{name}: {len(key)} label values for {len(label_names)} labels")
        if key in samples:
            raise ValueError(f"{name}: repeated label values {key}")
        if kind == "histogram":
            samples[key] = _histogram_value(name, sample[1], len(buckets))
        else:
            value = _number(sample[1], f"{name}: a value")
            if kind == "counter" and not value >= 0:
                raise ValueError(f"{name}: a counter at {value}")
            samples[key] = value
    return Family(name, help, kind, label_names, buckets, tuple(samples.items()))


def _histogram_value(name: str, raw: object, bounds: int) -> HistogramValue:
    if not isinstance(raw, dict) or not isinstance(raw.get("counts"), list):
        raise ValueError(f"{name}: a histogram sample is not {{counts, sum}}")
    counts = tuple(_number(c, f"{name}: a bucket count") for c in raw["counts"])
    if len(counts) != bounds + 1:
        raise ValueError(f"{name}: {len(counts)} bucket counts for {bounds} bounds and +Inf")
    if not all(c >= 0 for c in counts) or any(a > b for a, b in itertools.pairwise(counts)):
        raise ValueError(f"{name}: bucket counts must be cumulative")
    return HistogramValue(counts, _number(raw.get("sum"), f"{name}: a histogram sum"))


WorkerSource = Callable[[], Iterable[tuple[str, Sequence[Family]]]]


class WorkerCollector(Collector):
    """Renders each connected worker's latest snapshot with a ``worker`` label.

    ``source`` gives ``(worker id, checked families)`` at each scrape; families of one name
    from several workers merge under one header. A family whose name the hub itself uses
    (``reserved``), or whose kind or labels differ from the first worker's, is left out.
    """

    def __init__(self, source: WorkerSource, reserved: Container[str] = ()) -> None:
        self._source = source
        self._reserved = reserved

    def collect(self) -> Iterator[MetricFamily]:
        merged: dict[str, tuple[Family, MetricFamily]] = {}
        for worker_id, families in self._source():
            try:
                worker_id.encode()
            except UnicodeEncodeError:
                log.warning("worker id %r cannot be a label value; its metrics are left out",
                            worker_id)
                continue
            for family in families:
                if family.name in self._reserved:
                    continue
                first = merged.get(family.name)
                if first is None:
                    first = merged[family.name] = (family, _new_family(family))
                elif (first[0].kind, first[0].labels) != (family.kind, family.labels):
                    log.debug("%s of worker %s differs from another worker's; left out",
                              family.name, worker_id)
                    continue
                _add_samples(first[1], worker_id, family)
        for _, out in merged.values():
            yield out


def _new_family(family: Family) -> MetricFamily:
    names = [WORKER_LABEL, *family.labels]
    if family.kind == "counter":
        return CounterMetricFamily(family.name, family.help, labels=names)
    if family.kind == "gauge":
        return GaugeMetricFamily(family.name, family.help, labels=names)
    return HistogramMetricFamily(family.name, family.help, labels=names)


def _add_samples(out: MetricFamily, worker_id: str, family: Family) -> None:
    les = [*(_format_le(b) for b in family.buckets), "+Inf"]
    for key, value in family.samples:
        label_values = [worker_id, *key]
        if isinstance(out, HistogramMetricFamily) and isinstance(value, HistogramValue):
            out.add_metric(label_values, list(zip(les, value.counts, strict=True)), value.sum)
        elif isinstance(out, CounterMetricFamily | GaugeMetricFamily) and isinstance(
            value, float
        ):
            out.add_metric(label_values, value)
