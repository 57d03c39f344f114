"""Units of the media bridge: the caller track's pacing and bounds, the immediate audio
jitter buffer, the agent audio's conversion to the call's frames, the ICE address rules."""

from __future__ import annotations

import asyncio
import fractions
import math
import queue
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from aiortc import RTCRtpCodecParameters
from aiortc.codecs import get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from av import AudioFrame, CodecContext, Packet

from hitl_sip.config import load_config
from hitl_sip.errors import ConfigError
from hitl_sip.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from hitl_sip.media.ice import advertise_public, host_addresses
from hitl_sip.testing.analysis import dominant_frequency, rms_dbfs
from hitl_sip.worker.bridge import (
    AgentAudio,
    CallerTrack,
    ImmediateJitterBuffer,
    OpusPacketizer,
    _InlineDecodeQueue,
    decode_on_loop,
)


def pcm(value: int, samples: int = 160) -> bytes:
    return np.full(samples, value, dtype="<i2").tobytes()


def samples_of(frame: AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1)


async def audio(track: CallerTrack) -> AudioFrame:
    """The next pull of a track that hands out frames (no codec, or Opus)."""
    frame = await track.recv()
    assert isinstance(frame, AudioFrame)
    return frame


async def test_underrun_is_silence_and_timestamps_stay_continuous() -> None:
    track = CallerTrack(8000, first_frame_wait=0.01)
    track.push(pcm(100))
    first = await audio(track)
    second = await audio(track)  # nothing pushed: silence, counted
    track.push(pcm(300))
    third = await audio(track)
    assert samples_of(first)[0] == 100 and not samples_of(second).any()
    assert samples_of(third)[0] == 300
    assert [first.pts, second.pts, third.pts] == [0, 160, 320]
    assert first.time_base == fractions.Fraction(1, 8000) and first.sample_rate == 8000
    assert track.stats.to_agent_silence == 1 and track.stats.to_agent_frames == 2


async def test_a_waiting_pull_returns_when_the_frame_arrives_not_on_a_clock() -> None:
    """Frame-driven pulls: the frame goes on as it comes; a frame that does not come within
    the grace after its time becomes silence, and the pull after it waits again."""
    track = CallerTrack(8000, grace=0.01)
    track.push(pcm(1))
    await audio(track)
    pull = asyncio.ensure_future(audio(track))
    await asyncio.sleep(0)  # the pull is now waiting for a frame
    assert not pull.done()
    pushed = time.monotonic()
    track.push(pcm(2))
    frame = await pull
    assert time.monotonic() - pushed < 0.01 and samples_of(frame)[0] == 2
    started = time.monotonic()
    silence = await audio(track)  # nothing comes: due 20 ms after frame 2, + 10 ms grace
    waited = time.monotonic() - started
    assert not samples_of(silence).any() and track.stats.to_agent_silence == 1
    assert 0.02 <= waited < 0.2
    assert [frame.pts, silence.pts] == [160, 320]


async def test_frames_queued_before_the_first_pull_are_stale_and_dropped() -> None:
    track = CallerTrack(8000)
    for value in (1, 2, 3, 4):
        track.push(pcm(value))
    frame = await audio(track)
    assert samples_of(frame)[0] == 4  # the newest: the agent does not hear 60 ms late


async def test_a_standing_queue_is_trimmed_so_latency_cannot_creep() -> None:
    track = CallerTrack(8000)
    track.push(pcm(0))
    await audio(track)
    track.push(pcm(1))
    track.push(pcm(2))  # a burst after a stall: one frame more than the pull rate
    for i in range(3, 15):  # then one frame per pull: the extra frame would stay forever
        track.push(pcm(i))
        await audio(track)
    assert track.stats.to_agent_trimmed == 1
    assert len(track._queue) == 1 and track.stats.to_agent_silence == 0


