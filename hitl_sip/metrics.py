"""A small thread-safe metrics registry rendering the Prometheus text format.

Workers keep their own registry and ship :meth:`Registry.snapshot` to the hub, which renders
its own metrics plus every worker's under a ``worker`` label. Counters may be incremented from
the pjsua2 thread and the media clock thread, hence the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["counter", "gauge"]
LabelValues = tuple[str, ...]


@dataclass
class Metric:
    name: str
    help: str
    kind: Kind
    labels: tuple[str, ...] = ()
    values: dict[LabelValues, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name}: expected labels {self.labels}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self.lock:
            self.values[key] = value

    def get(self, **labels: str) -> float:
        key = self._key(labels)
        with self.lock:
            return self.values.get(key, 0.0)


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def counter(self, name: str, help: str, labels: Iterable[str] = ()) -> Metric:
        return self._add(Metric(name, help, "counter", tuple(labels)))

    def gauge(self, name: str, help: str, labels: Iterable[str] = ()) -> Metric:
        return self._add(Metric(name, help, "gauge", tuple(labels)))

    def _add(self, metric: Metric) -> Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} already registered")
        self._metrics[metric.name] = metric
        return metric

    def snapshot(self) -> list[dict[str, Any]]:
        out = []
        for m in self._metrics.values():
            with m.lock:
                samples = [[list(k), v] for k, v in m.values.items()]
            out.append(
                {"name": m.name, "help": m.help, "kind": m.kind, "labels": list(m.labels),
                 "samples": samples}
            )
        return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(
    snapshots: Iterable[tuple[dict[str, str], list[dict[str, Any]]]],
) -> str:
    """Render snapshots, each with extra constant labels, as one Prometheus exposition."""
    families: dict[str, dict[str, Any]] = {}
    lines_by_family: dict[str, list[str]] = {}
    for extra, snapshot in snapshots:
        for fam in snapshot:
            name = fam["name"]
            families.setdefault(name, fam)
            lines = lines_by_family.setdefault(name, [])
            for label_values, value in fam["samples"]:
                pairs = list(extra.items()) + list(zip(fam["labels"], label_values, strict=True))
                label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
                suffix = f"{{{label_text}}}" if label_text else ""
                lines.append(f"{name}{suffix} {float(value):g}")
    out: list[str] = []
    for name, fam in families.items():
        out.append(f"# HELP {name} {fam['help']}")
        out.append(f"# TYPE {name} {fam['kind']}")
        out.extend(lines_by_family[name])
    return "\n".join(out) + "\n"
