"""The worker's agent peer against a real aiortc 'browser' on 127.0.0.1, no SIP: both
directions carry the right tone with each WebRTC codec, and the caller track is paced."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testing.agent import MicrophoneTrack, tone
from hitl_sip.testing.analysis import dominant_frequency, rms_dbfs
from hitl_sip.worker.bridge import use_immediate_jitter_buffer
from hitl_sip.worker.peer import AgentPeer, PeerSettings, codec_preferences


def caller_frame(index: int, freq: float = 440.0, rate: int = 8000) -> bytes:
    n = rate // 50
    t = (np.arange(n) + index * n) / rate
    return (np.sin(2 * math.pi * freq * t) * 0.3 * 32767).astype("<i2").tobytes()


async def bridge_once(codec: str, seconds: float = 1.5, lean: bool = True) -> dict[str, Any]:
    install_host_filter(["127.0.0.1"])
    to_caller: list[bytes] = []
    media: list[bool] = []
    peer = AgentPeer("c1", PeerSettings(codecs=(codec,), media_timeout=0.6, lean_g711=lean),
                     on_agent_frame=to_caller.append, on_media=media.append)
    browser = RTCPeerConnection()
    mic = MicrophoneTrack(tone(1000))
    transceiver = browser.addTransceiver(mic, direction="sendrecv")
    transceiver.setCodecPreferences(codec_preferences(("opus", "pcmu", "pcma")))
    use_immediate_jitter_buffer(transceiver.receiver)
    heard: list[np.ndarray] = []
    rates: list[int] = []
    readers: list[asyncio.Task[None]] = []

    @browser.on("track")  # type: ignore[untyped-decorator]
    def on_track(track: Any) -> None:
        async def read() -> None:
            while True:
                frame = await track.recv()
                rates.append(frame.sample_rate)
                heard.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0])
        readers.append(asyncio.ensure_future(read()))

    await browser.setLocalDescription(await browser.createOffer())
    answer = await peer.answer(browser.localDescription.sdp)
    await browser.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    index = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < seconds:  # the trunk's clock: one caller frame per 20 ms
        peer.caller_track.push(caller_frame(index))
        index += 1
        await asyncio.sleep(start + index * 0.02 - loop.time())
    await mic_stop(browser)
    await asyncio.sleep(1.0)  # the agent's audio stops: the peer notices after 0.6 s
    stats = peer.stats
    ours_report = await peer.pc.getStats()
    theirs_report = await browser.getStats()
    await peer.close()
    await browser.close()
    # 1 s in the middle: after the start, before the caller frames stop
    ours = np.concatenate(heard[10:60]).astype("<i2").tobytes() if heard else b""
    def rtp(report: Any, kind: str, field: str) -> int:
        return sum(int(getattr(s, field)) for s in report.values() if s.type == kind)
    return {"codec": peer.codec, "to_caller": to_caller, "media": media, "stats": stats,
            "heard": ours, "rate": rates[-1] if rates else 0, "sent": index, "lean": peer.lean,
            "aiortc_sent": rtp(ours_report, "outbound-rtp", "packetsSent"),
            "we_received": rtp(ours_report, "inbound-rtp", "packetsReceived"),
            "browser_received": rtp(theirs_report, "inbound-rtp", "packetsReceived")}


async def mic_stop(pc: RTCPeerConnection) -> None:
    for sender in pc.getSenders():
        sender.replaceTrack(None)


@pytest.mark.parametrize(("codec", "lean"), [("pcmu", True), ("pcmu", False), ("opus", True)])
def test_both_directions_carry_their_tone(codec: str, lean: bool) -> None:
    out = asyncio.run(bridge_once(codec, lean=lean))
    assert out["codec"] == codec
    # caller -> agent: the browser hears 440 Hz
    assert out["heard"], "the browser heard nothing"
    assert abs(dominant_frequency(out["heard"], out["rate"]) - 440) < 15
    assert rms_dbfs(out["heard"]) > -15.0  # sent at -13.5 dBFS: no level lost on the way
    # agent -> caller: 20 ms frames at the call's rate carrying 1 kHz
    frames = out["to_caller"]
    assert len(frames) > 40
    assert all(len(f) == 320 for f in frames)
    assert abs(dominant_frequency(b"".join(frames[5:]), 8000) - 1000) < 15
    assert rms_dbfs(b"".join(frames[5:])) > -15.0
    # the agent's audio was reported flowing, then stopped once the browser went quiet
    assert out["media"] == [True, False]
    # every caller frame was pulled: at most a few at the edges became silence
    stats = out["stats"]
    assert stats.to_agent_frames >= out["sent"] - 3
    assert stats.to_agent_trimmed == 0
    # the browser's receiver counted what it got, and so did ours (the quality figures)
    assert out["browser_received"] >= out["sent"] - 5
    assert out["we_received"] >= len(frames)
    on_lean = out["lean"]
    if codec == "pcmu" and lean:  # every packet both ways on the lean path, none by aiortc
        assert on_lean is not None and out["aiortc_sent"] == 0
        assert on_lean.sent == stats.to_agent_frames and on_lean.received == len(frames)
        assert on_lean.refused == 0
    else:
        assert on_lean is None and out["aiortc_sent"] >= out["sent"] - 5


def test_an_offer_without_a_common_codec_is_refused_with_the_reason() -> None:
    async def run() -> str:
        install_host_filter(["127.0.0.1"])
        peer = AgentPeer("c2", PeerSettings(codecs=("pcma",)), on_agent_frame=lambda f: None)
        browser = RTCPeerConnection()
        t = browser.addTransceiver("audio", direction="sendrecv")
        t.setCodecPreferences(codec_preferences(("opus",)))
        await browser.setLocalDescription(await browser.createOffer())
        try:
            await peer.answer(browser.localDescription.sdp)
        except ValueError as e:
            return str(e)
        finally:
            await peer.close()
            await browser.close()
        return "answered"

    message = asyncio.run(run())
    assert "no common audio codec" in message and "opus" in message and "pcma" in message


