"""The embedded recogniser in its own process (hitl_sip.speech.stt.process): same results
as in-process, and a dead speech process ends the open streams with a retryable error
while the next stream works (the call's ResilientStt reopens)."""

from __future__ import annotations

import asyncio
import os
import signal

import psutil
import pytest

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttStream
from hitl_sip.speech.stt.process import SPEECH_NICE, ProcessStt
from tests.integration.test_pocketsphinx import _go_forward


async def transcribe(stream: SttStream, pcm: bytes, rate: int = 16000) -> list[SpeechEvent]:
    frame = rate // 50 * 2
    for i in range(0, len(pcm), frame):
        stream.push_frame(pcm[i:i + frame].ljust(frame, b"\0"))
    stream.push_frame(bytes(frame * 60))  # 1.2 s of silence ends the utterance
    stream.end_input()
    events = []
    async with asyncio.timeout(30):
        async for event in stream:
            events.append(event)
    return events


def test_a_stream_in_the_speech_process_transcribes_human_speech() -> None:
    async def run() -> list[SpeechEvent]:
        engine = ProcessStt(pool_size=1)
        engine.preload(16000, 1)
        try:
            events = await transcribe(engine.stream(16000), _go_forward().pcm)
            # it yields the cores to the media worker (its parent) when they are short
            assert psutil.Process(engine._proc.pid).nice() == os.nice(0) + SPEECH_NICE
            return events
        finally:
            engine.close()

    events = asyncio.run(run())
    finals = [e.text for e in events if e.type is SpeechEventType.FINAL]
    assert any("forward" in text for text in finals), events
    assert events[0].type is SpeechEventType.START_OF_SPEECH
    assert events[-1].type is SpeechEventType.END_OF_SPEECH


def test_a_dead_speech_process_ends_streams_retryably_and_the_next_stream_works() -> None:
    async def run() -> tuple[SpeechError, list[SpeechEvent]]:
        engine = ProcessStt(pool_size=1)
        try:
            stream = engine.stream(16000)
            stream.push_frame(bytes(640))
            await asyncio.sleep(0.5)
            os.kill(engine._proc.pid, signal.SIGKILL)
            with pytest.raises(SpeechError) as caught:
                async with asyncio.timeout(10):
                    async for _ in stream:
                        pass
            return caught.value, await transcribe(engine.stream(16000), _go_forward().pcm)
        finally:
            engine.close()

    error, events = asyncio.run(run())
    assert error.retryable
    assert any("forward" in e.text for e in events if e.type is SpeechEventType.FINAL)
