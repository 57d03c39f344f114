"""Supervisors and transfers on a real server (PROTOCOL.md §6): an RTP caller sending
440 Hz, agents sending 1 kHz (alice) and 1.5 kHz (bob) and a supervisor sending 2 kHz (sue),
all real aiortc peers through the hub and the worker, the thread delivered to the alive5
stand-in.

* monitoring: in ``listen`` sue hears caller and agent and nobody hears her; in
  ``whisper`` alice hears her and the caller does not; in ``barge`` both do; every switch
  takes effect within 100 ms of the ``monitor_mode`` request, measured at each ear whose
  hearing it changes (2 kHz coming to or leaving alice's ear, the caller's or both; printed);
* transfer: cold and warm to another agent with the conversation carried over (the target's
  ``incoming_call`` has the bot's turns and the first agent's words); the caller's audio
  never stops for more than 60 ms at the hand-over, counting silent frames and pauses in
  packet arrival alike; ``transfer_failed`` when the target declines, the first agent
  keeping the call; the alive5 thread gets the notice in order.

One server serves the module (the calls run one after the other).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testing.agent import TestAgent, tone, wav_source
from hitl_sip.testing.wer import word_error_rate
from tests.integration.test_agents import PASSWORD, add_agent
from tests.integration.test_alive5_call import AGENT_WER_BOUND
from tests.integration.test_pocketsphinx import _librivox
from tests.support.alive5 import API_KEY, Alive5StandIn
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

# the bot asks first, so its turn is in the transcript the handoff carries (and a
# transfer's target gets); with no answer it hands the call to an agent
FLOW = """
name: supervised
start: menu
nodes:
  menu:
    type: ask
    prompt: "Press one for billing."
    barge_in: false
    timeout: 0.5
    retries: 0
    branches:
      - {dtmf: "1", next: agent}
    fail: agent
  agent:
    type: agent
    message: "Connecting you."
    fallback: bye
  bye:
    type: hangup
"""
CALLER_HZ, ALICE_HZ, BOB_HZ, SUE_HZ = 440, 1000, 1500, 2000
SWITCH_BOUND = 0.1  # seconds from monitor_mode to the listener's ear
GAP_BOUND = 0.06  # the longest silence the caller may hear at a transfer
FRAME = 0.02
DROPOUT_BOUND = 0.02  # frames of a talker missing at an ear that hears it


@pytest.fixture(scope="module")
def a5() -> Iterator[Alive5StandIn]:
    with Alive5StandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, a5: Alive5StandIn) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("supervision")
    flow = home / "flow.yaml"
    flow.write_text(FLOW)
    install_host_filter(["127.0.0.1"])
    extra: dict[str, dict[str, Any]] = {
        "bot": {"flow": str(flow)},
        "routing": {"queue_timeout": 60, "ring_timeout": 4},
        "webrtc": {"codecs": ["pcmu"], "host_addresses": ["127.0.0.1"]},
        "alive5": {"url": a5.url, "api_key": API_KEY, "ack_timeout": 3},
    }
    with running_server(home, extra=extra) as server:
        add_agent(server.data_dir, "alice")
        add_agent(server.data_dir, "bob")
        add_agent(server.data_dir, "sue", role="supervisor")
        yield server


def share(pcm: bytes, freq: float, rate: int = 8000) -> float:
    """Fraction of the signal's energy within ±60 Hz of ``freq`` (0 for silence)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if not len(x) or not np.any(x):
        return 0.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    bins = np.fft.rfftfreq(len(x), 1 / rate)
    total = float(spectrum[1:].sum()) or 1.0
    return float(spectrum[(bins > freq - 60) & (bins < freq + 60)].sum()) / total


def caller_tone(n: int) -> bytes:
    t = (np.arange(160) + n * 160) / 8000
    return (np.sin(2 * np.pi * CALLER_HZ * t) * 0.3 * 32767).astype("<i2").tobytes()


