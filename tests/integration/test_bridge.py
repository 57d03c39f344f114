"""The media bridge end to end: a SIPp caller playing 440 Hz reaches an agent node, the
test agent (python-socketio + aiortc, :mod:`hitl_sip.testing.agent`) accepts and plays 1 kHz.

What the caller hears is the RTP the server sends to SIPp's media port, captured on the
loopback interface (root); the packet count at each step of the test marks the caller's
timeline (one packet = 20 ms). Each control is checked from the caller's side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hitl_sip.media.g711 import ulaw_decode
from hitl_sip.media.rtp import RtpPacket
from hitl_sip.testing.agent import RECORD_RATE, TestAgent, tone
from hitl_sip.testing.analysis import dominant_frequency, rms_dbfs
from tests.integration.test_agents import PASSWORD, add_agent
from tests.support.net import UdpSniffer, free_port_pair
from tests.support.server import ROOT, Server, running_server
from tests.support.sipp import SippResult, finish, run_sipp

pytestmark = pytest.mark.sipp

FLOW = """
name: bridge
start: agent
nodes:
  agent:
    type: agent
    message: "Connecting you."
    fallback: bye
    resume: back
  back:
    type: say
    text: "Welcome back to the virtual assistant. I will stay on the line with you now."
    barge_in: false  # the caller's steady tone would count as talking over it
    next: wait
  wait:
    type: ask
    prompt: "Is there anything else I can do for you today?"
    timeout: 30
    retries: 0
    branches:
      - {dtmf: "9", next: bye}
    fail: bye
  bye:
    type: hangup
"""


@contextmanager
def bridge_server(tmp_path: Path, codec: str = "pcmu",
                  webrtc: dict[str, Any] | None = None,
                  routing: dict[str, Any] | None = None,
                  worker: dict[str, Any] | None = None) -> Iterator[Server]:
    flow = tmp_path / "bridge.yaml"
    flow.write_text(FLOW)
    extra = {
        "bot": {"flow": str(flow)},
        "worker": worker or {},
        "routing": {"queue_timeout": 30, **(routing or {})},
        "webrtc": {"codecs": [codec], "host_addresses": ["127.0.0.1"], **(webrtc or {})},
    }
    with running_server(tmp_path, extra=extra) as srv:
        add_agent(srv.data_dir, "alice")
        yield srv


class CallerEar:
    """What the server sent to the caller, in order, with the test's marks."""

    def __init__(self, sniffer: UdpSniffer) -> None:
        self.sniffer = sniffer
        self.marks: dict[str, int] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = len(self.sniffer.packets)

    def packets(self) -> list[RtpPacket]:
        return [p for p in (RtpPacket.parse(b) for b in self.sniffer.packets)
                if p.payload_type == 0]

    def pcm(self, start: int, end: int) -> bytes:
        """Audio of packets ``start`` .. ``end`` (arrival order), 8 kHz s16le."""
        return ulaw_decode(b"".join(p.payload for p in self.packets()[start:end]))


