"""The voice-activity gate in front of the recognisers (hitl_sip/speech/stt/vad.py).

The signal helpers here (:func:`tone`, :func:`pink_noise`, :func:`dtmf_sequence`,
:func:`line_noise`) are also used by tests/integration/test_vad_pocketsphinx.py and
bench/stt_vad.py.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hitl_sip.config import load_config
from hitl_sip.errors import ConfigError
from hitl_sip.media.g711 import ulaw_decode, ulaw_encode
from hitl_sip.media.wav import resample
from hitl_sip.speech.base import SpeechEvent, SpeechEventType, SttStream
from hitl_sip.speech.stt.fake import FakeStt, FakeSttStream, silence_frame, speech_frame
from hitl_sip.speech.stt.process import ProcessStt
from hitl_sip.speech.stt.resilient import ResilientStt
from hitl_sip.speech.stt.vad import SileroDetector, VadGatedStream, VadGatedStt, VadSettings
from hitl_sip.worker.engines import build_stt

#: DTMF keys: (row, column) frequencies in Hz (ITU-T Q.23).
# fmt: off
DTMF_KEYS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}
# fmt: on


def _pcm(signal: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(signal), -32768, 32767).astype("<i2").tobytes()


def tone(freq: float, seconds: float, rate: int, dbfs: float = -12.0) -> bytes:
    """A sine whose RMS level is ``dbfs``."""
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    t = np.arange(round(seconds * rate)) / rate
    return _pcm(amplitude * np.sin(2 * math.pi * freq * t))


def pink_noise(seconds: float, rate: int, dbfs: float = -30.0, seed: int = 1) -> bytes:
    """Noise with a 1/f power spectrum at an RMS level of ``dbfs``."""
    count = round(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).normal(size=count))
    freqs = np.fft.rfftfreq(count, 1 / rate)
    freqs[0] = freqs[1]
    signal = np.fft.irfft(spectrum / np.sqrt(freqs), count)
    signal *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(signal**2))
    return _pcm(signal)


def dtmf_sequence(
    digits: str, rate: int, *, on: float = 0.1, off: float = 0.1, dbfs: float = -10.0
) -> bytes:
    """Each key's two tones for ``on`` seconds (together at an RMS of ``dbfs``), then
    ``off`` seconds of silence."""
    amplitude = 32768 * 10 ** (dbfs / 20)  # each sine at dbfs - 3 dB: the pair at dbfs
    t = np.arange(round(on * rate)) / rate
    gap = np.zeros(round(off * rate))
    parts = []
    for key in digits:
        low, high = DTMF_KEYS[key]
        parts += [amplitude * (np.sin(2 * math.pi * low * t) + np.sin(2 * math.pi * high * t)), gap]
    return _pcm(np.concatenate(parts))


def line_noise(seconds: float, rate: int, seed: int = 0, dbfs: float = -60.0) -> bytes:
    """Quiet white noise standing in for a line's silence."""
    sigma = 32768 * 10 ** (dbfs / 20)
    return _pcm(np.random.default_rng(seed).normal(0.0, sigma, round(seconds * rate)))


# -- the gate ------------------------------------------------------------------------------------

START = SpeechEventType.START_OF_SPEECH
INTERIM = SpeechEventType.INTERIM
FINAL = SpeechEventType.FINAL
END = SpeechEventType.END_OF_SPEECH
RATE = 8000
FRAME = RATE // 50  # samples in a 20 ms frame
VOICE = speech_frame(RATE)  # a 440 Hz tone frame: voice to FakeStt and to LevelDetector
QUIET = silence_frame(RATE)


class LevelDetector:
    """A stand-in for Silero: a window is speech (1.0) when its peak reaches ``level``,
    which is what :class:`FakeStt` calls voice too. Counts its calls and resets."""

    def __init__(self, sample_rate: int, level: int = 1000) -> None:
        self.window = sample_rate * 32 // 1000
        self.level = level / 32768
        self.calls = 0
        self.resets = 0

    def probability(self, samples: npt.NDArray[np.float32]) -> float:
        self.calls += 1
        return 1.0 if float(np.max(np.abs(samples))) >= self.level else 0.0

    def reset(self) -> None:
        self.resets += 1


