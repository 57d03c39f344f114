"""The edge's helper processes (Kamailio, rtpengine): each runs in a process group of its
own, so stopping or restarting one ends all of its children too."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_group(proc: asyncio.subprocess.Process, what: str) -> None:
    """SIGTERM ``proc``, SIGKILL its whole group after :data:`STOP_GRACE` seconds at the
    latest (its children may outlive it), and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            log.error("%s did not stop in %.0f s: killing it", what, STOP_GRACE)
    kill_group(proc.pid, signal.SIGKILL)
    if proc.returncode is None:
        await proc.wait()