class Ear:
    """What one party heard, as (arrival time, 20 ms of 8 kHz PCM) frames."""

    def __init__(self, frames: list[tuple[float, bytes]]) -> None:
        self.frames = frames

    @classmethod
    def of_agent(cls, agent: TestAgent) -> Ear:
        return cls([(arrival, pcm) for _, arrival, pcm in agent.heard_frames])

    @classmethod
    def of_caller(cls, caller: RtpCaller) -> Ear:
        return cls([(p.arrival, p.pcm) for p in list(caller.received) if p.pcm])

    def between(self, start: float, end: float) -> bytes:
        return b"".join(pcm for at, pcm in self.frames if start <= at < end)

    def hears(self, freq: float, start: float, end: float) -> float:
        return share(self.between(start, end), freq)

    def switched(self, freq: float, since: float, on: bool, hold: int = 3) -> float:
        """Seconds from ``since`` to the first frame from which ``freq`` is (``on``) or is no
        longer (not ``on``) heard for ``hold`` frames running (a lone frame missing the tone
        is no switch)."""
        after = [(at, share(pcm, freq)) for at, pcm in self.frames if at >= since]
        for i in range(len(after) - hold + 1):
            if all((heard > 0.2) if on else (heard < 0.05)
                   for _, heard in after[i:i + hold]):
                return after[i][0] - since
        raise AssertionError(f"{freq} Hz never {'came' if on else 'went'} after the switch")


async def hearing(agent: TestAgent) -> None:
    """Until the agent's leg carries audio (then half a second of it)."""
    await asyncio.wait_for(agent.hearing.wait(), 10)
    await asyncio.sleep(0.5)


async def settle(seconds: float) -> tuple[float, float]:
    """Let audio flow ``seconds``; the window's (start, end) on the monotonic clock."""
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return start, time.monotonic()


async def call_with_alice(srv: Server) -> tuple[RtpCaller, TestAgent, str]:
    """A caller sending 440 Hz held by alice (1 kHz, media flowing both ways); the offer
    she took is her first ``incoming_call`` event."""
    alice = TestAgent(srv.http_url, "alice", PASSWORD, source=tone(ALICE_HZ),
                      codecs=("pcmu",))
    await alice.connect()
    caller = RtpCaller(srv.sip_port())
    await asyncio.to_thread(caller.call, 10)
    caller.start_media(caller_tone)
    offer = await alice.answer_next_call(limit=30)
    await alice.wait("call_connected", limit=15)
    return caller, alice, str(offer["callId"])


# monitor_mode requests after ``listen``: (mode, seconds it lasts, the ears whose hearing of
# sue it changes: alice's, the caller's). Every switch is measured at each ear it changes.
SWITCHES: list[tuple[str, float, tuple[str, ...]]] = [
    ("whisper", 1.2, ("alice",)),  # 2 kHz comes to alice
    ("barge", 1.2, ("caller",)),  # and to the caller
    ("whisper", 1.2, ("caller",)),  # leaves the caller, stays with alice
    ("listen", 0.8, ("alice",)),  # leaves alice
    ("barge", 1.2, ("alice", "caller")),  # comes to both at once
    ("listen", 0.8, ("alice", "caller")),  # leaves both
    ("whisper", 0.8, ("alice",)),
    ("listen", 0.8, ("alice",)),
]
HEARS_SUE = {"listen": set(), "whisper": {"alice"}, "barge": {"alice", "caller"}}


