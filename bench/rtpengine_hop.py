"""What rtpengine itself adds on the media path: one-way latency per direction and CPU per
call, measured on the relay alone.

rtpengine runs as ``hitl-sip serve`` runs it (:class:`hitl_sip.front.rtpengine.RtpEngine`,
the generated configuration: userspace, ``endpoint-learning = off``) and gets each call's
offer and answer over ng with the front's flags (``strict-source`` …). Per call a "trunk"
and a "worker" socket on loopback each send one 172-byte PCMU packet every 20 ms through
it, paced on a monotonic anchor, each packet carrying its send time; the receiver notes the
arrival. Latency = arrival − send, per direction (same host, one clock). CPU = rtpengine's
user + system time over the window, per call.

Usage: ``python bench/rtpengine_hop.py [--calls 1 10 30] [--seconds 20] [--json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.config import load_config  # noqa: E402
from hitl_sip.front.kamailio import MEDIA_FLAGS  # noqa: E402
from hitl_sip.front.ng import ng_request  # noqa: E402
from hitl_sip.front.rtpengine import RtpEngine, free_ng_port, write_config  # noqa: E402

PAYLOAD = 160


def sdp(port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


class Leg:
    """One side of a call: sends to ``target`` and records (seq, one-way latency)."""

    def __init__(self) -> None:
        self.sock = udp()
        self.port = int(self.sock.getsockname()[1])
        self.target: tuple[str, int] | None = None
        self.latencies: list[float] = []

    def send(self, seq: int) -> None:
        assert self.target is not None
        header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * PAYLOAD, self.port)
        stamp = struct.pack("!d", time.monotonic())
        self.sock.sendto(header + stamp + bytes(PAYLOAD - len(stamp)), self.target)

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            self.latencies.append(time.monotonic() - struct.unpack("!d", data[12:20])[0])


async def setup_call(ng_port: int, n: int) -> tuple[Leg, Leg]:
    trunk, worker = Leg(), Leg()
    offer = await ng_request("127.0.0.1", ng_port, {
        "command": "offer", "call-id": f"bench-{n}", "from-tag": "t", "sdp": sdp(trunk.port),
        "flags": ["strict-source"], "direction": ["external", "internal"],
        "replace": ["origin", "session-connection"], "ICE": "remove"})
    answer = await ng_request("127.0.0.1", ng_port, {
        "command": "answer", "call-id": f"bench-{n}", "from-tag": "t", "to-tag": "w",
        "sdp": sdp(worker.port), "flags": ["strict-source"],
        "replace": ["origin", "session-connection"], "ICE": "remove"})
    trunk.target = ("127.0.0.1", int(re.findall(r"m=audio (\d+)", answer["sdp"])[0]))
    worker.target = ("127.0.0.1", int(re.findall(r"m=audio (\d+)", offer["sdp"])[0]))
    return trunk, worker


def pct(values: list[float], p: float) -> float:
    ms = sorted(v * 1000 for v in values)
    return round(ms[min(len(ms) - 1, max(0, round(p * len(ms)) - 1))], 3) if ms else 0.0


async def run(calls: int, seconds: float) -> dict[str, Any]:
    config = load_config(None, env={}, overrides={"sip.host": "127.0.0.1"})
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp:
        ng_port = free_ng_port()
        conf = write_config(config, Path(tmp), port_start=40000, port_end=40999,
                            public_address=None, ng_port=ng_port)
        relay = RtpEngine(config, conf, ng_port)
        problem = await relay.start()
        if problem:
            raise RuntimeError(problem)
        assert relay.process is not None
        proc = psutil.Process(relay.process.pid)
        try:
            legs = [await setup_call(ng_port, n) for n in range(calls)]
            loop = asyncio.get_running_loop()
            for leg in (leg for pair in legs for leg in pair):  # arrival noted on readable
                loop.add_reader(leg.sock.fileno(), leg.drain)
            anchor = time.monotonic()
            warm, seq = 1.0, 0
            c0 = t0 = 0.0
            while True:
                now = time.monotonic()
                if not c0 and now - anchor >= warm:
                    for trunk, worker in legs:  # warm-up over: count from here
                        trunk.drain()
                        worker.drain()
                        trunk.latencies.clear()
                        worker.latencies.clear()
                    cpu = proc.cpu_times()
                    c0, t0 = cpu.user + cpu.system, now
                if now - anchor >= warm + seconds:
                    break
                for trunk, worker in legs:
                    trunk.send(seq)
                    worker.send(seq)
                seq += 1
                await asyncio.sleep(max(0.0, anchor + seq * 0.02 - time.monotonic()))
            await asyncio.sleep(0.1)  # the last packets
            for leg in (leg for pair in legs for leg in pair):
                loop.remove_reader(leg.sock.fileno())
            cpu = proc.cpu_times()
            busy = (cpu.user + cpu.system - c0) / (time.monotonic() - t0) * 100
        finally:
            await relay.stop()
    to_worker = [x for _, worker in legs for x in worker.latencies]
    to_trunk = [x for trunk, _ in legs for x in trunk.latencies]
    expected = int(seconds / 0.02) * calls
    return {
        "calls": calls,
        "trunk_to_worker_ms": {"median": round(statistics.median(to_worker) * 1000, 3),
                               "p95": pct(to_worker, 0.95), "n": len(to_worker),
                               "expected": expected},
        "worker_to_trunk_ms": {"median": round(statistics.median(to_trunk) * 1000, 3),
                               "p95": pct(to_trunk, 0.95), "n": len(to_trunk),
                               "expected": expected},
        "rtpengine_cpu_pct": round(busy, 2),
        "cpu_per_call_pct": round(busy / calls, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", nargs="+", type=int, default=[1, 10, 30])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = [asyncio.run(run(n, args.seconds)) for n in args.calls]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"rtpengine alone, userspace, {args.seconds:.0f} s per run, PCMU 50 packets/s each "
          "way per call (flags: " + MEDIA_FLAGS + ")")
    print(f"{'calls':>5} {'trunk->worker median/p95 ms':>28} {'worker->trunk median/p95 ms':>28} "
          f"{'rtpengine CPU':>14} {'per call':>9}")
    for r in results:
        a, b = r["trunk_to_worker_ms"], r["worker_to_trunk_ms"]
        print(f"{r['calls']:>5} {a['median']:>13} / {a['p95']:<12} {b['median']:>13} / "
              f"{b['p95']:<12} {r['rtpengine_cpu_pct']:>12} % {r['cpu_per_call_pct']:>7} %"
              f"  ({a['n']}/{a['expected']}, {b['n']}/{b['expected']} packets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