def opus_decoded(packets: list[bytes]) -> np.ndarray:
    """What a receiver hears: libopus at 48 kHz mono, as a browser decodes (any rate)."""
    decoder = CodecContext.create("libopus", "r")
    decoder.format = "s16"
    decoder.layout = "mono"
    decoder.sample_rate = 48000
    frames = [f for p in packets for f in decoder.decode(Packet(p))]
    return np.concatenate([samples_of(f) for f in frames])


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_the_opus_track_hands_aiortc_packets_encoded_at_the_calls_rate(
        rate: int) -> None:
    """No 48 kHz stereo frame for aiortc's encoder (upsampled, duplicated, complexity 10):
    Opus packets of the caller's mono audio, one per pull, 48 kHz timestamps, and the
    tone comes out of a stock decoder at its pitch and level."""
    track = CallerTrack(rate, first_frame_wait=0.01)
    track.set_codec("opus")
    n = rate // 50
    packets: list[Packet[Any]] = []
    for i in range(50):
        t = (np.arange(n) + i * n) / rate
        track.push((np.sin(2 * math.pi * 1000 * t) * 8000).astype("<i2").tobytes())
        packet = await track.recv()
        assert isinstance(packet, Packet)
        packets.append(packet)
    assert [p.pts for p in packets[:3]] == [0, 960, 1920]
    assert all(p.time_base == fractions.Fraction(1, 48000) for p in packets)
    assert all(len(bytes(p)) < 160 for p in packets[5:])  # ~24 kbit/s, not 96
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000,
                                                channels=2, payloadType=111))
    assert encoder.pack(packets[2]) == ([bytes(packets[2])], 1920)
    heard = opus_decoded([bytes(p) for p in packets])
    assert len(heard) == 50 * 960
    tail = heard[-9600:].astype("<i2").tobytes()
    assert abs(dominant_frequency(tail, 48000) - 1000) < 20
    sent = 20 * math.log10(8000 / math.sqrt(2) / 32768)
    assert abs(rms_dbfs(tail) - sent) < 1.5


def test_the_opus_packetizer_refuses_a_rate_libopus_does_not_take() -> None:
    with pytest.raises(ValueError, match="44100"):
        OpusPacketizer(44100)


@pytest.mark.parametrize(("codec", "decode"), [("pcmu", ulaw_decode), ("pcma", alaw_decode)])
async def test_the_g711_track_hands_aiortc_encoded_packets(
        codec: str, decode: Callable[[bytes], bytes]) -> None:
    """No frame for aiortc's encoder (a thread-pool hop per frame): the payload itself,
    bit-exact G.711 of the caller's samples, with continuous 8 kHz timestamps."""
    track = CallerTrack(8000, first_frame_wait=0.01)
    track.set_codec(codec)
    caller = np.linspace(-20000, 20000, 160).astype("<i2").tobytes()
    track.push(caller)
    first = await track.recv()
    second = await track.recv()  # nothing queued: encoded silence
    assert isinstance(first, Packet) and isinstance(second, Packet)
    assert bytes(first) == (ulaw_encode if codec == "pcmu" else alaw_encode)(caller)
    assert len(bytes(first)) == 160
    assert np.abs(np.frombuffer(decode(bytes(second)), "<i2")).max() <= 8  # A-law: ±8
    assert [first.pts, second.pts] == [0, 160]
    assert first.time_base == fractions.Fraction(1, 8000)
    # aiortc's own packer takes it as is
    encoder = get_encoder(RTCRtpCodecParameters(mimeType=f"audio/{codec.upper()}",
                                                clockRate=8000, payloadType=0))
    assert encoder.pack(first) == ([bytes(first)], 0)


async def test_a_16khz_call_is_resampled_before_g711() -> None:
    track = CallerTrack(16000, first_frame_wait=0.01)
    track.set_codec("pcmu")
    t = np.arange(320) / 16000
    for _ in range(3):
        track.push((np.sin(2 * math.pi * 1000 * t) * 8000).astype("<i2").tobytes())
        packet = await track.recv()
    assert isinstance(packet, Packet) and len(bytes(packet)) == 160
    decoded = np.frombuffer(ulaw_decode(bytes(packet)), "<i2")
    assert abs(dominant_frequency(decoded.tobytes(), 8000) - 1000) < 30


@pytest.mark.parametrize(("codec", "encode", "decode"),
                         [("PCMU", ulaw_encode, ulaw_decode), ("PCMA", alaw_encode, alaw_decode)])