def test_listen_whisper_barge_each_heard_by_the_right_parties(srv: Server) -> None:
    async def run() -> dict[str, Any]:
        caller, alice, call_id = await call_with_alice(srv)
        sue = TestAgent(srv.http_url, "sue", PASSWORD, source=tone(SUE_HZ), codecs=("pcmu",))
        try:
            await sue.connect()
            board = await sue.call("board_subscribe", {})
            assert [c["callId"] for c in board["calls"]] == [call_id]
            await sue.monitor(call_id, "listen")
            await hearing(sue)
            await alice.wait("call_monitored", limit=5)
            out: dict[str, Any] = {"listen": await settle(1.5), "steps": []}
            for mode, seconds, _ in SWITCHES:
                start = time.monotonic()
                ack = await sue.call("monitor_mode", {"callId": call_id, "mode": mode})
                assert ack == {"ok": True}
                out["steps"].append((start, await settle(seconds)))
            seen = len(alice.events["call_monitored"])
            assert await sue.call("monitor_stop", {"callId": call_id}) == {"ok": True}
            await alice.wait("call_monitored", seen + 1, 5)
            out["indicator"] = [m["mode"] for m in alice.events["call_monitored"]]
            forbidden = await alice.call("monitor_call", {"callId": call_id, "mode": "listen"})
            out["forbidden"] = forbidden["error"]["code"]
            await asyncio.to_thread(caller.hangup)
            await alice.wait("call_ended", limit=10)
            out["ears"] = (Ear.of_caller(caller), Ear.of_agent(alice), Ear.of_agent(sue))
            return out
        finally:
            await sue.close()
            await alice.close()
            await asyncio.to_thread(caller.close)

    out = asyncio.run(run())
    caller_ear, alice_ear, sue_ear = out["ears"]
    ears = {"alice": alice_ear, "caller": caller_ear}
    start, end = out["listen"]
    # listen: sue hears caller and agent; nobody hears sue
    assert sue_ear.hears(CALLER_HZ, start, end) > 0.2 and sue_ear.hears(ALICE_HZ, start, end) > 0.2
    assert alice_ear.hears(SUE_HZ, start, end) < 0.01
    assert caller_ear.hears(SUE_HZ, start, end) < 0.01
    # each mode, from 200 ms after its request: sue heard by exactly the parties §6 says,
    # alice still hearing the caller and the caller still hearing alice
    for (mode, _, _), (_, (w_start, w_end)) in zip(SWITCHES, out["steps"], strict=True):
        for name, ear in ears.items():
            heard = ear.hears(SUE_HZ, w_start + 0.2, w_end)
            if name in HEARS_SUE[mode]:
                assert heard > 0.2, (mode, name, heard)
            else:
                assert heard < 0.01, (mode, name, heard)
        assert alice_ear.hears(CALLER_HZ, w_start + 0.2, w_end) > 0.2, mode
        assert caller_ear.hears(ALICE_HZ, w_start + 0.2, w_end) > 0.2, mode
    # and frame by frame: no dropouts of sue at an ear that hears her (a talker's queue
    # too short for the jitter of its frames against the listener's clock loses some)
    # A frame that never came is a dropout too: a window of L seconds holds L / 20 ms
    # frames, one fewer when its edges fall between two arrivals.
    for name, ear in ears.items():
        windows = [(w_start + 0.2, w_end) for (mode, _, _), (_, (w_start, w_end))
                   in zip(SWITCHES, out["steps"], strict=True) if name in HEARS_SUE[mode]]
        frames = [pcm for lo, hi in windows for at, pcm in ear.frames if lo <= at < hi]
        expected = sum(hi - lo for lo, hi in windows) / FRAME
        absent = max(0.0, expected - len(windows) - len(frames))
        missing = sum(share(pcm, SUE_HZ) < 0.3 for pcm in frames)
        print(f"sue's tone missing at {name}'s ear in {missing} of {len(frames)} frames "
              f"({expected:.1f} due)")
        assert expected >= 95, (name, windows)  # the windows are long enough to judge
        assert missing + absent <= DROPOUT_BOUND * expected, (name, missing, absent)
    # sue never hears herself
    assert sue_ear.hears(SUE_HZ, start, out["steps"][-1][1][1]) < 0.01
    # each switch, from the monitor_mode request to the first frame of the new mode at
    # every ear it changes
    previous = "listen"
    measured: list[tuple[str, str, float]] = []
    for (mode, _, changed), (asked, _) in zip(SWITCHES, out["steps"], strict=True):
        for name in changed:
            assert (name in HEARS_SUE[mode]) != (name in HEARS_SUE[previous])
            on = name in HEARS_SUE[mode]
            measured.append((f"{previous}->{mode}", name,
                             ears[name].switched(SUE_HZ, asked, on)))
        previous = mode
    print("mode switch, request to ear: " + ", ".join(
        f"{step} at {name} {took * 1000:.0f} ms" for step, name, took in measured))
    assert max(took for _, _, took in measured) <= SWITCH_BOUND, measured
    assert out["indicator"] == ["listen", *[m for m, _, _ in SWITCHES], None]
    assert out["forbidden"] == "forbidden"
    assert srv.metric("hitl_sip_hub_monitors_total", mode="listen") >= 1


