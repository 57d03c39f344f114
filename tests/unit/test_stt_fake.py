"""FakeStt: the scripted engine other unit tests drive instead of a recogniser."""

from __future__ import annotations

import asyncio

import pytest

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttEngine, SttStream
from hitl_sip.speech.stt.fake import FakeStt, FakeSttStream, silence_frame, speech_frame

START = SpeechEventType.START_OF_SPEECH
INTERIM = SpeechEventType.INTERIM
FINAL = SpeechEventType.FINAL
END = SpeechEventType.END_OF_SPEECH


def _push(stream: FakeSttStream, voiced: int, silent: int) -> None:
    for _ in range(voiced):
        stream.push_frame(speech_frame())
    for _ in range(silent):
        stream.push_frame(silence_frame())


async def _drain(stream: SttStream) -> list[SpeechEvent]:
    return [event async for event in stream]


async def test_fake_engine_and_stream_satisfy_the_speech_protocols() -> None:
    engine = FakeStt()
    stream = engine.stream(8000)
    assert isinstance(engine, SttEngine)
    assert isinstance(stream, SttStream)
    await stream.aclose()


async def test_voice_then_silence_yields_the_next_scripted_utterance() -> None:
    engine = FakeStt(["hello", "agent please"])
    stream = engine.stream(8000)
    _push(stream, voiced=25, silent=10)
    _push(stream, voiced=5, silent=10)
    stream.end_input()
    events = await _drain(stream)
    assert [(e.type, e.text) for e in events] == [
        (START, ""),
        (FINAL, "hello"),
        (END, ""),
        (START, ""),
        (FINAL, "agent please"),
        (END, ""),
    ]
    # audio clock: speech 0..0.5 s, then 0.7..0.8 s
    assert [round(e.audio_time, 3) for e in events] == [0.0, 0.5, 0.5, 0.7, 0.8, 0.8]


async def test_short_pauses_do_not_end_the_utterance() -> None:
    engine = FakeStt(["one utterance"])
    stream = engine.stream(16000)
    for _ in range(3):
        stream.push_frame(speech_frame(16000))
        for _ in range(engine.end_silence_frames - 1):
            stream.push_frame(silence_frame(16000))
    stream.end_input()
    events = await _drain(stream)
    assert [e.type for e in events] == [START, FINAL, END]


async def test_exhausted_script_ends_the_utterance_without_a_final() -> None:
    stream = FakeStt([]).stream(8000)
    _push(stream, voiced=5, silent=10)
    stream.end_input()
    assert [e.type for e in await _drain(stream)] == [START, END]


async def test_say_emits_the_text_after_the_given_number_of_frames() -> None:
    stream = FakeStt().stream(8000)
    stream.say("agent", after_frames=3, interim="age")
    _push(stream, voiced=0, silent=2)
    assert stream.queued == 0
    _push(stream, voiced=0, silent=1)
    stream.end_input()
    events = await _drain(stream)
    assert [(e.type, e.text) for e in events] == [
        (START, ""),
        (INTERIM, "age"),
        (FINAL, "agent"),
        (END, ""),
    ]
    assert events[2].audio_time == pytest.approx(0.06)


async def test_flush_forces_the_pending_utterance_out() -> None:
    stream = FakeStt(["still talking"]).stream(8000)
    _push(stream, voiced=10, silent=2)
    await stream.flush()
    assert stream.flushes == 1
    got = [await anext(stream) for _ in range(3)]
    assert [(e.type, e.text) for e in got] == [(START, ""), (FINAL, "still talking"), (END, "")]
    await stream.aclose()


async def test_end_input_finishes_a_pending_utterance_then_ends() -> None:
    stream = FakeStt(["last words"]).stream(8000)
    _push(stream, voiced=10, silent=0)
    stream.end_input()
    stream.push_frame(speech_frame())  # ignored: input has ended
    assert [e.type for e in await _drain(stream)] == [START, FINAL, END]
    assert len(stream.frames) == 10


async def test_fail_with_raises_from_iteration_at_once() -> None:
    engine = FakeStt(fail_with=SpeechError("down", retryable=True))
    stream = engine.stream(8000)
    with pytest.raises(SpeechError, match="down") as raised:
        await anext(stream)
    assert raised.value.retryable
    # a second stream of the same engine fails the same way
    with pytest.raises(SpeechError):
        await anext(engine.stream(8000))


async def test_fail_after_frames_delivers_earlier_events_first() -> None:
    engine = FakeStt(
        ["before the failure"],
        fail_with=SpeechError("lost", retryable=True),
        fail_after_frames=20,
    )
    stream = engine.stream(8000)
    _push(stream, voiced=5, silent=10)
    _push(stream, voiced=10, silent=0)
    got: list[SpeechEventType] = []
    with pytest.raises(SpeechError, match="lost"):
        async for event in stream:
            got.append(event.type)
    assert got == [START, FINAL, END, START]
    assert len(stream.frames) == 20


async def test_failures_apply_to_the_first_streams_only() -> None:
    engine = FakeStt(["works"], failures=[SpeechError("first", retryable=True), None])
    with pytest.raises(SpeechError, match="first"):
        await anext(engine.stream(8000))
    second = engine.stream(8000)
    _push(second, voiced=3, silent=10)
    second.end_input()
    assert [e.text for e in await _drain(second) if e.type is FINAL] == ["works"]
    assert len(engine.streams) == 2


async def test_aclose_ends_a_waiting_iteration() -> None:
    stream = FakeStt().stream(8000)
    waiter = asyncio.ensure_future(_drain(stream))
    await asyncio.sleep(0)  # one loop turn: the consumer reaches its wait on the queue
    assert not waiter.done()
    await stream.aclose()
    assert await asyncio.wait_for(waiter, 1) == []
