"""The agent's WebRTC peer on the worker (aiortc): one RTCPeerConnection per accepted call.

Created on the agent's ``webrtc_offer`` (relayed by the hub), it answers with a send-receive
audio transceiver whose outgoing track is the caller's audio (:class:`CallerTrack`) and whose
incoming track feeds the agent's audio to the call (:class:`AgentAudio`), in the codec order
of ``webrtc.codecs``. It reports, through callbacks the worker wires to the session and the
hub, when the agent's audio starts and stops flowing: the first decoded frame, and silence
on the wire for ``webrtc.media_timeout`` (a killed browser sends no DTLS close) or an ICE
failure/close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.sdp import SessionDescription, candidate_from_sdp

from hitl_sip.media.g711 import BY_NAME
from hitl_sip.media.ice import advertise_public
from hitl_sip.worker.bridge import (
    AgentAudio,
    BridgeStats,
    CallerTrack,
    decode_on_loop,
    use_immediate_jitter_buffer,
)
from hitl_sip.worker.lean import LeanG711, attach

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerSettings:
    rate: int = 8000
    codecs: tuple[str, ...] = ("pcmu", "opus")
    rtc: RTCConfiguration = field(default_factory=lambda: RTCConfiguration(iceServers=[]))
    public_address: str = ""
    low_latency: bool = True
    media_timeout: float = 3.0
    lean_g711: bool = True  # a G.711 leg's RTP off aiortc's tasks (hitl_sip/worker/lean.py)


def codec_preferences(names: tuple[str, ...]) -> list[Any]:
    """aiortc's audio codec capabilities in ``names`` order (opus, pcmu, pcma)."""
    caps = RTCRtpSender.getCapabilities("audio").codecs
    wanted = {"opus": "audio/opus", "pcmu": "audio/pcmu", "pcma": "audio/pcma"}
    return [c for name in names for c in caps if c.mimeType.lower() == wanted[name]]


class AgentPeer:
    def __init__(
        self,
        call_id: str,
        settings: PeerSettings,
        *,
        on_agent_frame: Callable[[bytes], None],
        on_media: Callable[[bool], None] = lambda flowing: None,
    ) -> None:
        self.call_id = call_id
        self.settings = settings
        self.on_media = on_media
        self.stats = BridgeStats()
        self.caller_track = CallerTrack(settings.rate, self.stats, align=settings.low_latency)
        self.agent_audio = AgentAudio(settings.rate, on_agent_frame, self.stats)
        self.codec = ""
        self.flowing = False
        self.lean: LeanG711 | None = None
        self._closing = False
        self.pc = RTCPeerConnection(settings.rtc)
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    # -- state ----------------------------------------------------------------------------

    def _set_flowing(self, flowing: bool) -> None:
        if flowing != self.flowing and not self._closing:
            self.flowing = flowing
            self.on_media(flowing)

    def _on_state(self) -> None:
        state = self.pc.connectionState
        log.info("[call %s] agent peer %s", self.call_id, state)
        if state in ("failed", "closed"):
            self._set_flowing(False)

    async def _go_lean(self, transceiver: Any) -> None:
        """Once aiortc's sender starts (DTLS is up, the sender and the receiver have their
        parameters) the leg's G.711 RTP leaves aiortc's tasks — or, if that cannot be set
        up, aiortc's sender takes the caller's frames after all."""
        started = getattr(transceiver.sender, "_RTCRtpSender__rtp_started", None)
        if isinstance(started, asyncio.Event):
            await started.wait()
        audio = self.agent_audio
        # (audio.to_trunk is looked up per packet: a transfer's target, promoted, is routed
        # to the session after its lean path is up)
        lean = attach(transceiver, self.codec, audio.feed_pcm,
                      to_trunk=lambda: audio.to_trunk(),  # noqa: PLW0108
                      on_sent=audio.sent_pcm)
        self.lean = lean
        self.caller_track.go_lean(lean)
        if lean is not None:
            log.info("[call %s] agent peer: %s RTP on the lean path", self.call_id,
                     self.codec)

    def _on_track(self, track: Any) -> None:
        if track.kind != "audio":
            return
        self._tasks.append(asyncio.create_task(self.agent_audio.run(track)))
        self._tasks.append(asyncio.create_task(self._watch()))

    async def _watch(self) -> None:
        """Agent audio flowing or not: the first frame, then silence on the wire."""
        timeout = self.settings.media_timeout
        while True:
            await asyncio.sleep(0.05 if not self.flowing else min(0.25, timeout / 4))
            last = self.agent_audio.last_frame_at
            if last is None:
                continue
            if time.monotonic() - last < timeout:
                self._set_flowing(True)
            elif self.flowing:
                log.warning("[call %s] no audio from the agent for %.1fs", self.call_id,
                            timeout)
                self._set_flowing(False)

    # -- signaling ------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Apply the browser's offer; return our answer (ICE candidates included)."""
        # our transceiver first, so the offer's audio section binds to it with our codec
        # order and our jitter buffer
        transceiver = self.pc.addTransceiver(self.caller_track, direction="sendrecv")
        transceiver.setCodecPreferences(codec_preferences(self.settings.codecs))
        if self.settings.low_latency:
            use_immediate_jitter_buffer(transceiver.receiver)
        decode_on_loop(transceiver.receiver, self.agent_audio.feed_pcm)
        try:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except OperationError as e:
            offered = sorted({c.mimeType.split("/")[-1].lower() for m in _media(offer_sdp)
                              for c in m})
            raise ValueError(f"no common audio codec: the offer has {offered or 'none'}, "
                             f"webrtc.codecs allows {list(self.settings.codecs)}") from e
        if transceiver.mid is None:
            raise ValueError("the offer has no audio section")
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        sdp = str(self.pc.localDescription.sdp)
        self.codec = answer_codec(sdp)
        self.caller_track.set_codec(self.codec)
        if self.settings.lean_g711 and self.codec in BY_NAME and self.settings.rate == 8000:
            # aiortc's sender must not number a packet of the leg's SSRC before ours
            self.caller_track.hold()
            self._tasks.append(asyncio.create_task(self._go_lean(transceiver)))
        log.info("[call %s] agent peer answers with %s", self.call_id, self.codec or "?")
        return advertise_public(sdp, self.settings.public_address)

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
        if self.lean is not None:
            self.lean.close()
            # the caller's packets the relay's C core sent on the leg (not counted per frame)
            self.stats.to_agent_frames += self.lean.sender.relayed
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.caller_track.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()


def _media(sdp: str) -> list[list[Any]]:
    try:
        return [m.rtp.codecs for m in SessionDescription.parse(sdp).media if m.kind == "audio"]
    except (ValueError, IndexError):
        return []


def answer_codec(sdp: str) -> str:
    """The codec of the first payload type on the answer's audio m= line."""
    pts: list[str] = []
    for line in sdp.split("\r\n"):
        if line.startswith("m=audio"):
            pts = line.split()[3:]
        elif pts and line.startswith(f"a=rtpmap:{pts[0]} "):
            return line.split(" ", 1)[1].split("/")[0].lower()
    return ""
