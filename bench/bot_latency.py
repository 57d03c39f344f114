"""Bot response latency on the embedded engines (pocketsphinx + espeak-ng).

A real ``hitl-sip serve`` runs ``bench/flows/latency.yaml``; SIPp places one call and streams
one continuous RTP stream (written here): the spoken word "representative please" several
times, then RFC 4733 digits 1-9, each followed by silence. Every input gets a short spoken
answer. The worker records, per answer, the time from the end of the caller's input (the
STT end-of-speech event, or the DTMF event) to the first TTS frame handed to the media
clock — the frame goes on the wire at the next 20 ms tick, so add up to 20 ms (plus the
2-frame lead, 40 ms) for the wire. Printed: median and p95 per input kind.

Usage: ``python bench/bot_latency.py [--rounds N] [--json]`` (root: SIPp plays pcap audio
through a raw socket).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.media.g711 import ulaw_encode  # noqa: E402
from hitl_sip.media.wav import frames, read_wav, resample  # noqa: E402
from hitl_sip.testing.pcap import dtmf_event_packets, rtp_stream_packets, write_udp_pcap  # noqa: E402
from tests.support.net import free_port, free_port_pair  # noqa: E402
from tests.support.server import running_server  # noqa: E402

SSRC = 0x0B0B0B0B
FRAME = 160  # 8 kHz, 20 ms
SILENCE = b"\xff" * FRAME  # µ-law silence


def caller_stream(rounds: int) -> tuple[list[tuple[float, bytes]], float]:
    """One RTP stream: silence, N utterances with pauses, then digits 1-9 with pauses."""
    rate, pcm = read_wav(ROOT / "rtp/caller/representative_8k.wav")
    if rate != 8000:
        pcm = resample(pcm, rate, 8000)
    speech = [ulaw_encode(f) for f in frames(pcm, FRAME * 2)]
    packets: list[tuple[float, bytes]] = []
    seq, ts, t = 1000, 80000, 0.0

    def audio(payloads: list[bytes]) -> None:
        nonlocal seq, ts, t
        out = rtp_stream_packets(payloads, 0, FRAME, ssrc=SSRC, start_seq=seq, start_ts=ts,
                                 start_time=t, marker_first=False)
        packets.extend(out)
        seq += len(payloads)
        ts += FRAME * len(payloads)
        t += 0.02 * len(payloads)

    def silence(seconds: float) -> None:
        audio([SILENCE] * round(seconds / 0.02))

    silence(2.5)  # the "Ready." prompt plays
    for _ in range(rounds):
        audio(speech)
        silence(3.5)
    for digit in "123456789":
        event = dtmf_event_packets(digit, 101, marker=True, start_seq=seq, timestamp=ts,
                                   ssrc=SSRC, duration_ms=160, start_time=t)
        packets.extend(event)
        seq += len(event)
        ts += FRAME * 10
        t += 0.2
        silence(2.5)
    return packets, t


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="spoken inputs (default 6)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    args = parser.parse_args()
    if shutil.which("sipp") is None or os.geteuid() != 0:
        print("bot_latency: needs SIPp and root (pcap playback)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        packets, seconds = caller_stream(args.rounds)
        write_udp_pcap(tmp / "caller.pcap", packets)
        extra = {"bot": {"flow": str(ROOT / "bench/flows/latency.yaml")}}
        with running_server(tmp, extra=extra) as srv:
            cmd = [
                "sipp", f"127.0.0.1:{srv.sip_port()}", "-sf",
                str(ROOT / "bench/sipp/latency_call.xml"), "-i", "127.0.0.1",
                "-p", str(free_port()), "-mp", str(free_port_pair()), "-s", "100",
                "-d", str(int((seconds + 2) * 1000)), "-m", "1", "-nostdin", "-nd",
                "-timeout", f"{int(seconds) + 60}s",
            ]
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stdout[-2000:], file=sys.stderr)
                return 1
            srv.wait_for(lambda: len(srv.call_records()) == 1, what="the call record")
            record: dict[str, Any] = srv.call_records()[0]
    by_kind: dict[str, list[float]] = {}
    for item in record["responseLatencies"]:
        by_kind.setdefault(item["input"], []).append(float(item["seconds"]) * 1000)
    print("bot response latency (embedded engines: pocketsphinx + espeak-ng)")
    print("  from the end of the caller's input to the first TTS frame queued for the wire")
    summary: dict[str, Any] = {}
    for kind in ("dtmf", "speech"):
        values = by_kind.get(kind, [])
        if not values:
            print(f"  {kind:<7} no responses measured")
            continue
        med, p95 = statistics.median(values), percentile(values, 95)
        summary[kind] = {"n": len(values), "median_ms": round(med, 1), "p95_ms": round(p95, 1)}
        print(f"  {kind:<7} median {med:7.1f} ms   p95 {p95:7.1f} ms   n={len(values)}")
    expected_speech, expected_dtmf = args.rounds, 9
    print(f"  inputs sent: {expected_speech} spoken, {expected_dtmf} digits")
    if args.json:
        print(json.dumps(summary))
    return 0 if by_kind.get("dtmf") else 1


if __name__ == "__main__":
    raise SystemExit(main())
