"""A scriptable agent: python-socketio + aiortc, speaking PROTOCOL.md §1 like the dashboard.

It logs in (``POST /api/login``), connects to ``/agent``, waits for ``incoming_call``,
accepts, negotiates WebRTC (``webrtc_offer`` with the answer in the ack, then the end of
its candidates), plays a tone or a WAV as its microphone and records what it hears. The
tests and the benchmarks use it as the browser; it also runs alone::

    python -m hitl_sip.testing.agent --url http://127.0.0.1:8080 --user alice \\
        --password-env AGENT_PASSWORD --tone 1000 --record heard.wav --codec opus

For latency measurements it timestamps (``time.monotonic``) each frame it hands to its
encoder and the arrival of each RTP packet, before any jitter buffer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import math
import os
import sys
import time
import urllib.request
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import socketio
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler

from hitl_sip.media.fir import FirResampler
from hitl_sip.media.ice import install_host_filter
from hitl_sip.worker.bridge import use_immediate_jitter_buffer
from hitl_sip.worker.peer import answer_codec, codec_preferences

log = logging.getLogger(__name__)

RATE = 48000
SAMPLES = 960  # 20 ms at 48 kHz
RECORD_RATE = 16000

# A microphone: frame index -> 960 samples of int16 at 48 kHz.
Source = Callable[[int], np.ndarray]


def tone(freq: float, level: float = 0.3) -> Source:
    def source(index: int) -> np.ndarray:
        t = (np.arange(SAMPLES) + index * SAMPLES) / RATE
        return (np.sin(2 * math.pi * freq * t) * level * 32767).astype(np.int16)
    return source


def wav_source(path: Path, loop: bool = True) -> Source:
    with wave.open(str(path), "rb") as w:
        rate, data = w.getframerate(), w.readframes(w.getnframes())
        channels = w.getnchannels()
    pcm = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != RATE:
        x = np.arange(int(len(pcm) * RATE / rate)) * rate / RATE
        pcm = np.interp(x, np.arange(len(pcm)), pcm).astype(np.int16)
    blocks = max(1, len(pcm) // SAMPLES)

    def source(index: int) -> np.ndarray:
        if not loop and index >= blocks:
            return np.zeros(SAMPLES, dtype=np.int16)
        i = index % blocks
        chunk = pcm[i * SAMPLES:(i + 1) * SAMPLES]
        return np.pad(chunk, (0, SAMPLES - len(chunk)))
    return source


def silence(index: int) -> np.ndarray:
    return np.zeros(SAMPLES, dtype=np.int16)


class MicrophoneTrack(MediaStreamTrack):  # type: ignore[misc]
    """20 ms frames from a source, paced on a monotonic anchor; records when each frame
    was handed to the encoder."""

    kind = "audio"

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.sent: list[tuple[int, float]] = []  # (frame index, time handed out)
        # like a browser, encode at the codec's own rate (set_codec): aiortc's encoder
        # would otherwise resample with a frame of delay and upmix with a 3 dB loss
        self._down: FirResampler | None = None
        self._start: float | None = None
        self._index = -1

    def set_codec(self, codec: str) -> None:
        self._down = FirResampler(RATE, 8000) if codec in ("pcmu", "pcma") else None

    async def recv(self) -> AudioFrame:
        self._index += 1
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._index * 0.02 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        samples = self.source(self._index)
        if self._down is not None:
            narrow = self._down.process(samples)
            frame = AudioFrame.from_ndarray(narrow.reshape(1, -1), format="s16", layout="mono")
            rate = 8000
        else:
            frame = AudioFrame.from_ndarray(np.repeat(samples, 2).reshape(1, -1), format="s16",
                                            layout="stereo")
            rate = RATE
        frame.sample_rate = rate
        frame.pts = self._index * (rate // 50)
        frame.time_base = fractions.Fraction(1, rate)
        self.sent.append((self._index, time.monotonic()))
        return frame


class TestAgent:
    """One agent session against a running hub (see the module docstring)."""

    __test__ = False  # not a pytest class

    def __init__(self, http_url: str, username: str, password: str, *,
                 source: Source = silence, codecs: tuple[str, ...] = ("opus",),
                 low_latency: bool = True) -> None:
        self.http_url = http_url.rstrip("/")
        self.username = username
        self.password = password
        self.codecs = codecs
        self.low_latency = low_latency
        self.mic = MicrophoneTrack(source)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[dict[str, Any]]] = {}
        self._arrived = asyncio.Event()
        self.pc: RTCPeerConnection | None = None
        self.call_id = ""
        self.codec = ""
        self.heard = bytearray()  # s16le mono at RECORD_RATE
        self.heard_frames: list[tuple[int, float, bytes]] = []  # (pts in samples, arrival, pcm)
        self.rx_arrivals: dict[int, float] = {}  # RTP timestamp offset -> packet arrival
        self._rx_first: int | None = None
        self._record_task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.hearing = asyncio.Event()  # the first frame of the server's audio arrived
        for event in ("agent_state", "incoming_call", "call_cancelled", "call_ended",
                      "call_connected", "transcript", "webrtc_candidate", "call_monitored",
                      "transfer_failed", "board", "call_quality"):
            self.sio.on(event, self._recorder(event), namespace="/agent")

    def _recorder(self, event: str) -> Callable[[Any], Any]:
        async def record(data: Any) -> None:
            self.events.setdefault(event, []).append(data)
            self._arrived.set()
        return record

    # -- signaling ------------------------------------------------------------------------

    def login(self) -> str:
        body = json.dumps({"username": self.username, "password": self.password}).encode()
        req = urllib.request.Request(self.http_url + "/api/login", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return str(json.loads(r.read())["token"])

    async def connect(self) -> None:
        token = await asyncio.to_thread(self.login)
        await self.sio.connect(self.http_url, namespaces=["/agent"], auth={"token": token},
                               transports=["websocket"])

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace="/agent", timeout=10)

    async def wait(self, event: str, count: int = 1, limit: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(limit):
            while len(self.events.get(event, [])) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.events[event][count - 1]

    async def answer_next_call(self, limit: float = 30, delay: float = 0.0) -> dict[str, Any]:
        """Wait for a call, (after ``delay`` seconds of ringing) accept it and bring the
        media up; returns the incoming_call."""
        offer = await self.wait("incoming_call", len(self.events.get("incoming_call", [])) + 1
                                if self.call_id else 1, limit=limit)
        if delay:
            await asyncio.sleep(delay)
        await self.accept(str(offer["callId"]))
        return offer

    async def take_new_call(self, taken: set[str], limit: float = 15) -> str:
        """Accept the first offered call not in ``taken`` (ring-all offers each new call to
        every free agent), wait until it is bridged; its id is added to ``taken``."""
        offer = await self.wait("incoming_call", len(self.events.get("incoming_call", [])) or 1)
        while str(offer["callId"]) in taken:
            offer = await self.wait("incoming_call", len(self.events["incoming_call"]) + 1)
        call_id = str(offer["callId"])
        taken.add(call_id)
        await self.accept(call_id)
        await self.wait("call_connected", limit=limit)
        return call_id

    async def accept(self, call_id: str) -> None:
        self.call_id = call_id
        ack = await self.call("accept_call", {"callId": call_id})
        if not ack.get("ok"):
            raise RuntimeError(f"accept_call refused: {ack}")
        await self.start_media()

    async def monitor(self, call_id: str, mode: str) -> None:
        """A supervisor joins ``call_id`` in ``mode`` and brings its own leg's media up
        (PROTOCOL.md §6)."""
        self.call_id = call_id
        ack = await self.call("monitor_call", {"callId": call_id, "mode": mode})
        if not ack.get("ok"):
            raise RuntimeError(f"monitor_call refused: {ack}")
        await self.start_media()

    async def start_media(self) -> None:
        pc = RTCPeerConnection()
        self.pc = pc
        transceiver = pc.addTransceiver(self.mic, direction="sendrecv")
        transceiver.setCodecPreferences(codec_preferences(self.codecs))
        if self.low_latency:
            use_immediate_jitter_buffer(transceiver.receiver)
        self._timestamp_arrivals(transceiver.receiver)

        @pc.on("track")  # type: ignore[untyped-decorator]
        def on_track(track: Any) -> None:
            self._record_task = asyncio.create_task(self._record(track))

        @pc.on("connectionstatechange")  # type: ignore[untyped-decorator]
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

        await pc.setLocalDescription(await pc.createOffer())
        ack = await self.call("webrtc_offer", {"callId": self.call_id,
                                               "sdp": pc.localDescription.sdp})
        if not ack.get("ok"):
            raise RuntimeError(f"webrtc_offer refused: {ack}")
        self.codec = answer_codec(ack["sdp"])
        self.mic.set_codec(self.codec)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=ack["sdp"], type="answer"))
        await self.call("webrtc_candidate", {"callId": self.call_id, "candidate": None,
                                             "sdpMid": "0", "sdpMLineIndex": 0})

    def _timestamp_arrivals(self, receiver: Any) -> None:
        handle = receiver._handle_rtp_packet

        async def timed(packet: Any, arrival_time_ms: int) -> None:
            if self._rx_first is None:
                self._rx_first = packet.timestamp
            offset = (packet.timestamp - self._rx_first) & 0xFFFFFFFF
            self.rx_arrivals.setdefault(offset, time.monotonic())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed

    async def _record(self, track: Any) -> None:
        resampler = AudioResampler(format="s16", layout="mono", rate=RECORD_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrival = self.rx_arrivals.get(int(frame.pts or 0), time.monotonic())
            mono = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            self.heard_frames.append((int(frame.pts or 0), arrival,
                                      mono.astype("<i2").tobytes()))
            self.hearing.set()
            for piece in resampler.resample(frame):
                self.heard += bytes(piece.planes[0])[: piece.samples * 2]

    # -- controls -------------------------------------------------------------------------

    async def mute(self, muted: bool) -> Any:
        return await self.call("mute", {"callId": self.call_id, "muted": muted})

    async def hangup(self) -> Any:
        return await self.call("hangup", {"callId": self.call_id})

    async def return_to_bot(self) -> Any:
        return await self.call("return_to_bot", {"callId": self.call_id})

    async def drop_media(self) -> None:
        """Stop the peer without a word to the server (what a crashed tab looks like on
        the wire, less the socket)."""
        if self.pc is not None:
            for sender in self.pc.getSenders():
                sender.replaceTrack(None)
            with contextlib.suppress(Exception):
                await self.pc.close()

    async def close(self) -> None:
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await self.pc.close()
        if self._record_task is not None:
            self._record_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._record_task
        with contextlib.suppress(Exception):
            await self.sio.disconnect()

    def write_recording(self, path: Path) -> None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RECORD_RATE)
            w.writeframes(bytes(self.heard))


async def _main(args: argparse.Namespace) -> int:
    password = os.environ.get(args.password_env, "") if args.password_env else args.password
    source: Source = silence
    if args.tone:
        source = tone(args.tone)
    elif args.wav:
        source = wav_source(Path(args.wav))
    install_host_filter(args.host_address)
    agent = TestAgent(args.url, args.user, password, source=source, codecs=tuple(args.codec))
    await agent.connect()
    await agent.call("set_status", {"status": "available"})
    print(json.dumps({"ready": True}), flush=True)
    try:
        offer = await agent.answer_next_call(limit=args.wait)
        print(json.dumps({"accepted": offer["callId"], "codec": agent.codec}), flush=True)
        ended = await agent.wait("call_ended", limit=args.max_seconds)
        print(json.dumps({"ended": ended}), flush=True)
    finally:
        if args.record:
            agent.write_recording(Path(args.record))
        await agent.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hitl_sip.testing.agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the hub, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", required=True)
    p.add_argument("--password", default="")
    p.add_argument("--password-env", default="", help="read the password from this variable")
    p.add_argument("--tone", type=float, default=0.0, help="play a sine of this frequency")
    p.add_argument("--wav", default="", help="play this WAV (looped) as the microphone")
    p.add_argument("--record", default="", help="write what the agent heard to this WAV")
    p.add_argument("--codec", action="append", choices=("opus", "pcmu", "pcma"),
                   default=None, help="offered codecs in order (repeatable; default opus)")
    p.add_argument("--host-address", action="append", default=[],
                   help="gather ICE candidates on this address/CIDR only (repeatable)")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a call")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    args = p.parse_args(argv)
    args.codec = args.codec or ["opus"]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
