"""pocketsphinx decoder option sets: decoding CPU on a typical G.711 call against WER.

What chose ``speech.stt_speed``'s presets (``SPEED_PRESETS`` in
hitl_sip/speech/stt/pocketsphinx_engine.py). For each option set (``pocketsphinx.Decoder``
keyword arguments over pocketsphinx's defaults), in process and behind the voice-activity
gate (the worker's settings), as in bench/stt_vad.py:

* **CPU**: the typical call of stt_vad.py (a) (pocketsphinx-testdata's recordings with line
  noise between them, speech 40 % of 93 s, G.711 µ-law at 8 kHz) pushed back to back into
  one new stream; this process's CPU (the gate, the upsampler, pocketsphinx's endpointer
  and the decoder) over the call's duration, % of one core, and the real-time factor: the
  same CPU per second of audio the gate let through to the recogniser. The median of
  ``--rounds`` rounds; the sets take turns within a round, so a neighbour's load on the
  machine spreads over all of them.
* **WER** (deterministic): stt_vad.py (b) with the gate, after G.711 at 8 kHz and at
  16 kHz: the recordings as one call, 1 s of line noise between them, corpus WER of the
  FINALs in each recording's span (96 reference words: one word is 0.010). And **cold**:
  after G.711, each recording (1 s of line noise before it) as the first utterance of a
  new decoder, which starts from the cepstral-mean prior rather than a mean adapted to
  earlier utterances (a new speech process's first calls; pooled decoders keep theirs).

A new engine per measurement: every decoder starts from the same cepstral mean.

Usage: ``python bench/stt_speed.py [--rounds 3] [--sets accurate,fast,...] [--json]``
(~15 s per set and round on this 2-core VM). Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stt_vad import (  # noqa: E402
    FINAL,
    at_rate,
    drain,
    frames_of,
    gated,
    transcribe,
    typical_call,
)

from hitl_sip.speech.stt.pocketsphinx_engine import (  # noqa: E402
    SPEED_PRESETS,
    OptionValue,
    PocketsphinxStt,
)
from hitl_sip.speech.stt.vad import VadGatedStream  # noqa: E402
from hitl_sip.testing.wer import corpus_word_error_rate  # noqa: E402
from tests.integration.test_pocketsphinx import Clip, _corpus  # noqa: E402
from tests.unit.test_vad import line_noise  # noqa: E402

# The candidates (CMU Sphinx's decoder tuning advice: frame downsampling, fewer Gaussians,
# narrower beams, capped HMMs and word exits per frame, phone lookahead, fewer passes),
# one knob at a time, then combined. The presets come first.
OPTION_SETS: dict[str, Mapping[str, OptionValue]] = {
    **{name: dict(options) for name, options in SPEED_PRESETS.items()},
    "ds 2": {"ds": 2},
    "ds 3": {"ds": 3},
    "topn 2": {"topn": 2},
    "topn 3": {"topn": 3},
    "beam/pbeam 1e-40": {"beam": 1e-40, "pbeam": 1e-40},
    "beams 1e-30/1e-20": {"beam": 1e-30, "wbeam": 1e-20, "pbeam": 1e-30},
    "beams 1e-20/1e-15": {"beam": 1e-20, "wbeam": 1e-15, "pbeam": 1e-20, "lpbeam": 1e-20,
                          "lponlybeam": 1e-15},
    "wbeam/lponlybeam 1e-20": {"wbeam": 1e-20, "lponlybeam": 1e-20},
    "maxhmmpf 3000": {"maxhmmpf": 3000},
    "maxhmmpf 1000": {"maxhmmpf": 1000},
    "maxwpf 5": {"maxwpf": 5},
    "pl_window 10": {"pl_window": 10},
    "pl_window 0": {"pl_window": 0},
    "fwdflat off": {"fwdflat": False},
    "bestpath off": {"bestpath": False},
    "fwdflat + bestpath off": {"fwdflat": False, "bestpath": False},
    "balanced + maxhmmpf 2000": {**SPEED_PRESETS["balanced"], "maxhmmpf": 2000},
    "balanced + maxhmmpf 1500": {**SPEED_PRESETS["balanced"], "maxhmmpf": 1500},
    "balanced + topn 3": {**SPEED_PRESETS["balanced"], "topn": 3},
    "balanced + ds 2": {**SPEED_PRESETS["balanced"], "ds": 2},
    "fast + maxhmmpf 2000": {**SPEED_PRESETS["fast"], "maxhmmpf": 2000},
    "fast + maxhmmpf 2000 + ds 2": {**SPEED_PRESETS["fast"], "maxhmmpf": 2000, "ds": 2},
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def call_cpu(options: Mapping[str, OptionValue], call: bytes) -> tuple[float, float]:
    """CPU seconds spent on the typical call, and seconds of it the gate let through."""
    base = PocketsphinxStt(max_buffered=3600.0, decoder_options=options)
    base.preload(8000)
    engine = gated(base)
    engine.preload(8000, 1)
    stream = engine.stream(8000)
    began = time.process_time()
    for frame in frames_of(call, 8000):
        stream.push_frame(frame)
    stream.end_input()
    await drain(stream)
    spent = time.process_time() - began
    forwarded = stream.forwarded_samples / 8000 if isinstance(stream, VadGatedStream) else 0.0
    await stream.aclose()
    return spent, forwarded


async def wer(options: Mapping[str, OptionValue], clips: Sequence[Clip], rate: int) -> float:
    base = PocketsphinxStt(max_buffered=3600.0, decoder_options=options)
    base.preload(rate)
    hypotheses = await transcribe(gated(base), clips, rate)
    return corpus_word_error_rate(zip([c.reference for c in clips], hypotheses, strict=True))


async def cold_wer(options: Mapping[str, OptionValue], clips: Sequence[Clip]) -> float:
    hypotheses = []
    for index, clip in enumerate(clips):
        pcm = line_noise(1.0, 16000, seed=50 + index) + clip.pcm
        pcm += line_noise(1.5, 16000, seed=80 + index)
        stream = gated(PocketsphinxStt(max_buffered=3600.0, decoder_options=options)).stream(8000)
        for frame in frames_of(at_rate(pcm, 8000), 8000):
            stream.push_frame(frame)
        stream.end_input()
        events = await drain(stream)
        await stream.aclose()
        hypotheses.append(" ".join(e.text for e in events if e.type is FINAL))
    return corpus_word_error_rate(zip([c.reference for c in clips], hypotheses, strict=True))


async def run(names: Sequence[str], rounds: int) -> dict[str, Any]:
    clips = _corpus()
    call = typical_call(clips, 8000)
    seconds = len(call) / 2 / 8000
    cpu: dict[str, list[float]] = {name: [] for name in names}
    forwarded: dict[str, float] = {}
    results: dict[str, Any] = {}
    for round_ in range(rounds):
        for name in names:
            spent, forwarded[name] = await call_cpu(OPTION_SETS[name], call)
            cpu[name].append(spent)
            if round_ == 0:
                results[name] = {
                    "options": dict(OPTION_SETS[name]),
                    "wer_g711": round(await wer(OPTION_SETS[name], clips, 8000), 3),
                    "wer_16k": round(await wer(OPTION_SETS[name], clips, 16000), 3),
                    "wer_g711_cold": round(await cold_wer(OPTION_SETS[name], clips), 3),
                }
            log(f"round {round_ + 1}/{rounds} {name}: {100 * spent / seconds:.2f} % of a core, "
                f"WER after G.711 {results[name]['wer_g711']:.3f}")
    for name in names:
        median = statistics.median(cpu[name])
        results[name]["cpu_pct"] = round(100 * median / seconds, 2)
        results[name]["cpu_pct_runs"] = [round(100 * c / seconds, 2) for c in cpu[name]]
        results[name]["realtime_factor"] = round(median / forwarded[name], 3)
    return {"call_seconds": round(seconds, 1), "rounds": rounds, "sets": results}


def report(results: dict[str, Any]) -> None:
    print(f"pocketsphinx option sets: typical call {results['call_seconds']} s (G.711 8 kHz, "
          f"gated, back to back), median of {results['rounds']} rounds")
    print(f"{'option set':28} {'CPU % core':>10} {'RTF':>6} {'WER G.711':>9} {'WER 16k':>8}"
          f" {'cold G.711':>10}  options")
    for name, r in results["sets"].items():
        print(f"{name:28} {r['cpu_pct']:10.2f} {r['realtime_factor']:6.3f} "
              f"{r['wer_g711']:9.3f} {r['wer_16k']:8.3f} {r['wer_g711_cold']:10.3f}  "
              f"{r['options'] or '(defaults)'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="CPU rounds per set (median)")
    p.add_argument("--sets", default=",".join(OPTION_SETS),
                   help=f"comma-separated names among: {', '.join(OPTION_SETS)}")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTION_SETS]
    if unknown:
        p.error(f"unknown option sets: {', '.join(unknown)}")
    results = asyncio.run(run(names, max(1, args.rounds)))
    report(results)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
