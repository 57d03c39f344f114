"""CPU, memory and late/lost frames of bridged calls with the media worker full.

A real ``hitl-sip serve`` (hub + one worker, embedded engines: pocketsphinx runs on both legs
of every bridged call, the shadow STT) runs ``bench/flows/bridge.yaml``. Three agents log in
(:mod:`hitl_sip.testing.agent`, python-socketio + aiortc, in this process); three callers
(``tests/support/rtpcaller.py``, PCMU RTP paced on a monotonic clock) call one after the
other and each call is accepted by the next free agent, so the worker holds its maximum of
three bridged calls. Callers and agents both talk all the time (looped speech), the worst
case for the recognisers.

Measured in a steady window of ``--seconds``:

- the worker process's CPU (user + system, % of one core) minus its idle figure, per call;
- its RSS growth per call;
- late/lost frames, server side, per direction: caller → agent, a pull of the caller track
  that found no frame (``to_agent_silence``) or a frame trimmed; agent → caller, an agent
  frame dropped (too far ahead of the trunk clock) or a 20 ms tick of the trunk's clock
  with nothing to send while the agent's audio was flowing (``hitl_sip_pcm_underruns_total
  {direction="to_caller"}``); over the frames of the window;
- and what the callers saw: RTP sequence gaps and inter-arrival gaps over 60 ms;
- the garbage-collector pauses in the window of the worker (``hitl_sip_gc_pause_seconds``)
  and of the hub (``hitl_sip_hub_gc_pause_seconds``): how many, how many over 5 and 20 ms;
  ``HITL_SIP_GC=stock`` in the environment runs the
  server with CPython's collector settings for comparison (:mod:`hitl_sip.gctune`).

The callers and agents share this machine's two cores with the server.

``--media rtpengine direct``: the trunk's RTP through rtpengine (the default edge; its
process's CPU in the window is reported too, per call) or straight to the worker.

Usage: ``python bench/bridge_capacity.py [--seconds 20] [--codecs pcmu opus]
[--media rtpengine direct] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.media.ice import install_host_filter  # noqa: E402
from hitl_sip.media.wav import read_wav, resample  # noqa: E402
from hitl_sip.testing.agent import TestAgent, wav_source  # noqa: E402
from hitl_sip.testing.procstat import children_cpu, cpu_seconds  # noqa: E402
from tests.integration.test_agents import PASSWORD, add_agent  # noqa: E402
from tests.support.rtpcaller import RtpCaller  # noqa: E402
from tests.support.server import Server, running_server  # noqa: E402

CALLS = 3
CALLER_WAV = ROOT / "rtp/caller/agent_bill_8k.wav"
AGENT_WAV = ROOT / "rtp/caller/hello_hear_me_16k.wav"


def caller_source() -> Any:
    rate, pcm = read_wav(CALLER_WAV)
    if rate != 8000:
        pcm = resample(pcm, rate, 8000)
    frames = [pcm[i:i + 320].ljust(320, b"\0") for i in range(0, len(pcm), 320)]
    return lambda n: frames[n % len(frames)]


def caller_view(caller: RtpCaller, start: float, end: float) -> dict[str, int]:
    pkts = sorted((p for p in caller.received if start <= p.arrival <= end),
                  key=lambda p: p.arrival)
    seqs = [p.seq for p in pkts]
    lost = sum(((b - a) & 0xFFFF) - 1 for a, b in itertools.pairwise(seqs)
               if 1 < ((b - a) & 0xFFFF) < 1000)
    arrivals = np.array([p.arrival for p in pkts])
    late = int((np.diff(arrivals) > 0.06).sum()) if len(arrivals) > 1 else 0
    return {"packets": len(pkts), "seq_gaps": lost, "gaps_over_60ms": late}


def gc_pauses(srv: Server) -> dict[str, float]:
    """The garbage-collector pauses so far of the workers (``gc_*``) and of the hub
    (``hub_gc_*``): all, over 5 ms, over 20 ms."""
    pauses: dict[str, float] = {}
    for prefix, name in (("gc", "hitl_sip_gc_pause_seconds_bucket"),
                         ("hub_gc", "hitl_sip_hub_gc_pause_seconds_bucket")):
        total = srv.metric(name, le="+Inf")
        pauses |= {f"{prefix}_pauses": total,
                   f"{prefix}_over_5ms": total - srv.metric(name, le="0.005"),
                   f"{prefix}_over_20ms": total - srv.metric(name, le="0.02")}
    return pauses


def relay_process(srv: Server) -> psutil.Process | None:
    """rtpengine's process, when the media passes it."""
    media = (srv.health()[1].get("front") or {}).get("media") or {}
    pid = int(media.get("pid") or 0) if media.get("kind") == "rtpengine" else 0
    return psutil.Process(pid) if pid else None


