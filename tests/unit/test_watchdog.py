"""The loop watchdog: a blocked event loop is reported once, with the blocking stack."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from hitl_sip.watchdog import LoopWatchdog, thread_stacks


def a_blocking_call(seconds: float) -> None:
    time.sleep(seconds)  # the loop's thread stuck in synchronous code


async def test_a_blocked_loop_is_reported_once_with_where_it_is_stuck(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalls: list[float] = []
    reported = threading.Event()

    def on_stall(late: float) -> None:
        stalls.append(late)
        reported.set()

    dog = LoopWatchdog(asyncio.get_running_loop(), stall=0.3, interval=0.05,
                       on_stall=on_stall)
    with caplog.at_level(logging.WARNING, logger="hitl_sip.watchdog"):
        dog.start()
        await asyncio.sleep(0.2)  # turning normally: nothing to report
        assert not stalls
        a_blocking_call(0.8)
        assert reported.is_set()
        await asyncio.sleep(0.2)  # turning again
        dog.stop()
    assert len(stalls) == 1 and 0.3 < stalls[0] < 1.5
    assert dog.stalls == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "a_blocking_call" in errors[0]
    assert any("runs again" in r.getMessage() for r in caplog.records)


def test_the_stacks_name_every_thread() -> None:
    stacks = thread_stacks()
    assert "MainThread" in stacks and "test_the_stacks_name_every_thread" in stacks


def test_the_stall_must_outlast_the_heartbeat() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="longer than the heartbeat"):
            LoopWatchdog(loop, stall=0.1, interval=0.5)
    finally:
        loop.close()
