"""The media bridge between the trunk leg (pjsua2 PCM) and the agent's WebRTC leg (aiortc).

Caller → agent: :class:`CallerTrack` is the track the peer sends. The session pushes each
caller frame into it (20 ms of s16le at the call's rate, straight from the pjsua2 port) and
aiortc pulls: ``recv`` returns as soon as a frame is queued, so a frame never waits for a
clock of the bridge's own. A frame that does not come within 10 ms of its time yields
silence (counted); a queue that stays longer than one frame is trimmed so latency cannot
creep up. Frames go out already encoded (below); where a codec cannot take the call's
rate they go out in its own format (8 kHz mono for G.711, 48 kHz stereo for Opus,
converted by :mod:`hitl_sip.media.fir`): aiortc's encoders would resample with a frame of
delay and upmix with a 3 dB loss.

Agent → caller: :class:`AgentAudio` takes the agent's decoded audio (Opus: 48 kHz mono;
PCMU/PCMA: 8 kHz mono), resamples to the call's mono rate only when the rates differ, cuts
20 ms frames and hands them to the session, which queues them for the pjsua2 port with at
most ``webrtc.max_lead_frames`` ahead of the media clock (older frames dropped).

aiortc's stock audio receiver holds packets in a jitter buffer that releases a frame only
after 4 more have arrived (80 ms) — :class:`ImmediateJitterBuffer` releases every in-order
audio packet at once (``webrtc.low_latency``; the trunk's clock does the pacing).

Neither codec leaves the event loop: aiortc encodes every outgoing frame in its thread
pool and decodes every incoming one in a decoder thread, two thread hops per 20 ms that
cost more than G.711 itself (a 65536-entry encode table and a 256-entry decode table,
:mod:`hitl_sip.media.g711`). :class:`CallerTrack` hands aiortc ready packets (its sender
only packs them): G.711, or Opus from :class:`OpusPacketizer` — libopus fed the call's
own mono rate, where aiortc's encoder wants 48 kHz stereo at complexity 10.
:func:`decode_on_loop` decodes the agent's packets on the loop as they arrive (Opus to
48 kHz mono, then :mod:`hitl_sip.media.fir` to the call's rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from av import AudioFrame, CodecContext, Packet

from hitl_sip.media._rtpcore import TrunkOut
from hitl_sip.media.fir import FirResampler
from hitl_sip.media.g711 import BY_NAME
from hitl_sip.worker.lean import LeanG711
from hitl_sip.worker.mix import Taps

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.02
G711_RATE = 8000
G711_TIME_BASE = fractions.Fraction(1, G711_RATE)
#: Opus's RTP clock is 48 kHz whatever rate its encoder runs at (RFC 7587 §4.1)
OPUS_RATE = 48000
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
#: the input rates libopus encodes natively
OPUS_INPUT_RATES = frozenset((8000, 12000, 16000, 24000, 48000))
#: a telephone caller's voice is narrowband or wideband: 24 kbit/s of mono Opus carries it
#: whole (aiortc's own encoder sends 96 kbit/s of stereo)
OPUS_BITRATE = 24000
#: libopus's search effort (0–10, FFmpeg's ``compression_level``; aiortc leaves it at 10).
#: 5 costs ~0.3 of 10's CPU at 8 kHz mono for speech; the bench's bursts pass unchanged
OPUS_COMPLEXITY = 5


class OpusPacketizer:
    """The caller's mono frames encoded with libopus (PyAV) at the call's own rate.

    aiortc's Opus encoder takes 48 kHz stereo: a 8 kHz call would be upsampled, duplicated
    into two channels and encoded at complexity 10, 96 kbit/s — a third of a worker's CPU
    per Opus call went there. libopus encodes 8/12/16/24/48 kHz input directly, and the
    packets are the same Opus any decoder plays at 48 kHz (the RTP clock stays 48 kHz).
    One 20 ms frame in, one packet out (the codec's look-ahead is inside the packet's
    pre-skip, not a held frame)."""

    def __init__(self, rate: int, bitrate: int = OPUS_BITRATE,
                 complexity: int = OPUS_COMPLEXITY) -> None:
        if rate not in OPUS_INPUT_RATES:
            raise ValueError(f"libopus does not encode {rate} Hz input")
        self.rate = rate
        codec = CodecContext.create("libopus", "w")
        codec.bit_rate = bitrate
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = rate
        codec.time_base = fractions.Fraction(1, rate)
        codec.options = {"application": "voip", "compression_level": str(complexity),
                         "frame_duration": "20"}
        codec.open()
        self._codec = codec
        self._pts = 0

    def encode(self, samples: npt.NDArray[np.int16], index: int) -> Packet[Any]:
        """One 20 ms frame of mono samples at ``rate`` → one packet, pts in 48 kHz."""
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += len(samples)
        packets = self._codec.encode(frame)
        if len(packets) != 1:  # libopus returns one packet per 20 ms frame: never seen
            raise RuntimeError(f"libopus returned {len(packets)} packets for one frame")
        packet = packets[0]
        packet.pts = index * OPUS_RATE // 50
        packet.time_base = OPUS_TIME_BASE
        return packet


@dataclass
class BridgeStats:
    """Counters for one bridged call (exported by the worker, printed by the benchmark)."""

    to_agent_frames: int = 0
    to_agent_silence: int = 0  # pulls that found no caller frame (late or lost)
    to_agent_trimmed: int = 0  # caller frames dropped to keep latency bounded
    from_agent_frames: int = 0
    from_agent_dropped: int = 0  # agent frames dropped: too far ahead of the trunk clock


class CallerTrack(MediaStreamTrack):  # type: ignore[misc]
    """The caller's audio as an aiortc track, pulled by the peer's RTP sender.

    Every pull advances pts by 20 ms whatever happens, so RTP timestamps stay continuous.
    With ``align`` the pulls are frame-driven: a pull returns as soon as a caller frame is
    queued (the sender encrypts and sends it at once, as a relay forwards a packet); when
    none has come ``grace`` after it was due (20 ms after the last one), the pull yields
    silence (counted) so the agent's stream keeps going. Without ``align`` the pulls are a
    plain 20 ms clock from the first one.
    """

    kind = "audio"

    def __init__(self, rate: int, stats: BridgeStats | None = None, *,
                 grace: float = 0.01, first_frame_wait: float = 0.1,
                 align: bool = True) -> None:
        super().__init__()
        self.rate = rate
        self.samples = int(rate * FRAME_SECONDS)
        self.stats = stats or BridgeStats()
        self._queue: deque[tuple[bytes, float]] = deque(maxlen=8)
        self._arrived = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._grace = grace  # after a frame was due: absorbs the trunk clock's jitter
        self._first_wait = first_frame_wait
        self._align = align
        self._anchor: float | None = None  # pull ``index`` is due at anchor + index × 20 ms
        self._index = 0
        self._long = 0  # consecutive pulls that left more than one frame queued
        self._silence = bytes(self.samples * 2)
        self._out_rate = rate
        self._encode: npt.NDArray[np.uint8] | None = None  # G.711: packets, not frames
        self._opus: OpusPacketizer | None = None  # Opus at the call's rate: packets too
        self._resampler: FirResampler | None = None
        # the other talkers this leg hears, summed in at the pull (hitl_sip.worker.mix)
        self.taps = Taps()
        # a G.711 leg's lean path (hitl_sip.worker.lean): frames are sent as pushed, and
        # aiortc's sender, held from the start, never pulls one
        self._lean: LeanG711 | None = None
        self._held: asyncio.Future[None] | None = None

    def set_codec(self, codec: str) -> None:
        """Hand aiortc packets it only has to pack — G.711, or Opus encoded at the call's
        rate (:class:`OpusPacketizer`) — so no frame goes through its encoders, which
        resample with a frame of delay (libswresample holds back 20 ms), upmix to stereo
        and run in a thread pool."""
        self._out_rate = self.rate
        self._opus = None
        if codec == "opus":
            if self.rate not in OPUS_INPUT_RATES:
                self._out_rate = OPUS_RATE
            self._opus = OpusPacketizer(self._out_rate)
        elif codec in BY_NAME:
            self._out_rate = G711_RATE
        law = BY_NAME.get(codec)
        self._encode = law.encode if law else None
        self._resampler = (FirResampler(self.rate, self._out_rate)
                           if self._out_rate != self.rate else None)

    def hold(self) -> None:
        """aiortc's sender waits at its next pull until :meth:`go_lean` decides."""
        if self._held is None:
            self._held = asyncio.get_running_loop().create_future()

    def go_lean(self, lean: LeanG711 | None) -> None:
        """From now pushed frames go out on ``lean`` at once; None: the held pulls go on
        (aiortc sends them)."""
        self._lean = lean
        if lean is None:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not held.done():
            held.set_result(None)

    def stop(self) -> None:
        self._lean = None
        self._release()
        super().stop()

    def push(self, frame: bytes) -> None:
        """A caller frame (loop side, from the session's frame loop or the relay)."""
        lean = self._lean
        if lean is not None:
            lean.send_pcm(self.taps.mix(frame) or frame)
            self.stats.to_agent_frames += 1
            return
        self._queue.append((frame, time.monotonic()))
        self._arrived.set()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def recv(self) -> AudioFrame | Packet[Any]:
        while self._held is not None:  # a lean leg's, or not decided yet
            await asyncio.shield(self._held)
        if self.readyState != "live":
            raise MediaStreamError
        if self._anchor is None:
            await self._first_pull()
        else:
            self._index += 1
            due = self._anchor + self._index * FRAME_SECONDS
            if self._align:
                await self._frame_or_timeout(due + self._grace)
            else:
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > 0.2:  # the loop stalled: start a new anchor, do not burst
                    self._anchor = now - self._index * FRAME_SECONDS
        return self._frame(self.taps.mix(self._take()) or self._silence)

    async def _frame_or_timeout(self, deadline: float) -> None:
        if self._queue:
            return
        delay = deadline - time.monotonic()
        if delay <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(delay, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _first_pull(self) -> None:
        if self._align and not self._queue:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), self._first_wait)
        if self._align:
            while len(self._queue) > 1:  # queued before the peer was up: stale
                self._queue.popleft()
        self._anchor = time.monotonic()

    def _take(self) -> bytes:
        queue = self._queue
        if not queue:
            self.stats.to_agent_silence += 1
            return self._silence
        if len(queue) > 1:
            self._long += 1
            if self._long >= 10:  # 200 ms with a standing queue: drop one frame of latency
                queue.popleft()
                self.stats.to_agent_trimmed += 1
                self._long = 0
        else:
            self._long = 0
        frame, arrived = queue.popleft()
        self.stats.to_agent_frames += 1
        if self._align:  # the next frame is due 20 ms after this one came
            self._anchor = arrived - self._index * FRAME_SECONDS
        return frame

    def _frame(self, pcm: bytes) -> AudioFrame | Packet[Any]:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is not None:
            samples = self._resampler.process(samples)
        if self._encode is not None:  # G.711: the payload itself, aiortc only packs it
            packet = Packet(self._encode[samples.astype("<i2").view("<u2")].tobytes())
            packet.pts = self._index * len(samples)
            packet.time_base = G711_TIME_BASE
            return packet
        if self._opus is not None:
            return self._opus.encode(samples, self._index)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._out_rate
        frame.pts = self._index * len(samples)
        frame.time_base = fractions.Fraction(1, self._out_rate)
        return frame


