"""Background tasks that come back: :func:`supervised` restarts a coroutine that failed.

A hub runs long-lived loops (the alive5 outbox's per-thread senders and its sweep, the
backlog gauge). An exception nobody expected in one of them must not end it until the next
restart of the process: the supervisor logs it with its traceback, counts it, waits
(exponential backoff with jitter) and runs the coroutine again. A normal return ends the
supervision (the task had nothing left to do); cancelling the supervising task stops it
wherever it is, in the task or in a backoff wait.

Log lines carry the task's name and the exception, never the data the task handles:
names are built from ids (a thread's UUID), not from callers' numbers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from hitl_sip.metrics import Registry

log = logging.getLogger(__name__)

RESTARTS_METRIC = "hitl_sip_task_restarts_total"


class RestartCounter(Protocol):
    """What :func:`supervised` needs of a metric (the hub's registry counters)."""

    def inc(self, amount: float = 1.0, **labels: str) -> None: ...

    def get(self, **labels: str) -> float: ...


def restart_counter(metrics: Registry) -> RestartCounter:
    """The counter :func:`supervised` increments, labelled by task kind (register once)."""
    return metrics.counter(RESTARTS_METRIC,
                           "Background tasks restarted after an unexpected error", ["task"])


async def supervised(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    kind: str = "",
    backoff: tuple[float, float] = (0.5, 30.0),
    jitter: float = 0.2,
    restarts: RestartCounter | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``factory()`` until it returns; restart it after an unexpected exception.

    The wait before restart ``n`` is ``backoff[0] * 2**(n-1)``, capped at ``backoff[1]``,
    plus up to ``jitter`` of itself at random; a run that lasted longer than the cap starts
    the sequence again. ``kind`` (default: ``name``) labels the restart counter — keep it
    a small set (``alive5_thread``), not one value per thread.
    """
    first, cap = backoff
    delay = first
    while True:
        started = clock()
        try:
            await factory()
            return
        except Exception:
            if clock() - started > cap:
                delay = first  # it had been healthy for a while: a fresh failure
            wait = delay * (1.0 + jitter * random.random())
            log.exception("task %s failed unexpectedly; restarting in %.1fs", name, wait)
            if restarts is not None:
                restarts.inc(task=kind or name)
            await sleep(wait)
            delay = min(delay * 2, cap)
