"""The hub's view of its media workers and of the calls they hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hitl_sip.hub.calls import CallRecord
from hitl_sip.metrics import Family, Registry, WorkerCollector, parse_snapshot
from hitl_sip.protocol.worker import (
    CallEndedMsg,
    CallStarted,
    Hello,
    HubCommand,
    Status,
    WorkerMessage,
)


@dataclass
class WorkerState:
    worker_id: str
    pid: int = 0
    sip: dict[str, str] = field(default_factory=dict)
    profile: str = ""
    max_calls: int = 0
    active_calls: int = 0
    draining: bool = False
    connected: bool = False
    last_seen: float = 0.0
    epoch: str = ""  # the worker process's link epoch (hitl_sip.protocol.worker)
    applied_seq: int = 0  # the last reliable linkSeq of that epoch applied
    metrics: list[Family] = field(default_factory=list)  # its latest snapshot, checked
    send_json: Callable[[dict[str, Any]], Awaitable[None]] | None = field(
        default=None, repr=False
    )

    def public(self) -> dict[str, Any]:
        return {
            "workerId": self.worker_id,
            "pid": self.pid,
            "connected": self.connected,
            "sip": self.sip,
            "profile": self.profile,
            "maxCalls": self.max_calls,
            "activeCalls": self.active_calls,
            "draining": self.draining,
        }


class WorkerRegistry:
    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}
        self.calls: dict[str, CallRecord] = {}
        # calls of a worker whose link dropped: back on its hello, ended if its process died
        self.orphans: dict[str, dict[str, CallRecord]] = {}
        self.draining = False
        # what /healthz says of the SIP front (Kamailio), when there is one
        self.front: Callable[[], dict[str, Any]] | None = None
        self.worker_hello = asyncio.Event()  # set at every worker's hello
        self.metrics = Registry()
        self.workers_connected = self.metrics.gauge(
            "hitl_sip_hub_workers_connected", "Media workers connected to the hub"
        )
        self.worker_restarts = self.metrics.counter(
            "hitl_sip_hub_worker_restarts_total", "Media-worker processes restarted after a crash"
        )
        self.bad_worker_messages = self.metrics.counter(
            "hitl_sip_hub_bad_worker_messages_total", "Malformed messages from workers ignored"
        )
        self.failed_worker_messages = self.metrics.counter(
            "hitl_sip_hub_failed_worker_messages_total",
            "Worker messages not applied after every retry (store or Redis errors)"
        )
        self.bad_worker_metrics = self.metrics.counter(
            "hitl_sip_hub_bad_worker_metrics_total",
            "Malformed metric families in worker status messages, skipped",
        )
        self.metrics.register(WorkerCollector(
            lambda: [(w.worker_id, w.metrics) for w in self.workers.values() if w.connected],
            reserved=self.metrics,
        ))

    def ready_workers(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.connected and w.sip and not w.draining]

    def _refresh(self) -> None:
        self.workers_connected.set(sum(1 for w in self.workers.values() if w.connected))

    def connected(self, worker_id: str, hello: Hello) -> WorkerState:
        state = self.workers.get(worker_id) or WorkerState(worker_id)
        state.pid = hello.pid
        state.sip = dict(hello.sip)
        state.profile = hello.profile
        state.max_calls = hello.max_calls
        state.active_calls = hello.active_calls
        state.draining = hello.draining
        if hello.epoch != state.epoch:  # a new worker process: its linkSeq starts again
            state.epoch, state.applied_seq = hello.epoch, 0
        state.connected = True
        state.last_seen = time.monotonic()
        self.workers[worker_id] = state
        self.worker_hello.set()
        orphans = self.orphans.pop(worker_id, {})
        for call in hello.calls:
            known = orphans.get(call.call_id)
            if known is None:
                known = CallRecord.from_summary(call, worker_id)
            else:
                known.update(call)
            self.calls[call.call_id] = known
        self._refresh()
        return state

    async def send(self, worker_id: str, message: HubCommand) -> bool:
        """Send a command to a connected worker; False when it is not connected."""
        state = self.workers.get(worker_id)
        if state is None or not state.connected or state.send_json is None:
            return False
        try:
            await state.send_json(message.wire())
        except (ConnectionError, RuntimeError):
            return False
        return True

    def disconnected(self, worker_id: str) -> None:
        state = self.workers.get(worker_id)
        if state is not None:
            state.connected = False
            state.send_json = None
            state.metrics = []
        orphans = self.orphans.setdefault(worker_id, {})
        for call_id in [c for c, v in self.calls.items() if v.worker_id == worker_id]:
            orphans[call_id] = self.calls.pop(call_id)
        self._refresh()

    def take_calls(self, worker_id: str) -> dict[str, CallRecord]:
        """Every call the hub knows on ``worker_id`` (live or orphaned), removed."""
        calls = self.orphans.pop(worker_id, {})
        for call_id in [c for c, v in self.calls.items() if v.worker_id == worker_id]:
            calls[call_id] = self.calls.pop(call_id)
        return calls

    def handle(self, worker_id: str, message: WorkerMessage) -> None:
        """Apply one (validated) message from a worker to the registry."""
        state = self.workers.get(worker_id)
        if state is None:
            raise ValueError("message before hello")
        state.last_seen = time.monotonic()
        if isinstance(message, Status):
            state.active_calls = message.active_calls
            state.draining = message.draining
            state.metrics, skipped = parse_snapshot(message.metrics)
            self.bad_worker_metrics.inc(skipped)
        elif isinstance(message, CallStarted):
            self.calls[message.call_id] = CallRecord.from_summary(message, worker_id)
        elif isinstance(message, CallEndedMsg):
            self.calls.pop(message.call_id, None)
