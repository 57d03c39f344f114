"""The human phase's media: the agent and the call's other WebRTC legs (DESIGN.md §1 step 4).

A :class:`HumanLeg` belongs to one :class:`~hitl_sip.worker.session.CallSession` and reads
its phase: caller frames go to the agent's push only while the call is HUMAN; the agent's
frames (the peer's, or a lean leg's packet sent to the trunk from C) reach the caller's ear
at most ``agent_lead_frames`` ahead of the trunk's clock (:class:`LeadKeeper`), unless the
agent is muted; the agent's own recogniser makes agent turns. Supervisors and a transfer's
target are the :class:`~hitl_sip.worker.mix.Conference`'s legs, each with its recogniser.

With ``worker.trunk_relay`` the call's :class:`~hitl_sip.worker.relay.TrunkRelay` carries the
bridged audio: its thread and C core call :meth:`HumanLeg.relay_caller_frame`,
:attr:`HumanLeg.agent_push`, :meth:`HumanLeg.agent_to_trunk` and
:meth:`HumanLeg.agent_frame_sent` directly (per packet: no layer in between), and
:meth:`HumanLeg.relay_changed` makes it ask again after a change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from hitl_sip.errors import SpeechError
from hitl_sip.log import now_iso
from hitl_sip.media._rtpcore import TrunkOut
from hitl_sip.media.buffers import LeadKeeper
from hitl_sip.protocol import worker as wire
from hitl_sip.protocol.worker import CallState, LegRole
from hitl_sip.speech.base import SpeechEventType, SttStream, end_stream
from hitl_sip.worker.mix import Conference, Leg, Taps
from hitl_sip.worker.relay import TrunkRelay

if TYPE_CHECKING:
    from hitl_sip.worker.session import CallSession

#: caller frames per wake-up of the loop in a relayed human phase (HumanLeg.pace_inbound)
INBOUND_BATCH = 5  # (100 ms: the recogniser and a supervisor-less call need no sooner)


class HumanLeg:
    def __init__(self, session: CallSession) -> None:
        self.session = session
        self.log = session.log
        # the bridge's caller-audio input (None: no agent), whether the agent's audio is
        # flowing, mute, and the agent's own recogniser
        self.to_agent: Callable[[bytes], None] | None = None
        # with worker.trunk_relay: the caller's frames for the agent come from the relay as
        # the trunk's packets arrive, and the agent's go to the trunk through it
        self.relay: TrunkRelay | None = None
        self.agent_flowing = False
        self.agent_muted = False
        self.agent_frames_dropped = 0
        # the agent's audio ahead of the trunk clock, bounded and kept short
        self._agent_lead = LeadKeeper(session.settings.agent_lead_frames)
        self._agent_stt: SttStream | None = None
        self._agent_stt_task: asyncio.Task[None] | None = None
        # supervisors and a transfer's target: extra legs (hitl_sip.worker.mix)
        self.conference = Conference(self._to_caller, self._primary_driving)

    async def close(self) -> None:
        """The call is over: the agent's last words, then every leg's."""
        await self.stop_agent_stt()
        for name in list(self.conference.legs):
            await self.remove_leg(name)

    def pace_inbound(self) -> None:
        """pjmedia's caller frames wake the loop one by one while something needs each at
        once (barge-in, the agent's ear without a relay, a supervisor's); in a relayed
        human phase with nobody else on the call they go only to the recogniser, so the
        loop is woken once for :data:`INBOUND_BATCH` of them."""
        batched = (self.session.state is CallState.HUMAN and self.relay is not None
                   and not self.conference)
        self.session.inbound.wake_at = INBOUND_BATCH if batched else 1
        self.relay_changed()

    def relay_changed(self) -> None:
        """Who takes the caller's audio, or what the agent hears with it, may have
        changed: the relay's C core asks again at the next packet (relay.py)."""
        if self.relay is not None:
            self.relay.disarm()

    # -- the agent -------------------------------------------------------------------------

    def attach_agent(self, to_agent: Callable[[bytes], None], taps: Taps | None = None,
                     flowing: bool = False) -> None:
        """A (new) agent peer: caller frames go to ``to_agent`` while the call is HUMAN;
        ``taps`` are what else its track mixes in (the extra legs it hears); ``flowing``
        when its audio already flows (a transfer's target promoted)."""
        self.to_agent = to_agent
        self.agent_flowing = False
        self.conference.attach_primary(taps)
        self.relay_changed()
        if flowing:
            self.agent_media(True)

    def detach_agent(self) -> None:
        self.to_agent = None
        self.agent_flowing = False
        self.conference.attach_primary(None)
        self.relay_changed()
        self.session.on_source_active(False)

    def agent_media(self, flowing: bool) -> None:
        """The agent's audio started (the peer's first frame) or stopped (peer lost)."""
        if flowing == self.agent_flowing:
            return
        self.agent_flowing = flowing
        session = self.session
        if session.state is not CallState.HUMAN:
            return
        if flowing:
            self.log.info("agent audio flowing: it replaces the bot's audio")
            session.silence_bot()
        else:
            self.log.info("agent audio stopped: the caller hears hold audio")
            session.on_source_active(False)
            session.ensure_hold()

    def mute(self, muted: bool) -> None:
        """The agent (un)muted: not one more frame of the agent's while muted."""
        self.agent_muted = muted
        self.log.info("agent %s", "muted" if self.agent_muted else "unmuted")
        if self.agent_muted and self.session.state is CallState.HUMAN and self.agent_flowing:
            self.session.outbound.clear()  # not one more frame of the agent
            self.session.on_source_active(False)

    def on_agent_frame(self, frame: bytes) -> None:
        """One 20 ms frame of the agent's voice at the call's rate (from the peer)."""
        if not self._primary_driving():
            return
        if self._agent_stt is not None:
            self._agent_stt.push_frame(frame)
        self._to_caller(self.conference.primary_frame(frame) if self.conference else frame)

    def _primary_driving(self) -> bool:
        """The agent who holds the call is heard now (its frames pace the caller's ear)."""
        return (self.session.state is CallState.HUMAN and self.agent_flowing
                and not self.agent_muted)

    def agent_to_trunk(self) -> TrunkOut | None:
        """Where a lean leg's packet of the agent's may go as it is, from its C receiver:
        the relay's stream to the trunk, while the relay carries the agent's frames and
        the agent who holds the call is heard alone (no supervisor, no second leg mixed
        in, not muted). None: the frame takes :meth:`on_agent_frame`'s path."""
        relay = self.relay
        if relay is None or not relay.carrying or self.conference or not self._primary_driving():
            return None
        return relay.out

    def agent_frame_sent(self, frame: bytes) -> None:
        """A frame of the agent's that went to the trunk as it came (:meth:`agent_to_trunk`):
        the rest of :meth:`on_agent_frame`'s work — the recogniser, and what the caller
        hears for the recording."""
        if self._agent_stt is not None:
            self._agent_stt.push_frame(frame)
        self._heard(frame)

    def _to_caller(self, frame: bytes) -> None:
        """One frame for the caller's ear, at most ``agent_lead_frames`` ahead of the trunk's
        media clock; with a relay it reaches the trunk now, and pjmedia's copy (what the
        recording and the quality figures see) is dropped at the relay."""
        if self.relay is not None:
            self.relay.send_pcm(frame)
        self._heard(frame)

    def _heard(self, frame: bytes) -> None:
        """What the caller hears this frame, for pjmedia's tick (the trunk, or with a relay
        the recording and the underrun count)."""
        session = self.session
        self.agent_frames_dropped += self._agent_lead.admit(session.outbound)
        session.outbound.push_nowait(frame)
        session.on_source_active(True)

    def relay_caller_frame(self, pcm: bytes) -> None:
        """A caller frame from the relay, as its packet arrived (8 kHz s16le)."""
        if self.to_agent is not None and self.session.state is CallState.HUMAN:
            self.to_agent(pcm)

    @property
    def agent_push(self) -> Callable[[bytes], None] | None:
        """Where caller frames go now (:meth:`relay_caller_frame`; None: nowhere). Read by
        the relay's thread too."""
        return self.to_agent if self.session.state is CallState.HUMAN else None

    def start_agent_stt(self) -> None:
        session = self.session
        if session.stt is None or self._agent_stt is not None:
            return
        stream = session.stt.stream(session.settings.clock_rate)
        self._agent_stt = stream
        self._agent_stt_task = asyncio.get_running_loop().create_task(
            self._read_agent_stt(stream), name=f"agent-stt-{session.call_id}")

    async def _read_agent_stt(self, stream: SttStream) -> None:
        try:
            async for event in stream:
                if event.type is SpeechEventType.FINAL and event.text.strip():
                    self.session.turn("agent", event.text.strip())
                elif event.type is SpeechEventType.INTERIM and event.text.strip():
                    self.session.interim("agent", event.text.strip())
        except SpeechError as e:
            self.log.error("agent speech recognition stopped: %s (the call goes on)", e)

    async def stop_agent_stt(self) -> None:
        """End the agent's recogniser, keeping its last words."""
        stream, task = self._agent_stt, self._agent_stt_task
        self._agent_stt = self._agent_stt_task = None
        await end_stream(stream, task, self.session.settings.flush_timeout)

    # -- extra legs (supervisors, a transfer's target) ----------------------------------

    def add_leg(self, name: str, role: LegRole, push: Callable[[bytes], None],
                taps: Taps) -> None:
        self.conference.add(Leg(name, role, push, taps))
        self.pace_inbound()
        self.log.info("leg %s joins as %s", name, role.value)
        self._leg_stt(name)

    def set_leg_role(self, name: str, role: LegRole) -> bool:
        leg = self.conference.set_role(name, role)
        if leg is None:
            return False
        self.relay_changed()
        self.log.info("leg %s now %s", name, role.value)
        self._leg_stt(name)
        return True

    async def remove_leg(self, name: str) -> None:
        leg = self.conference.remove(name)
        self.pace_inbound()
        if leg is not None:
            self.log.info("leg %s leaves", name)
            stream, task, leg.stt, leg.stt_task = leg.stt, leg.stt_task, None, None
            await end_stream(stream, task, self.session.settings.flush_timeout)

    def promote_leg(self, name: str, push: Callable[[bytes], None], taps: Taps) -> None:
        """A transfer's target, flowing as a leg, becomes the call's agent at once; its
        leg recogniser is ended (the agent's own carries on)."""
        leg = self.conference.remove(name)
        self.pace_inbound()
        self.attach_agent(push, taps, flowing=True)
        if leg is not None and leg.stt is not None:
            task = asyncio.get_running_loop().create_task(
                end_stream(leg.stt, leg.stt_task, self.session.settings.flush_timeout))
            self.session.tasks.append(task)

    def on_leg_frame(self, name: str, frame: bytes) -> None:
        """One 20 ms frame of an extra leg's voice at the call's rate."""
        if self.session.state is CallState.HUMAN:
            self.conference.leg_frame(name, frame, asyncio.get_running_loop().time())

    def _leg_stt(self, name: str) -> None:
        """A leg that may be heard is transcribed (a listening supervisor is not)."""
        session = self.session
        leg = self.conference.legs.get(name)
        if leg is None or session.stt is None or leg.stt is not None:
            return
        if leg.role is LegRole.LISTEN:
            return
        stream = session.stt.stream(session.settings.clock_rate)
        leg.stt = stream
        leg.stt_task = asyncio.get_running_loop().create_task(
            self._read_leg_stt(leg, stream), name=f"leg-stt-{session.call_id}")

    async def _read_leg_stt(self, leg: Leg, stream: SttStream) -> None:
        """An agent leg's words are agent turns; a barging supervisor's, supervisor turns;
        a whispering one's go to the agents' live transcript only."""
        session = self.session
        try:
            async for event in stream:
                text = event.text.strip()
                if not text or event.type not in (SpeechEventType.FINAL,
                                                  SpeechEventType.INTERIM):
                    continue
                final = event.type is SpeechEventType.FINAL
                if leg.role is LegRole.WHISPER:
                    if final:
                        session.notify(wire.Whispered(
                            call_id=session.call_id, thread_id=session.thread_id,
                            role=wire.Role.SUPERVISOR, text=text, at=now_iso(),
                            seq=max(1, session.seq)))
                elif leg.role is not LegRole.LISTEN:
                    role = "agent" if leg.role is LegRole.AGENT else "supervisor"
                    (session.turn if final else session.interim)(role, text)
        except SpeechError as e:
            self.log.error("leg %s speech recognition stopped: %s", leg.name, e)
