"""CPU time of the processes a benchmark measures (psutil), shared by the benches."""

from __future__ import annotations

import contextlib

import psutil


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds the process has used so far."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def children_cpu(proc: psutil.Process) -> float:
    """The same summed over its descendants (a worker's speech process), those alive."""
    total = 0.0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += cpu_seconds(child)
    return total