def _nowhere() -> TrunkOut | None:
    return None


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class AgentAudio:
    """Reads the agent's decoded WebRTC track and emits 20 ms frames at the call's rate."""

    def __init__(self, rate: int, deliver: Callable[[bytes], None],
                 stats: BridgeStats | None = None,
                 on_first_frame: Callable[[], None] | None = None) -> None:
        self.rate = rate
        self.frame_bytes = int(rate * FRAME_SECONDS) * 2
        self.deliver = deliver
        #: asked at each packet of a lean G.711 leg's (hitl_sip.worker.lean): where its
        #: payload may go as it is, without its frame taking :attr:`deliver`'s path — the
        #: call's relay stream to the trunk while this agent is heard alone
        #: (CallSession.agent_to_trunk); its frames then go to :attr:`deliver_sent`
        self.to_trunk: Callable[[], TrunkOut | None] = _nowhere
        self.deliver_sent: Callable[[bytes], None] = deliver
        self.stats = stats or BridgeStats()
        self.on_first_frame = on_first_frame
        self.last_frame_at: float | None = None
        self._resampler: FirResampler | None = None
        self._source_rate = 0
        self._pending = bytearray()
        self._bad_frames = 0

    def _to_call_rate(self, frame: AudioFrame) -> bytes:
        samples = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if frame.format.name != "s16" or samples.ndim != 2 or samples.shape[0] != 1:
            raise ValueError(f"unexpected decoded audio: {frame.format.name} {samples.shape}")
        both = samples.reshape(-1, channels)
        mono: npt.NDArray[np.int16] = (both[:, 0] if channels == 1
                                       else both.mean(axis=1)).astype(np.int16)
        return self._resampled(mono, frame.sample_rate)

    def _resampled(self, mono: npt.NDArray[np.int16], rate: int) -> bytes:
        if rate != self.rate:
            if self._resampler is None or rate != self._source_rate:
                self._resampler = FirResampler(rate, self.rate)
                self._source_rate = rate
            mono = self._resampler.process(mono)
        return mono.astype("<i2").tobytes()

    def feed(self, frame: AudioFrame) -> None:
        """One decoded frame from the browser (any rate/layout)."""
        self._take(self._to_call_rate(frame))

    def feed_pcm(self, samples: npt.NDArray[np.int16], rate: int) -> None:
        """One packet's mono samples at ``rate`` (G.711: 8 kHz; Opus: 48 kHz), decoded on
        the loop as it arrived (:func:`decode_on_loop`)."""
        self._take(samples.tobytes() if self.rate == rate
                   else self._resampled(samples, rate))

    def sent_pcm(self, pcm: bytes) -> None:
        """One lean packet's samples (8 kHz s16) that went to the trunk as they came: the
        frames go to :attr:`deliver_sent`."""
        self._take(pcm, self.deliver_sent)

    def _take(self, pcm: bytes, deliver: Callable[[bytes], None] | None = None) -> None:
        if self.last_frame_at is None and self.on_first_frame is not None:
            self.on_first_frame()
        self.last_frame_at = time.monotonic()
        self._pending += pcm
        size = self.frame_bytes
        deliver = deliver or self.deliver
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            self.stats.from_agent_frames += 1
            deliver(chunk)

    async def run(self, track: Any) -> None:
        """Until the track ends: decoded frames in, call-rate frames out."""
        queue = getattr(track, "_queue", None)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            # aiortc's decoded-frame queue is unbounded: if we fell behind, skip to the
            # newest frames rather than play the backlog late
            while isinstance(queue, asyncio.Queue) and queue.qsize() > 3:
                stale = queue.get_nowait()
                if stale is None:
                    return
                self.stats.from_agent_dropped += 1
            try:
                self.feed(frame)
            except ValueError as e:  # one odd frame must not end the agent's audio
                self._bad_frames += 1
                if self._bad_frames == 1:
                    log.warning("agent audio frame skipped: %s", e)


