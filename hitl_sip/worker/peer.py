"""The agent's WebRTC peer on the worker (aiortc): answers the browser's offer.

This is the signaling end of the bridge: one RTCPeerConnection per accepted call, created
on the agent's ``webrtc_offer`` (relayed by the hub), answering with a send-receive audio
transceiver, taking the browser's trickled candidates. The audio it sends is silence and
what it receives is drained; the caller ⇄ agent bridge itself comes with the media bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av import AudioFrame

log = logging.getLogger(__name__)

SAMPLE_RATE = 48000
SAMPLES = 960  # 20 ms


class SilenceTrack(MediaStreamTrack):  # type: ignore[misc]
    """20 ms frames of silence paced on a monotonic anchor."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += SAMPLES
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        frame = AudioFrame(format="s16", layout="mono", samples=SAMPLES)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class AgentPeer:
    def __init__(
        self,
        call_id: str,
        on_connected: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.on_connected = on_connected
        self.on_lost = on_lost
        self._closing = False
        self.pc = RTCPeerConnection()
        self._drains: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        log.info("[call %s] agent peer %s", self.call_id, self.pc.connectionState)
        state = self.pc.connectionState
        if state == "connected" and self.on_connected is not None:
            self.on_connected()
        elif state in ("failed", "closed") and not self._closing and self.on_lost is not None:
            self.on_lost()  # the browser's side of the media is gone

    def _on_track(self, track: Any) -> None:
        async def drain() -> None:
            with contextlib.suppress(Exception):
                while True:
                    await track.recv()

        self._drains.append(asyncio.create_task(drain()))

    async def answer(self, offer_sdp: str) -> str:
        """Apply the browser's offer; return our answer (ICE candidates included)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":
                transceiver.sender.replaceTrack(SilenceTrack())
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def add_candidate(self, candidate: str | None, sdp_mid: str | None,
                            sdp_mline_index: int | None) -> None:
        if not candidate:
            return  # end of candidates: aiortc needs nothing
        parsed = candidate_from_sdp(candidate.removeprefix("candidate:"))
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        await self.pc.addIceCandidate(parsed)

    async def close(self) -> None:
        self._closing = True
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        await self.pc.close()