async def test_the_agents_g711_decodes_on_the_loop(
        codec: str, encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]) -> None:
    """The receiver's decoder queue stand-in: G.711 straight into the track's queue as
    8 kHz mono frames; anything else, and the thread's stop, reach aiortc's queue."""
    inner: queue.Queue[Any] = queue.Queue()
    output: asyncio.Queue[object] = asyncio.Queue()
    shim = _InlineDecodeQueue(inner, SimpleNamespace(_track=SimpleNamespace(_queue=output)))
    payload = encode(np.linspace(-9000, 9000, 160).astype("<i2").tobytes())
    g711 = RTCRtpCodecParameters(mimeType=f"audio/{codec}", clockRate=8000, payloadType=0)
    shim.put((g711, JitterFrame(data=payload, timestamp=480)))
    frame = output.get_nowait()
    assert isinstance(frame, AudioFrame) and inner.empty()
    assert (frame.layout.name, frame.sample_rate, frame.samples, frame.pts) == (
        "mono", 8000, 160, 480)
    assert samples_of(frame).astype("<i2").tobytes() == decode(payload)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                 payloadType=111)
    shim.put((opus, JitterFrame(data=b"\x01", timestamp=0)))
    shim.put(None)
    assert inner.get_nowait()[0] is opus and shim.get() is None and output.empty()


def test_with_a_sink_the_agents_g711_skips_frames_and_queues() -> None:
    """The bridge's own path: each packet's samples straight to AgentAudio, which cuts the
    call's 20 ms frames; a failing sink is counted, never raised into aiortc."""
    inner: queue.Queue[Any] = queue.Queue()
    delivered: list[bytes] = []
    audio = AgentAudio(8000, delivered.append)
    shim = _InlineDecodeQueue(inner, SimpleNamespace(_track=None), audio.feed_pcm)
    pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)
    speech = np.linspace(-9000, 9000, 160).astype("<i2").tobytes()
    shim.put((pcmu, JitterFrame(data=ulaw_encode(speech), timestamp=0)))
    assert delivered == [ulaw_decode(ulaw_encode(speech))] and inner.empty()
    assert audio.last_frame_at is not None and audio.stats.from_agent_frames == 1

    def broken(_: Any, __: int) -> None:
        raise RuntimeError("boom")

    failing = _InlineDecodeQueue(inner, SimpleNamespace(_track=None), broken)
    failing.put((pcmu, JitterFrame(data=ulaw_encode(speech), timestamp=160)))
    assert failing.errors == 1


