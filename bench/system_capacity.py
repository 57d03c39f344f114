"""Capacity of the whole system on this machine: N media workers behind the Kamailio front.

For each N in ``--workers``, a real ``hitl-sip serve --workers N`` (hub, N workers with their
speech processes, Kamailio; embedded engines) runs ``bench/flows/latency.yaml``: the bot
listens, answers every utterance, listens again, so every call keeps a recogniser busy. The
bench fills every worker: 3 × N callers (``tests/support/rtpcaller.py``, PCMU RTP paced on a
monotonic clock, looped human-like speech) call the front one after the other.

Measured in a steady window of ``--seconds``, after an idle baseline:

- CPU of every server process together (hub, workers, speech processes, Kamailio), in % of
  one core, and per call over the idle figure; the total RSS and its growth per call;
- late/lost frames as the callers see them: RTP sequence gaps plus inter-arrival gaps over
  60 ms (each such gap counts the frames it spans beyond the first), over the frames due in
  the window; and the server's own count of 20 ms ticks with nothing to send while a
  prompt was playing (``hitl_sip_pcm_underruns_total{direction="to_caller"}``).

The callers share the machine's two cores with the server. The "holds" verdict is
late/lost ≤ 0.5 % on both counts.

Usage: ``python bench/system_capacity.py [--workers 1 2 3 4] [--seconds 20] [--json]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.media.wav import read_wav, resample  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.rtpcaller import RtpCaller  # noqa: E402
from tests.support.server import Server, running_server  # noqa: E402

PER_WORKER = 3
CALLER_WAV = ROOT / "rtp/caller/agent_bill_8k.wav"
LIMIT_PCT = 0.5


def speech_source(offset: int) -> Any:
    rate, pcm = read_wav(CALLER_WAV)
    if rate != 8000:
        pcm = resample(pcm, rate, 8000)
    frames = [pcm[i:i + 320].ljust(320, b"\0") for i in range(0, len(pcm), 320)]
    frames += [bytes(320)] * 50  # a second of silence: an utterance, then the bot answers
    return lambda n: frames[(n + offset) % len(frames)]


def tree(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]


def cpu_and_rss(procs: list[psutil.Process]) -> tuple[float, int]:
    cpu, rss = 0.0, 0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return cpu, rss


def late_or_lost(caller: RtpCaller, start: float, end: float) -> tuple[int, int]:
    """(frames late or lost, frames due) for what ``caller`` received in [start, end]."""
    pkts = sorted((p for p in list(caller.received) if start <= p.arrival <= end),
                  key=lambda p: p.arrival)
    lost = sum(((b.seq - a.seq) & 0xFFFF) - 1 for a, b in itertools.pairwise(pkts)
               if 1 < ((b.seq - a.seq) & 0xFFFF) < 1000)
    late = sum(int((b.arrival - a.arrival) / 0.02) - 1 for a, b in itertools.pairwise(pkts)
               if b.arrival - a.arrival > 0.06)
    return lost + late, int((end - start) / 0.02)


def measure(srv: Server, port: int, workers: int, seconds: float) -> dict[str, Any]:
    calls = workers * PER_WORKER
    procs = tree(psutil.Process(srv.process.pid))
    for p in procs:
        p.cpu_percent()
    time.sleep(2.0)
    c0, rss0 = cpu_and_rss(procs)
    t0 = time.monotonic()
    time.sleep(4.0)
    c1, _ = cpu_and_rss(procs)
    idle = (c1 - c0) / (time.monotonic() - t0) * 100
    callers: list[RtpCaller] = []
    try:
        for i in range(calls):
            caller = RtpCaller(port)
            callers.append(caller)
            caller.call(timeout=10)
            caller.start_media(speech_source(offset=37 * i))
        time.sleep(4.0)  # settle: greetings done, recognisers loaded
        answered = {w["workerId"]: w["activeCalls"] for w in srv.health()[1]["workers"]}
        procs = tree(psutil.Process(srv.process.pid))
        underruns0 = srv.metric("hitl_sip_pcm_underruns_total", direction="to_caller")
        c2, _ = cpu_and_rss(procs)
        t2 = time.monotonic()
        time.sleep(seconds)
        c3, rss3 = cpu_and_rss(procs)
        t3 = time.monotonic()
        time.sleep(1.5)  # workers report metrics every second
        underruns = srv.metric("hitl_sip_pcm_underruns_total", direction="to_caller") - underruns0
        views = [late_or_lost(c, t2, t3) for c in callers]
    finally:
        for caller in callers:
            caller.close()
    busy = (c3 - c2) / (t3 - t2) * 100
    bad = sum(v[0] for v in views)
    due = sum(v[1] for v in views)
    return {
        "workers": workers,
        "calls": calls,
        "calls_per_worker": answered,
        "cpu_idle_pct": round(idle, 1),
        "cpu_busy_pct": round(busy, 1),
        "cpu_per_call_pct": round((busy - idle) / calls, 1),
        "rss_total_mib": round(rss3 / 2**20),
        "rss_per_call_mib": round((rss3 - rss0) / calls / 2**20, 1),
        "caller_late_or_lost_pct": round(100 * bad / max(1, due), 3),
        "worst_caller_pct": round(max(100 * v[0] / max(1, v[1]) for v in views), 3),
        "server_underrun_pct": round(100 * underruns / max(1, due), 3),
        "holds": 100 * bad / max(1, due) <= LIMIT_PCT and 100 * underruns / max(1, due)
        <= LIMIT_PCT,
    }


def run(workers: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp:
        port = free_port()
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(ROOT / "bench/flows/latency.yaml")},
            "front": {"mode": "kamailio", "probe_interval": 1},
        }
        with running_server(Path(tmp), workers=workers, sip={"port": port},
                            worker={"max_calls": PER_WORKER, "record_calls": False},
                            extra=extra, ready_timeout=40) as srv:
            srv.wait_for(lambda: srv.health()[1].get("front", {}).get("running"), 10,
                         what="the SIP front")
            time.sleep(2.0)  # the front's first OPTIONS probes
            return measure(srv, port, workers, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = []
    for n in args.workers:
        print(f"{n} worker(s), {n * PER_WORKER} bot-phase calls, {args.seconds:.0f} s window",
              file=sys.stderr)
        results.append(run(n, args.seconds))
        print(f"  {results[-1]}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"system capacity, bot-phase calls (embedded STT/TTS, every worker full, "
          f"{args.seconds:.0f} s window, {psutil.cpu_count()} cores)")
    print("workers calls  CPU all procs  per call  RSS total  per call  late/lost "
          "(callers / server)  holds")
    for r in results:
        print(f"{r['workers']:7} {r['calls']:5}  {r['cpu_busy_pct']:9.1f} %  "
              f"{r['cpu_per_call_pct']:6.1f} %  {r['rss_total_mib']:6} MiB  "
              f"{r['rss_per_call_mib']:5.1f} MiB  {r['caller_late_or_lost_pct']:7.3f} % / "
              f"{r['server_underrun_pct']:.3f} %       {'yes' if r['holds'] else 'NO'}")
    held = [r["calls"] for r in results if r["holds"]]
    print(f"most concurrent calls held with late/lost <= {LIMIT_PCT} %: "
          f"{max(held) if held else 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
