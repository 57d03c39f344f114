"""CallSession: the per-call state machine and the bot leg (DESIGN.md §1).

``BOT → QUEUED → HUMAN → ENDED``, with ``QUEUED → BOT`` (no agent in time), ``HUMAN → BOT``
(return_to_bot) and ``HUMAN → QUEUED`` (the agent is gone: the call is offered again);
every state may end. Each transition
is reported to the hub; an illegal one raises :class:`IllegalTransition`.

In BOT the session listens (streaming STT on every caller frame, DTMF), asks the flow runner
(or, with ``bot.flow = "external"``, the ``/bot`` engine through the hub) what to do, and
speaks (TTS, paced by the media clock through the outbound FrameBuffer). Caller speech (an
energy VAD on the inbound frames) or a DTMF digit stops a prompt that allows barge-in at the
next 20 ms frame: the queued frames are dropped and the port sends silence. A digit pressed
while a prompt that does not allow barge-in plays is typed ahead: kept, in order, and given
to the flow as soon as that prompt ends (hitl_sip.bot.actions). On the agent node it reports
``handoff_requested``, says the node's message and loops hold audio while STT keeps
transcribing. Every bot utterance and every caller final becomes a turn; a digit becomes a
``[pressed N]`` turn — ``[pressed •]`` unless the flow node it goes to says ``safe_digits``
(a menu): digits pressed for an agent or an external engine, or at a node collecting a
number, are never kept; digits pressed on hold reach only the call record, masked too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hitl_sip.bot.actions import Action, BotDialog, Handoff, Hangup, Listen, Say
from hitl_sip.errors import HitlSipError, SpeechError
from hitl_sip.log import call_logger, now_iso
from hitl_sip.media._rtpcore import TrunkOut
from hitl_sip.media.buffers import BufferClosed, FrameBuffer, LeadKeeper
from hitl_sip.media.wav import load_pcm
from hitl_sip.protocol import worker as wire
from hitl_sip.protocol.worker import CallState, HubCommand, LegRole, Msg
from hitl_sip.speech.base import SpeechEventType, SttEngine, SttStream, TtsEngine
from hitl_sip.worker.mix import Conference, Leg, Taps
from hitl_sip.worker.player import Prompt, PromptPlayer
from hitl_sip.worker.relay import TrunkRelay

log = logging.getLogger(__name__)

MASKED = "•"  # a digit that may not be kept (see CallSession.shown_digit)
TYPE_AHEAD_MAX = 32  # digits kept while a prompt plays (a flow's longest entry, dtmf_max)
#: caller frames per wake-up of the loop in a relayed human phase (CallSession._pace_inbound)
INBOUND_BATCH = 5  # (100 ms: the recogniser and a supervisor-less call need no sooner)

Notify = Callable[[Msg], None]

SessionState = CallState  # one call-state enum for hub and worker (hitl_sip.protocol)


ALLOWED: dict[SessionState, frozenset[SessionState]] = {
    SessionState.BOT: frozenset({SessionState.QUEUED, SessionState.ENDED}),
    SessionState.QUEUED: frozenset({SessionState.BOT, SessionState.HUMAN, SessionState.ENDED}),
    SessionState.HUMAN: frozenset({SessionState.BOT, SessionState.QUEUED, SessionState.ENDED}),
    SessionState.ENDED: frozenset(),
}


class IllegalTransition(HitlSipError):
    def __init__(self, old: SessionState, new: SessionState) -> None:
        super().__init__(f"illegal call state transition {old.value} -> {new.value}")
        self.old = old
        self.new = new


def frame_dbfs(frame: bytes) -> float:
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    if not len(samples):
        return -120.0
    rms = math.sqrt(float(samples.dot(samples)) / len(samples))
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -120.0


@dataclass
class SessionSettings:
    clock_rate: int = 16000
    frame_bytes: int = 640
    barge_in_dbfs: float = -35.0
    barge_in_frames: int = 3  # 60 ms of speech energy before a prompt is interrupted
    hold_pcm: bytes = b""
    # Frames queued ahead of the media clock. Barge-in clears the queue, so a deep lead
    # costs no barge-in latency; it absorbs loop stalls and the clock thread's catch-up
    # burst after a GIL-holding C call (a pocketsphinx decoder loading takes ~0.25 s).
    lead_frames: int = 10
    flush_timeout: float = 1.5
    project_root: Path = Path(".")
    # agent audio queued ahead of the trunk's media clock, at most (webrtc.max_lead_frames)
    agent_lead_frames: int = 3


class CallSession:
    def __init__(
        self,
        *,
        call_id: str,
        thread_id: str,
        metadata: dict[str, Any],
        inbound: FrameBuffer,
        outbound: FrameBuffer,
        tts: TtsEngine,
        stt: SttEngine | None,
        runner: BotDialog | None,
        notify: Notify,
        hangup: Callable[[], Awaitable[Any]],
        settings: SessionSettings,
        on_source_active: Callable[[bool], None] = lambda active: None,
        on_caller_frame: Callable[[bytes], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.thread_id = thread_id
        self.metadata = metadata
        self.inbound = inbound
        self.outbound = outbound
        self.tts = tts
        self.stt = stt
        self.runner = runner
        self.notify = notify
        self.hangup_call = hangup
        self.settings = settings
        self.on_source_active = on_source_active
        self.on_caller_frame = on_caller_frame  # the recorder, when calls are recorded
        self.state = SessionState.BOT
        self.transcript: list[dict[str, Any]] = []
        self.log = call_logger(log, call_id)
        self._seq = 0
        self.player = PromptPlayer(outbound, frame_bytes=settings.frame_bytes,
                                   lead_frames=settings.lead_frames,
                                   on_source_active=self._source_active,
                                   on_frame=self._note_first_frame)
        self._listen_timer: asyncio.TimerHandle | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._listening: Listen | None = None  # the flow's current wait for input
        self._typed_ahead: deque[str] = deque(maxlen=TYPE_AHEAD_MAX)
        self._type_ahead_task: asyncio.Task[None] | None = None
        self._voiced_frames = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._actions = asyncio.Lock()
        self._stt_stream: SttStream | None = None
        self._stt_task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        # for the latency benchmark: loop time of the last caller input and of the first
        # bot frame queued after it
        self.last_input_at: float | None = None
        self.last_input_kind = ""
        self._fed_seconds = 0.0  # caller audio pushed into STT, on the audio clock
        self.response_latencies: list[tuple[str, float]] = []
        # the human phase: the bridge's caller-audio input, whether the agent's audio is
        # flowing, mute, and the agent's own recogniser
        self._to_agent: Callable[[bytes], None] | None = None
        # with worker.trunk_relay: the caller's frames for the agent come from the relay as
        # the trunk's packets arrive, and the agent's go to the trunk through it
        self.relay: TrunkRelay | None = None
        self._agent_media = False
        self.agent_muted = False
        self.agent_frames_dropped = 0
        self._bot_since = 0.0  # caller audio time (s) when the bot last took the call back
        # the agent's audio ahead of the trunk clock, bounded and kept short
        self._agent_lead = LeadKeeper(settings.agent_lead_frames)
        self._agent_stt: SttStream | None = None
        self._agent_stt_task: asyncio.Task[None] | None = None
        # a flow's recording consent notice, played before the flow; then on_consent
        self.consent: Say | None = None
        self.on_consent: Callable[[], None] = lambda: None
        # supervisors and a transfer's target: extra legs (hitl_sip.worker.mix)
        self.conference = Conference(self._to_caller, self._primary_driving)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, audio_ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Listen, run the flow, play its prompts. With ``audio_ready`` the first frame
        played waits for what it returns (a relayed call's path to the trunk); the rest
        starts now — a digit typed as the call starts meets the flow's first node."""
        loop = asyncio.get_running_loop()
        if self.stt is not None:
            self._stt_stream = self.stt.stream(self.settings.clock_rate)
            self._stt_task = loop.create_task(self._read_stt(), name=f"stt-{self.call_id}")
        self._tasks.append(loop.create_task(self._feed(), name=f"feed-{self.call_id}"))
        self._tasks.append(loop.create_task(self._play(audio_ready), name=f"play-{self.call_id}"))
        self._notify_state()
        if self.consent is not None:  # recording starts once the caller has heard it
            await self._say(self.consent)
            await self.player.wait_done()
            if self.ended:
                return
            self.log.info("recording consent notice played: recording starts")
            self.on_consent()
        if self.runner is not None:
            await self._run(self.runner.start())

    async def _play(self, audio_ready: Callable[[], Awaitable[None]] | None) -> None:
        if audio_ready is not None:
            await audio_ready()
        await self.player.run()

    async def close(self) -> None:
        """The call is over: keep the last words (flush STT), stop every task."""
        if self.state is not SessionState.ENDED:
            self._set_state(SessionState.ENDED)
        self._cancel_listen()
        stream = self._stt_stream
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._end_stream(stream, self._stt_task)  # the caller's last words
        await self._stop_agent_stt()
        for name in list(self.conference.legs):
            await self.remove_leg(name)
        self.player.close()

    # -- state ----------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self.state is SessionState.ENDED

    def _set_state(self, new: SessionState) -> None:
        if new not in ALLOWED[self.state]:
            raise IllegalTransition(self.state, new)
        self.log.info("state %s -> %s", self.state.value, new.value)
        self.state = new
        self._pace_inbound()
        self._notify_state()

    def _pace_inbound(self) -> None:
        """pjmedia's caller frames wake the loop one by one while something needs each at
        once (barge-in, the agent's ear without a relay, a supervisor's); in a relayed
        human phase with nobody else on the call they go only to the recogniser, so the
        loop is woken once for :data:`INBOUND_BATCH` of them."""
        batched = (self.state is SessionState.HUMAN and self.relay is not None
                   and not self.conference)
        self.inbound.wake_at = INBOUND_BATCH if batched else 1
        self.relay_changed()

    def relay_changed(self) -> None:
        """Who takes the caller's audio, or what the agent hears with it, may have
        changed: the relay's C core asks again at the next packet (relay.py)."""
        if self.relay is not None:
            self.relay.disarm()

    def _notify_state(self) -> None:
        self.notify(wire.SessionStateMsg(call_id=self.call_id, thread_id=self.thread_id,
                                         state=self.state, at=now_iso()))

    def _turn(self, role: str, text: str) -> None:
        self._seq += 1
        at = now_iso()
        self.transcript.append({"role": role, "text": text, "at": at})
        self.notify(wire.TurnMsg(call_id=self.call_id, thread_id=self.thread_id,
                                 role=wire.Role(role), text=text, at=at, seq=self._seq))

    def _interim(self, role: str, text: str) -> None:
        """A partial result: live captions for the agent on the call (not a thread turn)."""
        if self.state is SessionState.HUMAN:
            self.notify(wire.Interim(call_id=self.call_id, thread_id=self.thread_id,
                                     role=wire.Role(role), text=text, at=now_iso(),
                                     seq=self._seq + 1))  # the seq its final will have

    def _flush_caller_stt(self) -> None:
        """A phase change: the caller's pending words become a final now, in this phase."""
        stream = self._stt_stream
        if stream is not None:
            task = asyncio.get_running_loop().create_task(stream.flush())
            self._tasks.append(task)

    # -- inputs ---------------------------------------------------------------------------

    async def _feed(self) -> None:
        """Every caller frame goes to STT; while a bargeable prompt plays an energy VAD drives
        barge-in (no per-frame level in the human phase)."""
        stream = self._stt_stream
        try:
            while True:
                frame = await self.inbound.get()
                if self.on_caller_frame is not None:
                    self.on_caller_frame(frame)
                self._fed_seconds += len(frame) / 2 / self.settings.clock_rate
                if stream is not None:
                    stream.push_frame(frame)
                if (self._to_agent is not None and self.state is SessionState.HUMAN
                        and self.relay is None):
                    self._to_agent(frame)
                if self.conference and self.state is SessionState.HUMAN:
                    self.conference.caller_frame(frame)
                # the energy detector runs only while a prompt the caller may cut plays
                if self._bargeable() and frame_dbfs(frame) >= self.settings.barge_in_dbfs:
                    self._voiced_frames += 1
                    if self._voiced_frames == self.settings.barge_in_frames:
                        self._barge_in("speech")
                else:
                    self._voiced_frames = 0
        except BufferClosed:
            return

    async def _read_stt(self) -> None:
        stream = self._stt_stream
        assert stream is not None
        try:
            async for event in stream:
                if event.type is SpeechEventType.START_OF_SPEECH:
                    self._barge_in("speech")
                elif event.type is SpeechEventType.END_OF_SPEECH:
                    # when the caller actually stopped: the endpointer reports it only after
                    # its trailing silence, which the audio clock lets us subtract
                    lag = max(0.0, self._fed_seconds - event.audio_time) if event.audio_time else 0
                    self.last_input_at = asyncio.get_running_loop().time() - lag
                    self.last_input_kind = "speech"
                elif event.type is SpeechEventType.FINAL and event.text.strip():
                    # words the caller said before the bot took the call back (flushed at
                    # the phase change) were for the agent: a turn, not an answer
                    for_bot = not event.audio_time or event.audio_time > self._bot_since
                    await self.on_caller_final(event.text.strip(), for_bot=for_bot)
                elif event.type is SpeechEventType.INTERIM and event.text.strip():
                    self._interim("caller", event.text.strip())
        except SpeechError as e:
            self.log.error("speech recognition stopped: %s (the call goes on, DTMF only)", e)

    async def on_caller_final(self, text: str, for_bot: bool = True) -> None:
        self._turn("caller", text)
        if self.last_input_at is None:
            self.last_input_at = asyncio.get_running_loop().time()
            self.last_input_kind = "speech"
        if self.state is not SessionState.BOT or not for_bot:
            return
        if self.runner is None:
            self.notify(wire.CallerSaid(call_id=self.call_id, text=text, final=True,
                                        at=now_iso()))
            return
        if self._input_ignored():
            return
        await self._run(self.runner.speech(text))

    async def on_dtmf(self, digit: str) -> None:
        """A digit from the caller. With an agent it is a ``[pressed N]`` turn of the
        transcript; on hold it only reaches the call record (the worker writes it); in BOT
        it goes to the flow now, or typed ahead when a prompt that cannot be interrupted
        plays (or a batch of actions is being prepared)."""
        if self.state is SessionState.HUMAN:
            self._turn("caller", f"[pressed {self.shown_digit(digit)}]")
            return
        if self.state is not SessionState.BOT:
            return
        self._turn("caller", f"[pressed {self.shown_digit(digit)}]")
        if self.runner is None:
            self.last_input_at = asyncio.get_running_loop().time()
            self.last_input_kind = "dtmf"
            self._barge_in("dtmf")
            self.notify(wire.DtmfMsg(call_id=self.call_id, digits=digit))
            return
        if self._typed_ahead or self._input_held():
            self._type_ahead(digit)
            return
        await self._flow_dtmf(digit)

    def shown_digit(self, digit: str) -> str:
        """``digit`` as transcripts, the call record and the logs may keep it: itself at a
        flow node that says ``safe_digits`` (a menu), else :data:`MASKED` — a digit typed
        for an agent, for an external engine or at a collecting node may be a card
        number."""
        safe = (self.state is SessionState.BOT and self.runner is not None
                and self.runner.digits_safe)
        return digit if safe else MASKED

    async def _flow_dtmf(self, digit: str) -> None:
        assert self.runner is not None
        self.last_input_at = asyncio.get_running_loop().time()
        self.last_input_kind = "dtmf"
        self._barge_in("dtmf")
        await self._run(self.runner.dtmf(digit))

    def _type_ahead(self, digit: str) -> None:
        if len(self._typed_ahead) == self._typed_ahead.maxlen:
            self.log.warning("type-ahead: %d digits already waiting; the oldest is dropped",
                             len(self._typed_ahead))
        self._typed_ahead.append(digit)
        self.log.info("type-ahead: digit kept until the prompt playing ends (%d waiting)",
                      len(self._typed_ahead))
        if self._type_ahead_task is None or self._type_ahead_task.done():
            self._type_ahead_task = asyncio.get_running_loop().create_task(
                self._drain_type_ahead(), name=f"type-ahead-{self.call_id}")
            self._tasks.append(self._type_ahead_task)

    async def _drain_type_ahead(self) -> None:
        """Give the typed-ahead digits to the flow, in order, each once input is free."""
        while self._typed_ahead:
            await self._input_free()
            listening = self._listening
            why = ""
            if self.state is not SessionState.BOT or self.runner is None:
                why = f"the call is {self.state.value}"
            elif listening is not None and not listening.type_ahead:
                why = f"node {listening.node_id} takes no type-ahead"
            if why:
                self.log.info("type-ahead: %d digit(s) dropped: %s", len(self._typed_ahead), why)
                self._typed_ahead.clear()
                return
            await self._flow_dtmf(self._typed_ahead.popleft())

    def _input_held(self) -> bool:
        """Input cannot go to the flow now: a batch of actions is being prepared (its prompts
        are not queued yet), or the next prompt to play does not allow barge-in."""
        if self._actions.locked():
            return True
        prompt = self.player.next_prompt()
        return prompt is not None and not prompt.barge_in

    async def _input_free(self) -> None:
        while True:
            if self._actions.locked():
                async with self._actions:
                    pass
                continue
            prompt = self.player.next_prompt()
            if prompt is None or prompt.barge_in:
                return
            await asyncio.wait([prompt.done])

    async def on_command(self, command: HubCommand) -> None:
        """A command from the hub (queue timeout, external engine, REST handoff, agent)."""
        match command:
            case wire.QueueTimeout() if self.state is SessionState.QUEUED:
                self._stop_hold()
                self._bot_since = self._fed_seconds
                self._set_state(SessionState.BOT)
                if self.runner is not None:
                    await self._run(self.runner.queue_timeout())
            case wire.Say() if self.state is SessionState.BOT:
                await self._run([Say(text=command.text, audio=None, barge_in=True,
                                     node_id="external")])
            case wire.Handoff() if self.state is SessionState.BOT:
                await self._run([Handoff(queue=None, skill=None, reason=command.reason,
                                         node_id="external")])
            case wire.Hangup():
                await self._run([Hangup(node_id="external")])
            case wire.AgentJoined() if self.state is SessionState.QUEUED:
                self._set_state(SessionState.HUMAN)
                self._start_agent_stt()
                if self._agent_media:  # the agent's audio already flows: it replaces the bot
                    self._silence_bot()
            case wire.AgentLeft() if self.state is SessionState.HUMAN:
                self._flush_caller_stt()
                self.detach_agent()
                self._set_state(SessionState.QUEUED)
                await self._stop_agent_stt()
                self._ensure_hold()
            case wire.Resume() if self.state is SessionState.HUMAN:
                self._flush_caller_stt()
                self._bot_since = self._fed_seconds
                self.detach_agent()
                self._stop_hold()
                self._set_state(SessionState.BOT)
                await self._stop_agent_stt()
                if self.runner is not None:
                    await self._run(self.runner.resume())
            case wire.Mute():
                self.agent_muted = command.muted
                self.log.info("agent %s", "muted" if self.agent_muted else "unmuted")
                if self.agent_muted and self.state is SessionState.HUMAN and self._agent_media:
                    self.outbound.clear()  # not one more frame of the agent
                    self.on_source_active(False)
            case _:
                pass

    # -- the human phase ------------------------------------------------------------------

    def attach_agent(self, to_agent: Callable[[bytes], None], taps: Taps | None = None,
                     flowing: bool = False) -> None:
        """A (new) agent peer: caller frames go to ``to_agent`` while the call is HUMAN;
        ``taps`` are what else its track mixes in (the extra legs it hears); ``flowing``
        when its audio already flows (a transfer's target promoted)."""
        self._to_agent = to_agent
        self._agent_media = False
        self.conference.attach_primary(taps)
        self.relay_changed()
        if flowing:
            self.agent_media(True)

    def detach_agent(self) -> None:
        self._to_agent = None
        self._agent_media = False
        self.conference.attach_primary(None)
        self.relay_changed()
        self.on_source_active(False)

    def agent_media(self, flowing: bool) -> None:
        """The agent's audio started (the peer's first frame) or stopped (peer lost)."""
        if flowing == self._agent_media:
            return
        self._agent_media = flowing
        if self.state is not SessionState.HUMAN:
            return
        if flowing:
            self.log.info("agent audio flowing: it replaces the bot's audio")
            self._silence_bot()
        else:
            self.log.info("agent audio stopped: the caller hears hold audio")
            self.on_source_active(False)
            self._ensure_hold()

    def on_agent_frame(self, frame: bytes) -> None:
        """One 20 ms frame of the agent's voice at the call's rate (from the peer)."""
        if not self._primary_driving():
            return
        if self._agent_stt is not None:
            self._agent_stt.push_frame(frame)
        self._to_caller(self.conference.primary_frame(frame) if self.conference else frame)

    def _primary_driving(self) -> bool:
        """The agent who holds the call is heard now (its frames pace the caller's ear)."""
        return self.state is SessionState.HUMAN and self._agent_media and not self.agent_muted

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
        self.agent_frames_dropped += self._agent_lead.admit(self.outbound)
        self.outbound.push_nowait(frame)
        self.on_source_active(True)

    def relay_caller_frame(self, pcm: bytes) -> None:
        """A caller frame from the relay, as its packet arrived (8 kHz s16le)."""
        if self._to_agent is not None and self.state is SessionState.HUMAN:
            self._to_agent(pcm)

    @property
    def agent_push(self) -> Callable[[bytes], None] | None:
        """Where caller frames go now (:meth:`relay_caller_frame`; None: nowhere). Read by
        the relay's thread too."""
        return self._to_agent if self.state is SessionState.HUMAN else None

    # -- extra legs (supervisors, a transfer's target) ----------------------------------

    def add_leg(self, name: str, role: LegRole, push: Callable[[bytes], None],
                taps: Taps) -> None:
        self.conference.add(Leg(name, role, push, taps))
        self._pace_inbound()
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
        self._pace_inbound()
        if leg is not None:
            self.log.info("leg %s leaves", name)
            stream, task, leg.stt, leg.stt_task = leg.stt, leg.stt_task, None, None
            await self._end_stream(stream, task)

    def promote_leg(self, name: str, push: Callable[[bytes], None], taps: Taps) -> None:
        """A transfer's target, flowing as a leg, becomes the call's agent at once; its
        leg recogniser is ended (the agent's own carries on)."""
        leg = self.conference.remove(name)
        self._pace_inbound()
        self.attach_agent(push, taps, flowing=True)
        if leg is not None and leg.stt is not None:
            task = asyncio.get_running_loop().create_task(
                self._end_stream(leg.stt, leg.stt_task))
            self._tasks.append(task)

    def on_leg_frame(self, name: str, frame: bytes) -> None:
        """One 20 ms frame of an extra leg's voice at the call's rate."""
        if self.state is SessionState.HUMAN:
            self.conference.leg_frame(name, frame, asyncio.get_running_loop().time())

    def _leg_stt(self, name: str) -> None:
        """A leg that may be heard is transcribed (a listening supervisor is not)."""
        leg = self.conference.legs.get(name)
        if leg is None or self.stt is None or leg.stt is not None:
            return
        if leg.role is LegRole.LISTEN:
            return
        stream = self.stt.stream(self.settings.clock_rate)
        leg.stt = stream
        leg.stt_task = asyncio.get_running_loop().create_task(
            self._read_leg_stt(leg, stream), name=f"leg-stt-{self.call_id}")

    async def _read_leg_stt(self, leg: Leg, stream: SttStream) -> None:
        """An agent leg's words are agent turns; a barging supervisor's, supervisor turns;
        a whispering one's go to the agents' live transcript only."""
        try:
            async for event in stream:
                text = event.text.strip()
                if not text or event.type not in (SpeechEventType.FINAL,
                                                  SpeechEventType.INTERIM):
                    continue
                final = event.type is SpeechEventType.FINAL
                if leg.role is LegRole.WHISPER:
                    if final:
                        self.notify(wire.Whispered(
                            call_id=self.call_id, thread_id=self.thread_id,
                            role=wire.Role.SUPERVISOR, text=text, at=now_iso(),
                            seq=max(1, self._seq)))
                elif leg.role is not LegRole.LISTEN:
                    role = "agent" if leg.role is LegRole.AGENT else "supervisor"
                    (self._turn if final else self._interim)(role, text)
        except SpeechError as e:
            self.log.error("leg %s speech recognition stopped: %s", leg.name, e)

    def _silence_bot(self) -> None:
        """Stop every prompt (hold loop or the agent node's message) at a frame boundary:
        the frames already queued are dropped, the agent's frames follow."""
        self.player.stop_all()

    def _ensure_hold(self) -> None:
        if not self.settings.hold_pcm:
            return
        if self.player.looping():
            return
        self.player.queue(Prompt(self.settings.hold_pcm, barge_in=False, loop=True))

    def _start_agent_stt(self) -> None:
        if self.stt is None or self._agent_stt is not None:
            return
        stream = self.stt.stream(self.settings.clock_rate)
        self._agent_stt = stream
        self._agent_stt_task = asyncio.get_running_loop().create_task(
            self._read_agent_stt(stream), name=f"agent-stt-{self.call_id}")

    async def _read_agent_stt(self, stream: SttStream) -> None:
        try:
            async for event in stream:
                if event.type is SpeechEventType.FINAL and event.text.strip():
                    self._turn("agent", event.text.strip())
                elif event.type is SpeechEventType.INTERIM and event.text.strip():
                    self._interim("agent", event.text.strip())
        except SpeechError as e:
            self.log.error("agent speech recognition stopped: %s (the call goes on)", e)

    async def _stop_agent_stt(self) -> None:
        """End the agent's recogniser, keeping its last words."""
        stream, task = self._agent_stt, self._agent_stt_task
        self._agent_stt = self._agent_stt_task = None
        await self._end_stream(stream, task)

    async def _end_stream(self, stream: SttStream | None,
                          reader: asyncio.Task[None] | None) -> None:
        """End a recogniser's input, give its reader ``flush_timeout`` to take the final
        transcript of the last words, then stop the reader and close the stream."""
        if stream is None:
            return
        if reader is not None:
            with contextlib.suppress(Exception):
                stream.end_input()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, SpeechError):
                await asyncio.wait_for(asyncio.shield(reader), self.settings.flush_timeout)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, SpeechError):
                await reader
        with contextlib.suppress(Exception):
            await stream.aclose()

    # -- actions --------------------------------------------------------------------------

    async def _run(self, actions: list[Action]) -> None:
        """Carry out one batch from the runner (hitl_sip.bot.actions): a non-empty batch
        replaces whatever was still pending; a handoff is reported before its message is
        synthesised, so the hub sees QUEUED at once."""
        if not actions:
            return
        async with self._actions:
            if self.state is SessionState.ENDED:
                return
            self._replace_pending()
            handoff = next((a for a in actions if isinstance(a, Handoff)), None)
            if handoff is not None:
                self._begin_handoff(handoff)
            for action in actions:
                if self.ended:
                    return
                if isinstance(action, Say):
                    await self._say(action)
                elif isinstance(action, Listen):
                    self._listen(action)
                elif isinstance(action, Handoff):
                    if self.settings.hold_pcm:
                        self.player.queue(Prompt(self.settings.hold_pcm, barge_in=False,
                                                 loop=True))
                elif isinstance(action, Hangup):
                    self._spawn_after_prompts(self._hangup)

    def _replace_pending(self) -> None:
        self._cancel_listen()
        self.player.stop_all()

    def _input_ignored(self) -> bool:
        """While a prompt that does not allow barge-in plays, input is not for the flow."""
        current = self.player.current
        return current is not None and not current.barge_in and not current.done.done()

    async def _say(self, say: Say) -> None:
        pcm = b""
        if say.audio is not None:
            path = say.audio if say.audio.is_absolute() else self.settings.project_root / say.audio
            pcm = await asyncio.to_thread(load_pcm, path, self.settings.clock_rate)
        elif say.text:
            try:
                pcm = await self.tts.synthesize(say.text, self.settings.clock_rate)
            except SpeechError as e:
                self.log.error("speech synthesis failed: %s (prompt skipped)", e)
        if say.text:
            self._turn("bot", say.text)
        if pcm:
            self.player.queue(Prompt(pcm, say.barge_in))

    def _spawn_after_prompts(self, action: Callable[[], Awaitable[Any]]) -> None:
        async def later() -> None:
            await self.player.wait_done()
            await action()

        self._tasks.append(asyncio.get_running_loop().create_task(later()))

    def _listen(self, listen: Listen) -> None:
        self._cancel_listen()
        self._listening = listen

        async def arm() -> None:
            await self.player.wait_done()
            if self.state is SessionState.BOT:
                self._listen_timer = asyncio.get_running_loop().call_later(
                    listen.timeout, self._on_no_input
                )

        self._listen_task = asyncio.get_running_loop().create_task(arm())

    def _cancel_listen(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            self._listen_task = None
        if self._listen_timer is not None:
            self._listen_timer.cancel()
            self._listen_timer = None

    def _on_no_input(self) -> None:
        self._listen_timer = None
        if self.runner is not None and self.state is SessionState.BOT:
            self._tasks.append(
                asyncio.get_running_loop().create_task(self._run(self.runner.no_input()))
            )

    def _begin_handoff(self, handoff: Handoff) -> None:
        self._flush_caller_stt()
        self._set_state(SessionState.QUEUED)
        md = self.metadata
        self.notify(wire.HandoffRequested(
            call_id=self.call_id, thread_id=self.thread_id,
            caller=wire.Caller(number=md.get("caller_number"), name=md.get("caller_name")),
            transcript=[wire.TranscriptLine.model_validate(t) for t in self.transcript
                        if t["role"] in ("caller", "bot")],
            queue=handoff.queue, skill=handoff.skill, reason=handoff.reason, at=now_iso(),
            answers={name: value[:256] for name, value in handoff.answers[:64]},
        ))

    def _stop_hold(self) -> None:
        self.player.stop_loops()

    async def _hangup(self) -> None:
        self.log.info("the flow hangs up")
        with contextlib.suppress(Exception):
            await self.hangup_call()

    def _bargeable(self) -> bool:
        current = self.player.current
        return current is not None and current.barge_in and self.state is SessionState.BOT

    def _barge_in(self, why: str) -> None:
        if not self._bargeable():
            return
        self.log.info("barge-in (%s): prompt stopped", why)
        self.player.stop_bargeable()

    # -- the player (hitl_sip.worker.player) ---------------------------------------------

    @property
    def _current(self) -> Prompt | None:
        """The prompt playing now (tests and the input rules read it)."""
        return self.player.current

    def _all_prompts(self) -> list[Prompt]:
        return self.player.all()

    def _source_active(self, active: bool) -> None:
        self.on_source_active(active)  # looked up per call: the owner may replace it

    def _note_first_frame(self) -> None:
        if self.last_input_at is not None:
            latency = asyncio.get_running_loop().time() - self.last_input_at
            self.response_latencies.append((self.last_input_kind, round(latency, 4)))
            self.last_input_at = None
