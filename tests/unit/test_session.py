"""CallSession: the state machine, prompts, barge-in, timers and the handoff, with fake
engines and a fake media clock; flow timers are scaled down to tenths of a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hitl_sip.bot.flow import parse_flow
from hitl_sip.bot.runner import FlowRunner
from hitl_sip.media.buffers import BufferClosed, FrameBuffer
from hitl_sip.protocol.worker import HubCommand, LegRole, parse_command
from hitl_sip.speech.tts.fake import FakeTts
from hitl_sip.worker.mix import Taps
from hitl_sip.worker.session import (
    CallSession,
    IllegalTransition,
    SessionSettings,
    SessionState,
)

FLOW = """
name: t
start: greet
nodes:
  greet: {type: say, text: "Welcome.", barge_in: false, next: menu}
  menu:
    type: ask
    prompt: "Press zero for a person."
    timeout: 0.3
    retries: 1
    safe_digits: true
    no_input: "Still there?"
    branches:
      - {dtmf: "0", next: agent}
      - {keywords: [agent], next: agent}
      - {dtmf: "9", next: bye}
    fail: bye
  agent: {type: agent, message: "Please hold.", fallback: busy}
  busy: {type: say, text: "Everyone is busy.", barge_in: false, next: bye}
  bye: {type: hangup}
"""

FRAME = 320  # 8 kHz, 20 ms
LOUD = (b"\x00\x40" * (FRAME // 2))  # speech-level energy for the VAD


class Rig:
    """A session wired to fake engines, a fake media clock and a recording hub."""

    def __init__(self, flow_text: str = FLOW, ms_per_char: float = 3) -> None:
        loop = asyncio.get_running_loop()
        self.inbound = FrameBuffer(loop, 50)
        self.outbound = FrameBuffer(loop, 50)
        self.messages: list[dict[str, Any]] = []
        self.hung_up = asyncio.Event()
        self.tts = FakeTts(ms_per_char=ms_per_char)
        self.sent_frames = 0
        flow = parse_flow(flow_text)
        self.session: CallSession = CallSession(
            call_id="c1", thread_id="t1",
            metadata={"caller_number": "+14155550100", "caller_name": "Ann"},
            inbound=self.inbound, outbound=self.outbound, tts=self.tts, stt=None,
            runner=FlowRunner(flow, {}), notify=lambda m: self.messages.append(m.wire()),
            hangup=self._hangup,
            settings=SessionSettings(clock_rate=8000, frame_bytes=FRAME,
                                     hold_pcm=b"\x01\x00" * 800),
        )

    async def _hangup(self) -> None:
        self.hung_up.set()

    async def clock(self) -> None:
        """pjmedia's clock: pull one frame every 20 ms."""
        while True:
            await asyncio.sleep(0.02)
            if self.outbound.pop_nowait() is not None:
                self.sent_frames += 1

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def states(self) -> list[str]:
        return [m["state"] for m in self.kinds("session_state")]

    def bot_said(self) -> list[str]:
        return [m["text"] for m in self.kinds("turn") if m["role"] == "bot"]


@contextlib.asynccontextmanager
async def running(r: Rig) -> AsyncIterator[Rig]:
    clock = asyncio.create_task(r.clock())
    await r.session.start()
    try:
        yield r
    finally:
        await r.session.close()
        clock.cancel()
        r.inbound.close()
        r.outbound.close()
        with pytest.raises((asyncio.CancelledError, BufferClosed)):
            await clock


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with running(Rig()) as r:
        yield r


def command(fields: dict[str, Any]) -> HubCommand:
    """A hub command for call c1, validated as the worker link does."""
    return parse_command({"callId": "c1", **fields})


async def until(predicate: Any, limit: float = 5.0) -> None:
    """Poll a condition on session internals that no event exposes (tests only)."""
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - the session has no event for these states
            await asyncio.sleep(0.01)


