"""Latency the media bridge adds, per direction, per WebRTC codec, tuned vs stock aiortc.

A real ``hitl-sip serve`` (hub + one worker) runs ``bench/flows/bridge.yaml`` (straight to the
agent node). A caller (``tests/support/rtpcaller.py``: SIP over UDP, PCMU RTP paced on a
monotonic clock) calls; the test agent (:mod:`hitl_sip.testing.agent`: python-socketio + aiortc)
accepts. Both then send marked audio: 100 ms bursts of a tone every 500 ms, the caller's
440 Hz at frame 0 of each 25-frame cycle, the agent's 1 kHz at frame 12.

- caller → agent: from the caller's ``sendto`` of the burst's first packet to the arrival
  at the agent's socket of the first RTP packet whose decoded audio has the burst
  (timestamped in aiortc's receive path before any jitter buffer);
- agent → caller: from the moment the agent's track hands the burst's first frame to its
  encoder (the packet leaves < 1 ms later) to the arrival at the caller's socket of the
  first RTP packet that carries it.

Everything between is the server: pjmedia's jitter buffer and clock, the bridge, aiortc's
encoder/decoder, jitter buffer and SRTP; the network is loopback and no client jitter
buffer is on the path. Same host, one monotonic clock. Onset = the first 20 ms frame
above -35 dBFS after at least 150 ms without one; a frame below -45 dBFS inside a burst is
counted as a dropout (audio too late for its slot, or lost). The first 2 s after connect
are not counted.

Each codec runs twice: ``tuned`` (``webrtc.low_latency = true``: immediate audio jitter
buffer, caller track phase-aligned to the trunk's frames) and ``stock`` (aiortc's audio
jitter buffer, which releases a frame once 4 more have arrived, and a plain 20 ms clock for
the caller track).

``--media rtpengine direct`` runs each with the trunk's RTP through rtpengine (the default
edge, ``front.media = rtpengine``: one more userspace hop each way) and without it.

Usage: ``python bench/bridge_latency.py [--seconds 30] [--codecs pcmu opus]
[--media rtpengine direct] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.media.ice import install_host_filter  # noqa: E402
from hitl_sip.testing.agent import TestAgent  # noqa: E402
from hitl_sip.testing.bursts import (  # noqa: E402
    AGENT_OFFSET,
    CYCLE,
    agent_source,
    caller_source,
    onsets,
)
from tests.integration.test_agents import PASSWORD, add_agent  # noqa: E402
from tests.support.rtpcaller import RtpCaller  # noqa: E402
from tests.support.server import running_server  # noqa: E402

WARMUP = 2.0


def match(arrivals: list[float], starts: list[float], after: float) -> list[float]:
    """Latency of each onset from the latest burst start before it (bursts are 500 ms
    apart, so anything over 250 ms is a miss, reported as such)."""
    latencies = []
    for arrival in arrivals:
        if arrival < after:
            continue
        before = [s for s in starts if s <= arrival]
        if before and arrival - before[-1] < 0.25:
            latencies.append(arrival - before[-1])
    return latencies


async def measure(http_url: str, sip_port: int, codec: str, seconds: float) -> dict[str, Any]:
    agent = TestAgent(http_url, "bench", PASSWORD, source=agent_source, codecs=(codec,))
    await agent.connect()
    caller = RtpCaller(sip_port)
    try:
        await asyncio.to_thread(caller.call)
        caller.start_media(caller_source)
        await agent.answer_next_call(limit=20)
        await agent.wait("call_connected", limit=15)
        await asyncio.sleep(seconds + WARMUP)
    finally:
        await agent.close()
        await asyncio.to_thread(caller.close)
    after = min(t for _, t in caller.sent) + WARMUP if caller.sent else 0.0
    caller_starts = [t for n, t in caller.sent if n % CYCLE == 0]
    at_agent, agent_dropouts = onsets([(arrival, pcm) for _, arrival, pcm in
                                       sorted(agent.heard_frames, key=lambda f: f[0])])
    agent_starts = [t for n, t in agent.mic.sent if n % CYCLE == AGENT_OFFSET]
    at_caller, caller_dropouts = onsets([(p.arrival, p.pcm) for p in
                                         sorted(caller.received, key=lambda p: p.arrival)])
    return {
        "codec": agent.codec,
        "to_agent": match(at_agent, caller_starts, after),
        "to_caller": match(at_caller, agent_starts, after),
        "dropouts": {"to_agent": agent_dropouts, "to_caller": caller_dropouts},
        "bursts": int(seconds * 2),
    }


def summary(samples: list[float], expected: int) -> dict[str, Any]:
    if not samples:
        return {"n": 0, "expected": expected}
    ms = sorted(x * 1000 for x in samples)

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, math.ceil(p * len(ms)) - 1)], 1)

    return {"n": len(ms), "expected": expected, "median": round(statistics.median(ms), 1),
            "p95": pct(0.95), "p99": pct(0.99), "max": round(ms[-1], 1)}


def run(codec: str, low_latency: bool, seconds: float,
        media: str = "rtpengine") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(ROOT / "bench/flows/bridge.yaml")},
            "routing": {"queue_timeout": 120},
            "webrtc": {"codecs": [codec], "low_latency": low_latency,
                       "host_addresses": ["127.0.0.1"]},
            "front": {"media": media},
        }
        with running_server(Path(tmp), extra=extra) as srv:
            add_agent(srv.data_dir, "bench")
            out = asyncio.run(measure(srv.http_url, srv.sip_port(), codec, seconds))
    return {
        "codec": codec, "mode": "tuned" if low_latency else "stock", "media": media,
        "to_agent": {**summary(out["to_agent"], out["bursts"]),
                     "dropouts": out["dropouts"]["to_agent"]},
        "to_caller": {**summary(out["to_caller"], out["bursts"]),
                      "dropouts": out["dropouts"]["to_caller"]},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    p.add_argument("--codecs", nargs="+", default=["pcmu", "opus"],
                   choices=["pcmu", "pcma", "opus"])
    p.add_argument("--modes", nargs="+", default=["tuned", "stock"], choices=["tuned", "stock"])
    p.add_argument("--media", nargs="+", default=["rtpengine"], choices=["rtpengine", "direct"],
                   help="the trunk's RTP through rtpengine (the default edge) or direct")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    install_host_filter(["127.0.0.1"])
    results = [run(codec, mode, args.seconds, media) for media in args.media
               for codec in args.codecs for mode in (m == "tuned" for m in args.modes)]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"bridge latency, server-internal, ms ({args.seconds:.0f} s per run, "
          "a burst every 500 ms)")
    print(f"{'media':9} {'codec':6} {'mode':6} {'direction':16} {'n':>7} {'median':>7} "
          f"{'p95':>7} {'p99':>7} {'max':>7} {'dropouts':>8}")
    for r in results:
        for direction, label in (("to_agent", "caller -> agent"), ("to_caller",
                                                                   "agent -> caller")):
            s = r[direction]
            print(f"{r['media']:9} {r['codec']:6} {r['mode']:6} {label:16} "
                  f"{s['n']:>3}/{s['expected']:<3} "
                  f"{s.get('median', '-'):>7} {s.get('p95', '-'):>7} {s.get('p99', '-'):>7} "
                  f"{s.get('max', '-'):>7} {s['dropouts']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
