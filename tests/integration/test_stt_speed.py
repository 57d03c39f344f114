"""Every ``speech.stt_speed`` preset still transcribes human speech behind the gate.

pocketsphinx-testdata's recordings as one call (1 s of line noise between them), through
the voice-activity gate as the worker has it. Measured (bench/README.md, stt_speed.py),
WER after G.711 / at 16 kHz: accurate 0.385 / 0.281, balanced 0.385 / 0.271, fast
0.427 / 0.260. The bounds leave room for other builds and CPUs.
"""

from __future__ import annotations

import asyncio

import pytest

from hitl_sip.speech.base import SpeechEvent, SpeechEventType
from hitl_sip.speech.stt.pocketsphinx_engine import SPEED_PRESETS, PocketsphinxStt
from hitl_sip.speech.stt.vad import VadGatedStt, VadSettings
from hitl_sip.testing.wer import corpus_word_error_rate
from tests.integration.test_pocketsphinx import _corpus, _g711, _line_noise, _push_all

WER_BOUND = {8000: 0.48, 16000: 0.34}
EVENT_TIMEOUT = 60.0


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("speed", list(SPEED_PRESETS))
async def test_each_preset_transcribes_the_recordings_within_the_wer_bound(
    speed: str, rate: int
) -> None:
    clips = _corpus()
    audio = bytearray(_line_noise(0.5, 16000, seed=0))
    spans = []
    for index, clip in enumerate(clips):
        start = len(audio) / 2 / 16000
        audio += clip.pcm + _line_noise(1.0, 16000, seed=index + 1)
        spans.append((start, len(audio) / 2 / 16000))
    call = _g711(bytes(audio)) if rate == 8000 else bytes(audio)
    engine = VadGatedStt(
        PocketsphinxStt(max_buffered=600.0, speed=speed), VadSettings(max_backlog=600.0)
    )
    stream = engine.stream(rate)
    _push_all(stream, call, rate)
    stream.end_input()

    async def collect() -> list[SpeechEvent]:
        return [event async for event in stream]

    events = await asyncio.wait_for(collect(), EVENT_TIMEOUT)
    await stream.aclose()
    hypotheses = [
        " ".join(e.text for e in events
                 if e.type is SpeechEventType.FINAL and start <= e.audio_time < end)
        for start, end in spans
    ]
    wer = corpus_word_error_rate(zip([c.reference for c in clips], hypotheses, strict=True))
    report = "\n".join(f"{c.reference!r} -> {h!r}" for c, h in zip(clips, hypotheses, strict=True))
    assert wer <= WER_BOUND[rate], f"{speed} at {rate} Hz: WER {wer:.3f}\n{report}"