async def test_greeting_then_menu_prompt_are_spoken_as_bot_turns(rig: Rig) -> None:
    await until(lambda: len(rig.bot_said()) == 2)
    assert rig.bot_said() == ["Welcome.", "Press zero for a person."]
    assert rig.states() == ["bot"]
    await until(lambda: rig.sent_frames > 0)


async def test_dtmf_reaches_the_agent_node_queued_at_once_with_the_transcript(rig: Rig) -> None:
    await until(lambda: len(rig.bot_said()) == 2)
    await until(lambda: rig.session._listen_timer is not None)  # prompts done, listening
    await rig.session.on_dtmf("0")
    assert rig.session.state is SessionState.QUEUED
    handoff = rig.kinds("handoff_requested")[0]
    assert handoff["caller"] == {"number": "+14155550100", "name": "Ann"}
    roles = [t["role"] for t in handoff["transcript"]]
    assert roles == ["bot", "bot", "caller"]
    assert handoff["transcript"][-1]["text"] == "[pressed 0]"
    assert rig.states() == ["bot", "queued"]
    assert "Please hold." in rig.bot_said()


async def test_a_digit_at_a_node_not_marked_safe_is_kept_as_a_digit_and_nothing_more() -> None:
    flow = FLOW.replace("    safe_digits: true\n", "")
    assert "safe_digits" not in flow
    async with running(Rig(flow)) as r:
        await until(lambda: r.session._listen_timer is not None)
        await r.session.on_dtmf("0")
        assert r.session.state is SessionState.QUEUED  # the flow still got the digit
        handoff = r.kinds("handoff_requested")[0]
        assert handoff["transcript"][-1]["text"] == "[pressed •]"
        assert all("0" not in t["text"] for t in r.kinds("turn") if t["role"] == "caller")


async def test_queue_timeout_returns_to_the_bot_and_runs_the_fallback(rig: Rig) -> None:
    await until(lambda: rig.session._listen_timer is not None)
    await rig.session.on_dtmf("0")
    await asyncio.sleep(0.5)  # hold audio loops meanwhile
    assert rig.session.state is SessionState.QUEUED
    await rig.session.on_command(command({"type": "queue_timeout", "callId": "c1"}))
    assert rig.session.state.value == "bot"
    await until(rig.hung_up.is_set)
    assert rig.bot_said()[-1] == "Everyone is busy."
    assert rig.states() == ["bot", "queued", "bot"]


async def test_no_input_reprompts_then_takes_the_fail_edge(rig: Rig) -> None:
    await until(rig.hung_up.is_set)
    said = rig.bot_said()
    assert said[:2] == ["Welcome.", "Press zero for a person."]
    assert "Still there?" in said


async def test_speech_during_a_prompt_without_barge_in_is_ignored(rig: Rig) -> None:
    await until(lambda: rig.session._current is not None)  # "Welcome." (no barge-in)
    current = rig.session._current
    assert current is not None and not current.barge_in
    await rig.session.on_caller_final("agent")
    await current.done
    await until(lambda: rig.session._listen_timer is not None)
    assert rig.session.state is SessionState.BOT
    assert not rig.kinds("handoff_requested")


# -- type-ahead DTMF ----------------------------------------------------------------------------

SLOW_TTS = 40.0  # ms per character: "Welcome." plays 320 ms


def state(r: Rig) -> SessionState:
    """The session's state, read afresh (mypy narrows ``r.session.state`` after an assert)."""
    return r.session.state


def greeting_playing(r: Rig) -> bool:
    current = r.session._current
    return current is not None and not current.barge_in and not current.done.done()


