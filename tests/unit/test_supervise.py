"""The task supervisor: a failing background task is restarted with growing backoff and
counted; a normal return ends it; cancelling it stops it, in the task or in a backoff wait.
Time is fake: the backoff waits are recorded, never slept."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hitl_sip.metrics import Registry
from hitl_sip.supervise import RESTARTS_METRIC, restart_counter, supervised


class FakeTime:
    """A clock that only moves when told, and a sleep that records and returns at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


async def test_a_failing_task_is_restarted_with_doubling_capped_backoff_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    registry = Registry()
    restarts = restart_counter(registry)
    runs = 0

    async def task() -> None:
        nonlocal runs
        runs += 1
        if runs <= 5:
            raise RuntimeError(f"failure {runs}")

    with caplog.at_level(logging.ERROR, logger="hitl_sip.supervise"):
        await supervised("sender t-1", task, kind="sender", backoff=(0.5, 4.0), jitter=0.0,
                         restarts=restarts, sleep=time.sleep, clock=time.clock)
    assert runs == 6  # five failures, then a normal return ends it
    assert time.waits == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert restarts.get(task="sender") == 5
    assert len(caplog.records) == 5
    record = caplog.records[0]
    assert "sender t-1" in record.getMessage() and record.exc_info is not None
    assert "failure 1" in caplog.text  # the traceback is logged


async def test_jitter_adds_at_most_its_share_of_the_wait() -> None:
    time = FakeTime()
    runs = 0

    async def task() -> None:
        nonlocal runs
        runs += 1
        if runs <= 20:
            raise RuntimeError("again")

    await supervised("t", task, backoff=(1.0, 1.0), jitter=0.25, sleep=time.sleep,
                     clock=time.clock)
    assert all(1.0 <= w <= 1.25 for w in time.waits) and len(set(time.waits)) > 1


async def test_a_task_that_ran_healthy_for_a_while_starts_the_backoff_again() -> None:
    time = FakeTime()
    runs = 0

    async def task() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            time.now += 60.0  # a long healthy run before this failure
        if runs <= 5:
            raise RuntimeError("again")

    await supervised("t", task, backoff=(0.5, 8.0), jitter=0.0, sleep=time.sleep,
                     clock=time.clock)
    assert time.waits == [0.5, 1.0, 2.0, 0.5, 1.0]


async def test_cancelling_stops_a_running_task_without_a_restart() -> None:
    time = FakeTime()
    registry = Registry()
    restarts = restart_counter(registry)
    running = asyncio.Event()
    stopped = asyncio.Event()

    async def task() -> None:
        running.set()
        try:
            await asyncio.Event().wait()  # forever
        finally:
            stopped.set()

    supervisor = asyncio.create_task(supervised("t", task, restarts=restarts,
                                                sleep=time.sleep, clock=time.clock))
    await running.wait()
    supervisor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await supervisor
    assert stopped.is_set() and time.waits == [] and restarts.get(task="t") == 0


async def test_cancelling_during_the_backoff_wait_stops_it_too() -> None:
    waiting = asyncio.Event()
    runs = 0

    async def held_sleep(seconds: float) -> None:
        waiting.set()
        await asyncio.Event().wait()  # a wait that only cancellation ends

    async def task() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("fails")

    supervisor = asyncio.create_task(supervised("t", task, sleep=held_sleep))
    await waiting.wait()
    supervisor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await supervisor
    assert runs == 1


async def test_the_restart_counter_is_a_hub_metric_labelled_by_task_kind() -> None:
    registry = Registry()
    restart_counter(registry).inc(task="alive5_thread")
    with pytest.raises(ValueError, match=RESTARTS_METRIC):
        restart_counter(registry)  # one per registry
