"""The media worker's asyncio side: one :class:`CallRuntime` per admitted call.

An answered call gets a :class:`~hitl_sip.worker.session.CallSession` (the bot leg: flow,
STT, TTS, handoff). With ``worker.record_calls`` on, what the caller sends is also recorded
(WAV plus a JSON call record with DTMF, hold and state events) in ``<data_dir>/recordings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitl_sip.bot.actions import Say
from hitl_sip.bot.flow import audio_files
from hitl_sip.bot.runner import FlowRunner
from hitl_sip.config import PROJECT_ROOT, Config, uses_rtpengine, worker_transports
from hitl_sip.errors import SipError
from hitl_sip.log import call_logger, now_iso
from hitl_sip.media._rtpcore import Sender
from hitl_sip.media.buffers import FrameBuffer
from hitl_sip.media.ice import install_host_filter, rtc_configuration
from hitl_sip.media.quality import LegMeter, LegQualityFigures
from hitl_sip.media.rtp import payload_bounds
from hitl_sip.media.wav import load_pcm
from hitl_sip.protocol.worker import (
    AgentLeft,
    CallConnected,
    CallEndedMsg,
    CallHoldMsg,
    CallRejectedMsg,
    CallStarted,
    CallSummary,
    ErrorBody,
    Hangup,
    Hello,
    HubCommand,
    Leg,
    LegMedia,
    LegQuality,
    LegRole,
    Msg,
    PeerLost,
    Quality,
    Refer,
    RegistrationMsg,
    Reply,
    Resume,
    SessionStateMsg,
    Status,
    WebrtcCandidate,
    WebrtcOffer,
)
from hitl_sip.sip.profile import TrunkProfile, load_profile
from hitl_sip.supervise import restart_counter
from hitl_sip.watchdog import LoopWatchdog
from hitl_sip.worker.admission import Admission
from hitl_sip.worker.engines import build_flow, build_stt, build_tts, preload_stt
from hitl_sip.worker.events import (
    CallDtmf,
    CallEnded,
    CallHold,
    CallMediaReady,
    CallOffered,
    CallRejected,
    RegistrationChanged,
    WorkerEvent,
)
from hitl_sip.worker.hublink import HubLink
from hitl_sip.worker.metrics import WorkerMetrics
from hitl_sip.worker.peer import AgentPeer, PeerSettings
from hitl_sip.worker.pjsip import PjStack, StackInfo, StackSettings
from hitl_sip.worker.recorder import FORMATS, StereoRecorder
from hitl_sip.worker.relay import TrunkRelay
from hitl_sip.worker.session import MASKED, CallSession, SessionSettings

log = logging.getLogger(__name__)

QUALITY_INTERVAL = 2.0  # seconds between a call's quality reports
RELAY_LATCH_WAIT = 0.2  # seconds a new call waits for pjmedia to send through its relay


def _leg(name: str, figures: LegQualityFigures | None) -> LegQuality | None:
    if figures is None:
        return None
    return LegQuality(leg=name, loss_pct=figures.loss_pct, late_pct=figures.late_pct,
                      jitter_ms=figures.jitter_ms, mos=figures.mos)


@dataclass
class CallRuntime:
    call_id: str
    source: str
    transport: str
    metadata: dict[str, Any]
    received_at: str
    thread_id: str = ""
    codec: str = ""
    session: CallSession | None = None
    hangup_by: str = ""
    end_outcome: str = ""  # replaces the stack's outcome (a hang-up because the hub died)
    peer: AgentPeer | None = None
    # extra WebRTC legs (supervisors, a transfer's target) by name, their announced roles,
    # and the leg that takes over as the agent once its audio flows
    legs: dict[str, AgentPeer] = field(default_factory=dict)
    leg_roles: dict[str, LegRole] = field(default_factory=dict)
    promote: str | None = None
    # call quality (hitl_sip.media.quality): a meter per leg, and every interval's figures
    meters: dict[str, LegMeter] = field(default_factory=dict)
    quality: dict[str, list[LegQuality]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    frames_received: int = 0
    recording: StereoRecorder | None = None
    frames_sent: int = 0
    bridge: list[dict[str, Any]] = field(default_factory=list)  # stats per agent peer

    def event(self, kind: str, **data: Any) -> None:
        self.events.append({"type": kind, "at": now_iso(), **data})


def write_private(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a reader never sees half a record), 0600: it
    holds callers' numbers, headers and digits."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def rtp_slice(start: int, end: int, index: int, count: int) -> tuple[int, int]:
    """Worker ``index`` of ``count``'s share of the profile's RTP range (even-aligned, each
    call takes an RTP/RTCP pair), so that workers never race for a port; the whole range
    when it is too small to share (fewer than 8 ports each)."""
    even = start + (start & 1)
    share = ((end - even + 1) // max(count, 1)) & ~1
    if count <= 1 or share < 8:
        return start, end
    first = even + index * share
    return first, first + share - 1


def stack_settings(config: Config, profile: TrunkProfile, index: int,
                   sip_port: int | None = None) -> StackSettings:
    """``sip_port`` set: the worker sits behind the SIP front and listens on
    ``front.worker_host:sip_port`` for it (see hitl_sip/front/kamailio.py)."""
    port = config.sip.port + index if config.sip.port else 0
    register = None
    if profile.register.enabled:
        register = {
            "registrar": profile.register.registrar or "",
            "username": profile.register.username or "",
            "password": profile.register.password or "",
            "aor": profile.register.aor or "",
            "expires": profile.register.expires,
            "retry_interval": profile.register.retry_interval,
        }
    media_host, public_address = config.sip.host, profile.public_address or ""
    first, last = profile.rtp.start, profile.rtp.end
    if sip_port is not None and uses_rtpengine(config):
        # behind rtpengine the media is only rtpengine's business: on the workers' host,
        # in a range of its own, with no public address (rtpengine advertises its own)
        media_host, public_address = config.front.worker_host, ""
        first, last = config.front.worker_rtp_port_start, config.front.worker_rtp_port_end
    rtp_start, rtp_end = rtp_slice(first, last, index, config.worker.count)
    return StackSettings(
        host=media_host,
        port=port if sip_port is None else sip_port,
        sip_bind="" if sip_port is None else config.front.worker_host,
        transports=worker_transports(config),
        public_address=public_address,
        user_agent=config.sip.user_agent,
        clock_rate=config.worker.clock_rate,
        codecs=tuple(str(c.value) for c in profile.codecs),
        rtp_port_start=rtp_start,
        rtp_port_end=rtp_end,
        srtp=profile.srtp.value,
        buffer_frames=config.worker.buffer_frames,
        trunk_relay=config.worker.trunk_relay,
        sip_trace=config.log.sip_trace,
        register=register,
    )


class WorkerService:
    def __init__(
        self,
        config: Config,
        worker_id: str,
        index: int = 0,
        hub_url: str | None = None,
        hub_token: str = "",
        *,
        sip_port: int | None = None,
        digest_secret: bytes | None = None,
    ) -> None:
        """``digest_secret``: the nonce secret the hub gives all its workers, so a nonce from
        one verifies on every one; None (a worker run alone) draws one for this process."""
        self.config = config
        self.worker_id = worker_id
        self.digest_secret = digest_secret or secrets.token_bytes(32)
        self.index = index
        self.sip_port = sip_port
        self.profile = load_profile(config.sip.profile, config.resolve_path(config.profiles_dir))
        self.metrics = WorkerMetrics()
        self.calls: dict[str, CallRuntime] = {}
        self.info: StackInfo | None = None
        self.draining = False
        self.recordings = config.resolve_path(config.data_dir) / "recordings"
        self.flow = build_flow(config)
        self.tts = build_tts(config)
        self.stt = build_stt(config)
        self.hold_pcm = self._load_audio(config.bot.hold_audio)
        w = config.webrtc
        self.peer_settings = PeerSettings(
            rate=config.worker.clock_rate,
            codecs=w.codecs,
            rtc=rtc_configuration(w.stun_servers, w.turn_servers, w.turn_username,
                                  w.turn_password),
            public_address=w.public_address,
            low_latency=w.low_latency,
            media_timeout=w.media_timeout,
            lean_g711=w.lean_g711,
        )
        self.stack: PjStack | None = None
        self.watchdog: LoopWatchdog | None = None
        # reliable events beyond what memory holds wait in the data directory (0600)
        spill = config.resolve_path(config.data_dir) / f"worker-{worker_id}.pending"
        self.hub = (
            HubLink(hub_url, hub_token, self._hello, self._on_hub_message, spill_path=spill,
                    restarts=restart_counter(self.metrics.registry))
            if hub_url else None
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def _preload_prompts(self) -> None:
        """Read and resample the flow's prompt files now: the first call's greeting would
        otherwise do it on a thread that holds the interpreter in numpy for ~0.1-0.2 s,
        stalling the loop (and the relay's packets) while calls are up."""
        if self.flow is None:
            return
        for path in sorted(audio_files(self.flow)):
            try:
                load_pcm(path if path.is_absolute() else PROJECT_ROOT / path,
                         self.config.worker.clock_rate)
            except (OSError, ValueError) as e:  # the call that plays it logs it again
                log.warning("prompt file %s not loaded: %s", path, e)

    def _load_audio(self, path: str) -> bytes:
        if not path:
            return b""
        return load_pcm(self.config.resolve_path(path), self.config.worker.clock_rate)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> StackInfo:
        loop = asyncio.get_running_loop()
        if self.hub is not None:  # after the previous process with this id is gone
            await self.hub.acquire()
        install_host_filter(self.config.webrtc.host_addresses)
        await asyncio.to_thread(preload_stt, self.config, self.stt)
        await asyncio.to_thread(self._preload_prompts)
        admission = Admission(
            self.profile,
            self.config.worker.max_calls,
            self.config.worker.retry_after,
            auth_secret=self.digest_secret,
            front=frozenset(self.config.front.trusted) if self.sip_port is not None else None,
        )
        self.stack = PjStack(
            stack_settings(self.config, self.profile, self.index, self.sip_port),
            loop,
            self._on_event,
            admission,
            self.metrics,
        )
        self.info = await self.stack.start()
        self.watchdog = LoopWatchdog(loop, on_stall=lambda _late: self.metrics.loop_stalls.inc())
        self.watchdog.start()
        if self.config.worker.record_calls:
            self.recordings.mkdir(parents=True, exist_ok=True)
        log.info(
            "worker %s ready: SIP on %s, profile %s, up to %d calls",
            self.worker_id,
            ", ".join(f"{k}:{v}" for k, v in self.info.addresses.items()),
            self.profile.name,
            self.config.worker.max_calls,
        )
        if self.hub is not None:
            self.hub.start(self._status)  # the link and a status a second, supervised
        return self.info

    async def drain_and_stop(self, grace: float | None = None, outcome: str = "") -> None:
        """Refuse new calls (503), let live calls finish within ``grace``, then stop;
        ``outcome``: what the calls hung up at the end of ``grace`` report."""
        grace = self.config.worker.drain_grace if grace is None else grace
        self.draining = True
        self.metrics.draining.set(1)
        stack = self.stack
        if stack is not None:
            stack.draining = True
            if self.calls:
                log.info("draining: %d live calls, up to %.0fs", len(self.calls), grace)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), grace)
            for call_id, call in list(self.calls.items()):
                if outcome:
                    call.end_outcome, call.hangup_by = outcome, "system"
                with contextlib.suppress(Exception):
                    await stack.hangup(call_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), 3)
            await stack.stop()
        if self.hub is not None:
            self.hub.send(self._status())
            await self.hub.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.watchdog is not None:
            self.watchdog.stop()
        close = getattr(getattr(self.stt, "engine", self.stt), "close", None)
        if callable(close):
            await asyncio.to_thread(close)  # the speech process, when there is one

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- hub messages ---------------------------------------------------------------------

    def _hello(self) -> Hello:
        return Hello(
            worker_id=self.worker_id,
            pid=os.getpid(),
            sip=self.info.addresses if self.info else {},
            profile=self.profile.name,
            max_calls=self.config.worker.max_calls,
            active_calls=len(self.calls),
            draining=self.draining,
            calls=[self._call_summary(c) for c in self.calls.values()],
        )

    def _status(self) -> Status:
        return Status.model_validate({"active_calls": len(self.calls),
                                      "draining": self.draining,
                                      "metrics": self.metrics.registry.snapshot()})

    def _call_summary(self, call: CallRuntime) -> CallSummary:
        return CallSummary.model_validate(self._summary_fields(call))

    @staticmethod
    def _summary_fields(call: CallRuntime) -> dict[str, Any]:
        md = call.metadata
        return {
            "call_id": call.call_id,
            "thread_id": call.thread_id,
            "caller": {"number": md.get("caller_number"), "name": md.get("caller_name")},
            "called": md.get("called_number"),
            "trunk": md.get("trunk"),
            "received_at": call.received_at,
            "metadata": md.get("headers", {}),
            "codec": call.codec or None,
        }

    def _on_hub_message(self, command: HubCommand) -> None:
        call = self.calls.get(command.call_id)
        if call is None:
            return
        if isinstance(command, WebrtcOffer | WebrtcCandidate):
            self._spawn(self._webrtc(call, command))
            return
        if isinstance(command, Leg):
            self._spawn(self._leg(call, command))
            return
        if isinstance(command, Refer):
            self._spawn(self._refer(call, command))
            return
        if isinstance(command, AgentLeft | Resume) and call.peer is not None:
            self._spawn(self._close_peer(call))
        if isinstance(command, Hangup) and command.by in ("agent", "system"):
            call.hangup_by = command.by
        if isinstance(command, Hangup) and command.outcome is not None:
            call.end_outcome = command.outcome
        if call.session is not None:
            self._spawn(call.session.on_command(command))
        elif isinstance(command, Hangup) and self.stack is not None:
            self._spawn(self.stack.hangup(call.call_id))

    def _notify(self, message: Msg) -> None:
        if self.hub is not None:
            self.hub.send(message)

    # -- events from the pj thread --------------------------------------------------------

    def _on_event(self, event: WorkerEvent) -> None:
        if isinstance(event, CallOffered):
            self._on_offered(event)
        elif isinstance(event, CallMediaReady):
            self._on_media(event)
        elif isinstance(event, CallDtmf):
            self._on_dtmf(event)
        elif isinstance(event, CallHold):
            self._on_hold(event)
        elif isinstance(event, CallEnded):
            self._spawn(self._on_ended(event))
        elif isinstance(event, CallRejected):
            self._notify(CallRejectedMsg(status=event.status, outcome=event.outcome))
        elif isinstance(event, RegistrationChanged):
            self._notify(RegistrationMsg(account=event.account, active=event.active,
                                         status=event.status))

    def _on_offered(self, ev: CallOffered) -> None:
        metadata = dict(ev.metadata)
        # the trunk's address and transport, behind a front (its X-Hitl-Source)
        source = str(metadata.pop("source", None) or ev.source)
        transport = str(metadata.pop("transport", None) or ev.transport)
        call = CallRuntime(ev.call_id, source, transport, metadata, now_iso())
        headers = call.metadata.get("headers") or {}
        call.thread_id = str(headers.get("thread_id") or uuid.uuid4())
        self.calls[ev.call_id] = call
        self._idle.clear()
        clog = call_logger(log, ev.call_id)
        clog.info("incoming call over %s from %s", transport, source.rsplit(":", 1)[0],
                  extra={"redact": {"caller": ev.metadata.get("caller_number")}})
        call.event("offered")
        self._notify(CallStarted.model_validate(self._summary_fields(call)))
        call.tasks.append(self._spawn(self._answer(call)))

    async def _webrtc(self, call: CallRuntime,
                      command: WebrtcOffer | WebrtcCandidate) -> None:
        clog = call_logger(log, call.call_id)
        if isinstance(command, WebrtcCandidate):
            target = call.peer if command.leg is None else call.legs.get(command.leg)
            if target is not None:
                await target.add_candidate(command.candidate, command.sdp_mid,
                                           command.sdp_m_line_index)
            return
        if command.leg is not None:
            reply = await self._leg_offer(call, command.leg, command.sdp,
                                          command.request_id or "-")
            if command.request_id is not None:
                self._notify(reply)
            return
        try:
            session = call.session
            if session is None:
                raise ValueError("the call has no media yet")
            await self._close_peer(call)
            peer = AgentPeer(call.call_id, self.peer_settings,
                             on_agent_frame=session.on_agent_frame,
                             on_media=lambda flowing: self._on_agent_media(call, flowing))
            call.peer = peer
            _route_agent(peer, session)
            session.attach_agent(peer.caller_track.push, peer.caller_track.taps)
            try:
                sdp = await peer.answer(command.sdp)
            except Exception:
                await self._close_peer(call)
                raise
            reply = Reply(request_id=command.request_id or "-", call_id=call.call_id, ok=True,
                          sdp=sdp)
            call.event("webrtc", codec=peer.codec)
            clog.info("agent WebRTC offer answered (%s)", peer.codec)
        except (ValueError, KeyError, TypeError) as e:
            clog.warning("agent WebRTC offer refused: %s", e)
            reply = Reply(request_id=command.request_id or "-", call_id=call.call_id, ok=False,
                          error=ErrorBody(code="bad_request", message=str(e)[:200]))
        if command.request_id is not None:
            self._notify(reply)

    def _on_agent_media(self, call: CallRuntime, flowing: bool) -> None:
        """The agent's audio started or stopped: the session switches what the caller
        hears, the hub learns it (call_connected / peer_lost)."""
        if call.session is not None:
            call.session.agent_media(flowing)
        call.event("agent_media", flowing=flowing)
        if flowing:
            self._notify(CallConnected(call_id=call.call_id, at=now_iso()))
        else:
            self._notify(PeerLost(call_id=call.call_id))

    # -- extra legs: supervisors and a transfer's target (hitl_sip.worker.mix) ------------

    async def _leg(self, call: CallRuntime, command: Leg) -> None:
        """A leg announced, switched, promoted or closed by the hub."""
        call.event("leg", leg=command.leg, role=command.role, primary=command.primary)
        if command.role is None:
            call.leg_roles.pop(command.leg, None)
            if call.promote == command.leg:
                call.promote = None
            await self._close_leg(call, command.leg)
            return
        call.leg_roles[command.leg] = command.role
        if command.leg in call.legs and call.session is not None:
            call.session.set_leg_role(command.leg, command.role)
        if command.primary:
            call.promote = command.leg
            peer = call.legs.get(command.leg)
            if peer is not None and peer.flowing:
                self._promote(call, command.leg)

    def _relay_human(self, call: Any, session: CallSession) -> None:
        """With the call's relay (``worker.trunk_relay``) the bridged call's caller frames
        come from the relay as the trunk's packets arrive, and the agent's go out through
        it; pjmedia's tick carries the rest (transcription, recording, supervisors)."""
        relay = self.stack.relay_of(call.call_id) if self.stack is not None else None
        if relay is None or str(call.codec or "").upper() not in ("PCMU", "PCMA"):
            return
        relay.to_agent = session.relay_caller_frame
        relay.direct = lambda pt, packet: _direct_to_agent(call, session, pt, packet)
        stack = self.stack
        if stack is not None:
            relay.on_carry = lambda carries: stack.relay_carries(call.call_id, carries)
        session.relay = relay
        relay.disarm()
        call_logger(log, call.call_id).info("relay in front of pjmedia: the bridged audio "
                                            "skips the conference tick")

    async def _leg_offer(self, call: CallRuntime, name: str, sdp: str,
                         request_id: str) -> Reply:
        clog = call_logger(log, call.call_id)
        session = call.session
        role = call.leg_roles.get(name)
        try:
            if session is None:
                raise ValueError("the call has no media yet")
            if role is None:
                raise ValueError(f"no leg {name} on this call")
            await self._close_leg(call, name)  # a renegotiation replaces the peer

            def frame(pcm: bytes) -> None:
                session.on_leg_frame(name, pcm)
            peer = AgentPeer(call.call_id, self.peer_settings, on_agent_frame=frame,
                             on_media=lambda flowing: self._on_leg_media(call, name, flowing))
            call.legs[name] = peer
            session.add_leg(name, role, peer.caller_track.push, peer.caller_track.taps)
            try:
                answer = await peer.answer(sdp)
            except Exception:
                await self._close_leg(call, name)
                raise
            clog.info("leg %s WebRTC offer answered (%s)", name, peer.codec)
            return Reply(request_id=request_id, call_id=call.call_id, ok=True, sdp=answer)
        except (ValueError, KeyError, TypeError) as e:
            clog.warning("leg %s WebRTC offer refused: %s", name, e)
            return Reply(request_id=request_id, call_id=call.call_id, ok=False,
                         error=ErrorBody(code="bad_request", message=str(e)[:200]))

    def _on_leg_media(self, call: CallRuntime, name: str, flowing: bool) -> None:
        call.event("leg_media", leg=name, flowing=flowing)
        self._notify(LegMedia(call_id=call.call_id, leg=name, flowing=flowing))
        if flowing and call.promote == name:
            self._promote(call, name)

    def _promote(self, call: CallRuntime, name: str) -> None:
        """The transfer's target takes over as the call's agent, without a frame's gap:
        its peer is switched in first, the previous agent's closed after."""
        peer, session = call.legs.pop(name, None), call.session
        if peer is None or session is None:
            return
        call.promote = None
        call.leg_roles.pop(name, None)
        old, call.peer = call.peer, peer
        _route_agent(peer, session)
        peer.on_media = lambda flowing: self._on_agent_media(call, flowing)
        session.promote_leg(name, peer.caller_track.push, peer.caller_track.taps)
        call.event("promoted", leg=name)
        call_logger(log, call.call_id).info("leg %s is the call's agent now", name)
        self._notify(LegMedia(call_id=call.call_id, leg=name, flowing=True, primary=True))
        if old is not None:
            _route_agent(old, None)
            old.on_media = lambda flowing: None
            self._spawn(self._retire_peer(call, old))

    async def _close_leg(self, call: CallRuntime, name: str) -> None:
        peer = call.legs.pop(name, None)
        if call.session is not None:
            await call.session.remove_leg(name)
        if peer is not None:
            with contextlib.suppress(Exception):
                await peer.close()

    async def _close_peer(self, call: CallRuntime) -> None:
        peer, call.peer = call.peer, None
        if peer is None:
            return
        if call.session is not None:
            call.session.detach_agent()
        await self._retire_peer(call, peer)

    async def _retire_peer(self, call: CallRuntime, peer: AgentPeer) -> None:
        """Close an agent's peer and keep its bridge figures."""
        with contextlib.suppress(Exception):
            await peer.close()
        stats = dataclasses.asdict(peer.stats)
        stats["codec"] = peer.codec
        if call.session is not None:
            stats["from_agent_dropped"] += call.session.agent_frames_dropped
            call.session.agent_frames_dropped = 0
        call.bridge.append(stats)
        for key in ("to_agent_frames", "to_agent_silence", "to_agent_trimmed",
                    "from_agent_frames", "from_agent_dropped"):
            self.metrics.bridge_frames.inc(stats[key], kind=key)

    # -- transfer to a phone number (PROTOCOL.md §6; the hub decides the means) ----------

    async def _refer(self, call: CallRuntime, command: Refer) -> None:
        """REFER the caller to the number; the hub gets the outcome (it hangs up after)."""
        clog = call_logger(log, call.call_id)
        transfer = self.profile.transfer
        error: ErrorBody | None = None
        if not transfer.refer:
            error = ErrorBody(code="unavailable",
                              message=f"trunk profile {self.profile.name} has refer = false")
        elif self.stack is None:
            error = ErrorBody(code="unavailable", message="the SIP stack is not running")
        else:
            call.event("refer")  # the number stays out of the call record's events
            clog.info("REFER to the trunk", extra={"redact": {"number": command.number}})
            try:
                status, reason = await self.stack.refer(call.call_id, command.number,
                                                        transfer.refer_host, command.timeout)
            except SipError as e:
                status, reason = 0, str(e)
            call.event("refer_outcome", status=status)
            clog.info("REFER outcome: %s %s", status or "-", reason)
            if not 200 <= status < 300:
                error = ErrorBody(code="refer_failed", message=f"{status} {reason}"[:200])
        if command.request_id is not None:
            self._notify(Reply(request_id=command.request_id, call_id=call.call_id,
                               ok=error is None, error=error))

    async def _answer(self, call: CallRuntime) -> None:
        assert self.stack is not None
        delay = self.config.worker.answer_delay_ms / 1000
        if delay:
            await asyncio.sleep(delay)
        if call.call_id in self.calls and await self.stack.answer(call.call_id, 200):
            call.event("answered")
            await asyncio.sleep(self.config.worker.max_call_seconds)
            call_logger(log, call.call_id).warning(
                "hanging up: the call reached worker.max_call_seconds (%.0fs)",
                self.config.worker.max_call_seconds,
            )
            await self.stack.hangup(call.call_id)

    def _on_media(self, ev: CallMediaReady) -> None:
        call = self.calls.get(ev.call_id)
        if call is None:
            return
        call.codec = ev.codec
        call.event("media", codec=ev.codec)
        call_logger(log, ev.call_id).info("media up (%s)", ev.codec or "unknown codec")
        call.session = self._new_session(call, ev.inbound, ev.outbound, self._count_frame(call))
        self._relay_human(call, call.session)
        self._open_recording(call, call.session)
        call.tasks.append(self._spawn(self._start_session(call, call.session)))
        call.tasks.append(self._spawn(self._measure_quality(call)))

    async def _start_session(self, call: CallRuntime, session: CallSession) -> None:
        relay = self.stack.relay_of(call.call_id) if self.stack is not None else None
        await session.start(None if relay is None else lambda: self._relay_latched(relay))

    @staticmethod
    async def _relay_latched(relay: TrunkRelay) -> None:
        """The greeting's first frames leave through the relay only once pjmedia's stream
        has switched to it (after the relay's primer; pjmedia sends every 20 ms)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RELAY_LATCH_WAIT):
                await relay.pjmedia_latched.wait()

    def _on_dtmf(self, ev: CallDtmf) -> None:
        call = self.calls.get(ev.call_id)
        if call is None:
            return
        # the digit itself only where the flow says it is safe (a menu): it may be a card
        # number (hitl_sip.worker.session.CallSession.shown_digit)
        shown = call.session.shown_digit(ev.digit) if call.session is not None else MASKED
        call.event("dtmf", digit=shown, method=ev.method)
        call_logger(log, ev.call_id).info("DTMF received (%s)", ev.method,
                                          extra={"redact": {"digit": shown}})
        if call.session is not None:
            self._spawn(call.session.on_dtmf(ev.digit))

    def _on_hold(self, ev: CallHold) -> None:
        call = self.calls.get(ev.call_id)
        if call is None:
            return
        call.event("hold" if ev.held else "unhold")
        call_logger(log, ev.call_id).info("caller %s", "holds" if ev.held else "resumes")
        self._notify(CallHoldMsg(call_id=ev.call_id, held=ev.held))

    async def _on_ended(self, ev: CallEnded) -> None:
        call = self.calls.pop(ev.call_id, None)
        if call is None:
            return
        await self._close_peer(call)
        for name in list(call.legs):
            await self._close_leg(call, name)
        if call.session is not None:
            try:
                await call.session.close()
            except Exception:
                call_logger(log, ev.call_id).exception("closing the call session failed")
        for task in call.tasks:
            task.cancel()
        await asyncio.gather(*call.tasks, return_exceptions=True)
        if call.recording is not None:
            await call.recording.close()
            call.recording = None
        by = call.hangup_by if ev.by == "system" and call.hangup_by else ev.by
        if call.end_outcome:
            ev = dataclasses.replace(ev, outcome=call.end_outcome)
        call.event("ended", outcome=ev.outcome, status=ev.status, by=by)
        call_logger(log, ev.call_id).info(
            "call ended: %s by %s (%s %s) after %.1fs", ev.outcome, ev.by, ev.status, ev.reason,
            ev.duration,
        )
        if self.config.worker.record_calls:
            record = {
                "callId": call.call_id,
                "workerId": self.worker_id,
                "receivedAt": call.received_at,
                "source": call.source,
                "transport": call.transport,
                "codec": call.codec,
                "metadata": call.metadata,
                "outcome": ev.outcome,
                "endedBy": by,
                "status": ev.status,
                "framesReceived": call.frames_received,
                "framesSent": call.frames_sent,
                "threadId": call.thread_id,
                "bridge": call.bridge,
                "quality": self._quality_record(call),
                "responseLatencies": [
                    {"input": kind, "seconds": seconds}
                    for kind, seconds in (call.session.response_latencies if call.session else [])
                ],
                "events": call.events,
            }
            write_private(self.recordings / f"{call.call_id}.json",
                          json.dumps(record, indent=2))
        self._notify(CallEndedMsg(call_id=ev.call_id, outcome=ev.outcome, by=by,
                                  status=ev.status, thread_id=call.thread_id or None))
        if not self.calls:
            self._idle.set()

    # -- media tasks ----------------------------------------------------------------------

    # -- call quality (hitl_sip.media.quality) ---------------------------------------------

    async def _measure_quality(self, call: CallRuntime) -> None:
        """Every QUALITY_INTERVAL: each leg's loss, late frames, jitter and MOS, to the hub
        (the agent's badge, the board) and kept for the call record."""
        while True:
            await asyncio.sleep(QUALITY_INTERVAL)
            legs = [q for q in [await self._trunk_quality(call),
                                *[await self._peer_quality(call, name, peer)
                                  for name, peer in [("agent", call.peer),
                                                     *call.legs.items()]]] if q is not None]
            if legs:
                for q in legs:
                    call.quality.setdefault(q.leg, []).append(q)
                self._notify(Quality(call_id=call.call_id, legs=legs))

    async def _trunk_quality(self, call: CallRuntime) -> LegQuality | None:
        if self.stack is None:
            return None
        with contextlib.suppress(SipError):
            stats = await self.stack.stream_stats(call.call_id)
            if stats is not None:
                meter = call.meters.setdefault("caller", LegMeter("pcmu"))
                figures = meter.read(expected=stats.received + stats.lost, lost=stats.lost,
                                     frames=stats.received, late=stats.late,
                                     jitter_ms=stats.jitter_ms, delay_ms=stats.delay_ms)
                return _leg("caller", figures)
        return None

    async def _peer_quality(self, call: CallRuntime, name: str,
                            peer: AgentPeer | None) -> LegQuality | None:
        """A WebRTC leg: aiortc's receiver figures; for the agent, its frames dropped on
        the way to the caller count as late."""
        if peer is None or not peer.codec:
            return None
        try:
            report = await peer.pc.getStats()
        except Exception:  # a peer closing under us
            return None
        inbound = [s for s in report.values() if getattr(s, "type", "") == "inbound-rtp"]
        if not inbound:
            return None
        rx = inbound[0]
        rate = 48000 if peer.codec == "opus" else 8000
        received, lost = int(rx.packetsReceived), max(0, int(rx.packetsLost))
        late = peer.stats.from_agent_dropped
        if name == "agent" and call.session is not None:
            late += call.session.agent_frames_dropped
        meter = call.meters.setdefault(f"{name}:{id(peer)}", LegMeter(peer.codec))
        figures = meter.read(expected=received + lost, lost=lost,
                             frames=peer.stats.from_agent_frames + late, late=late,
                             jitter_ms=1000.0 * int(rx.jitter) / rate)
        return _leg(name, figures)

    def _quality_record(self, call: CallRuntime) -> dict[str, dict[str, float]]:
        """Per leg, the call's means (for the call record and the histograms)."""
        out = {}
        for leg, figures in call.quality.items():
            n = len(figures)
            out[leg] = {key: round(sum(getattr(f, key) for f in figures) / n, 2)
                        for key in ("loss_pct", "late_pct", "jitter_ms", "mos")}
            out[leg]["intervals"] = n
            kind = leg if leg in ("caller", "agent") else "extra"
            self.metrics.call_mos.observe(out[leg]["mos"], leg=kind)
            self.metrics.call_loss.observe(out[leg]["loss_pct"], leg=kind)
            self.metrics.call_jitter.observe(out[leg]["jitter_ms"], leg=kind)
        return out

    @staticmethod
    def _count_frame(call: CallRuntime) -> Callable[[bytes], None]:
        def count(frame: bytes) -> None:
            call.frames_received += 1
        return count

    def _open_recording(self, call: CallRuntime, session: CallSession) -> None:
        """The call's two-channel recording (hitl_sip.worker.recorder), as the flow says:
        ``on`` from the first tick, ``consent`` once the notice has played, ``off`` none."""
        mode = self.flow.record if self.flow is not None else "on"
        if not self.config.worker.record_calls or mode == "off" or self.stack is None:
            call.event("recording", mode="off")
            return
        fmt = self.config.worker.record_format
        recorder = StereoRecorder(self.recordings / f"{call.call_id}{FORMATS[fmt]}",
                                  self.config.worker.clock_rate, fmt, armed=mode == "on")
        recorder.start()
        if not self.stack.set_recorder(call.call_id, recorder):
            call_logger(log, call.call_id).warning("no media port to record")
        call.recording = recorder
        call.event("recording", mode=mode, format=fmt)
        if mode == "consent" and self.flow is not None and self.flow.consent is not None:
            consent = self.flow.consent

            def arm() -> None:
                recorder.armed = True
                call.event("recording", mode="started")
            session.consent = Say(text=consent.text, audio=consent.audio, barge_in=False,
                                  node_id="consent")
            session.on_consent = arm

    def _new_session(
        self,
        call: CallRuntime,
        inbound: FrameBuffer,
        outbound: FrameBuffer,
        record: Callable[[bytes], None] | None,
    ) -> CallSession:
        assert self.stack is not None
        stack = self.stack
        md = call.metadata
        runner = None
        if self.flow is not None:
            variables = {
                "caller_number": str(md.get("caller_number") or ""),
                "caller_name": str(md.get("caller_name") or ""),
                "called_number": str(md.get("called_number") or ""),
                "trunk": str(md.get("trunk") or ""),
            }
            for key, value in (md.get("headers") or {}).items():
                variables[f"headers.{key}"] = str(value)
            runner = FlowRunner(self.flow, variables, log=call_logger(log, call.call_id))

        def notify(message: Msg) -> None:
            if isinstance(message, SessionStateMsg):
                call.event("state", state=message.state.value)
            self._notify(message)

        def source_active(active: bool) -> None:
            stack.set_source_active(call.call_id, active)

        return CallSession(
            call_id=call.call_id,
            thread_id=call.thread_id,
            metadata=md,
            inbound=inbound,
            outbound=outbound,
            tts=self.tts,
            stt=self.stt,
            runner=runner,
            notify=notify,
            hangup=lambda: stack.hangup(call.call_id),
            settings=SessionSettings(
                clock_rate=self.config.worker.clock_rate,
                frame_bytes=stack.frame_bytes,
                barge_in_dbfs=self.config.bot.barge_in_dbfs,
                hold_pcm=self.hold_pcm,
                project_root=PROJECT_ROOT,
                agent_lead_frames=self.config.webrtc.max_lead_frames,
            ),
            on_source_active=source_active,
            on_caller_frame=record,
        )


def _route_agent(peer: AgentPeer, session: CallSession | None) -> None:
    """The agent's frames to the session (None: nowhere, a transfer's previous agent);
    a lean leg's packets to the trunk as they come while the session allows it."""
    audio = peer.agent_audio
    if session is None:
        audio.deliver = audio.deliver_sent = lambda pcm: None
        audio.to_trunk = lambda: None
        return
    audio.deliver = session.on_agent_frame
    audio.deliver_sent = session.agent_frame_sent
    audio.to_trunk = session.agent_to_trunk


def _direct_to_agent(call: CallRuntime, session: CallSession, pt: int,
                     packet: bytes) -> Sender | bool:
    """On the relay's thread, for a G.711 packet of the caller's while the relay's C core
    is not armed: True when the loop need not see it because nobody takes caller frames
    now (the bot phase, an agent not there yet); the agent's lean leg's sender when it
    went there from here; False: the loop hands the frame on (aiortc's path, or the agent
    hears another talker mixed in). The verdict arms the core (relay.py) until the
    session disarms it (CallSession.relay_changed) — the lean leg's closing too."""
    push = session.agent_push
    if push is None:
        return True
    peer = call.peer
    if peer is None:
        return False
    track, lean = peer.caller_track, peer.lean
    if lean is None or lean.closed or len(track.taps) or push != track.push:
        return False
    start, end = payload_bounds(packet)
    if start < end:  # (else one pjmedia refuses the same way, or an empty one)
        lean.send_payload(pt, packet[start:end])
        track.stats.to_agent_frames += 1
    return lean.sender