class ImmediateJitterBuffer(JitterBuffer):  # type: ignore[misc]
    """An audio 'jitter buffer' that releases each in-order packet at once.

    Every RTP packet of Opus or G.711 is a whole frame, so there is nothing to reassemble;
    packets older than the newest released one are dropped (a late packet is worse than a
    lost one on a live call). Pacing is the trunk's media clock, after the bridge.
    """

    def __init__(self) -> None:
        super().__init__(capacity=16, prefetch=0)
        self._last: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._last is not None:
            ahead = uint16_add(seq, -self._last)
            if ahead == 0 or ahead > 0x8000:  # duplicate or older than what we released
                return False, None
        self._last = seq
        data = getattr(packet, "_data", b"")
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


def use_immediate_jitter_buffer(receiver: Any) -> bool:
    """Swap aiortc's audio jitter buffer on a receiver; False when aiortc changed shape."""
    name = "_RTCRtpReceiver__jitter_buffer"
    if not isinstance(getattr(receiver, name, None), JitterBuffer):
        log.warning("aiortc's receiver has no %s: keeping its stock jitter buffer", name)
        return False
    setattr(receiver, name, ImmediateJitterBuffer())
    return True


class _InlineDecodeQueue:
    """Stands in for an aiortc receiver's decoder queue (see :func:`decode_on_loop`).

    aiortc's decoder thread still takes from the original queue (other codecs, and the
    ``None`` that stops it). With a sink, G.711 and Opus frames ``put`` here are decoded at
    once, on the loop, and their mono samples go to the sink with their rate; without one,
    G.711 frames go into the queue of the receiver's track (made when the remote
    description is set) and Opus to aiortc's thread."""

    def __init__(self, inner: queue.Queue[Any], receiver: Any,
                 sink: Callable[[npt.NDArray[np.int16], int], None] | None = None) -> None:
        self._inner = inner
        self._receiver = receiver
        self._sink = sink
        self._codec: Any = None  # the last codec seen, and what decodes it
        self._table: npt.NDArray[np.int16] | None = None
        self._opus: Any = None
        self.errors = 0

    def get(self, *args: Any, **kwargs: Any) -> Any:  # the decoder thread's side
        return self._inner.get(*args, **kwargs)

    def _learn(self, codec: Any) -> None:
        name = str(codec.name).lower()
        law = BY_NAME.get(name)
        self._table = law.decode if law else None
        self._opus = None
        if name == "opus" and self._sink is not None:
            # mono s16 straight from libopus: no stereo to fold, no float to convert
            decoder = CodecContext.create("libopus", "r")
            decoder.format = "s16"
            decoder.layout = "mono"
            decoder.sample_rate = OPUS_RATE
            self._opus = decoder
        self._codec = codec

    def put(self, task: Any, *args: Any, **kwargs: Any) -> None:
        if task is not None:
            codec, encoded = task
            if codec is not self._codec:
                self._learn(codec)
            table, sink = self._table, self._sink
            if sink is not None and (table is not None or self._opus is not None):
                try:  # this runs inside aiortc's receive path: nothing may unwind into it
                    if table is not None:
                        sink(table[np.frombuffer(encoded.data, dtype=np.uint8)], G711_RATE)
                    else:
                        for frame in self._opus.decode(Packet(encoded.data)):
                            sink(frame.to_ndarray()[0], frame.sample_rate)
                except Exception:
                    self.errors += 1
                    if self.errors == 1:
                        log.exception("agent audio frame lost")
                return
            output = getattr(self._receiver._track, "_queue", None)
            if table is not None and isinstance(output, asyncio.Queue):
                output.put_nowait(g711_frame(table, encoded.data, encoded.timestamp))
                return
        self._inner.put(task, *args, **kwargs)


def g711_frame(table: npt.NDArray[np.int16], payload: bytes, pts: int) -> AudioFrame:
    """One G.711 payload decoded into an 8 kHz mono s16 frame."""
    samples = table[np.frombuffer(payload, dtype=np.uint8)]
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = G711_RATE
    frame.pts = pts
    frame.time_base = G711_TIME_BASE
    return frame


def decode_on_loop(receiver: Any,
                   sink: Callable[[npt.NDArray[np.int16], int], None] | None = None) -> bool:
    """Decode a receiver's G.711 (and, with ``sink``, Opus) on the event loop instead of
    aiortc's decoder thread (call before the receiver starts); with ``sink``, each packet's
    mono samples and their rate go straight to it (no frame object, no track queue, no
    thread hop: :meth:`AgentAudio.feed_pcm`), else G.711 goes into the track.
    False, changing nothing, when aiortc changed shape."""
    name = "_RTCRtpReceiver__decoder_queue"
    inner = getattr(receiver, name, None)
    if not isinstance(inner, queue.Queue) or not hasattr(receiver, "_track"):
        log.warning("aiortc's receiver has no decoder queue: G.711 decodes in its thread")
        return False
    setattr(receiver, name, _InlineDecodeQueue(inner, receiver, sink))
    return True
