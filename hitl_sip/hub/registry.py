"""The hub's view of its media workers and of the calls they hold."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hitl_sip.metrics import Registry


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
    metrics: list[dict[str, Any]] = field(default_factory=list)
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
        self.calls: dict[str, dict[str, Any]] = {}
        # calls of a worker whose link dropped: back on its hello, ended if its process died
        self.orphans: dict[str, dict[str, dict[str, Any]]] = {}
        self.draining = False
        # what /healthz says of the SIP front (Kamailio), when there is one
        self.front: Callable[[], dict[str, Any]] | None = None
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

    def ready_workers(self) -> list[WorkerState]:
        return [w for w in self.workers.values() if w.connected and w.sip and not w.draining]

    def _refresh(self) -> None:
        self.workers_connected.set(sum(1 for w in self.workers.values() if w.connected))

    def connected(self, worker_id: str, hello: dict[str, Any]) -> WorkerState:
        state = self.workers.get(worker_id) or WorkerState(worker_id)
        state.pid = int(hello.get("pid", 0))
        sip = hello.get("sip", {})
        state.sip = {str(k): str(v) for k, v in sip.items()} if isinstance(sip, dict) else {}
        state.profile = str(hello.get("profile", ""))
        state.max_calls = int(hello.get("maxCalls", 0))
        state.active_calls = int(hello.get("activeCalls", 0))
        state.draining = bool(hello.get("draining", False))
        state.connected = True
        state.last_seen = time.monotonic()
        self.workers[worker_id] = state
        orphans = self.orphans.pop(worker_id, {})
        for call in hello.get("calls", []):
            if isinstance(call, dict) and "callId" in call:
                call_id = str(call["callId"])
                known = orphans.get(call_id, {"state": "bot"})
                self.calls[call_id] = {**known, **call, "workerId": worker_id}
        self._refresh()
        return state

    async def send(self, worker_id: str, message: dict[str, Any]) -> bool:
        """Send a command to a connected worker; False when it is not connected."""
        state = self.workers.get(worker_id)
        if state is None or not state.connected or state.send_json is None:
            return False
        try:
            await state.send_json(message)
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
        for call_id in [c for c, v in self.calls.items() if v.get("workerId") == worker_id]:
            orphans[call_id] = self.calls.pop(call_id)
        self._refresh()

    def take_calls(self, worker_id: str) -> dict[str, dict[str, Any]]:
        """Every call the hub knows on ``worker_id`` (live or orphaned), removed."""
        calls = self.orphans.pop(worker_id, {})
        for call_id in [c for c, v in self.calls.items() if v.get("workerId") == worker_id]:
            calls[call_id] = self.calls.pop(call_id)
        return calls

    def handle(self, worker_id: str, message: dict[str, Any]) -> None:
        """Apply one message from a worker; raise ValueError for a malformed one."""
        state = self.workers.get(worker_id)
        if state is None:
            raise ValueError("message before hello")
        state.last_seen = time.monotonic()
        kind = message.get("type")
        if kind == "status":
            state.active_calls = int(message.get("activeCalls", 0))
            state.draining = bool(message.get("draining", False))
            metrics = message.get("metrics", [])
            if not isinstance(metrics, list):
                raise ValueError("metrics must be a list")
            state.metrics = metrics
        elif kind == "call_started":
            call_id = str(message["callId"])
            self.calls[call_id] = {**message, "workerId": worker_id, "state": "bot"}
            self.calls[call_id].pop("type", None)
        elif kind == "call_ended":
            self.calls.pop(str(message["callId"]), None)
        elif kind in ("dtmf", "call_hold", "call_rejected", "registration"):
            pass
        else:
            raise ValueError(f"unknown message type {kind!r}")