def longest_silence(ear: Ear, start: float, end: float) -> float:
    """The longest stretch of [start, end) with no agent's voice reaching the ear, in
    seconds: between two consecutive frames carrying either agent's tone, the time between
    their arrivals less the 20 ms the first one plays — so silent frames and pauses in
    packet arrival alike count (and so do the window's edges)."""
    voiced = [at for at, pcm in ear.frames if start <= at < end
              and (share(pcm, ALICE_HZ) > 0.2 or share(pcm, BOB_HZ) > 0.2)]
    if not voiced:
        return end - start
    edges = [start - FRAME, *voiced, end]
    return max(0.0, *(b - a - FRAME for a, b in itertools.pairwise(edges)))


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_a_transfer_hands_the_call_over_without_a_gap(
    srv: Server, a5: Alive5StandIn, mode: str,
) -> None:
    async def run() -> dict[str, Any]:
        caller, alice, call_id = await call_with_alice(srv)
        bob = TestAgent(srv.http_url, "bob", PASSWORD, source=tone(BOB_HZ), codecs=("pcmu",))
        out: dict[str, Any] = {"callId": call_id, "offer": alice.events["incoming_call"][0]}
        try:
            await bob.connect()
            bob_id = (await bob.wait("agent_state"))["agentId"]
            out["alice_id"] = (await alice.wait("agent_state"))["agentId"]
            await settle(1.0)  # the bot's audio long gone: only alice's
            out["asked"] = time.monotonic()
            ack = await alice.call("transfer_call", {
                "callId": call_id, "to": {"agentId": bob_id}, "mode": mode,
                "note": "billing question"})
            assert ack == {"ok": True}, ack
            out["incoming"] = await bob.wait("incoming_call", limit=10)
            await bob.accept(call_id)
            await hearing(bob)
            if mode == "warm":  # three-way until alice leaves
                out["three_way"] = await settle(1.0)
                assert await alice.hangup() == {"ok": True}
            out["alice_ended"] = await alice.wait("call_ended", limit=10)
            out["after"] = await settle(1.5)
            out["bob_hears"] = await settle(1.0)  # bob's agent leg: after the promotion too
            await asyncio.to_thread(caller.hangup)
            out["bob_ended"] = await bob.wait("call_ended", limit=10)
            out["ears"] = (Ear.of_caller(caller), Ear.of_agent(alice), Ear.of_agent(bob))
            out["alice_said"] = {(t["role"], t["text"]) for t in
                                 alice.events.get("transcript", []) if t["final"]}
            return out
        finally:
            await bob.close()
            await alice.close()
            await asyncio.to_thread(caller.close)

    out = asyncio.run(run())
    caller_ear, alice_ear, bob_ear = out["ears"]
    incoming = out["incoming"]
    assert incoming["transfer"] == {"fromAgentId": out["alice_id"], "fromName": "alice",
                                    "mode": mode, "note": "billing question"}
    # the conversation so far: the bot's turns as alice was shown them (the flow's
    # question among them), and only lines alice was shown as said (tones are not words:
    # the words case is test_the_thread_reads_the_first_agent_the_notice_then_the_second)
    bot_turns = [(t["role"], t["text"]) for t in incoming["botTranscript"]]
    alice_got = [(t["role"], t["text"]) for t in out["offer"]["botTranscript"]]
    assert bot_turns[:len(alice_got)] == alice_got, (bot_turns, alice_got)
    assert ("bot", "Press one for billing.") in bot_turns, bot_turns
    # and what the bot said as it handed the call over: after the handoff's snapshot (so
    # perhaps not in alice's ring), before or after alice took the call
    said_after = bot_turns[len(alice_got):] + [
        (t["role"], t["text"]) for t in incoming["humanTranscript"]]
    assert ("bot", "Connecting you.") in said_after, (bot_turns, incoming["humanTranscript"])
    assert all((t["role"], t["text"]) in out["alice_said"]
               for t in incoming["humanTranscript"]), incoming["humanTranscript"]
    assert out["alice_ended"]["reason"] == "transferred"
    assert out["bob_ended"]["by"] == "caller"
    start, end = out["after"]
    assert caller_ear.hears(BOB_HZ, start, end) > 0.3
    assert caller_ear.hears(ALICE_HZ, start, end) < 0.01
    assert bob_ear.hears(CALLER_HZ, start, end) > 0.3
    if mode == "warm":
        w_start, w_end = out["three_way"]
        assert caller_ear.hears(ALICE_HZ, w_start, w_end) > 0.1
        assert caller_ear.hears(BOB_HZ, w_start, w_end) > 0.1
        assert alice_ear.hears(BOB_HZ, w_start, w_end) > 0.1
        assert bob_ear.hears(ALICE_HZ, w_start, w_end) > 0.1
    gap = longest_silence(caller_ear, out["asked"], end)
    print(f"{mode} transfer: longest silence the caller heard at the hand-over "
          f"{gap * 1000:.0f} ms")
    assert gap <= GAP_BOUND, gap
    thread = a5.threads.get(incoming["threadId"])
    a5.wait_for(lambda: thread is not None and any(
        m["message_content"].startswith("Transferred to bob") for m in thread.messages), 15,
        what="the transfer's notice in the alive5 thread")
    assert srv.metric("hitl_sip_hub_transfers_total", mode=mode, outcome="completed") >= 1