async def test_a_digit_pressed_during_an_unbargeable_prompt_is_taken_when_it_ends() -> None:
    async with running(Rig(ms_per_char=SLOW_TTS)) as r:
        await until(lambda: greeting_playing(r))
        greeting = r.session._current
        assert greeting is not None
        await r.session.on_dtmf("0")
        assert state(r) is SessionState.BOT, "the greeting is not interrupted"
        assert not greeting.done.done()
        await until(lambda: state(r) is SessionState.QUEUED)
        assert greeting.done.result() is True, "the greeting played to its end"
        assert r.bot_said() == ["Welcome.", "Press zero for a person.", "Please hold."]
        assert "Still there?" not in r.bot_said()
        handoff = r.kinds("handoff_requested")[0]
        assert handoff["reason"] == "dtmf '0' at menu"


async def test_digits_typed_ahead_are_consumed_in_order_by_the_menu_then_its_reprompt() -> None:
    async with running(Rig(ms_per_char=SLOW_TTS)) as r:
        await until(lambda: greeting_playing(r))
        await r.session.on_dtmf("1")  # matches no branch (dtmf_max 1): no-match handling
        await r.session.on_dtmf("0")  # then taken by the re-prompt
        await until(lambda: r.session.state is SessionState.QUEUED)
        assert r.bot_said() == [
            "Welcome.", "Press zero for a person.",  # the start batch
            "Press zero for a person.",  # the no-match re-prompt (this flow has no message)
            "Please hold.",
        ]
        callers = [m["text"] for m in r.kinds("turn") if m["role"] == "caller"]
        assert callers == ["[pressed 1]", "[pressed 0]"]
        assert r.kinds("handoff_requested")[0]["reason"] == "dtmf '0' at menu"


async def test_a_digit_pressed_during_a_barge_in_prompt_stops_it_and_is_taken() -> None:
    async with running(Rig(ms_per_char=SLOW_TTS)) as r:
        await until(lambda: r.session._current is not None and r.session._current.barge_in)
        menu = r.session._current
        assert menu is not None and not menu.done.done()
        await r.session.on_dtmf("0")
        await until(lambda: state(r) is SessionState.QUEUED)
        assert menu.done.result() is False, "the menu prompt was cut, not played out"
        assert r.bot_said() == ["Welcome.", "Press zero for a person.", "Please hold."]
        assert "Still there?" not in r.bot_said()
        assert r.kinds("handoff_requested")[0]["reason"] == "dtmf '0' at menu"


async def test_a_node_with_type_ahead_off_drops_digits_pressed_before_it_listens() -> None:
    flow = FLOW.replace("    timeout: 0.3\n", "    timeout: 0.3\n    type_ahead: false\n")
    assert "type_ahead: false" in flow
    async with running(Rig(flow, ms_per_char=SLOW_TTS)) as r:
        await until(lambda: greeting_playing(r))
        await r.session.on_dtmf("0")
        await until(lambda: "Still there?" in r.bot_said())  # the digit never counted
        assert r.session.state is SessionState.BOT
        assert not r.kinds("handoff_requested")
        await until(lambda: r.session._listen_timer is not None)
        await r.session.on_dtmf("0")  # pressed while the node listens: taken
        assert state(r) is SessionState.QUEUED


async def test_a_digit_pressed_while_a_batch_is_prepared_waits_for_its_prompts() -> None:
    async with running(Rig(ms_per_char=SLOW_TTS)) as r:
        await until(lambda: r.session._listen_timer is not None)
        release = r.tts.release = asyncio.Event()  # hold the no-input message's synthesis
        await until(r.session._actions.locked)  # the no-input batch is prepared
        await r.session.on_dtmf("0")
        assert r.session.state is SessionState.BOT
        assert list(r.session._typed_ahead) == ["0"]
        release.set()
        await until(lambda: state(r) is SessionState.QUEUED)
        assert "Still there?" in r.bot_said()


