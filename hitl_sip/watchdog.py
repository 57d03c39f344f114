"""A watchdog for an asyncio loop: when the loop stops turning, say where every thread is.

A media worker's loop carries the hub link, the agents' WebRTC legs and every call's
session. If a synchronous call blocks it (a lock shared with pjsua2's threads, a pipe that
does not drain), nothing in the loop can report it: the hub just sees the link go quiet. The
watchdog is a daemon thread that expects the loop to run a tiny callback every ``interval``
seconds; when the last one is more than ``stall`` seconds old it logs, once per stall, how
long the loop has been blocked and the stack of every thread (file, line, function — never
local values, so no caller data), and counts the stall. When the loop turns again it logs
how long the stall lasted.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

log = logging.getLogger(__name__)


def thread_stacks() -> str:
    """Every thread's current stack, named, innermost frame last."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        parts.append(f"thread {names.get(ident, '?')} ({ident}):\n{stack}")
    return "\n".join(parts)


class LoopWatchdog:
    """Watch ``loop`` from a daemon thread (see the module docstring)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, stall: float = 5.0,
                 interval: float = 0.5, on_stall: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if stall <= interval:
            raise ValueError("stall must be longer than the heartbeat interval")
        self.loop = loop
        self.stall = stall
        self.interval = interval
        self.on_stall = on_stall
        self.clock = clock
        self.stalls = 0
        self._beat = clock()
        self._stop = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating (call from the loop's thread) and watching."""
        self._beat = self.clock()
        self._handle = self.loop.call_later(self.interval, self._tick)
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._beat = self.clock()
        if not self._stop.is_set():
            self._handle = self.loop.call_later(self.interval, self._tick)

    def _watch(self) -> None:
        stalled_since: float | None = None
        while not self._stop.wait(self.interval):
            beat = self._beat
            late = self.clock() - beat
            if late > self.stall and stalled_since != beat:
                stalled_since = beat
                self.stalls += 1
                log.error("the event loop has been blocked for %.1f s; where each thread "
                          "is:\n%s", late, thread_stacks())
                if self.on_stall is not None:
                    self.on_stall(late)
            elif stalled_since is not None and beat != stalled_since:
                log.warning("the event loop runs again (it was blocked for %.1f s or more)",
                            beat - stalled_since)
                stalled_since = None
