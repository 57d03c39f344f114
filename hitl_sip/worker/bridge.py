"""The media bridge between the trunk leg (pjsua2 PCM) and the agent's WebRTC leg (aiortc).

Caller → agent: :class:`CallerTrack` is the track the peer sends. The session pushes each
caller frame into it (20 ms of s16le at the call's rate, straight from the pjsua2 port) and
aiortc pulls: ``recv`` is paced on a monotonic anchor laid just after the arrival of the first
frame, so a frame waits only for the next pull (a few ms), never for a fixed clock of its
own. An empty queue at a pull yields silence (counted); a queue that stays longer than one
frame is trimmed so latency cannot creep up. The frame goes out at the call's rate: aiortc's
PCMU encoder needs no resampling at 8 kHz, its Opus encoder resamples to 48 kHz (stereo
frames from us: its own mono upmix would cost 3 dB).

Agent → caller: :class:`AgentAudio` reads the browser's decoded track (Opus: 48 kHz stereo;
PCMU/PCMA: 8 kHz mono), resamples to the call's mono rate only when the rates differ, cuts
20 ms frames and hands them to the session, which queues them for the pjsua2 port with at
most ``webrtc.max_lead_frames`` ahead of the media clock (older frames dropped).

aiortc's stock audio receiver holds packets in a jitter buffer that releases a frame only
after 4 more have arrived (80 ms) — :class:`ImmediateJitterBuffer` releases every in-order
audio packet at once (``webrtc.low_latency``; the trunk's clock does the pacing).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from av import AudioFrame, AudioResampler

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.02


@dataclass
class BridgeStats:
    """Counters for one bridged call (exported by the worker, printed by the benchmark)."""

    to_agent_frames: int = 0
    to_agent_silence: int = 0  # pulls that found no caller frame (late or lost)
    to_agent_trimmed: int = 0  # caller frames dropped to keep latency bounded
    from_agent_frames: int = 0
    from_agent_dropped: int = 0  # agent frames dropped: too far ahead of the trunk clock


class CallerTrack(MediaStreamTrack):  # type: ignore[misc]
    """The caller's audio as an aiortc track, pulled by the peer's RTP sender."""

    kind = "audio"

    def __init__(self, rate: int, stats: BridgeStats | None = None, *,
                 margin: float = 0.003, first_frame_wait: float = 0.1) -> None:
        super().__init__()
        self.rate = rate
        self.samples = int(rate * FRAME_SECONDS)
        self.stats = stats or BridgeStats()
        self._queue: deque[bytes] = deque(maxlen=8)
        self._arrived = asyncio.Event()
        self._margin = margin  # after the frame's expected arrival: absorbs loop jitter
        self._first_wait = first_frame_wait
        self._anchor: float | None = None
        self._first_arrival: float | None = None
        self._index = 0
        self._long = 0  # consecutive pulls that left more than one frame queued
        self._silence = bytes(self.samples * 2)
        # Opus is encoded as stereo by aiortc, and libswresample's mono→stereo upmix costs
        # 3 dB: hand it both channels ourselves (set once the codec is negotiated)
        self.stereo = False

    def push(self, frame: bytes) -> None:
        """A caller frame (loop side, from the session's frame loop)."""
        if self._first_arrival is None:
            self._first_arrival = time.monotonic()
        self._queue.append(frame)
        self._arrived.set()

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._anchor is None:
            if self._first_arrival is None:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), self._first_wait)
            self._anchor = (self._first_arrival or time.monotonic()) + self._margin
        else:
            self._index += 1
            due = self._anchor + self._index * FRAME_SECONDS
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.2:  # the loop stalled: re-anchor instead of bursting
                self._anchor = now - self._index * FRAME_SECONDS
        return self._frame(self._take())

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
        self.stats.to_agent_frames += 1
        return queue.popleft()

    def _frame(self, pcm: bytes) -> AudioFrame:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self.stereo:
            frame = AudioFrame.from_ndarray(np.repeat(samples, 2).reshape(1, -1),
                                            format="s16", layout="stereo")
        else:
            frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16",
                                            layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._index * self.samples
        frame.time_base = fractions.Fraction(1, self.rate)
        return frame


class AgentAudio:
    """Reads the agent's decoded WebRTC track and emits 20 ms frames at the call's rate."""

    def __init__(self, rate: int, deliver: Callable[[bytes], None],
                 stats: BridgeStats | None = None,
                 on_first_frame: Callable[[], None] | None = None) -> None:
        self.rate = rate
        self.frame_bytes = int(rate * FRAME_SECONDS) * 2
        self.deliver = deliver
        self.stats = stats or BridgeStats()
        self.on_first_frame = on_first_frame
        self.last_frame_at: float | None = None
        self._resampler: AudioResampler | None = None
        self._source: tuple[int, str] | None = None
        self._pending = bytearray()

    def _to_call_rate(self, frame: AudioFrame) -> bytes:
        source = (frame.sample_rate, frame.layout.name)
        if source == (self.rate, "mono") and frame.format.name == "s16":
            return bytes(frame.planes[0])[: frame.samples * 2]
        if self._resampler is None or source != self._source:
            self._resampler = AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._source = source
        out = b""
        for piece in self._resampler.resample(frame):
            out += bytes(piece.planes[0])[: piece.samples * 2]
        return out

    def feed(self, frame: AudioFrame) -> None:
        """One decoded frame from the browser (any rate/layout)."""
        if self.last_frame_at is None and self.on_first_frame is not None:
            self.on_first_frame()
        self.last_frame_at = time.monotonic()
        self._pending += self._to_call_rate(frame)
        size = self.frame_bytes
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            self.stats.from_agent_frames += 1
            self.deliver(chunk)

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
            self.feed(frame)


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