def tone_share(pcm: bytes, freq: float, rate: int = 8000) -> float:
    """Fraction of the signal's energy within ±60 Hz of ``freq``."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
    bins = np.fft.rfftfreq(len(x), 1 / rate)
    total = float(spectrum[1:].sum()) or 1.0
    return float(spectrum[(bins > freq - 60) & (bins < freq + 60)].sum()) / total


def windows(ear: CallerEar, start: int, end: int, size: int = 10) -> list[bytes]:
    return [ear.pcm(i, i + size) for i in range(start, end - size + 1, size)]


def wait_heard(ear: CallerEar, ok: Callable[[bytes], bool], packets: int, what: str,
               timeout: float = 15.0) -> None:
    """Wait until every 10-packet window of the last ``packets`` packets the caller got
    passes ``ok``."""
    deadline = time.monotonic() + timeout
    while True:
        n = len(ear.packets())
        if n >= packets and all(ok(w) for w in windows(ear, n - packets, n)):
            return
        assert time.monotonic() < deadline, f"the caller never heard {what}"
        time.sleep(0.05)


def wait_packets(ear: CallerEar, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(ear.sniffer.packets) < count:
        assert time.monotonic() < deadline, f"the caller got {len(ear.sniffer.packets)} packets"
        time.sleep(0.05)


def record_of(srv: Server) -> dict[str, Any]:
    srv.wait_for(lambda: len(srv.call_records()) == 1, what="the call record")
    return srv.call_records()[0]


def states(record: dict[str, Any]) -> list[str]:
    return [e["state"] for e in record["events"] if e["type"] == "state"]


def assert_continuous(ear: CallerEar) -> None:
    """One RTP stream from answer to hang-up: no sequence or timestamp jump at the switch
    from the bot's audio to the agent's, one SSRC, no marker after the first packet."""
    pkts = ear.packets()
    assert len({p.ssrc for p in pkts}) == 1
    seq = [p.sequence_number for p in pkts]
    ts = [p.timestamp for p in pkts]
    gaps = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(seq)) if (b - a) % 65536 != 1]
    assert not gaps, f"seq gap {gaps[:10]} of {len(seq)}"
    assert all((b - a) % 2**32 == 160 for a, b in itertools.pairwise(ts)), "ts jump"
    assert not any(p.marker for p in pkts[1:])


async def accept_call(srv: Server, codec: str, delay: float = 0.0) -> TestAgent:
    agent = TestAgent(srv.http_url, "alice", PASSWORD, source=tone(1000), codecs=(codec,))
    await agent.connect()
    await agent.answer_next_call(limit=30, delay=delay)
    await agent.wait("call_connected", limit=15)
    return agent


@pytest.mark.parametrize(("codec", "relay"), [("pcmu", False), ("opus", False),
                                              ("pcmu", True), ("opus", True)],
                         ids=["pcmu", "opus", "pcmu-relay", "opus-relay"])
def test_both_directions_carry_the_right_audio_and_no_bot_audio_after_connect(
    tmp_path: Path, codec: str, relay: bool
) -> None:
    with bridge_server(tmp_path, codec, worker={"trunk_relay": relay}) as srv:
        media_port = free_port_pair()
        with UdpSniffer(media_port) as sniffer:
            ear = CallerEar(sniffer)
            sipp = run_sipp("tone_wait_bye", srv.sip_port(), tmp_path, media_port=media_port,
                            background=True)
            assert not isinstance(sipp, SippResult)

            async def agent_side() -> tuple[TestAgent, dict[str, Any]]:
                agent = await accept_call(srv, codec, delay=3.0)  # the caller hears hold
                ear.mark("connected")
                await asyncio.sleep(3.0)
                ear.mark("hangup")
                await agent.hangup()
                ended = await agent.wait("call_ended")
                await agent.close()
                return agent, ended

            agent, ended = asyncio.run(agent_side())
            result = finish(sipp, tmp_path)
        assert result.ok, result.explain() + srv.log()  # the caller got the agent's BYE
        record = record_of(srv)
        # with worker.trunk_relay the bridged audio went through the call's relay (and the
        # caller's stream stays one, continuous, below)
        assert ("relay in front of pjmedia" in srv.log()) == relay

    assert agent.codec == codec
    assert ended["by"] == "agent"
    assert record["endedBy"] == "agent"
    assert states(record) == ["bot", "queued", "human", "ended"]
    assert record["bridge"][0]["codec"] == codec

    # caller -> agent: the agent heard the caller's 440 Hz
    heard = bytes(agent.heard[int(0.5 * RECORD_RATE) * 2:])
    assert rms_dbfs(heard) > -20
    assert abs(dominant_frequency(heard, RECORD_RATE) - 440) < 10

    # agent -> caller: after the switch, every 200 ms the caller hears the agent's 1 kHz,
    # and nothing else (no hold music, no bot prompt)
    connected, hangup = ear.marks["connected"], ear.marks["hangup"]
    before = windows(ear, connected - 60, connected - 10)
    assert all(tone_share(w, 1000) < 0.5 for w in before), [
        (round(tone_share(w, 1000), 2), round(rms_dbfs(w))) for w in windows(ear, 0, hangup)]
    assert any(rms_dbfs(w) > -40 for w in before), "the caller heard no hold audio"
    onset = next(i for i in range(connected - 25, hangup)
                 if tone_share(ear.pcm(i, i + 5), 1000) > 0.9)
    after = windows(ear, onset + 5, hangup - 5)
    assert len(after) >= 10
    shares = [tone_share(w, 1000) for w in after]
    # A leak of hold music or a prompt takes a window far below 0.9; one Opus frame
    # concealed on a loaded machine was seen at 0.967 (CI), so single windows get 0.95 and
    # the typical window must stay near-pure.
    assert min(shares) > 0.95, ("something other than the agent reached the caller", shares)
    assert sorted(shares)[len(shares) // 2] > 0.98, shares
    for w in after:
        assert rms_dbfs(w) > -16
    assert_continuous(ear)


def test_mute_silences_the_agent_for_the_caller_and_return_to_bot_resumes_the_flow(
    tmp_path: Path,
) -> None:
    with bridge_server(tmp_path) as srv:
        media_port = free_port_pair()
        with UdpSniffer(media_port) as sniffer:
            ear = CallerEar(sniffer)
            sipp = run_sipp("tone_then_bye", srv.sip_port(), tmp_path, media_port=media_port,
                            background=True, duration_ms=16000)
            assert not isinstance(sipp, SippResult)

            async def agent_side() -> list[Any]:
                agent = await accept_call(srv, "pcmu")
                await asyncio.sleep(1.5)
                ear.mark("mute")
                acks = [await agent.mute(True)]
                await asyncio.sleep(1.5)
                ear.mark("unmute")
                acks.append(await agent.mute(False))
                await asyncio.sleep(1.5)
                ear.mark("return")
                acks.append(await agent.return_to_bot())
                await asyncio.sleep(4.0)
                ear.mark("end")
                await agent.close()
                return acks

            acks = asyncio.run(agent_side())
            result = finish(sipp, tmp_path)
        assert result.ok, result.explain() + srv.log()
        record = record_of(srv)

    assert acks == [{"ok": True}] * 3
    m = ear.marks
    muted = windows(ear, m["mute"] + 5, m["unmute"])
    assert muted and all(rms_dbfs(w) < -55 for w in muted), "the caller heard a muted agent"
    talking = windows(ear, m["unmute"] + 5, m["return"])
    assert talking and all(tone_share(w, 1000) > 0.97 for w in talking), "unmute lost"
    # back with the bot: its prompt (speech, not the agent's tone) and the call lives on
    bot = ear.pcm(m["return"] + 10, m["end"])
    assert rms_dbfs(bot) > -40
    assert tone_share(bot, 1000) < 0.3
    assert states(record) == ["bot", "queued", "human", "bot", "ended"]
    assert record["endedBy"] == "caller"
    texts = [t for t in record["events"] if t["type"] == "state"]
    assert texts[-1]["state"] == "ended"
    assert_continuous(ear)


def test_caller_hangup_ends_the_agent_s_call_and_closes_the_peer(tmp_path: Path) -> None:
    with bridge_server(tmp_path) as srv:
        media_port = free_port_pair()
        sipp = run_sipp("tone_then_bye", srv.sip_port(), tmp_path, media_port=media_port,
                        background=True, duration_ms=7000)
        assert not isinstance(sipp, SippResult)

        async def agent_side() -> dict[str, Any]:
            agent = await accept_call(srv, "pcmu")
            ended = await agent.wait("call_ended", limit=20)
            await agent.close()
            return ended

        ended = asyncio.run(agent_side())
        result = finish(sipp, tmp_path)
        assert result.ok, result.explain()
        record = record_of(srv)
    assert ended["by"] == "caller"
    assert record["endedBy"] == "caller"
    bridge = record["bridge"][0]
    assert bridge["to_agent_frames"] > 50 and bridge["from_agent_frames"] > 50


def test_a_killed_agent_leaves_the_caller_on_hold_and_the_call_is_queued_again(
    tmp_path: Path,
) -> None:
    with bridge_server(tmp_path, webrtc={"media_timeout": 1.0},
                       routing={"reconnect_grace": 2}) as srv:
        media_port = free_port_pair()
        with UdpSniffer(media_port) as sniffer:
            ear = CallerEar(sniffer)
            sipp = run_sipp("tone_then_bye", srv.sip_port(), tmp_path, media_port=media_port,
                            background=True, duration_ms=12000)
            assert not isinstance(sipp, SippResult)
            agent = subprocess.Popen(
                [sys.executable, "-m", "hitl_sip.testing.agent", "--url", srv.http_url,
                 "--user", "alice", "--password-env", "AGENT_PASSWORD", "--tone", "1000",
                 "--codec", "pcmu", "--host-address", "127.0.0.1"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                env={**os.environ, "AGENT_PASSWORD": PASSWORD})
            try:
                assert agent.stdout is not None
                lines = [json.loads(agent.stdout.readline()) for _ in range(2)]
                assert lines[0] == {"ready": True} and "accepted" in lines[1], lines
                # the agent's tone has reached the caller for 0.8 s on end
                wait_heard(ear, lambda w: tone_share(w, 1000) > 0.97, 40, "the agent's tone")
                ear.mark("kill")
                agent.send_signal(signal.SIGKILL)
                agent.wait(5)
                wait_packets(ear, ear.marks["kill"] + 200)  # 4 s of what the caller hears
                ear.mark("later")
            finally:
                if agent.poll() is None:
                    agent.kill()
            result = finish(sipp, tmp_path)
        assert result.ok, result.explain() + srv.log()
        record = record_of(srv)

    m = ear.marks
    talking = windows(ear, m["kill"] - 40, m["kill"])
    assert all(tone_share(w, 1000) > 0.97 for w in talking)
    # once media_timeout (1 s) has passed after the kill the caller hears hold audio
    hold = windows(ear, m["kill"] + 100, m["later"])  # 2 s on: margin over the 1 s timeout
    assert hold and all(rms_dbfs(w) > -45 and tone_share(w, 1000) < 0.3 for w in hold)
    assert states(record)[:4] == ["bot", "queued", "human", "queued"]
    assert record["endedBy"] == "caller"  # the call survived until the caller hung up
    assert_continuous(ear)