async def test_digits_on_hold_do_not_reach_the_flow(rig: Rig) -> None:
    await until(lambda: rig.session._listen_timer is not None)
    await rig.session.on_dtmf("0")
    assert rig.session.state is SessionState.QUEUED
    turns = len(rig.kinds("turn"))
    await rig.session.on_dtmf("9")  # "9" would hang up in the menu
    await rig.session.on_command(command({"type": "queue_timeout", "callId": "c1"}))
    await until(rig.hung_up.is_set)  # the fallback's hangup, not the digit's
    assert rig.bot_said()[-1] == "Everyone is busy."
    assert "[pressed 9]" not in [m["text"] for m in rig.kinds("turn")[turns:]]


async def test_caller_speech_stops_a_barge_in_prompt_within_a_frame(rig: Rig) -> None:
    rig.tts.ms_per_char = 200  # a long menu prompt (set before it is synthesised)
    await until(lambda: rig.session._current is not None and rig.session._current.barge_in)
    for _ in range(3):  # 60 ms of speech energy
        rig.inbound.push_nowait(LOUD)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(rig.outbound) == 0, "queued prompt frames must be dropped at once"
    await asyncio.sleep(0.02)
    assert rig.session._current is None or not rig.session._current.barge_in


async def test_speech_keyword_branch_and_caller_turn(rig: Rig) -> None:
    await until(lambda: rig.session._listen_timer is not None)
    await rig.session.on_caller_final("I want an agent please")
    assert rig.session.state is SessionState.QUEUED
    callers = [m["text"] for m in rig.kinds("turn") if m["role"] == "caller"]
    assert callers == ["I want an agent please"]


async def test_turns_have_increasing_sequence_numbers(rig: Rig) -> None:
    await until(lambda: rig.session._listen_timer is not None)
    await rig.session.on_dtmf("0")
    seqs = [m["seq"] for m in rig.kinds("turn")]
    assert seqs == sorted(seqs) == list(range(1, len(seqs) + 1))


async def test_illegal_transitions_raise(rig: Rig) -> None:
    with pytest.raises(IllegalTransition, match="bot -> human"):
        rig.session._set_state(SessionState.HUMAN)
    await rig.session.close()
    assert rig.session.state is SessionState.ENDED
    with pytest.raises(IllegalTransition):
        rig.session._set_state(SessionState.BOT)


async def test_external_engine_mode_forwards_input_and_obeys_commands() -> None:
    r = Rig()
    r.session.runner = None
    clock = asyncio.create_task(r.clock())
    await r.session.start()
    await r.session.on_caller_final("hello there")
    await r.session.on_dtmf("5")
    assert [m["text"] for m in r.kinds("caller_said")] == ["hello there"]
    assert [m["digits"] for m in r.kinds("dtmf")] == ["5"]
    await r.session.on_command(command({"type": "say", "text": "Hi from the engine."}))
    assert r.bot_said() == ["Hi from the engine."]
    await r.session.on_command(command({"type": "handoff", "reason": "engine"}))
    assert r.session.state is SessionState.QUEUED
    await r.session.on_command(command({"type": "hangup"}))
    await until(r.hung_up.is_set)
    await r.session.close()
    clock.cancel()


# -- the human phase (the media bridge) ---------------------------------------------------------


class HumanRig(Rig):
    """A rig whose session has a recogniser, taken to HUMAN with an agent attached."""

    def __init__(self) -> None:
        super().__init__()
        from hitl_sip.speech.stt.fake import FakeStt  # noqa: PLC0415

        self.stt = FakeStt()
        self.session.stt = self.stt
        self.to_agent: list[bytes] = []
        self.source_active: list[bool] = []
        self.session.on_source_active = self.source_active.append

    async def to_human(self) -> None:
        await until(lambda: self.session._listen_timer is not None)
        await self.session.on_dtmf("0")
        await self.session.on_command(command({"type": "agent_joined", "agentId": "a1"}))
        self.session.attach_agent(self.to_agent.append)
        assert self.session.state is SessionState.HUMAN

    def agent_stream(self) -> Any:
        return self.stt.streams[-1]