async def measure(srv: Server, codec: str, seconds: float) -> dict[str, Any]:
    worker = psutil.Process(srv.worker_pid())
    relay = relay_process(srv)
    agents = [TestAgent(srv.http_url, f"agent{i}", PASSWORD, source=wav_source(AGENT_WAV),
                        codecs=(codec,)) for i in range(CALLS)]
    for agent in agents:
        await agent.connect()
    await asyncio.sleep(1.0)
    c0, t0, rss0 = cpu_seconds(worker), time.monotonic(), worker.memory_info().rss
    await asyncio.sleep(5.0)
    idle = (cpu_seconds(worker) - c0) / (time.monotonic() - t0) * 100
    callers: list[RtpCaller] = []
    taken: set[str] = set()
    try:
        for i, agent in enumerate(agents):
            caller = RtpCaller(srv.sip_port())
            callers.append(caller)
            await asyncio.to_thread(caller.call)
            caller.start_media(caller_source())
            await agent.take_new_call(taken)
            print(f"  call {i + 1} bridged ({agent.codec})", file=sys.stderr)
        await asyncio.sleep(3.0)  # settle: recognisers loaded, queues at their level
        before = {
            "underruns": srv.metric("hitl_sip_pcm_underruns_total", direction="to_caller"),
            **gc_pauses(srv),
        }
        r1 = cpu_seconds(relay) if relay else 0.0
        c1, s1, t1 = cpu_seconds(worker), children_cpu(worker), time.monotonic()
        await asyncio.sleep(seconds)
        c2, s2, t2 = cpu_seconds(worker), children_cpu(worker), time.monotonic()
        r2 = cpu_seconds(relay) if relay else 0.0
        rss1 = worker.memory_info().rss
        await asyncio.sleep(1.5)  # the worker reports metrics every second
        underruns = srv.metric("hitl_sip_pcm_underruns_total",
                               direction="to_caller") - before["underruns"]
        after = gc_pauses(srv)
        views = [caller_view(c, t1, t2) for c in callers]
        heard = [len(a.heard_frames) for a in agents]
    finally:
        for caller in callers:
            await asyncio.to_thread(caller.close)
        for agent in agents:
            await agent.close()
    srv.wait_for(lambda: len(srv.call_records()) >= CALLS, 20, what="the call records")
    bridge = [r["bridge"][0] for r in srv.call_records() if r.get("bridge")]
    busy = (c2 - c1) / (t2 - t1) * 100
    window_frames = int((t2 - t1) / 0.02) * CALLS
    total = {k: sum(int(b[k]) for b in bridge) for k in
             ("to_agent_frames", "to_agent_silence", "to_agent_trimmed", "from_agent_frames",
              "from_agent_dropped")}
    return {
        "codec": codec,
        "calls": CALLS,
        "cpu_idle_pct": round(idle, 2),
        "cpu_busy_pct": round(busy, 1),
        "cpu_per_call_pct": round((busy - idle) / CALLS, 1),
        "speech_process_cpu_pct": round((s2 - s1) / (t2 - t1) * 100, 1),
        "rtpengine_cpu_pct": round((r2 - r1) / (t2 - t1) * 100, 2) if relay else None,
        "rtpengine_cpu_per_call_pct": (round((r2 - r1) / (t2 - t1) * 100 / CALLS, 2)
                                       if relay else None),
        "rss_per_call_mib": round((rss1 - rss0) / CALLS / 2**20, 1),
        "to_agent_late_or_lost": total["to_agent_silence"] + total["to_agent_trimmed"],
        "to_agent_frames": total["to_agent_frames"],
        "to_caller_underruns_in_window": int(underruns),
        "to_caller_dropped": total["from_agent_dropped"],
        "to_caller_frames": total["from_agent_frames"],
        "window_frames_per_direction": window_frames,
        "to_caller_late_pct_in_window": round(100 * underruns / window_frames, 3),
        **{f"{prefix}_pauses{tail}": int(after[f"{prefix}_{key}"] - before[f"{prefix}_{key}"])
           for prefix in ("gc", "hub_gc")
           for key, tail in (("pauses", ""), ("over_5ms", "_over_5ms"),
                             ("over_20ms", "_over_20ms"))},
        "callers": views,
        "agent_frames_heard": heard,
    }


