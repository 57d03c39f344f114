"""Transcript lag: the end of a caller's utterance → alive5's acknowledgement of its turn.

A real ``hitl-sip serve`` (embedded engines: pocketsphinx in the speech process) delivers
to the alive5 stand-in (``tests/support/alive5.py``, a python-socketio server). The caller
(``tests/support/rtpcaller.py``) reads the human recordings of Debian's
pocketsphinx-testdata
(librivox sentences, card names, "go forward"), each followed by 2 s of silence, into a
flow that keeps listening (``ask`` → "OK." → ``ask``). For each sentence: from the moment
the caller sent its last frame to the moment the stand-in received the caller turn that
carries it (its acknowledgement is emitted right after). That includes the endpointer's trailing
silence (0.6 s: the recogniser cannot know the caller stopped sooner), decoding, the
worker → hub hop, the outbox and the Socket.IO round trip.

Usage: ``python bench/transcript_lag.py [--sentences 12] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.media.wav import resample  # noqa: E402
from tests.integration.test_pocketsphinx import _corpus  # noqa: E402
from tests.support.alive5 import API_KEY, Alive5StandIn  # noqa: E402
from tests.support.rtpcaller import RtpCaller  # noqa: E402
from tests.support.server import running_server  # noqa: E402

FLOW = """
name: listen
start: ask
nodes:
  ask:
    type: ask
    prompt: "Go on."
    timeout: 60
    retries: 0
    branches: [{any: true, next: ok}]
    fail: bye
  ok: {type: say, text: "OK.", next: again}
  again: {type: goto, next: ask}
  bye: {type: hangup}
"""
GAP = 2.0


class Script:
    """The caller's microphone: the sentences, each followed by GAP seconds of silence;
    remembers the frame index where each sentence ends."""

    def __init__(self, sentences: list[bytes]) -> None:
        self.frames: list[bytes] = [bytes(320)] * 100  # 2 s before the first
        self.ends: list[int] = []
        for pcm16k in sentences:
            pcm = resample(pcm16k, 16000, 8000)
            self.frames += [pcm[i:i + 320].ljust(320, b"\0") for i in range(0, len(pcm), 320)]
            self.ends.append(len(self.frames) - 1)
            self.frames += [bytes(320)] * int(GAP / 0.02)
        self.done = threading.Event()

    def __call__(self, n: int) -> bytes:
        if n >= len(self.frames):
            self.done.set()
            return bytes(320)
        return self.frames[n]


def measure(count: int) -> dict[str, Any]:
    clips = (_corpus() * 3)[:count]  # librivox sentences, card names, "go forward"
    script = Script([c.pcm for c in clips])
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp, Alive5StandIn() as a5:
        flow = Path(tmp) / "listen.yaml"
        flow.write_text(FLOW)
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(flow)},
            "alive5": {"url": a5.url, "api_key": API_KEY},
        }
        with running_server(Path(tmp), extra=extra) as srv, RtpCaller(srv.sip_port()) as caller:
            caller.call()
            caller.start_media(script)
            if not script.done.wait(len(script.frames) * 0.02 + 30):
                raise RuntimeError("the caller's script did not finish")
            time.sleep(3.0)
            sent = dict(caller.sent)
        (thread,) = a5.threads.values()
        said = [(m["_received"], m["message_content"]) for m in thread.messages
                if "voiceAgentId" not in m]
    ends = [sent[i] for i in script.ends if i in sent]
    lags: list[float] = []
    for k, end in enumerate(ends):
        later = ends[k + 1] if k + 1 < len(ends) else math.inf
        arrivals = [t for t, _ in said if end <= t < later]
        if arrivals:
            lags.append(arrivals[0] - end)
    return {"sentences": len(clips), "measured": len(lags), "lags": lags,
            "caller_turns": len(said)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sentences", type=int, default=12)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = measure(args.sentences)
    ms = sorted(x * 1000 for x in out["lags"])
    result = {
        "sentences": out["sentences"], "measured": out["measured"],
        "caller_turns": out["caller_turns"],
        "median_ms": round(statistics.median(ms), 1) if ms else None,
        "p95_ms": round(ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)], 1) if ms else None,
        "max_ms": round(ms[-1], 1) if ms else None,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print("transcript lag: end of the caller's sentence -> its turn at the alive5 stand-in")
    print(f"  {result['measured']}/{result['sentences']} sentences measured "
          f"({result['caller_turns']} caller turns): median {result['median_ms']} ms, "
          f"p95 {result['p95_ms']} ms, max {result['max_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
