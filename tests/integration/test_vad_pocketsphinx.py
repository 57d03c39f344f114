"""The voice-activity gate in front of the real recogniser: no words out of tones, noise or
DTMF; human speech (Debian's pocketsphinx-testdata) still transcribed, on the gate's clock.

Without the gate, pocketsphinx made words of all three (bench/stt_vad.py: "ah" from a
1 kHz tone, "and" from pink noise, "i i" from DTMF); the e2e agent microphone's 1 kHz tone
came out as "ah ow ow".
"""

from __future__ import annotations

import asyncio

import pytest

from hitl_sip.config import load_config
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttStream
from hitl_sip.speech.stt.pocketsphinx_engine import PocketsphinxStt
from hitl_sip.speech.stt.process import ProcessStt
from hitl_sip.speech.stt.resilient import ResilientStt
from hitl_sip.speech.stt.vad import VadGatedStream, VadGatedStt, VadSettings
from hitl_sip.testing.wer import word_error_rate
from hitl_sip.worker.engines import build_stt
from tests.integration.test_pocketsphinx import _g711, _go_forward, _librivox
from tests.unit.test_vad import dtmf_sequence, line_noise, pink_noise, tone

START = SpeechEventType.START_OF_SPEECH
FINAL = SpeechEventType.FINAL
EVENT_TIMEOUT = 60.0  # a safety net against a hang, far above the decoding time


def _at(pcm16k: bytes, rate: int) -> bytes:
    return _g711(pcm16k) if rate == 8000 else pcm16k


def _push(stream: SttStream, pcm: bytes, rate: int) -> None:
    size = rate * 2 // 50
    for at in range(0, len(pcm), size):
        stream.push_frame(pcm[at : at + size].ljust(size, b"\0"))


async def _hear(stream: SttStream, pcm: bytes, rate: int) -> list[SpeechEvent]:
    _push(stream, pcm, rate)
    stream.end_input()

    async def collect() -> list[SpeechEvent]:
        return [event async for event in stream]

    events = await asyncio.wait_for(collect(), EVENT_TIMEOUT)
    await stream.aclose()
    return events


def _gated_pocketsphinx() -> VadGatedStt:
    # whole signals are pushed at once: queues large enough to hold them
    return VadGatedStt(PocketsphinxStt(max_buffered=600.0), VadSettings(max_backlog=600.0))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    ("name", "pcm16k"),
    [
        ("1 kHz tone", tone(1000.0, 5.0, 16000, dbfs=-12.0)),
        ("pink noise at -30 dBFS", pink_noise(5.0, 16000, dbfs=-30.0, seed=7)),
        ("DTMF sequence", dtmf_sequence("123A456B789C*0#D" * 2, 16000)),
    ],
)
async def test_tones_noise_and_dtmf_give_no_words_through_the_gate(
    name: str, pcm16k: bytes, rate: int
) -> None:
    stream = _gated_pocketsphinx().stream(rate)
    assert isinstance(stream, VadGatedStream)
    events = await _hear(stream, _at(pcm16k, rate), rate)
    words = [e.text for e in events if e.type is FINAL and e.text.strip()]
    assert words == [], f"{name}: {words}"
    assert stream.openings == 0, f"{name} opened the gate"
    assert stream.forwarded_samples == 0


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_human_speech_is_transcribed_through_the_gate_on_its_clock(rate: int) -> None:
    sentence = _librivox()[1]  # "he was not an ill disposed young man", 3 s
    forward = _go_forward()
    noise_tail = line_noise(1.5, 16000, seed=2)
    audio = (
        line_noise(2.0, 16000, seed=1)
        + tone(1000.0, 3.0, 16000)
        + line_noise(1.0, 16000)
        + sentence.pcm
        + noise_tail
        + forward.pcm
        + noise_tail
    )
    first_start = 2.0 + 3.0 + 1.0
    second_start = first_start + sentence.seconds + 1.5
    spans = [
        (first_start, first_start + sentence.seconds),
        (second_start, second_start + forward.seconds),
    ]
    stream = _gated_pocketsphinx().stream(rate)
    assert isinstance(stream, VadGatedStream)
    events = await _hear(stream, _at(audio, rate), rate)
    starts = [e.audio_time for e in events if e.type is START]
    finals = [e for e in events if e.type is FINAL]
    report = f"{[(e.type.value, e.text, round(e.audio_time, 2)) for e in events]}"
    # every FINAL falls inside a clip, on the gate's clock (not the forwarded audio's)
    for final in finals:
        assert any(start < final.audio_time <= end + 0.05 for start, end in spans), report
    heard = [
        " ".join(f.text for f in finals if start < f.audio_time <= end + 0.05)
        for start, end in spans
    ]
    assert word_error_rate(sentence.reference, heard[0]) <= 0.5, report
    assert "forward" in heard[1].split(), report
    # START_OF_SPEECH (barge-in) still comes, at each clip's speech
    assert len(starts) >= 2, report
    assert any(first_start <= t < spans[0][1] for t in starts), report
    assert any(second_start <= t < spans[1][1] for t in starts), report
    assert stream.openings >= 2
    assert stream.forwarded_samples / rate < len(audio) / 2 / 16000 * 0.75


async def test_the_worker_stack_gates_the_speech_process_and_keeps_the_caller_clock() -> None:
    """build_stt as the worker has it: ResilientStt(ProcessStt), the gate in the speech
    process in front of its decoders, at 8 kHz."""
    config = load_config(None, env={})
    engine = build_stt(config)
    assert isinstance(engine, ResilientStt) and isinstance(engine.engine, ProcessStt)
    process = engine.engine
    assert process.gate is not None
    try:
        rate = config.worker.clock_rate
        forward = _go_forward()
        lead = 2.0 + 4.0 + 1.0
        audio = (
            line_noise(2.0, 16000)
            + dtmf_sequence("0#", 16000, on=2.0, off=0.0)
            + line_noise(1.0, 16000, seed=3)
            + forward.pcm
            + line_noise(2.0, 16000, seed=4)
        )
        events = await _hear(engine.stream(rate), _at(audio, rate), rate)
    finally:
        process.close()
    finals = [e for e in events if e.type is FINAL]
    report = f"{[(e.type.value, e.text, round(e.audio_time, 2)) for e in events]}"
    assert len(finals) == 1, report
    # the clip's words, not all of them: a new speech process's decoders start cold, and
    # the capped search of speech.stt_speed "balanced" (the default) and "fast" hears "go
    # or work and meters" here after G.711 ("accurate": "go forward and meters"; the
    # cold-decoder WER in bench/README.md, stt_speed.py)
    assert {"go", "meters"} <= set(finals[0].text.split()), report
    assert lead + 1.0 < finals[0].audio_time <= lead + forward.seconds, report
    start = next(e for e in events if e.type is START)
    assert lead <= start.audio_time < lead + 1.0, report