def run(codec: str, seconds: float, media: str = "rtpengine") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(ROOT / "bench/flows/bridge.yaml")},
            "routing": {"queue_timeout": 120},
            "webrtc": {"codecs": [codec], "host_addresses": ["127.0.0.1"]},
            "front": {"media": media},
        }
        with running_server(Path(tmp), extra=extra) as srv:
            for i in range(CALLS):
                add_agent(srv.data_dir, f"agent{i}")
            return {**asyncio.run(measure(srv, codec, seconds)), "media": media}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--codecs", nargs="+", default=["pcmu", "opus"],
                   choices=["pcmu", "pcma", "opus"])
    p.add_argument("--media", nargs="+", default=["rtpengine"], choices=["rtpengine", "direct"],
                   help="the trunk's RTP through rtpengine (the default edge) or direct")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    install_host_filter(["127.0.0.1"])
    results = []
    for media in args.media:
        for codec in args.codecs:
            print(f"{codec} ({media} media): 3 bridged calls, {args.seconds:.0f} s window",
                  file=sys.stderr)
            results.append(run(codec, args.seconds, media))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"bridged calls with the worker full ({CALLS} calls, shadow STT on both legs, "
          f"{args.seconds:.0f} s window)")
    for r in results:
        pulls = r["to_agent_frames"] + r["to_agent_late_or_lost"]
        if r["rtpengine_cpu_pct"] is not None:
            print(f"{r['codec']:5} rtpengine {r['rtpengine_cpu_pct']}% of a core, "
                  f"{r['rtpengine_cpu_per_call_pct']}% per call")
        print(f"{r['codec']:5} [{r['media']}] CPU worker {r['cpu_busy_pct']}% of a core (idle "
              f"{r['cpu_idle_pct']}%), {r['cpu_per_call_pct']}% per call; "
              f"RSS +{r['rss_per_call_mib']} MiB per call; speech process "
              f"{r['speech_process_cpu_pct']}% of a core (6 streams)")
        print(f"      caller->agent late/lost {r['to_agent_late_or_lost']}/{pulls} pulls "
              f"({100 * r['to_agent_late_or_lost'] / max(1, pulls):.2f} %, whole calls); "
              f"agent->caller underruns {r['to_caller_underruns_in_window']}/"
              f"{r['window_frames_per_direction']} ticks ({r['to_caller_late_pct_in_window']}"
              f" %), dropped {r['to_caller_dropped']}/{r['to_caller_frames']}")
        for who, prefix in (("worker", "gc"), ("hub", "hub_gc")):
            print(f"      {who} GC pauses in the window: {r[f'{prefix}_pauses']}, over 5 ms "
                  f"{r[f'{prefix}_pauses_over_5ms']}, over 20 ms "
                  f"{r[f'{prefix}_pauses_over_20ms']}")
        print(f"      at the callers: {r['callers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
