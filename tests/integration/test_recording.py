"""The two-channel call recording (hitl_sip.worker.recorder) on a real server: caller left,
what the caller heard right, time-aligned across the bot and human phases.

The flow asks for consent (``record: consent``): its notice plays first, then a bot prompt of
beeps (3 kHz), then the agent node. The caller (``tests/support/rtpcaller.py``) sends 440 Hz
bursts every 500 ms from start to end; the agent (aiortc) sends 1 kHz bursts. A second into
the human phase each also speaks one sentence (pocketsphinx-testdata's librivox clips, in
place of their bursts meanwhile). In the file:

* nothing before the notice has ended (the caller heard speech there; the right channel
  starts silent until the beeps);
* the left channel has every caller burst after that; the right channel the beeps, then the
  agent's bursts;
* each channel keeps one offset to the caller's own clock through the whole call (the
  hand-over from bot to agent moves neither by more than 20 ms), and the two channels'
  offsets differ by no more than the path they cannot see (≤ 20 ms + two frames of the
  trunk leg's jitter buffer);
* the speech is found by cross-correlation with what was sent — the caller's sentence on
  the left, the agent's on the right (and in what the caller heard) — each at the offset
  its channel had in the bot phase (the caller's bursts on the left, the beeps on the
  right, located the same way) within 20 ms.

With ``record: off`` the same call writes no audio file.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.media.wav import resample
from hitl_sip.testing.agent import RATE as MIC_RATE
from hitl_sip.testing.agent import SAMPLES as MIC_SAMPLES
from hitl_sip.testing.agent import Source, TestAgent
from hitl_sip.testing.analysis import rms_dbfs
from hitl_sip.testing.bursts import BURST, CYCLE, agent_source, caller_source, onsets
from tests.integration.test_agents import PASSWORD, add_agent, login
from tests.integration.test_pocketsphinx import _librivox
from tests.support.audio import recording_channels
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

FLOW = """
name: recorded
start: beeps
record: {mode}
{consent}
nodes:
  beeps:
    type: say
    audio: {beeps}
    barge_in: false
    next: agent
  agent:
    type: agent
    fallback: bye
  bye:
    type: hangup
"""
BEEP_HZ = 3000
ALIGN_BOUND = 0.02
# pjmedia's adaptive jitter buffer holds the caller's frames 1-3 ticks before the port sees
# them: the left channel lags the caller's own clock by that much more than the right one
# does (measured 9-36 ms on loopback, through rtpengine), and it may step by a frame or two
# once in a while
UPLINK_JITTER_BUFFER = 0.04


SPEECH_AFTER = 1.0  # seconds into the human phase both parties start their sentence
RATE = 8000  # the recording's, the caller's and the trunk's


def beep() -> npt.NDArray[np.int16]:
    """One of the bot prompt's beeps: 200 ms of 3 kHz at 8 kHz."""
    t = np.arange(int(0.2 * RATE)) / RATE
    return (np.sin(2 * math.pi * BEEP_HZ * t) * 0.3 * 32767).astype("<i2")


