"""Starts the media-worker processes, restarts a crashed one, and stops them all on drain."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hitl_sip.config import Config
from hitl_sip.hub.registry import WorkerRegistry

log = logging.getLogger(__name__)

# A worker that dies this many times in a row without ever registering is not going to
# come up (port in use, bad address): the server gives up with an error instead of looping.
MAX_START_FAILURES = 3


class WorkerStartFailed(Exception):
    pass


@dataclass
class _Slot:
    index: int
    worker_id: str
    process: asyncio.subprocess.Process | None = None
    failures: int = 0


class Supervisor:
    def __init__(
        self, config: Config, registry: WorkerRegistry, hub_url: str, token: str,
        *,
        sip_ports: list[int] | None = None,
        on_exit: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        """``sip_ports``: behind the SIP front, worker i listens on ``sip_ports[i]``.
        ``on_exit(worker_id)`` runs when a worker's process dies unexpectedly, before its
        restart (the hub ends its calls)."""
        self.sip_ports = sip_ports
        self.on_exit = on_exit
        self.config = config
        self.registry = registry
        self.hub_url = hub_url
        self.token = token
        self.slots = [_Slot(i, f"w{i + 1}") for i in range(config.worker.count)]
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.failed = asyncio.Event()
        self.failure = ""

    async def start(self) -> None:
        for slot in self.slots:
            self._tasks.append(asyncio.create_task(self._keep(slot), name=slot.worker_id))

    async def _spawn(self, slot: _Slot) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["HITL_SIP_WORKER_CONFIG"] = json.dumps(self.config.to_dict())
        env["HITL_SIP_WORKER_TOKEN"] = self.token
        port = ["--sip-port", str(self.sip_ports[slot.index])] if self.sip_ports else []
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hitl_sip.worker",
            "--worker-id", slot.worker_id, "--index", str(slot.index), "--hub-url", self.hub_url,
            *port,
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C reaches the hub only; it drains them
        )

    async def _keep(self, slot: _Slot) -> None:
        backoff = self.config.worker.restart_backoff
        while not self._stopping:
            proc = await self._spawn(slot)
            slot.process = proc
            log.info("worker %s started (pid %d)", slot.worker_id, proc.pid)
            code = await proc.wait()
            if self._stopping:
                return
            worker = self.registry.workers.get(slot.worker_id)
            ever_ready = worker is not None and worker.pid == proc.pid and bool(worker.sip)
            slot.failures = 0 if ever_ready else slot.failures + 1
            log.error("worker %s exited unexpectedly with code %s", slot.worker_id, code)
            if self.on_exit is not None:
                try:
                    await self.on_exit(slot.worker_id)
                except Exception:  # the restart must happen whatever went wrong here
                    log.exception("ending the calls of worker %s failed", slot.worker_id)
            if code == 2 or slot.failures >= MAX_START_FAILURES:
                self.failure = (
                    f"worker {slot.worker_id} cannot start (exit code {code}, "
                    f"{slot.failures} failed starts); see its log above"
                )
                self.failed.set()
                return
            self.registry.worker_restarts.inc()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (they drain), wait up to ``grace`` + margin, then kill."""
        self._stopping = True
        procs = [s.process for s in self.slots if s.process and s.process.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if procs:
            waits = [asyncio.create_task(p.wait()) for p in procs]
            _, pending = await asyncio.wait(waits, timeout=grace + 10)
            for proc in procs:
                if proc.returncode is None:
                    log.error("worker pid %d did not stop in time; killing it", proc.pid)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