@pytest.fixture
async def human() -> AsyncIterator[HumanRig]:
    r = HumanRig()
    clock = asyncio.create_task(r.clock())
    await r.session.start()
    await r.to_human()
    yield r
    await r.session.close()
    clock.cancel()
    r.inbound.close()
    r.outbound.close()
    with pytest.raises((asyncio.CancelledError, BufferClosed)):
        await clock


AGENT = b"\x11\x22" * (FRAME // 2)


async def test_a_digit_pressed_with_an_agent_is_a_caller_turn_not_flow_input(
    human: HumanRig,
) -> None:
    await human.session.on_dtmf("9")  # "9" would hang up in the bot's menu
    assert human.session.state is SessionState.HUMAN
    turn = human.kinds("turn")[-1]
    # a digit typed for an agent may be a card number: the turn says only that one was
    assert (turn["role"], turn["text"]) == ("caller", "[pressed •]")
    assert not human.hung_up.is_set()


async def test_hold_plays_until_the_agent_s_audio_flows_then_only_the_agent_is_heard(
    human: HumanRig,
) -> None:
    await until(lambda: len(human.outbound) > 0)  # hold audio while the peer connects
    human.session.on_agent_frame(AGENT)  # before the media is flowing: ignored
    assert AGENT not in list(human.outbound._frames)
    human.session.agent_media(True)
    assert len(human.outbound) == 0  # the hold stopped at a frame boundary
    for _ in range(5):
        human.session.on_agent_frame(AGENT)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert all(f == AGENT for f in human.outbound._frames)
    assert human.session._current is None  # no prompt playing
    assert human.source_active[-1] is True


async def test_caller_frames_reach_the_agent_only_in_the_human_phase(human: HumanRig) -> None:
    human.inbound.push_nowait(LOUD)
    await until(lambda: len(human.to_agent) == 1)
    await human.session.on_command(command({"type": "agent_left", "agentId": "a1"}))
    human.inbound.push_nowait(LOUD)
    await asyncio.sleep(0.05)
    assert len(human.to_agent) == 1


async def test_mute_gives_the_caller_silence_and_pauses_the_agent_s_recogniser(
    human: HumanRig,
) -> None:
    human.session.agent_media(True)
    stream = human.agent_stream()
    human.session.on_agent_frame(AGENT)
    await human.session.on_command(command({"type": "mute", "muted": True}))
    assert len(human.outbound) == 0 and human.source_active[-1] is False
    pushed = len(stream.frames)
    for _ in range(3):
        human.session.on_agent_frame(AGENT)
    assert len(human.outbound) == 0 and len(stream.frames) == pushed
    await human.session.on_command(command({"type": "mute", "muted": False}))
    human.session.on_agent_frame(AGENT)
    assert len(human.outbound) == 1 and len(stream.frames) == pushed + 1


async def test_agent_audio_queued_ahead_of_the_trunk_clock_is_bounded(human: HumanRig) -> None:
    human.session.agent_media(True)
    for i in range(10):  # a burst faster than the 20 ms clock can take
        human.session.on_agent_frame(bytes([i]) * FRAME)
    assert len(human.outbound) <= human.session.settings.agent_lead_frames
    assert human.outbound._frames[-1] == bytes([9]) * FRAME  # the newest kept
    assert human.session.agent_frames_dropped >= 10 - human.session.settings.agent_lead_frames


async def test_agent_finals_become_agent_turns_and_the_last_words_are_kept(
    human: HumanRig,
) -> None:
    human.session.agent_media(True)
    stream = human.agent_stream()
    stream.say("let me check that for you")
    await until(lambda: any(m.get("role") == "agent" for m in human.kinds("turn")))
    human.session.on_agent_frame(LOUD)  # the agent is mid-word when the call goes back
    await human.session.on_command(command({"type": "resume"}))
    agent_turns = [m["text"] for m in human.kinds("turn") if m["role"] == "agent"]
    assert agent_turns[0] == "let me check that for you"
    assert stream.input_ended and stream.closed  # ended (its pending words out), closed


async def test_lost_agent_media_brings_the_hold_audio_back(human: HumanRig) -> None:
    human.session.agent_media(True)
    assert not any(p.loop and not p.done.done() for p in human.session._all_prompts())
    human.session.agent_media(False)
    assert any(p.loop and not p.done.done() for p in human.session._all_prompts())
    human.session.agent_media(True)  # the agent came back: the hold stops again
    assert not any(p.loop and not p.done.done() for p in human.session._all_prompts())


async def test_return_to_bot_detaches_the_agent_and_resumes_the_flow(human: HumanRig) -> None:
    human.session.agent_media(True)
    await human.session.on_command(command({"type": "resume"}))
    assert human.session.state is SessionState.BOT
    human.session.on_agent_frame(AGENT)
    assert AGENT not in list(human.outbound._frames)
    assert human.states()[-2:] == ["human", "bot"]


async def test_interim_results_are_live_captions_in_the_human_phase_only(
    human: HumanRig,
) -> None:
    human.session.agent_media(True)
    human.agent_stream().say("let me", interim="let")
    await until(lambda: any(m["type"] == "interim" for m in human.messages))
    interim = human.kinds("interim")[0]
    assert (interim["role"], interim["text"]) == ("agent", "let")
    assert interim["seq"] == human.kinds("turn")[-1]["seq"]  # the final took that seq


async def test_the_caller_s_pending_words_are_flushed_at_the_handoff(
    human: HumanRig,
) -> None:
    stream = human.stt.streams[0]  # the caller's: opened at the start of the call
    await until(lambda: stream.flushes == 1)  # when the call was handed off
    await human.session.on_command(command({"type": "resume"}))
    await until(lambda: stream.flushes == 2)  # and when the agent handed it back


class FakeRelay:
    """What the session reads of its call's relay (hitl_sip.worker.relay.TrunkRelay)."""

    def __init__(self) -> None:
        self.carrying = True
        self.out = object()  # the C stream to the trunk, opaque here
        self.disarms = 0
        self.sent: list[bytes] = []

    def disarm(self) -> None:
        self.disarms += 1

    def send_pcm(self, frame: bytes) -> None:
        self.sent.append(frame)


async def test_the_agent_s_packets_go_to_the_trunk_as_they_come_only_while_heard_alone(
    human: HumanRig,
) -> None:
    relay = FakeRelay()
    human.session.relay = relay  # type: ignore[assignment]
    assert human.session.agent_to_trunk() is None  # the agent's media is not flowing yet
    human.session.agent_media(True)
    assert human.session.agent_to_trunk() is relay.out
    # a frame that went to the trunk from C: the recogniser and the caller's ear (the
    # recording) get it, the relay is not asked to send it again
    stream = human.agent_stream()
    pushed = len(stream.frames)
    human.session.agent_frame_sent(AGENT)
    assert len(stream.frames) == pushed + 1 and list(human.outbound._frames)[-1] == AGENT
    assert relay.sent == []
    relay.carrying = False  # the relay handed back to pjmedia: the first frame cuts again
    assert human.session.agent_to_trunk() is None
    relay.carrying = True
    await human.session.on_command(command({"type": "mute", "muted": True}))
    assert human.session.agent_to_trunk() is None
    await human.session.on_command(command({"type": "mute", "muted": False}))
    assert human.session.agent_to_trunk() is relay.out
    # a supervisor barges: the caller hears a mix, made in Python; the caller's side of
    # the relay is asked again too
    disarms = relay.disarms
    human.session.add_leg("sup", LegRole.BARGE, lambda frame: None, Taps())
    assert human.session.agent_to_trunk() is None and relay.disarms > disarms
    await human.session.remove_leg("sup")
    assert human.session.agent_to_trunk() is relay.out
    await human.session.on_command(command({"type": "agent_left", "agentId": "a1"}))
    assert human.session.agent_to_trunk() is None