def test_a_declined_transfer_leaves_the_call_with_the_first_agent(srv: Server) -> None:
    async def run() -> dict[str, Any]:
        caller, alice, call_id = await call_with_alice(srv)
        bob = TestAgent(srv.http_url, "bob", PASSWORD, codecs=("pcmu",))
        try:
            await bob.connect()
            await alice.call("transfer_call", {"callId": call_id, "to": {"queue": "support"},
                                               "mode": "cold"})
            await bob.wait("incoming_call", limit=10)
            declined = await bob.call("decline_call", {"callId": call_id})
            failed = await alice.wait("transfer_failed", limit=10)
            window = await settle(1.0)
            number = await alice.call("transfer_call", {
                "callId": call_id, "to": {"number": "+15551234567"}, "mode": "cold"})
            await asyncio.to_thread(caller.hangup)
            await alice.wait("call_ended", limit=10)
            return {"declined": declined, "failed": failed, "window": window,
                    "number": number, "ear": Ear.of_caller(caller)}
        finally:
            await bob.close()
            await alice.close()
            await asyncio.to_thread(caller.close)

    out = asyncio.run(run())
    assert out["declined"] == {"ok": True}
    assert out["failed"]["reason"] == "declined"
    start, end = out["window"]
    assert out["ear"].hears(ALICE_HZ, start, end) > 0.3  # alice still has the caller
    assert out["number"]["error"]["code"] == "unavailable"
    assert srv.metric("hitl_sip_hub_transfers_total", mode="cold", outcome="declined") >= 1


