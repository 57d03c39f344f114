"""ResilientStream: restarts on retryable errors with bounded backoff, replaying audio."""

from __future__ import annotations

import asyncio

import pytest

from hitl_sip.errors import SpeechError
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttEngine, SttStream
from hitl_sip.speech.stt.fake import FakeStt, FakeSttStream, silence_frame, speech_frame
from hitl_sip.speech.stt.resilient import ResilientStream, ResilientStt

START = SpeechEventType.START_OF_SPEECH
FINAL = SpeechEventType.FINAL
END = SpeechEventType.END_OF_SPEECH
VOICE = speech_frame(8000)
SILENCE = silence_frame(8000)


def _retryable(message: str = "network down") -> SpeechError:
    return SpeechError(message, retryable=True)


class RecordedSleep:
    """Backoff waits recorded, not waited for; each one advances a fake clock."""

    def __init__(self, advance: float = 0.0) -> None:
        self.delays: list[float] = []
        self.now = 0.0
        self.advance = advance

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.now += self.advance

    def clock(self) -> float:
        return self.now


class GatedSleep(RecordedSleep):
    """A backoff wait that lasts until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.entered.set()
        await self.gate.wait()


def _resilient(
    engine: SttEngine,
    sleep: RecordedSleep,
    errors: list[SpeechError] | None = None,
    *,
    initial_backoff: float = 0.2,
    max_backoff: float = 5.0,
    max_restarts: int = 6,
    restart_window: float = 60.0,
    replay_seconds: float = 2.0,
) -> ResilientStream:
    return ResilientStream(
        engine,
        8000,
        on_restart=errors.append if errors is not None else None,
        initial_backoff=initial_backoff,
        max_backoff=max_backoff,
        max_restarts=max_restarts,
        restart_window=restart_window,
        replay_seconds=replay_seconds,
        sleep=sleep,
        clock=sleep.clock,
    )


def _push(stream: SttStream, frame: bytes, count: int) -> None:
    for _ in range(count):
        stream.push_frame(frame)


async def _events(stream: SttStream) -> list[SpeechEvent]:
    """Every event to the end; the timeout is a safety net far above what these take."""

    async def collect() -> list[SpeechEvent]:
        return [event async for event in stream]

    return await asyncio.wait_for(collect(), 5)


def _inner(engine: FakeStt, index: int) -> FakeSttStream:
    return engine.streams[index]


async def test_resilient_engine_and_stream_satisfy_the_speech_protocols() -> None:
    engine = ResilientStt(FakeStt())
    stream = engine.stream(8000)
    assert isinstance(engine, SttEngine)
    assert isinstance(stream, SttStream)
    assert engine.name == "fake"
    await stream.aclose()


async def test_retryable_failure_restarts_and_replays_the_unfinished_utterance() -> None:
    engine = FakeStt(["hello agent"], failures=[_retryable()], fail_after_frames=15)
    errors: list[SpeechError] = []
    stream = _resilient(engine, RecordedSleep(), errors)
    _push(stream, VOICE, 15)  # the inner stream dies on the 15th frame, mid-utterance
    _push(stream, SILENCE, 10)
    stream.end_input()

    events = await _events(stream)

    assert [(e.type, e.text) for e in events] == [(START, ""), (FINAL, "hello agent"), (END, "")]
    assert events[1].audio_time == pytest.approx(0.3)
    assert stream.restarts == 1
    assert [str(e) for e in errors] == ["network down"]
    replacement = _inner(engine, 1)
    assert replacement.frames == [VOICE] * 15 + [SILENCE] * 10
    assert _inner(engine, 0).closed and replacement.closed


async def test_recognised_audio_is_not_replayed_and_audio_time_stays_on_our_clock() -> None:
    engine = FakeStt(["first", "second"], failures=[_retryable()], fail_after_frames=30)
    stream = _resilient(engine, RecordedSleep())
    _push(stream, VOICE, 5)
    _push(stream, SILENCE, 10)  # FINAL "first" at 0.1 s
    _push(stream, VOICE, 10)
    _push(stream, SILENCE, 5)  # the inner stream dies here, in the second utterance
    _push(stream, SILENCE, 10)
    stream.end_input()

    events = await _events(stream)

    assert [(e.type, e.text, round(e.audio_time, 3)) for e in events] == [
        (START, "", 0.0),
        (FINAL, "first", 0.1),
        (END, "", 0.1),
        (START, "", 0.3),
        (FINAL, "second", 0.5),
        (END, "", 0.5),
    ]
    # the new stream starts with the silence after "first", not with its words
    assert _inner(engine, 1).frames == [SILENCE] * 10 + [VOICE] * 10 + [SILENCE] * 15


async def test_audio_pushed_during_the_backoff_reaches_the_new_stream() -> None:
    engine = FakeStt(["while restarting"], failures=[_retryable()])
    sleep = GatedSleep()
    stream = _resilient(engine, sleep)
    consumer = asyncio.ensure_future(_events(stream))
    await asyncio.wait_for(sleep.entered.wait(), 5)

    _push(stream, VOICE, 10)
    _push(stream, SILENCE, 10)
    stream.end_input()
    sleep.gate.set()

    events = await consumer
    assert [(e.type, e.text) for e in events] == [
        (START, ""),
        (FINAL, "while restarting"),
        (END, ""),
    ]
    assert _inner(engine, 1).frames == [VOICE] * 10 + [SILENCE] * 10
    assert stream.dropped_frames == 0


async def test_replay_is_bounded_and_audio_lost_while_no_stream_listens_is_counted() -> None:
    engine = FakeStt(failures=[_retryable()])
    sleep = GatedSleep()
    stream = _resilient(engine, sleep, replay_seconds=0.2)
    consumer = asyncio.ensure_future(_events(stream))
    await asyncio.wait_for(sleep.entered.wait(), 5)

    frames = [bytes([i]) * 320 for i in range(25)]
    for frame in frames:
        stream.push_frame(frame)
    stream.end_input()
    sleep.gate.set()
    await consumer

    assert stream.dropped_frames == 15
    assert _inner(engine, 1).frames == frames[15:]


async def test_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    engine = FakeStt(fail_with=_retryable("unavailable"))
    sleep = RecordedSleep()
    errors: list[SpeechError] = []
    stream = _resilient(engine, sleep, errors, initial_backoff=0.2, max_backoff=1.0, max_restarts=6)

    with pytest.raises(SpeechError, match="giving up after 6 restarts") as raised:
        await _events(stream)

    assert not raised.value.retryable
    assert isinstance(raised.value.__cause__, SpeechError)
    assert sleep.delays == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    assert len(errors) == 6
    assert len(engine.streams) == 7


async def test_restart_budget_refills_as_the_window_slides() -> None:
    # 2 restarts per 60 s, but every backoff takes 30 s: the budget never runs out
    engine = FakeStt(["finally"], failures=[_retryable()] * 5)
    sleep = RecordedSleep(advance=30.0)
    stream = _resilient(engine, sleep, max_restarts=2, restart_window=60.0)
    stream.end_input()
    events = await _events(stream)
    assert events == []
    assert stream.restarts == 5
    assert len(engine.streams) == 6


async def test_restart_budget_exhausted_within_the_window_gives_up() -> None:
    engine = FakeStt(["never"], failures=[_retryable()] * 5)
    sleep = RecordedSleep(advance=10.0)
    stream = _resilient(engine, sleep, max_restarts=2, restart_window=60.0)
    with pytest.raises(SpeechError, match="giving up after 2 restarts"):
        await _events(stream)
    assert len(engine.streams) == 3


async def test_backoff_starts_over_once_a_new_stream_has_worked() -> None:
    engine = FakeStt(["recovered", "again"], failures=[_retryable(), _retryable()])
    sleep = RecordedSleep()
    stream = _resilient(engine, sleep)
    _push(stream, VOICE, 5)
    _push(stream, SILENCE, 10)

    first = [await asyncio.wait_for(anext(stream), 5) for _ in range(3)]
    assert [e.type for e in first] == [START, FINAL, END]
    assert sleep.delays == pytest.approx([0.2, 0.4])

    _inner(engine, 2).fail(_retryable("dropped later"))
    _push(stream, VOICE, 5)
    _push(stream, SILENCE, 10)
    stream.end_input()
    rest = await _events(stream)
    assert [(e.type, e.text) for e in rest] == [(START, ""), (FINAL, "again"), (END, "")]
    assert sleep.delays == pytest.approx([0.2, 0.4, 0.2])


async def test_non_retryable_error_reaches_the_consumer_without_a_restart() -> None:
    denied = SpeechError("authentication failed", retryable=False)
    engine = FakeStt(fail_with=denied)
    errors: list[SpeechError] = []
    stream = _resilient(engine, RecordedSleep(), errors)
    with pytest.raises(SpeechError) as raised:
        await _events(stream)
    assert raised.value is denied
    assert errors == []
    assert len(engine.streams) == 1


async def test_inner_stream_ending_on_its_own_counts_as_a_retryable_failure() -> None:
    engine = FakeStt(["after the restart"])
    errors: list[SpeechError] = []
    sleep = GatedSleep()
    stream = _resilient(engine, sleep, errors)
    consumer = asyncio.ensure_future(_events(stream))
    await _inner(engine, 0).aclose()  # e.g. the service closed the session
    await asyncio.wait_for(sleep.entered.wait(), 5)
    sleep.gate.set()
    _push(stream, VOICE, 5)
    _push(stream, SILENCE, 10)
    stream.end_input()
    events = await consumer
    assert [e.text for e in events if e.type is FINAL] == ["after the restart"]
    assert [str(e) for e in errors] == ["fake: stream ended unexpectedly"]


class FlakyEngine:
    """An engine whose ``stream()`` itself raises the first ``failures`` times."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.inner = FakeStt(["created at last"])

    def stream(self, sample_rate: int, language: str = "en-US") -> SttStream:
        if self.failures:
            self.failures -= 1
            raise SpeechError("cannot connect", retryable=True)
        return self.inner.stream(sample_rate, language)


