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

from hitl_sip.config import Config, env_key
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.tokens import load_or_create_secret, parse_secret

log = logging.getLogger(__name__)

# A worker that dies this many times in a row without ever registering is not going to
# come up (port in use, bad address): the server gives up with an error instead of looping.
MAX_START_FAILURES = 3


class WorkerStartFailed(Exception):
    pass


def load_digest_secret(config: Config) -> bytes:
    """The secret every worker makes and checks digest nonces with, so that the retry after a
    401 verifies on whichever worker (or hub) it reaches: ``sip.digest_secret`` when set (the
    same value on several hubs), else ``<data_dir>/digest.key``, 32 random bytes created once
    (mode 0600, atomically). ``ConfigError`` names the file when it is unusable."""
    if config.sip.digest_secret:
        return parse_secret(config.sip.digest_secret)  # checked by config.validate
    # env={}: HITL_SIP_TOKEN_SECRET is the agent-token secret, not this one
    return load_or_create_secret(config.resolve_path(config.data_dir) / "digest.key", env={},
                                 what="digest nonce key")


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
        digest_secret: bytes | None = None,
    ) -> None:
        """``sip_ports``: behind the SIP front, worker i listens on ``sip_ports[i]``.
        ``on_exit(worker_id)`` runs when a worker's process dies unexpectedly, before its
        restart (the hub ends its calls). ``digest_secret``: the nonce secret shared by every
        worker (``load_digest_secret``); None lets each worker draw its own."""
        self.digest_secret = digest_secret
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
        worker_config = self.config.to_dict()
        # the summary endpoint's key is the hub's alone (workers never call it)
        worker_config["summary"]["api_key"] = ""
        env.pop(env_key("summary.api_key"), None)
        # so are the carriers' webhook secrets and REST credentials (the hub alone answers
        # webhooks and calls the carriers' APIs)
        for key in ("twilio_auth_token", "vonage_signature_secret", "twilio_account_sid",
                    "vonage_application_id", "vonage_private_key_path"):
            worker_config["carrier"][key] = ""
            env.pop(env_key(f"carrier.{key}"), None)
        env["HITL_SIP_WORKER_CONFIG"] = json.dumps(worker_config)
        env["HITL_SIP_WORKER_TOKEN"] = self.token
        if self.digest_secret is not None:
            # In the child's environment, like the hub-link token: /proc/<pid>/environ is
            # readable by the same user only, while argv (/proc/<pid>/cmdline) is readable
            # by every local user. The hub resolves the secret once (config key or 0600 key
            # file), so workers never race to create the file; the worker removes the
            # variable from its own environment before it starts any child process.
            env["HITL_SIP_WORKER_DIGEST_SECRET"] = self.digest_secret.hex()
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