@pytest.mark.parametrize("rate", [8000, 16000])
def test_with_a_sink_the_agents_opus_decodes_on_the_loop_to_the_calls_rate(rate: int) -> None:
    """Opus leaves aiortc's decoder thread too: each packet decoded to 48 kHz mono on the
    loop, brought to the call's rate, cut into its 20 ms frames — pitch and level kept."""
    inner: queue.Queue[Any] = queue.Queue()
    delivered: list[bytes] = []
    audio = AgentAudio(rate, delivered.append)
    shim = _InlineDecodeQueue(inner, SimpleNamespace(_track=None), audio.feed_pcm)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                 payloadType=111)
    browser = OpusPacketizer(48000)  # a browser's packets: 48 kHz input
    for i in range(50):
        t = (np.arange(960) + i * 960) / 48000
        packet = browser.encode((np.sin(2 * math.pi * 1000 * t) * 8000).astype(np.int16), i)
        shim.put((opus, JitterFrame(data=bytes(packet), timestamp=i * 960)))
    assert inner.empty() and shim.errors == 0
    assert len(delivered) == 50 and all(len(f) == rate // 50 * 2 for f in delivered)
    tail = b"".join(delivered[-10:])
    assert abs(dominant_frequency(tail, rate) - 1000) < 30
    assert abs(rms_dbfs(tail) - 20 * math.log10(8000 / math.sqrt(2) / 32768)) < 1.5
    shim.put((opus, JitterFrame(data=b"\xff\xff\xff", timestamp=0)))  # not Opus
    assert shim.errors == 1 and len(delivered) == 50


def test_g711_at_a_16khz_call_rate_is_resampled() -> None:
    delivered: list[bytes] = []
    audio = AgentAudio(16000, delivered.append)
    t = np.arange(160) / 8000
    for _ in range(4):
        audio.feed_pcm((np.sin(2 * math.pi * 1000 * t) * 8000).astype(np.int16), 8000)
    assert len(delivered) == 4 and all(len(f) == 640 for f in delivered)
    assert abs(dominant_frequency(delivered[-1], 16000) - 1000) < 30


async def test_the_stand_in_goes_where_aiortc_keeps_its_decoder_queue() -> None:
    from aiortc import RTCPeerConnection  # noqa: PLC0415

    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        assert decode_on_loop(receiver)
        assert isinstance(vars(receiver)["_RTCRtpReceiver__decoder_queue"], _InlineDecodeQueue)
    finally:
        await pc.close()


async def test_a_closed_track_raises_for_the_sender() -> None:
    from aiortc.mediastreams import MediaStreamError  # noqa: PLC0415

    track = CallerTrack(8000)
    track.stop()
    with pytest.raises(MediaStreamError):
        await audio(track)


def rtp(seq: int, ts: int, payload: bytes = b"x") -> RtpPacket:
    packet = RtpPacket(payload_type=0, sequence_number=seq, timestamp=ts)
    packet._data = payload  # type: ignore[attr-defined]  # set by aiortc's depayloader
    return packet


def test_immediate_jitter_buffer_releases_in_order_packets_and_drops_late_ones() -> None:
    jb = ImmediateJitterBuffer()
    out = [jb.add(rtp(s, s * 160, bytes([s % 256])))[1] for s in (65534, 65535, 0, 2)]
    assert [f.timestamp if f else None for f in out] == [65534 * 160, 65535 * 160, 0, 320]
    assert jb.add(rtp(1, 160))[1] is None  # older than what was released
    assert jb.add(rtp(2, 320))[1] is None  # duplicate
    assert jb.add(rtp(3, 480))[1] is not None


def opus_like(index: int, freq: float = 1000.0) -> AudioFrame:
    t = (np.arange(960) + index * 960) / 48000
    mono = (np.sin(2 * math.pi * freq * t) * 0.3 * 32767).astype(np.int16)
    frame = AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16",
                                    layout="stereo")
    frame.sample_rate = 48000
    frame.pts = index * 960
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


def test_agent_audio_becomes_20ms_frames_at_the_call_rate_without_level_loss() -> None:
    out: list[bytes] = []
    audio = AgentAudio(8000, out.append)
    for i in range(50):
        audio.feed(opus_like(i))
    assert len(out) >= 48 and all(len(f) == 320 for f in out)
    joined = b"".join(out[2:])
    assert abs(dominant_frequency(joined, 8000) - 1000) < 5
    assert abs(rms_dbfs(joined) - rms_dbfs(samples_of(opus_like(0))[::2].tobytes())) < 0.5
    assert audio.stats.from_agent_frames == len(out)


def test_agent_audio_at_the_call_rate_passes_through_untouched() -> None:
    out: list[bytes] = []
    audio = AgentAudio(8000, out.append)
    frame = AudioFrame.from_ndarray(np.arange(160, dtype=np.int16).reshape(1, -1),
                                    format="s16", layout="mono")
    frame.sample_rate = 8000
    audio.feed(frame)
    assert out == [np.arange(160, dtype="<i2").tobytes()]


ADAPTERS = [("lo", "127.0.0.1"), ("eth0", "192.0.2.2"), ("eth0", "fd00::2"),
            ("docker0", "172.17.0.1"), ("br-1a2b", "172.18.0.1"), ("veth9", "10.9.0.1"),
            ("wlan0", "169.254.3.4")]


def test_host_addresses_skip_loopback_link_local_and_container_bridges_by_default() -> None:
    assert host_addresses([], adapters=lambda: ADAPTERS) == ["192.0.2.2", "fd00::2"]
    assert host_addresses([], use_ipv6=False, adapters=lambda: ADAPTERS) == ["192.0.2.2"]