async def test_engine_failing_to_create_a_stream_is_retried_like_a_failed_stream() -> None:
    engine = FlakyEngine(failures=2)
    sleep = RecordedSleep()
    stream = _resilient(engine, sleep)
    _push(stream, VOICE, 5)
    _push(stream, SILENCE, 10)
    stream.end_input()
    events = await _events(stream)
    assert [e.text for e in events if e.type is FINAL] == ["created at last"]
    assert sleep.delays == pytest.approx([0.2, 0.4])
    assert engine.inner.streams[0].frames == [VOICE] * 5 + [SILENCE] * 10


async def test_flush_reaches_the_current_inner_stream() -> None:
    engine = FakeStt(["flushed"])
    stream = _resilient(engine, RecordedSleep())
    _push(stream, VOICE, 5)
    await stream.flush()
    got = [await asyncio.wait_for(anext(stream), 5) for _ in range(3)]
    assert [(e.type, e.text) for e in got] == [(START, ""), (FINAL, "flushed"), (END, "")]
    assert _inner(engine, 0).flushes == 1
    await stream.aclose()


async def test_aclose_stops_supervision_and_closes_the_inner_stream() -> None:
    engine = FakeStt()
    stream = _resilient(engine, RecordedSleep())
    consumer = asyncio.ensure_future(_events(stream))
    await stream.aclose()
    assert await consumer == []
    assert _inner(engine, 0).closed
    stream.push_frame(VOICE)  # ignored after close
    assert _inner(engine, 0).frames == []
