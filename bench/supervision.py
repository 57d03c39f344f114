"""What a supervisor costs a bridged call: the worker's CPU with 0, 1 and 2 extra legs, and
the latency of each direction with a supervisor in ``barge`` (issue 16).

A real ``hitl-sip serve`` (hub + one worker) runs ``bench/flows/bridge.yaml``. One caller
(``tests/support/rtpcaller.py``, PCMU) and one agent (:mod:`hitl_sip.testing.agent`,
aiortc) send the marked bursts of ``bench/bridge_latency.py`` (the caller's 440 Hz at frame 0
of every 25, the agent's 1 kHz at frame 12); supervisors (role ``supervisor``, aiortc peers
too) join with ``monitor_call``. Windows of ``--seconds`` each, one after the other on the
same call:

1. no supervisor;
2. one supervisor listening;
3. two supervisors listening;
4. one supervisor in ``barge`` (its microphone silent, so the bursts stay measurable: the
   mix still sums its frames into both directions).

Per window: the worker process's CPU (% of one core, user + system) minus its idle figure
before the call, the speech process's CPU (a listening supervisor is not transcribed; a
barging one is), and the latency per direction as ``bench/bridge_latency.py`` measures it
(caller ``sendto`` → agent socket; agent encoder → caller socket), median/p95/max with the
dropouts. Everything shares this machine's two cores.

Usage: ``python bench/supervision.py [--seconds 15] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bridge_latency import match, summary  # noqa: E402

from hitl_sip.media.ice import install_host_filter  # noqa: E402
from hitl_sip.testing.agent import TestAgent, silence  # noqa: E402
from hitl_sip.testing.bursts import (  # noqa: E402
    AGENT_OFFSET,
    CYCLE,
    agent_source,
    caller_source,
    onsets,
)
from hitl_sip.testing.procstat import children_cpu, cpu_seconds  # noqa: E402
from tests.integration.test_agents import PASSWORD, add_agent  # noqa: E402
from tests.support.rtpcaller import RtpCaller  # noqa: E402
from tests.support.server import Server, running_server  # noqa: E402


def window_latency(agent: TestAgent, caller: RtpCaller, start: float,
                   end: float) -> dict[str, Any]:
    at_agent, agent_drops = onsets([(a, pcm) for _, a, pcm in
                                    sorted(agent.heard_frames, key=lambda f: f[0])
                                    if start <= a < end])
    at_caller, caller_drops = onsets([(p.arrival, p.pcm) for p in
                                      sorted(caller.received, key=lambda p: p.arrival)
                                      if start <= p.arrival < end])
    caller_starts = [t for n, t in caller.sent if n % CYCLE == 0]
    agent_starts = [t for n, t in agent.mic.sent if n % CYCLE == AGENT_OFFSET]
    bursts = int((end - start) * 2)
    return {"to_agent": {**summary(match(at_agent, caller_starts, start), bursts),
                         "dropouts": agent_drops},
            "to_caller": {**summary(match(at_caller, agent_starts, start), bursts),
                          "dropouts": caller_drops}}


async def measure(srv: Server, seconds: float) -> list[dict[str, Any]]:
    worker = psutil.Process(srv.worker_pid())
    agent = TestAgent(srv.http_url, "bench", PASSWORD, source=agent_source, codecs=("pcmu",))
    sups = [TestAgent(srv.http_url, f"sup{i}", PASSWORD, source=silence, codecs=("pcmu",))
            for i in range(2)]
    for peer in (agent, *sups):
        await peer.connect()
    c0, t0 = cpu_seconds(worker), time.monotonic()
    await asyncio.sleep(5.0)
    idle = (cpu_seconds(worker) - c0) / (time.monotonic() - t0) * 100
    caller = RtpCaller(srv.sip_port())
    results: list[dict[str, Any]] = []
    try:
        await asyncio.to_thread(caller.call)
        caller.start_media(caller_source)
        offer = await agent.answer_next_call(limit=20)
        call_id = str(offer["callId"])
        await agent.wait("call_connected", limit=15)
        await asyncio.sleep(3.0)  # recognisers loaded, queues at their level

        async def window(label: str, legs: int) -> None:
            await asyncio.sleep(2.0)  # the new leg's peer up and flowing
            c1, s1, t1 = cpu_seconds(worker), children_cpu(worker), time.monotonic()
            await asyncio.sleep(seconds)
            c2, s2, t2 = cpu_seconds(worker), children_cpu(worker), time.monotonic()
            busy = (c2 - c1) / (t2 - t1) * 100
            results.append({"window": label, "extra_legs": legs,
                            "worker_cpu_pct": round(busy, 1),
                            "cpu_per_call_pct": round(busy - idle, 1),
                            "speech_process_cpu_pct": round((s2 - s1) / (t2 - t1) * 100, 1),
                            **window_latency(agent, caller, t1, t2)})
            print(f"  {label}: done", file=sys.stderr)

        await window("no supervisor", 0)
        await sups[0].monitor(call_id, "listen")
        await window("1 supervisor (listen)", 1)
        await sups[1].monitor(call_id, "listen")
        await window("2 supervisors (listen)", 2)
        await sups[1].call("monitor_stop", {"callId": call_id})
        await sups[0].call("monitor_mode", {"callId": call_id, "mode": "barge"})
        await window("1 supervisor (barge)", 1)
    finally:
        for peer in (*sups, agent):
            await peer.close()
        await asyncio.to_thread(caller.close)
    for r in results:
        r["worker_idle_pct"] = round(idle, 2)
    return results


def run(seconds: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(ROOT / "bench/flows/bridge.yaml")},
            "routing": {"queue_timeout": 120},
            "webrtc": {"codecs": ["pcmu"], "host_addresses": ["127.0.0.1"]},
        }
        with running_server(Path(tmp), extra=extra) as srv:
            add_agent(srv.data_dir, "bench")
            for i in range(2):
                add_agent(srv.data_dir, f"sup{i}", role="supervisor")
            return asyncio.run(measure(srv, seconds))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    install_host_filter(["127.0.0.1"])
    results = run(args.seconds)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"one bridged PCMU call, {args.seconds:.0f} s windows (worker idle "
          f"{results[0]['worker_idle_pct']}% of a core)")
    for r in results:
        a, c = r["to_agent"], r["to_caller"]
        print(f"{r['window']:24} worker {r['worker_cpu_pct']:5}% of a core "
              f"({r['cpu_per_call_pct']}% for the call), speech process "
              f"{r['speech_process_cpu_pct']}%; latency caller->agent median "
              f"{a.get('median')} p95 {a.get('p95')} ms ({a['n']}/{a['expected']}, "
              f"{a['dropouts']} dropouts), agent->caller median {c.get('median')} p95 "
              f"{c.get('p95')} ms ({c['n']}/{c['expected']}, {c['dropouts']} dropouts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