def test_host_addresses_listed_explicitly_are_the_only_ones_even_loopback() -> None:
    assert host_addresses(["127.0.0.1"], adapters=lambda: ADAPTERS) == ["127.0.0.1"]
    assert host_addresses(["172.16.0.0/12"], adapters=lambda: ADAPTERS) == [
        "172.17.0.1", "172.18.0.1"]


def test_a_public_address_replaces_host_candidates_and_the_connection_line() -> None:
    sdp = "\r\n".join([
        "v=0", "c=IN IP4 172.17.0.2",
        "a=candidate:1 1 udp 2130706431 172.17.0.2 40000 typ host",
        "a=candidate:2 1 udp 1694498815 198.51.100.7 40000 typ srflx raddr 172.17.0.2 "
        "rport 40000", ""])
    out = advertise_public(sdp, "203.0.113.5").split("\r\n")
    assert out[1] == "c=IN IP4 203.0.113.5"
    assert out[2] == "a=candidate:1 1 udp 2130706431 203.0.113.5 40000 typ host"
    assert out[3].split()[4] == "198.51.100.7"  # a server-reflexive candidate is true already
    assert advertise_public(sdp, "") == sdp


@pytest.mark.parametrize(("key", "value", "needle"), [
    ("webrtc.codecs", "g729", "unknown codec"),
    ("webrtc.codecs", "", "at least one"),
    ("webrtc.stun_servers", "stun.example.com", "stun:"),
    ("webrtc.turn_servers", "turn:turn.example.com:3478", "turn_username"),
    ("webrtc.host_addresses", "eth0", "IP address or CIDR"),
    ("webrtc.public_address", "example.com", "IP address"),
    ("webrtc.max_lead_frames", "0", "1..25"),
    ("webrtc.media_timeout", "0.1", "0.5..60"),
])
def test_webrtc_settings_are_validated_naming_the_key(key: str, value: str,
                                                       needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env={}, overrides={key: value})
    assert needle in str(e.value)


def test_webrtc_defaults_prefer_pcmu_then_opus() -> None:
    config = load_config(None, env={})
    assert config.webrtc.codecs == ("pcmu", "opus")
    assert config.webrtc.low_latency is True




@pytest.mark.parametrize(("rate_in", "rate_out", "freq"), [
    (8000, 48000, 440.0), (48000, 8000, 1000.0), (16000, 48000, 440.0), (8000, 16000, 440.0),
    (16000, 8000, 1000.0)])
def test_fir_resampler_keeps_tone_and_level_one_frame_out_per_frame_in(
    rate_in: int, rate_out: int, freq: float
) -> None:
    from hitl_sip.media.fir import FirResampler  # noqa: PLC0415

    r = FirResampler(rate_in, rate_out)
    n = rate_in // 50
    out = []
    for i in range(40):
        t = (np.arange(n) + i * n) / rate_in
        frame = r.process((np.sin(2 * math.pi * freq * t) * 0.3 * 32767).astype(np.int16))
        assert len(frame) == rate_out // 50  # nothing held back
        out.append(frame)
    joined = np.concatenate(out[2:]).astype("<i2").tobytes()
    assert abs(dominant_frequency(joined, rate_out) - freq) < 2
    assert abs(rms_dbfs(joined) - (20 * math.log10(0.3 / math.sqrt(2)))) < 0.3


def test_fir_resampler_removes_what_the_lower_rate_cannot_carry() -> None:
    from hitl_sip.media.fir import FirResampler  # noqa: PLC0415

    r = FirResampler(48000, 8000)
    t = np.arange(960 * 20) / 48000
    x = (np.sin(2 * math.pi * 6000 * t) * 0.3 * 32767).astype(np.int16)
    y = np.concatenate([r.process(x[i:i + 960]) for i in range(0, len(x), 960)])
    assert rms_dbfs(y[320:].astype("<i2").tobytes()) < -50  # 6 kHz would alias to 2 kHz
    with pytest.raises(ValueError, match="integer ratio"):
        FirResampler(44100, 8000)
