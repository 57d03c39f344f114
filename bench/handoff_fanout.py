"""Handoff fan-out latency: agent node reached → ``incoming_call`` received by the agents.

A real ``hitl-sip serve`` (hub + one worker) runs ``bench/flows/fanout.yaml`` (prompt "Hi.",
the digit 0 goes to the agent node). For each agent count N (default 1 and 50) the bench
creates the agents with ``hitl-sip agents add``, logs each in (``POST /api/login``) and
connects N python-socketio clients to ``/agent`` (all available), then places M calls one
after the other with SIPp (``bench/sipp/fanout_call.xml``): the caller presses 0 after the
prompt, nobody accepts, the caller hangs up 3 s later (the agents get ``call_cancelled``
``caller_hangup`` before the next call starts). One extra warm-up call per round is not
counted.

Latency of one (call, agent) sample = the agent's ``time.time()`` when its ``incoming_call``
handler runs − the ``at`` of the worker's ``{"type": "state", "state": "queued"}`` event in
the call record (the moment the session reached the agent node, just before it tells the
hub). Same host, same clock; the worker's timestamp is truncated to the millisecond, so a
sample reads 0–1 ms high. All N clients live in this one process and asyncio loop, so the
last agent's figure includes this process reading N websocket messages.

Printed per N: median and p95 over every (call, agent) sample, and over the calls of the
first and of the last agent to receive each call (the last = fan-out complete).

Usage: ``python bench/handoff_fanout.py [--agents 1 50] [--calls 8] [--json]`` (root and
SIPp: the digit is played from a pcap through a raw socket). Exit status 2 when SIPp or
root is missing, 1 when a call or an offer fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psutil
import socketio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.server import Server, running_server  # noqa: E402
from tests.support.sipp import SippResult, run_sipp  # noqa: E402

FLOW = ROOT / "bench" / "flows" / "fanout.yaml"
SCENARIO = ROOT / "bench" / "sipp" / "fanout_call.xml"
PASSWORD = "bench fan-out password"
HOLD_SECONDS = 3.0  # the scenario's pause between the digit and the caller's BYE
ROUTING = {"queue_timeout": 30, "ring_timeout": 25}


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- agents ---------------------------------------------------------------------------------


def add_agent(data_dir: Path, name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hitl_sip.cli", "agents", "add", name, "--data-dir",
         str(data_dir)],
        input=PASSWORD + "\n", capture_output=True, text=True, cwd=ROOT, check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"hitl-sip agents add {name} failed: {result.stderr.strip()}")


def login(server: Server, name: str) -> str:
    body = json.dumps({"username": name, "password": PASSWORD}).encode()
    req = urllib.request.Request(server.http_url + "/api/login", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return str(json.loads(r.read())["token"])
    except urllib.error.HTTPError as e:
        raise BenchError(f"login of {name} failed: HTTP {e.code} {e.read()[:200]!r}") from e


class AgentClient:
    """One dashboard stand-in: records when each ``incoming_call`` handler ran."""

    def __init__(self, name: str, changed: asyncio.Event) -> None:
        self.name = name
        self.changed = changed
        self.sio = socketio.AsyncClient(reconnection=False)
        self.offers: dict[str, float] = {}  # callId -> time.time() at the handler
        self.cancelled: dict[str, str] = {}  # callId -> reason
        self.states: list[dict[str, Any]] = []
        self.sio.on("incoming_call", self._on_incoming, namespace="/agent")
        self.sio.on("call_cancelled", self._on_cancelled, namespace="/agent")
        self.sio.on("agent_state", self._on_state, namespace="/agent")

    async def _on_incoming(self, data: dict[str, Any]) -> None:
        received = time.time()
        self.offers.setdefault(str(data["callId"]), received)
        self.changed.set()

    async def _on_cancelled(self, data: dict[str, Any]) -> None:
        self.cancelled[str(data["callId"])] = str(data.get("reason"))
        self.changed.set()

    async def _on_state(self, data: dict[str, Any]) -> None:
        self.states.append(data)
        self.changed.set()

    async def connect(self, server: Server, token: str) -> None:
        await self.sio.connect(server.http_url, namespaces=["/agent"], auth={"token": token},
                               transports=["websocket"])


async def wait_until(changed: asyncio.Event, predicate: Any, limit: float, what: str) -> None:
    try:
        async with asyncio.timeout(limit):
            while not predicate():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise BenchError(f"timed out after {limit:.0f} s waiting for {what}") from None


# -- one round: N agents, M calls -----------------------------------------------------------


@dataclass
class RoundResult:
    agents: int
    call_ids: list[str] = field(default_factory=list)
    # callId -> receive time per agent (agent order)
    received: dict[str, list[float]] = field(default_factory=dict)


async def place_call(server: Server, tmp: Path, pre_dtmf_ms: int) -> SippResult:
    result = await asyncio.to_thread(
        run_sipp, str(SCENARIO), server.sip_port(), tmp, duration_ms=pre_dtmf_ms, timeout=30,
    )
    assert isinstance(result, SippResult)
    return result


async def one_call(server: Server, tmp: Path, clients: list[AgentClient],
                   changed: asyncio.Event, *, seen: set[str], label: str,
                   pre_dtmf_ms: int) -> str:
    """Place one call, wait for its offer at every agent and for its end; its callId."""
    sipp = asyncio.create_task(place_call(server, tmp, pre_dtmf_ms))
    sipp.add_done_callback(lambda _: changed.set())

    def fresh(client: AgentClient) -> set[str]:
        return set(client.offers) - seen

    await wait_until(changed, lambda: sipp.done() or all(fresh(c) for c in clients),
                     pre_dtmf_ms / 1000 + HOLD_SECONDS + 10,
                     f"incoming_call at all {len(clients)} agents ({label})")
    if not all(fresh(c) for c in clients):
        outcome = await sipp
        missing = sum(1 for c in clients if not fresh(c))
        raise BenchError(f"{label}: {missing} of {len(clients)} agents got no incoming_call "
                         f"before the call ended\n{outcome.explain()}")
    ids = set.union(*(fresh(c) for c in clients))
    if len(ids) != 1:
        raise BenchError(f"{label}: agents were offered different calls {sorted(ids)}")
    call_id = ids.pop()
    await wait_until(changed, lambda: all(call_id in c.cancelled for c in clients),
                     HOLD_SECONDS + 15, f"call_cancelled at every agent ({label})")
    outcome = await sipp
    if not outcome.ok:
        raise BenchError(f"{label} failed\n{outcome.explain()}")
    reasons = {c.cancelled[call_id] for c in clients}
    if reasons != {"caller_hangup"}:
        raise BenchError(f"{label}: unexpected call_cancelled reasons {reasons}")
    return call_id


async def run_round(server: Server, tmp: Path, tokens: dict[str, str], *, calls: int,
                    warmup: int, pre_dtmf_ms: int) -> RoundResult:
    changed = asyncio.Event()
    clients = [AgentClient(name, changed) for name in tokens]
    log(f"{len(clients)} agent(s): connecting to /agent")
    try:
        await asyncio.gather(*(c.connect(server, tokens[c.name]) for c in clients))
        await wait_until(changed, lambda: all(c.states for c in clients), 20,
                         "agent_state on every connection")
        not_available = [c.name for c in clients if c.states[-1].get("status") != "available"]
        if not_available:
            raise BenchError(f"agents not available after connecting: {not_available}")
        result = RoundResult(len(clients))
        seen: set[str] = set()
        for index in range(warmup + calls):
            label = "warm-up call" if index < warmup else f"call {index - warmup + 1}/{calls}"
            call_id = await one_call(server, tmp, clients, changed, seen=seen, label=label,
                                     pre_dtmf_ms=pre_dtmf_ms)
            seen.add(call_id)
            if index >= warmup:
                result.call_ids.append(call_id)
                result.received[call_id] = [c.offers[call_id] for c in clients]
            log(f"{len(clients)} agent(s): {label} done ({call_id})")
        return result
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.sio.disconnect()


# -- figures --------------------------------------------------------------------------------


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def queued_at(record: dict[str, Any]) -> float:
    for event in record.get("events", []):
        if event.get("type") == "state" and event.get("state") == "queued":
            return parse_iso(str(event["at"]))
    raise BenchError(f"call {record.get('callId')}: no 'queued' state event in its record")


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Dist:
    n: int
    median_ms: float
    p95_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Dist:
        ms = [s * 1000 for s in seconds]
        return cls(len(ms), statistics.median(ms), p95(ms), max(ms))

    def json(self) -> dict[str, Any]:
        return {"n": self.n, "median_ms": round(self.median_ms, 1),
                "p95_ms": round(self.p95_ms, 1), "max_ms": round(self.max_ms, 1)}


@dataclass
class Figures:
    agents: int
    calls: int
    every: Dist
    first: Dist
    last: Dist


def figures(result: RoundResult, records: dict[str, dict[str, Any]]) -> Figures:
    every: list[float] = []
    first: list[float] = []
    last: list[float] = []
    for call_id in result.call_ids:
        start = queued_at(records[call_id])
        latencies = [t - start for t in result.received[call_id]]
        every.extend(latencies)
        first.append(min(latencies))
        last.append(max(latencies))
    return Figures(result.agents, len(result.call_ids), Dist.of(every), Dist.of(first),
                   Dist.of(last))


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return (f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, "
            f"python-socketio {version('python-socketio')}")


def report(rounds: list[Figures], args: argparse.Namespace, started: str) -> None:
    print("handoff fan-out latency: agent node reached -> incoming_call received")
    print(f"  date        {started}")
    print(f"  machine     {machine_description()}")
    print(f"  command     {' '.join([Path(sys.executable).name, *sys.argv])}")
    print("  setup       hitl-sip serve (hub + 1 worker) on loopback, flow "
          "bench/flows/fanout.yaml, routing ring_timeout 25 s, queue_timeout 30 s")
    print(f"              per agent count: {args.calls} sequential SIPp calls "
          f"(+{args.warmup} warm-up, not counted); 0 pressed {args.pre_dtmf_ms} ms after "
          f"answer;")
    print(f"              nobody accepts, the caller hangs up {HOLD_SECONDS:.0f} s later "
          "(every agent gets call_cancelled caller_hangup)")
    print("  latency     agent's time.time() in its incoming_call handler - worker's 'queued'"
          " state event (call record, ms, truncated: reads 0-1 ms high)")
    print("              all agents are python-socketio clients in this one process")
    print()
    print(f"  {'agents':>6}  {'':<36}{'n':>5}  {'median':>9}  {'p95':>9}  {'max':>9}")
    for fig in rounds:
        rows = [("every (call, agent) sample", fig.every),
                ("first agent per call", fig.first),
                ("last agent per call (fan-out done)", fig.last)]
        for i, (label, d) in enumerate(rows):
            head = f"{fig.agents:>6}" if i == 0 else " " * 6
            print(f"  {head}  {label:<36}{d.n:>5}  {d.median_ms:>6.1f} ms  "
                  f"{d.p95_ms:>6.1f} ms  {d.max_ms:>6.1f} ms")


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--agents", type=int, nargs="+", default=[1, 50],
                   help="connected agent counts to measure (default: 1 50)")
    p.add_argument("--calls", type=int, default=8, help="measured calls per count (default 8)")
    p.add_argument("--warmup", type=int, default=1,
                   help="uncounted calls before each count's measured calls (default 1)")
    p.add_argument("--pre-dtmf-ms", type=int, default=1500,
                   help="time from answer to pressing 0 (default 1500; the prompt is 'Hi.')")
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    args = p.parse_args(argv)
    if any(n < 1 or n > 500 for n in args.agents):
        p.error("--agents: each count must be 1-500")
    if args.calls < 1 or args.warmup < 0 or args.pre_dtmf_ms < 200:
        p.error("--calls >= 1, --warmup >= 0, --pre-dtmf-ms >= 200")
    return args


def run(args: argparse.Namespace) -> list[Figures]:
    most = max(args.agents)
    names = [f"bench-agent-{i:03d}" for i in range(most)]
    with tempfile.TemporaryDirectory(prefix="hitl-bench-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        extra: dict[str, dict[str, Any]] = {"routing": dict(ROUTING),
                                            "bot": {"flow": str(FLOW)}}
        log("starting hitl-sip serve")
        with running_server(tmp, extra=extra) as srv:
            log(f"adding {most} agent(s) with hitl-sip agents add")
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda name: add_agent(srv.data_dir, name), names))
            log(f"logging {most} agent(s) in")
            tokens = {name: login(srv, name) for name in names}
            results: list[RoundResult] = []
            for count in args.agents:
                subset = {name: tokens[name] for name in names[:count]}
                results.append(asyncio.run(run_round(
                    srv, tmp, subset, calls=args.calls, warmup=args.warmup,
                    pre_dtmf_ms=args.pre_dtmf_ms)))
            wanted = {cid for r in results for cid in r.call_ids}
            try:
                srv.wait_for(lambda: wanted <= {r["callId"] for r in srv.call_records()},
                             timeout=15, what="the call records")
            except AssertionError as e:
                raise BenchError(str(e)) from None
            records = {str(r["callId"]): r for r in srv.call_records()}
    return [figures(r, records) for r in results]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("sipp") is None:
        print("handoff_fanout: SIPp not found on PATH", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("handoff_fanout: needs root (SIPp plays the DTMF pcap through a raw socket)",
              file=sys.stderr)
        return 2
    started = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    t0 = time.monotonic()
    try:
        rounds = run(args)
    except BenchError as e:
        print(f"handoff_fanout: {e}", file=sys.stderr)
        return 1
    log(f"done in {time.monotonic() - t0:.0f} s")
    report(rounds, args, started)
    if args.json:
        print(json.dumps({
            "bench": "handoff_fanout", "date": started, "machine": machine_description(),
            "calls": args.calls, "warmup": args.warmup, "pre_dtmf_ms": args.pre_dtmf_ms,
            "rounds": [{"agents": f.agents, "calls": f.calls, "every": f.every.json(),
                        "first": f.first.json(), "last": f.last.json()} for f in rounds],
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