def beeps_wav(path: Path) -> Path:
    """Three 200 ms beeps, 600 ms apart, at 8 kHz."""
    rate = RATE
    beep_ = beep()
    gap = np.zeros(int(0.6 * rate), dtype="<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.concatenate([gap, beep_, gap, beep_, gap, beep_, gap]).tobytes())
    return path


def recorded_server(home: Path, mode: str) -> Any:
    consent = 'consent: "This call is recorded for quality."' if mode == "consent" else ""
    flow = home / "flow.yaml"
    flow.write_text(FLOW.format(mode=mode, consent=consent, beeps=beeps_wav(home / "beeps.wav")))
    return running_server(home, extra={
        "bot": {"flow": str(flow)},
        "routing": {"queue_timeout": 60},
        "webrtc": {"codecs": ["pcmu"], "host_addresses": ["127.0.0.1"]},
    })


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    install_host_filter(["127.0.0.1"])
    with recorded_server(tmp_path_factory.mktemp("recorded"), "consent") as server:
        add_agent(server.data_dir, "alice")
        add_agent(server.data_dir, "sue", role="supervisor")
        yield server


class CallerVoice:
    """The caller's bursts (:func:`caller_source`), but from frame :attr:`at` on (set once the
    agent has the call) one sentence, 8 kHz, in their place."""

    def __init__(self, pcm16k: bytes) -> None:
        self.pcm = np.frombuffer(resample(pcm16k, 16000, RATE), dtype="<i2")
        self.frames = -(-len(self.pcm) // 160)
        self.at: int | None = None

    def __call__(self, n: int) -> bytes:
        if self.at is None or not self.at <= n < self.at + self.frames:
            return caller_source(n)
        chunk = self.pcm[(n - self.at) * 160:(n - self.at + 1) * 160]
        return np.pad(chunk, (0, 160 - len(chunk))).astype("<i2").tobytes()


def agent_voice(pcm16k: bytes, at: int) -> Source:
    """The agent's bursts (:func:`agent_source`), but one sentence from microphone frame ``at``
    (48 kHz) on, in their place."""
    pcm = np.frombuffer(resample(pcm16k, 16000, MIC_RATE), dtype="<i2")
    frames = -(-len(pcm) // MIC_SAMPLES)

    def source(index: int) -> npt.NDArray[np.int16]:
        if not at <= index < at + frames:
            return agent_source(index)
        chunk = pcm[(index - at) * MIC_SAMPLES:(index - at + 1) * MIC_SAMPLES]
        return np.pad(chunk, (0, MIC_SAMPLES - len(chunk))).astype(np.int16)
    return source


def sentences() -> tuple[bytes, bytes]:
    """Two sentences of human speech (16 kHz): the caller's and the agent's."""
    clips = {c.name.rsplit("-", 1)[1]: c.pcm for c in _librivox()}
    return clips["0880"], clips["0930"]


async def bot_then_agent(srv: Server, human_seconds: float = 3.0,
                         caller_voice: CallerVoice | None = None,
                         agent_source: Source = agent_source) -> tuple[RtpCaller,
                                                                       TestAgent, str]:
    """A call through the beeps to alice; both sides talking in bursts (and the voices
    given); the caller hangs up."""
    agent = TestAgent(srv.http_url, "alice", PASSWORD, source=agent_source, codecs=("pcmu",))
    await agent.connect()
    caller = RtpCaller(srv.sip_port())
    try:
        await asyncio.to_thread(caller.call, 10)
        caller.start_media(caller_voice or caller_source)
        offer = await agent.answer_next_call(limit=30, delay=4.0)  # after the beeps
        await agent.wait("call_connected", limit=15)
        if caller_voice is not None:
            caller_voice.at = len(caller.sent) + round(SPEECH_AFTER / 0.02)
        await asyncio.sleep(human_seconds)  # bursts (and speech) both ways
        await asyncio.to_thread(caller.hangup)
        await agent.wait("call_ended", limit=10)
    finally:
        await agent.close()
        await asyncio.to_thread(caller.close)
    return caller, agent, str(offer["callId"])


def frames_of(pcm: bytes, rate: int) -> list[tuple[float, bytes]]:
    """A channel as (time in the file, 20 ms frame)."""
    size = rate // 50 * 2
    return [(i / size * 0.02, pcm[i:i + size]) for i in range(0, len(pcm) - size + 1, size)]


def tone_onsets(frames: list[tuple[float, bytes]], freq: float, rate: int) -> list[float]:
    """Onsets (as :func:`onsets`) of frames whose energy is mostly ``freq``."""
    def share(pcm: bytes) -> float:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        bins = np.fft.rfftfreq(len(x), 1 / rate)
        total = float(spectrum[1:].sum()) or 1.0
        return float(spectrum[(bins > freq - 100) & (bins < freq + 100)].sum()) / total
    tonal = [(t, pcm if share(pcm) > 0.5 else bytes(len(pcm))) for t, pcm in frames]
    return onsets(tonal)[0]


def locate(signal: npt.NDArray[np.int16], template: npt.NDArray[np.int16], near: float,
           within: float) -> tuple[float, float]:
    """Where ``template`` starts in ``signal`` (8 kHz), searched within ``within`` seconds of
    ``near``, by cross-correlation: (seconds, the normalised correlation there)."""
    lo = max(0, round((near - within) * RATE))
    hi = min(len(signal) - len(template), round((near + within) * RATE))
    assert hi >= lo, (near, within, len(signal), len(template))
    segment = signal[lo:hi + len(template)].astype(np.float64)
    ref = template.astype(np.float64)
    scores = np.correlate(segment, ref, mode="valid")
    k = int(np.argmax(scores))
    norm = float(np.linalg.norm(ref) * np.linalg.norm(segment[k:k + len(ref)])) or 1.0
    return (lo + k) / RATE, float(scores[k]) / norm


class Timeline:
    """Audio on a clock: 20 ms frames of 8 kHz PCM, each with its time (sent or arrived)."""

    def __init__(self, frames: list[tuple[float, bytes]]) -> None:
        assert all(len(pcm) == 320 for _, pcm in frames)
        self.times = [at for at, _ in frames]
        self.pcm = np.frombuffer(b"".join(pcm for _, pcm in frames), dtype="<i2")

    def at(self, seconds: float) -> float:
        """The clock's time of a position in :attr:`pcm` (seconds from its start)."""
        frame = min(int(seconds / 0.02), len(self.times) - 1)
        return self.times[frame] + seconds - frame * 0.02

    def position(self, clock: float) -> float:
        """The position in :attr:`pcm` of the frame at (or next after) ``clock``."""
        frame = next((i for i, t in enumerate(self.times) if t >= clock), len(self.times))
        return frame * 0.02


def offsets(file_onsets: list[float], clock: list[float], anchor: float) -> list[float]:
    """For each onset in the file (time ``t``), the matching event on the caller's clock
    (the nearest to ``anchor + t``, within 200 ms) minus ``t``."""
    out = []
    for t in file_onsets:
        nearest = min(clock, key=lambda c: abs(c - (anchor + t)))
        if abs(nearest - (anchor + t)) < 0.2:
            out.append(nearest - t)
    return out


def outside(onsets_: list[float], start: float, seconds: float) -> list[float]:
    """``onsets_`` but those within a sentence at ``start`` (speech is not a burst)."""
    return [t for t in onsets_ if not start - 0.05 <= t <= start + seconds + 0.05]


def test_both_sides_recorded_aligned_after_the_consent_notice(srv: Server) -> None:
    caller_said, agent_said = sentences()
    voice = CallerVoice(caller_said)
    agent_at = round((SPEECH_AFTER + 0.2) / 0.02)  # the microphone starts at the answer
    caller, agent, call_id = asyncio.run(bot_then_agent(
        srv, human_seconds=6.5, caller_voice=voice,
        agent_source=agent_voice(agent_said, agent_at)))
    path = srv.data_dir / "recordings" / f"{call_id}.wav"
    srv.wait_for(lambda: any(r["callId"] == call_id for r in srv.call_records()), 15,
                 what="the call record")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    rate, left, right = recording_channels(path)
    assert rate == RATE
    lframes, rframes = frames_of(left, rate), frames_of(right, rate)
    left_pcm = np.frombuffer(left, dtype="<i2")
    right_pcm = np.frombuffer(right, dtype="<i2")

    # the caller's clock: packets it sent (bursts) and what it heard (arrival times)
    heard = [(p.arrival, p.pcm) for p in sorted(caller.received, key=lambda p: p.arrival)
             if p.pcm]
    sent_at = dict(caller.sent)
    sent = Timeline([(t, voice(n)) for n, t in caller.sent])
    heard_line = Timeline(heard)
    sent_bursts = [t for n, t in caller.sent if n % CYCLE == 0]
    heard_beeps = tone_onsets(heard, BEEP_HZ, rate)
    assert len(heard_beeps) == 3, heard_beeps

    # consent: the caller heard speech before the beeps; the file starts after it
    before_beeps = [pcm for at, pcm in heard if at < heard_beeps[0] - 0.3]
    assert max(rms_dbfs(pcm) for pcm in before_beeps) > -30, "no consent notice heard"
    file_beeps = tone_onsets(rframes, BEEP_HZ, rate)
    assert len(file_beeps) == 3, file_beeps
    assert max(rms_dbfs(pcm) for t, pcm in rframes if t < file_beeps[0] - 0.05) < -45
    recorded_from = heard_beeps[0] - file_beeps[0]  # the caller's clock at file time 0
    first_heard = heard[0][0]
    assert recorded_from - first_heard > 1.0, "the recording began before the notice ended"

    # right, to the sample: the beeps where the caller heard them, then the agent's
    # sentence as the agent sent it, in what the caller heard and in the file
    right_bot = []
    for in_file, in_ear in zip(file_beeps, heard_beeps, strict=True):
        f, f_score = locate(right_pcm, beep(), in_file, 0.04)
        h, h_score = locate(heard_line.pcm, beep(), heard_line.position(in_ear), 0.04)
        assert min(f_score, h_score) > 0.8, (f_score, h_score)
        right_bot.append(heard_line.at(h) - f)
    agent_pcm = np.frombuffer(resample(agent_said, 16000, RATE), dtype="<i2")
    agent_seconds = len(agent_pcm) / RATE
    spoken = dict(agent.mic.sent)[agent_at]  # handed to the encoder
    h, h_score = locate(heard_line.pcm, agent_pcm, heard_line.position(spoken) + 0.15, 0.2)
    agent_heard = heard_line.at(h)
    f, r_score = locate(right_pcm, agent_pcm, agent_heard - statistics.median(right_bot),
                        0.1)
    right_speech = agent_heard - f
    right_error = right_speech - statistics.median(right_bot)

    # right, by bursts: the beeps, then the agent's bursts, on one clock
    heard_agent = outside(tone_onsets(heard, 1000, rate), agent_heard, agent_seconds)
    assert len(heard_agent) >= 4, heard_agent
    file_agent = outside(tone_onsets(rframes, 1000, rate), f, agent_seconds)
    assert len(file_agent) >= 4 and file_agent[0] > file_beeps[-1]
    bot_phase = offsets(file_beeps, heard_beeps, recorded_from)
    human_phase = offsets(file_agent, heard_agent, recorded_from)
    assert len(bot_phase) == 3 and len(human_phase) >= 4
    right_drift = abs(statistics.median(bot_phase) - statistics.median(human_phase))
    handover = file_agent[0]

    # left, to the sample: the caller's bursts before the hand-over, then its sentence
    file_caller = tone_onsets(lframes, 440, rate)
    left_bot = []
    for t in [t for t in file_caller if t < handover]:
        due = min(sent_bursts, key=lambda c: abs(c - (recorded_from + t)))
        if abs(due - (recorded_from + t)) >= 0.2:
            continue
        burst = sent.pcm[round(sent.position(due) * RATE):][:BURST * 160]
        at, score = locate(left_pcm, burst, t, 0.04)
        assert score > 0.8, (t, score)
        left_bot.append(due - at)
    assert len(left_bot) >= 4, left_bot
    assert voice.at is not None
    said = sent_at[voice.at]
    caller_seconds = len(voice.pcm) / RATE
    f_left, l_score = locate(left_pcm, voice.pcm, said - statistics.median(left_bot), 0.1)
    left_error = said - f_left - statistics.median(left_bot)
    print(f"speech: the caller's sentence on the left (correlation {l_score:.2f}) "
          f"{left_error * 1000:+.1f} ms from the left's bot-phase offset, the agent's on "
          f"the right ({r_score:.2f}; {h_score:.2f} in the caller's ear) "
          f"{right_error * 1000:+.1f} ms from the right's (beeps, spread "
          f"{(max(right_bot) - min(right_bot)) * 1000:.1f} ms; bursts, spread "
          f"{(max(left_bot) - min(left_bot)) * 1000:.1f} ms)")
    assert min(l_score, r_score, h_score) > 0.8, (l_score, r_score, h_score)
    assert abs(left_error) <= ALIGN_BOUND and abs(right_error) <= ALIGN_BOUND

    # left, by bursts: every caller burst after the notice, on one clock through the
    # hand-over
    file_caller = outside(file_caller, f_left, caller_seconds)
    left_off = offsets(file_caller, sent_bursts, recorded_from)
    assert len(left_off) >= len(file_caller) - 1 >= 8, (file_caller, left_off)
    left_bot_off = [o for o, t in zip(left_off, file_caller, strict=False) if t < handover]
    left_human = [o for o, t in zip(left_off, file_caller, strict=False) if t >= handover]
    left_drift = abs(statistics.median(left_bot_off) - statistics.median(left_human))
    # the two channels: the caller's own timeline (what it said vs what it heard) is kept
    # up to the trunk's uplink (its RTP and pjmedia's jitter buffer), which the file
    # cannot see
    between = statistics.median(human_phase) - statistics.median(left_off)
    print(f"recording alignment: right channel drift across the hand-over "
          f"{right_drift * 1000:.1f} ms, left {left_drift * 1000:.1f} ms; "
          f"left vs right {between * 1000:.1f} ms")
    assert right_drift <= ALIGN_BOUND and left_drift <= ALIGN_BOUND
    assert abs(between) <= ALIGN_BOUND + UPLINK_JITTER_BUFFER, between
    for offs in (left_off, human_phase):  # one offset per channel, but for a jitter-buffer step
        steady = [o for o in offs if abs(o - statistics.median(offs)) <= ALIGN_BOUND]
        assert len(steady) >= 0.9 * len(offs), offs

    # GET /api/recordings/{callId}: supervisors and admins only
    url = f"{srv.http_url}/api/recordings/{call_id}"
    assert fetch(url, login(srv, "sue")[1]["token"]) == (200, "audio/wav", path.read_bytes())
    assert fetch(url, login(srv, "alice")[1]["token"])[0] == 403
    assert fetch(url, None)[0] == 401
    assert fetch(f"{srv.http_url}/api/recordings/nope", login(srv, "sue")[1]["token"])[0] == 404
    assert fetch(f"{srv.http_url}/api/recordings/a.b", login(srv, "sue")[1]["token"])[0] == 400


def fetch(url: str, token: str | None) -> tuple[int, str, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


def test_record_off_writes_no_audio(tmp_path: Path) -> None:
    install_host_filter(["127.0.0.1"])
    with recorded_server(tmp_path, "off") as srv:
        add_agent(srv.data_dir, "alice")
        _, _, call_id = asyncio.run(bot_then_agent(srv, human_seconds=1.0))
        srv.wait_for(lambda: any(r["callId"] == call_id for r in srv.call_records()), 15,
                     what="the call record")
        assert [p.name for p in (srv.data_dir / "recordings").iterdir()
                if p.suffix != ".json"] == []
        record = next(r for r in srv.call_records() if r["callId"] == call_id)
        assert {"type": "recording", "mode": "off"}.items() <= next(
            e for e in record["events"] if e["type"] == "recording").items()