def speech_wav(path: Path, pcm16k: bytes, lead: float) -> Path:
    """``pcm16k`` after ``lead`` seconds of silence, then 3 s more of it, as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(int(lead * 16000) * 2) + pcm16k + bytes(96000))
    return path


async def final_from(agent: TestAgent, role: str, limit: float = 20) -> None:
    """Until ``agent`` is shown a final transcript line of ``role``."""
    seen = 0
    async with asyncio.timeout(limit):
        while not any(t["role"] == role and t["final"]
                      for t in agent.events.get("transcript", [])):
            seen = len(agent.events.get("transcript", [])) + 1
            await agent.wait("transcript", seen, limit)


def test_the_thread_reads_the_first_agent_the_notice_then_the_second(
    srv: Server, a5: Alive5StandIn, tmp_path: Path,
) -> None:
    """Words, not tones: alice speaks, sue whispers to her (alice's live transcript only,
    never alive5), alice hands the call to bob cold, bob speaks. The alive5 thread has
    alice's words, the notice, then bob's, in that order."""
    clips = {c.name.rsplit("-", 1)[1]: c for c in _librivox()}
    alice_clip, sue_clip, bob_clip = clips["0880"], clips["0890"], clips["0930"]

    async def run() -> dict[str, Any]:
        alice = TestAgent(srv.http_url, "alice", PASSWORD, codecs=("pcmu",), source=wav_source(
            speech_wav(tmp_path / "alice.wav", alice_clip.pcm, 1.0), loop=False))
        await alice.connect()
        caller = RtpCaller(srv.sip_port())
        sue = TestAgent(srv.http_url, "sue", PASSWORD, codecs=("pcmu",), source=wav_source(
            speech_wav(tmp_path / "sue.wav", sue_clip.pcm, 0.5), loop=False))
        bob = TestAgent(srv.http_url, "bob", PASSWORD, codecs=("pcmu",), source=wav_source(
            speech_wav(tmp_path / "bob.wav", bob_clip.pcm, 1.0), loop=False))
        try:
            await asyncio.to_thread(caller.call, 10)
            caller.start_media()
            offer = await alice.answer_next_call(limit=30)
            call_id = str(offer["callId"])
            await alice.wait("call_connected", limit=15)
            await final_from(alice, "agent")  # alice's sentence
            await asyncio.sleep(1.5)  # its last words
            await sue.connect()
            await sue.monitor(call_id, "whisper")
            await final_from(alice, "supervisor")
            await asyncio.sleep(1.5)
            await sue.call("monitor_stop", {"callId": call_id})
            await bob.connect()
            bob_id = (await bob.wait("agent_state"))["agentId"]
            await alice.call("transfer_call", {"callId": call_id, "to": {"agentId": bob_id},
                                               "mode": "cold", "note": "over to you"})
            incoming = await bob.wait("incoming_call", limit=10)
            await bob.accept(call_id)
            await alice.wait("call_ended", limit=10)
            await final_from(bob, "agent")
            await asyncio.sleep(bob_clip.seconds)  # the rest of bob's sentence
            await asyncio.to_thread(caller.hangup)
            await bob.wait("call_ended", limit=10)
            return {"threadId": str(offer["threadId"]), "offer": offer, "incoming": incoming,
                    "alice_saw": alice.events.get("transcript", [])}
        finally:
            for peer in (sue, bob, alice):
                await peer.close()
            await asyncio.to_thread(caller.close)

    out = asyncio.run(run())
    thread_id = out["threadId"]
    a5.wait_for(lambda: thread_id in a5.threads and a5.threads[thread_id].ended, 20,
                what="the end of the thread")
    said = [(m["sender"], m["message_content"]) for m in a5.threads[thread_id].messages]
    texts = [t for _, t in said]
    notice = next(i for i, t in enumerate(texts) if t.startswith("Transferred to bob"))
    alice_words = " ".join(t for r, t in said[:notice] if r == "human_agent")
    bob_words = " ".join(t for r, t in said[notice + 1:] if r == "human_agent")
    assert word_error_rate(alice_clip.reference, alice_words) <= AGENT_WER_BOUND, said
    assert word_error_rate(bob_clip.reference, bob_words) <= AGENT_WER_BOUND, said
    assert said[notice][0] == "voice_agent"  # posted like a bot turn
    whispered = " ".join(c["text"] for c in out["alice_saw"]
                         if c["role"] == "supervisor" and c["final"])
    assert word_error_rate(sue_clip.reference, whispered) <= AGENT_WER_BOUND, out["alice_saw"]
    assert not any(w in " ".join(texts) for w in whispered.split() if len(w) > 6), said
    # bob was rung with the conversation so far: the bot's turns alice got, and alice's
    # words as she was shown them
    incoming = out["incoming"]
    print(f"bob's incoming_call: botTranscript {incoming['botTranscript']}, "
          f"humanTranscript {incoming['humanTranscript']}")
    alice_got = out["offer"]["botTranscript"]
    assert incoming["botTranscript"][:len(alice_got)] == alice_got
    bob_got = [t["text"] for t in incoming["botTranscript"] + incoming["humanTranscript"]]
    assert "Press one for billing." in bob_got and "Connecting you." in bob_got, bob_got
    carried = " ".join(t["text"] for t in incoming["humanTranscript"] if t["role"] == "agent")
    alice_final = " ".join(c["text"] for c in out["alice_saw"]
                           if c["role"] == "agent" and c["final"])
    assert carried == alice_final, (carried, alice_final)
    assert word_error_rate(alice_clip.reference, carried) <= AGENT_WER_BOUND, carried