class ScriptedStream:
    """An inner stream whose events the test posts, with the audio_time it chooses."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.flushes = 0
        self.ended = False
        self.closed = False
        self.flush_gate: asyncio.Event | None = None  # set: flush() waits for it
        self.flush_entered = asyncio.Event()
        self._events: asyncio.Queue[SpeechEvent | None] = asyncio.Queue()

    def post(self, kind: SpeechEventType, audio_time: float, text: str = "") -> None:
        self._events.put_nowait(SpeechEvent(kind, text, audio_time=audio_time))

    def push_frame(self, pcm: bytes) -> None:
        self.frames.append(pcm)

    async def flush(self) -> None:
        self.flushes += 1
        self.flush_entered.set()
        if self.flush_gate is not None:
            await self.flush_gate.wait()

    def end_input(self) -> None:
        self.ended = True
        self._events.put_nowait(None)

    async def aclose(self) -> None:
        self.closed = True
        self._events.put_nowait(None)

    def __aiter__(self) -> ScriptedStream:
        return self

    async def __anext__(self) -> SpeechEvent:
        item = await self._events.get()
        if item is None:
            raise StopAsyncIteration
        return item


class ScriptedStt:
    name = "scripted"

    def __init__(self) -> None:
        self.streams: list[ScriptedStream] = []

    def stream(self, sample_rate: int, language: str = "en-US") -> SttStream:
        stream = ScriptedStream()
        self.streams.append(stream)
        return stream


def _gate(inner: FakeStt | ScriptedStt, **settings: Any) -> VadGatedStt:
    return VadGatedStt(inner, VadSettings(**settings), detector=LevelDetector)


def _push(stream: SttStream, frame: bytes, seconds: float) -> None:
    for _ in range(round(seconds * 50)):
        stream.push_frame(frame)


def _push_pcm(stream: SttStream, pcm: bytes, rate: int) -> None:
    size = rate * 2 // 50
    for at in range(0, len(pcm), size):
        stream.push_frame(pcm[at : at + size].ljust(size, b"\0"))


async def _rest(stream: SttStream) -> list[SpeechEvent]:
    return [event async for event in stream]


def _inner_fake(gate: VadGatedStream) -> FakeSttStream:
    assert isinstance(gate.inner, FakeSttStream)
    return gate.inner


def _g711(pcm16k: bytes) -> bytes:
    return ulaw_decode(ulaw_encode(resample(pcm16k, 16000, 8000)))


# -- non-speech reaches no recogniser (the real Silero model) ----------------------------------


def _non_speech(rate: int) -> dict[str, bytes]:
    signals = {
        "1 kHz tone": tone(1000.0, 3.0, 16000),
        "pink noise at -30 dBFS": pink_noise(3.0, 16000, dbfs=-30.0),
        "DTMF": dtmf_sequence("123A456B789C*0#D", 16000),
        "line noise": line_noise(3.0, 16000),
        "digital silence": bytes(3 * 16000 * 2),
    }
    return {name: _g711(pcm) if rate == 8000 else pcm for name, pcm in signals.items()}


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_tones_dtmf_noise_and_silence_open_no_gate_and_reach_no_recogniser(
    rate: int,
) -> None:
    engine = VadGatedStt(FakeStt(["invented"], speech_threshold=1))
    for name, pcm in _non_speech(rate).items():
        gate = engine.stream(rate)
        _push_pcm(gate, pcm, rate)
        gate.end_input()
        events = await _rest(gate)
        assert gate.openings == 0, name
        assert _inner_fake(gate).frames == [], f"{name} reached the recogniser"
        assert events == [], name
        assert gate.pushed_samples == len(pcm) // 2
        await gate.aclose()


def test_the_silero_detector_takes_32_ms_windows_at_8_and_16_khz() -> None:
    assert SileroDetector(8000).window == 256
    assert SileroDetector(16000).window == 512
    with pytest.raises(ValueError, match="44100"):
        SileroDetector(44100)


async def test_quiet_windows_do_not_run_the_model() -> None:
    engine = _gate(FakeStt())
    gate = engine.stream(RATE)
    detector = gate._detector
    assert isinstance(detector, LevelDetector)
    _push(gate, QUIET, 2.0)
    _push_pcm(gate, line_noise(1.0, RATE, dbfs=-60.0), RATE)
    assert detector.calls == 0
    _push_pcm(gate, line_noise(1.0, RATE, dbfs=-40.0), RATE)
    assert detector.calls == RATE // 256  # every whole window of the louder noise
    await gate.aclose()


# -- speech goes through, with its pre-roll, and ends in a FINAL -------------------------------


async def test_speech_reaches_the_recogniser_with_its_preroll_and_hangover() -> None:
    engine = _gate(FakeStt(["hello"]))
    gate = engine.stream(RATE)
    pushed = bytearray()
    for frame, seconds in ((QUIET, 1.0), (VOICE, 0.5), (QUIET, 1.5)):
        _push(gate, frame, seconds)
        pushed += frame * round(seconds * 50)
    inner = _inner_fake(gate)
    forwarded = b"".join(inner.frames)
    start = bytes(pushed).find(forwarded) // 2
    assert start >= 0, "the forwarded audio is one stretch of what was pushed"
    settings = engine.settings
    onset, voice_end = RATE, round(1.5 * RATE)
    window = 256
    # the pre-roll: the frames from `preroll` before the window that opened the gate
    assert onset - settings.preroll * RATE - window - FRAME <= start
    assert start <= onset - settings.preroll * RATE
    # the hangover: frames up to `hangover` after the last speech window, and not much more
    end = start + len(forwarded) // 2
    assert voice_end + settings.hangover * RATE <= end
    assert end <= voice_end + settings.hangover * RATE + 2 * settings.batch * window + FRAME
    assert gate.openings == 1
    assert not gate.is_open
    gate.end_input()
    events = await _rest(gate)
    assert [e.type for e in events] == [START, FINAL, END]
    assert events[1].text == "hello"
    # on the gate's clock: the speech started at 1.0 s and ended at 1.5 s
    assert events[0].audio_time == pytest.approx(1.0)
    assert events[1].audio_time == pytest.approx(1.5)
    assert events[2].audio_time == pytest.approx(1.5)
    await gate.aclose()


async def test_each_utterance_keeps_its_own_time_across_dropped_stretches() -> None:
    engine = _gate(FakeStt(["one", "two", "three"]))
    gate = engine.stream(RATE)
    script = [
        (QUIET, 2.0),
        (VOICE, 0.4),
        (QUIET, 3.0),
        (VOICE, 0.6),
        (QUIET, 5.0),
        (VOICE, 0.3),
        (QUIET, 1.0),
    ]
    for frame, seconds in script:
        _push(gate, frame, seconds)
    gate.end_input()
    events = await _rest(gate)
    finals = [(e.text, e.audio_time) for e in events if e.type is FINAL]
    starts = [e.audio_time for e in events if e.type is START]
    assert [text for text, _ in finals] == ["one", "two", "three"]
    assert [t for _, t in finals] == pytest.approx([2.4, 6.0, 11.3])
    assert starts == pytest.approx([2.0, 5.4, 11.0])
    assert gate.openings == 3
    pushed = gate.pushed_samples / RATE
    assert pushed == pytest.approx(12.3)
    assert gate.forwarded_samples / RATE < pushed / 2
    await gate.aclose()


async def test_closing_the_gate_flushes_a_recogniser_that_did_not_end_the_utterance() -> None:
    # an endpointer that never ends by itself (as pocketsphinx's in steady noise)
    engine = _gate(FakeStt(["go forward"], end_silence_frames=10**6))
    gate = engine.stream(RATE)
    _push(gate, QUIET, 0.5)
    _push(gate, VOICE, 0.6)
    _push(gate, QUIET, 1.2)
    assert not gate.is_open
    await gate.flush()  # a barrier: returns after the flush the closing gate queued
    inner = _inner_fake(gate)
    assert inner.flushes == 2
    assert inner.queued == 3  # START, FINAL, END are ready before any more audio came
    gate.end_input()
    events = await _rest(gate)
    assert [(e.type, e.text) for e in events] == [(START, ""), (FINAL, "go forward"), (END, "")]
    # FakeStt's flush ends the utterance at the end of the audio it got: the hangover's end
    assert 1.1 + engine.settings.hangover <= events[1].audio_time <= 1.1 + 1.2
    await gate.aclose()


async def test_audio_pushed_while_a_flush_is_in_flight_reaches_the_recogniser_after_it() -> None:
    # the whole call is pushed before the loop runs a task: the second utterance's frames
    # must not overtake the flush that ends the first
    engine = _gate(FakeStt(["one", "two"], end_silence_frames=10**6))
    gate = engine.stream(RATE)
    for frame, seconds in ((VOICE, 0.4), (QUIET, 1.5), (VOICE, 0.4), (QUIET, 1.5)):
        _push(gate, frame, seconds)
    gate.end_input()
    events = await _rest(gate)
    finals = [(e.text, e.audio_time) for e in events if e.type is FINAL]
    assert [text for text, _ in finals] == ["one", "two"]
    assert finals[0][1] < 1.9 < finals[1][1], finals
    assert [e.type for e in events] == [START, FINAL, END, START, FINAL, END]
    assert _inner_fake(gate).input_ended
    await gate.aclose()


async def test_the_backlog_behind_a_stuck_flush_is_bounded() -> None:
    scripted = ScriptedStt()
    engine = _gate(scripted, max_backlog=1.0)
    gate = engine.stream(RATE)
    inner = scripted.streams[0]
    inner.flush_gate = asyncio.Event()
    flushing = asyncio.get_running_loop().create_task(gate.flush())
    await inner.flush_entered.wait()
    _push(gate, VOICE, 3.0)
    assert gate.dropped_frames == 100  # 3 s pushed, 1 s kept
    assert inner.frames == []
    inner.flush_gate.set()
    await flushing
    assert len(inner.frames) == 50
    await gate.aclose()


# -- flush, end_input, aclose --------------------------------------------------------------------


async def test_flush_ends_the_running_utterance_through_the_gate() -> None:
    engine = _gate(FakeStt(["still talking"]))
    gate = engine.stream(RATE)
    _push(gate, QUIET, 1.0)
    _push(gate, VOICE, 0.5)
    assert gate.is_open
    await gate.flush()
    inner = _inner_fake(gate)
    assert inner.flushes == 1
    assert inner.queued == 3
    gate.end_input()
    events = await _rest(gate)
    assert [e.type for e in events] == [START, FINAL, END]
    assert events[1].audio_time == pytest.approx(1.5)


async def test_end_input_emits_the_pending_utterance_and_ends_the_iteration() -> None:
    engine = _gate(FakeStt(["last words"]))
    gate = engine.stream(RATE)
    _push(gate, QUIET, 0.5)
    _push(gate, VOICE, 0.5)
    gate.end_input()
    gate.push_frame(VOICE)  # ignored after the end of input
    events = await _rest(gate)
    assert [(e.type, e.text) for e in events] == [(START, ""), (FINAL, "last words"), (END, "")]
    inner = _inner_fake(gate)
    assert inner.input_ended
    assert b"".join(inner.frames).endswith(VOICE * 25)
    await gate.flush()  # no-op after the end of input
    assert inner.flushes == 0


async def test_aclose_closes_the_inner_stream_and_pools_the_detector() -> None:
    engine = _gate(FakeStt())
    gate = engine.stream(RATE)
    detector = gate._detector
    assert isinstance(detector, LevelDetector)
    _push(gate, VOICE, 0.2)
    await gate.aclose()
    await gate.aclose()  # twice is fine
    assert _inner_fake(gate).closed
    assert detector.resets == 1
    assert await _rest(gate) == []
    again = engine.stream(RATE)
    assert again._detector is detector, "the next stream reuses the pooled detector"
    await again.aclose()


async def test_preload_fills_the_pool() -> None:
    made: list[LevelDetector] = []

    def factory(rate: int) -> LevelDetector:
        made.append(LevelDetector(rate))
        return made[-1]

    engine = VadGatedStt(FakeStt(), detector=factory)
    engine.preload(RATE, 2)
    streams = [engine.stream(RATE), engine.stream(RATE), engine.stream(RATE)]
    assert len(made) == 3
    assert {id(s._detector) for s in streams[:2]} == {id(d) for d in made[:2]}
    for stream in streams:
        await stream.aclose()


# -- audio_time on the gate's clock --------------------------------------------------------------


async def test_inner_times_map_to_the_gate_clock_and_seams_go_by_event_type() -> None:
    scripted = ScriptedStt()
    engine = _gate(scripted, preroll=0.0, hangover=0.2)
    gate = engine.stream(RATE)
    inner = scripted.streams[0]
    # two stretches of speech 0.5 s each, at 1.0 s and 3.0 s on the gate's clock
    for frame, seconds in ((QUIET, 1.0), (VOICE, 0.5), (QUIET, 1.5), (VOICE, 0.5), (QUIET, 1.0)):
        _push(gate, frame, seconds)
    await gate.flush()
    seams = [(s.inner / RATE, s.outer / RATE) for s in gate._seams]
    assert len(seams) == 2
    (inner1, outer1), (inner2, outer2) = seams
    assert inner1 == 0.0
    assert 0.9 <= outer1 <= 1.0 and 2.9 <= outer2 <= 3.0
    inner.post(START, 0.1)
    inner.post(INTERIM, inner2 - 0.1, "partial")
    inner.post(END, inner2)  # at the seam: the end of the first stretch
    inner.post(START, inner2)  # at the seam: the start of the second
    inner.post(FINAL, inner2 + 0.3, "second")
    gate.end_input()
    events = await _rest(gate)
    assert [e.audio_time for e in events] == pytest.approx(
        [
            outer1 + 0.1,
            outer1 + inner2 - 0.1,
            outer1 + inner2,
            outer2,
            outer2 + 0.3,
        ]
    )
    assert [e.text for e in events] == ["", "partial", "", "", "second"]
    await gate.aclose()


# -- configuration -------------------------------------------------------------------------------


def test_the_gate_is_on_by_default_and_can_be_switched_off() -> None:
    """The embedded recogniser's gate runs in its speech process (ProcessStt.gate)."""
    default = build_stt(load_config(None, env={}))
    assert isinstance(default, ResilientStt)
    assert isinstance(default.engine, ProcessStt) and default.engine.gate is not None
    assert default.engine.gate.threshold == 0.5
    tuned = build_stt(load_config(None, env={"HITL_SIP_SPEECH_VAD_THRESHOLD": "0.7"}))
    assert isinstance(tuned, ResilientStt) and isinstance(tuned.engine, ProcessStt)
    assert tuned.engine.gate is not None and tuned.engine.gate.threshold == 0.7
    off = build_stt(load_config(None, env={}, overrides={"speech.vad": "false"}))
    assert isinstance(off, ResilientStt)
    assert isinstance(off.engine, ProcessStt) and off.engine.gate is None


def test_azures_gate_runs_in_the_worker_so_only_speech_is_sent() -> None:
    env = {"HITL_SIP_SPEECH_STT": "azure", "HITL_SIP_SPEECH_AZURE_KEY": "k",
           "HITL_SIP_SPEECH_AZURE_REGION": "westeurope"}
    engine = build_stt(load_config(None, env=env))
    assert isinstance(engine, ResilientStt) and isinstance(engine.engine, VadGatedStt)
    assert engine.engine.settings.threshold == 0.5


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("speech.vad_threshold", "1.5"),
        ("speech.vad_threshold", "0.1"),
        ("speech.vad_threshold", "high"),
        ("speech.vad", "maybe"),
    ],
)
def test_bad_gate_settings_name_their_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={}, overrides={key: value})
    assert caught.value.key == key


@pytest.mark.parametrize(
    "settings",
    [
        {"threshold": 1.0},
        {"threshold": 0.1, "release": 0.15},
        {"hangover": -1.0},
        {"batch": 0},
        {"max_backlog": 0.0},
    ],
)
def test_bad_gate_settings_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        VadSettings(**settings)
