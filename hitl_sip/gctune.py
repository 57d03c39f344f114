"""The garbage collector of the long-lived processes (media worker, hub): short pauses.

CPython's cyclic collector stops the thread that triggers it while it walks a generation.
In a media worker the full (oldest-generation) collections walked everything loaded at
start-up — pjsua2's SWIG proxies, aiortc, numpy, the flow — and stalled the event loop and
the media clock's callbacks for 60–85 ms (issue 19), three 20 ms frames.

:func:`tune` is called once the process has started (every module imported, the SIP stack
and the decoders up):

* ``gc.freeze()`` moves every object alive then into the permanent generation, which no
  collection walks again: the start-up heap costs nothing from then on;
* the thresholds stay CPython's (700/10/10): raising them (20 000/20/20 was tried) left a
  call's reference cycles uncollected for hundreds of calls, and the worker's RSS grew
  1.9 MiB over 100 calls (tests/integration/test_serve.py allows 1).

:class:`PauseMeter` times every collection through ``gc.callbacks`` into a histogram
(``hitl_sip_gc_pause_seconds{worker,generation}`` from the workers,
``hitl_sip_hub_gc_pause_seconds{generation}`` from the hub), so the pauses are seen in
production and measured by ``bench/bridge_capacity.py``. ``HITL_SIP_GC=stock`` keeps
CPython's defaults (the benchmark's baseline); the pauses are timed either way.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from typing import Any

from hitl_sip.metrics import Histogram, Registry

log = logging.getLogger(__name__)

PAUSE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)


class PauseMeter:
    """Times each collection (``gc.callbacks``) into ``hitl_sip_gc_pause_seconds``."""

    def __init__(self, registry: Registry, name: str = "hitl_sip_gc_pause_seconds") -> None:
        self.histogram: Histogram = registry.histogram(
            name,
            "Time the cyclic garbage collector stopped the process's threads, per collection",
            ["generation"], buckets=PAUSE_BUCKETS)
        self.longest = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.longest = max(self.longest, pause)
        self.histogram.observe(pause, generation=str(info.get("generation", "?")))

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def tune(process: str) -> bool:
    """Freeze the start-up heap (see the module docstring).

    Returns False, changing nothing, when ``HITL_SIP_GC=stock``."""
    if os.environ.get("HITL_SIP_GC", "").strip().lower() == "stock":
        log.info("%s: garbage collector left at CPython's defaults (HITL_SIP_GC=stock)",
                 process)
        return False
    gc.collect()
    gc.freeze()
    log.info("%s: %d start-up objects frozen out of the garbage collector's reach",
             process, gc.get_freeze_count())
    return True
