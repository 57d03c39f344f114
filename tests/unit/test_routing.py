"""Routing with fake agents' sockets: strategies, first accept wins, declines, timeouts,
caller hang-up, and re-queueing when the winning agent vanishes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hitl_sip.hub.calls import CallRecord
from hitl_sip.hub.events import CallEvent, Listener
from hitl_sip.hub.routing import Router
from hitl_sip.protocol.worker import (
    AgentJoined,
    AgentLeft,
    CallEndedMsg,
    Caller,
    HandoffRequested,
    HubCommand,
    PeerLost,
    Role,
    TranscriptLine,
    TurnMsg,
)


class FakeRegistry:
    def __init__(self) -> None:
        self.calls: dict[str, CallRecord] = {}


class FakeHub:
    cluster = None  # a single hub
    def __init__(self) -> None:
        self.registry = FakeRegistry()
        self.commands: list[HubCommand] = []
        self.listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def offered(self, call_id: str, agent_id: str) -> None:
        self.registry.calls[call_id].offered_to.add(agent_id)

    async def command(self, command: HubCommand) -> bool:
        self.commands.append(command)
        return True

    async def publish(self, event: CallEvent) -> None:
        for listener in self.listeners:
            await listener(event)


class Rig:
    def __init__(self, strategy: str = "ring_all", ring_timeout: float = 5.0,
                 grace: float = 0.05) -> None:
        self.hub = FakeHub()
        self.sent: list[tuple[str, str, dict[str, Any]]] = []  # sid, event, payload
        self.router = Router(self.hub, self._emit, ring_timeout, grace, strategy)  # type: ignore[arg-type]

    async def _emit(self, event: str, payload: dict[str, Any], sid: str) -> None:
        self.sent.append((sid, event, payload))

    def got(self, sid: str, event: str) -> list[dict[str, Any]]:
        return [p for s, e, p in self.sent if s == sid and e == event]

    async def agents(self, *names: str) -> None:
        for name in names:
            await self.router.connected(f"sid-{name}", name, name.title())
            await asyncio.sleep(0.001)  # distinct idle_since

    async def queue(self, call_id: str = "c1") -> None:
        self.hub.registry.calls[call_id] = CallRecord(
            call_id=call_id, thread_id="t1", worker_id="w1", caller=Caller(number="+1"),
            bot_transcript=[TranscriptLine(role=Role.BOT, text="hi", at="x")])
        await self.hub.publish(HandoffRequested(call_id=call_id, thread_id="t1", at="x"))


async def test_ring_all_offers_every_available_agent_with_the_transcript() -> None:
    rig = Rig()
    await rig.agents("alice", "bob")
    await rig.router.set_status("bob", "away")
    await rig.agents("carol")
    await rig.queue()
    assert len(rig.got("sid-alice", "incoming_call")) == 1
    assert len(rig.got("sid-carol", "incoming_call")) == 1
    assert rig.got("sid-bob", "incoming_call") == []
    offer = rig.got("sid-alice", "incoming_call")[0]
    assert offer["threadId"] == "t1" and offer["botTranscript"][0]["text"] == "hi"


async def test_first_accept_wins_and_the_others_are_cancelled() -> None:
    rig = Rig()
    await rig.agents("alice", "bob")
    await rig.queue()
    first, second = await asyncio.gather(rig.router.accept("bob", "c1"),
                                         rig.router.accept("alice", "c1"))
    assert first == {"ok": True}
    assert second["error"]["code"] == "already_answered"
    assert rig.got("sid-alice", "call_cancelled") == [
        {"callId": "c1", "reason": "answered_elsewhere"}]
    assert rig.router.agents["bob"].state()["status"] == "busy"
    assert AgentJoined(call_id="c1", agent_id="bob") in rig.hub.commands


async def test_an_agent_cannot_act_on_a_call_not_offered_to_it() -> None:
    rig = Rig()
    await rig.agents("alice")
    await rig.router.set_status("alice", "away")
    await rig.agents("bob")
    await rig.queue()
    assert (await rig.router.accept("alice", "c1"))["error"]["code"] == "forbidden"
    assert (await rig.router.decline("alice", "c1"))["error"]["code"] == "forbidden"
    assert not rig.router.may_act("alice", "c1")
    assert rig.router.may_act("bob", "c1")


@pytest.mark.parametrize("strategy", ["round_robin", "longest_idle"])
async def test_sequential_strategies_ring_one_agent_and_move_on_after_a_decline(
    strategy: str,
) -> None:
    rig = Rig(strategy)
    await rig.agents("alice", "bob")
    await rig.queue()
    ringing = [n for n in ("alice", "bob") if rig.got(f"sid-{n}", "incoming_call")]
    assert len(ringing) == 1
    first = ringing[0]
    await rig.router.decline(first, "c1")
    other = "bob" if first == "alice" else "alice"
    assert len(rig.got(f"sid-{other}", "incoming_call")) == 1
    assert rig.got(f"sid-{first}", "call_cancelled")[0]["reason"] == "declined"


async def test_longest_idle_rings_the_agent_idle_longest_first() -> None:
    rig = Rig("longest_idle")
    await rig.agents("alice", "bob")
    await rig.queue()
    assert rig.got("sid-alice", "incoming_call") and not rig.got("sid-bob", "incoming_call")


async def test_round_robin_rotates_between_calls() -> None:
    rig = Rig("round_robin")
    await rig.agents("alice", "bob")
    await rig.queue("c1")
    await rig.queue("c2")
    first = {n for n in ("alice", "bob") if rig.got(f"sid-{n}", "incoming_call")}
    assert first == {"alice", "bob"}, "two calls in a row go to different agents"


async def test_ring_timeout_cancels_and_moves_to_the_next_agent() -> None:
    rig = Rig("round_robin", ring_timeout=0.05)
    await rig.agents("alice", "bob")
    await rig.queue()
    await asyncio.sleep(0.08)
    await asyncio.sleep(0.08)
    cancelled = [p for s, e, p in rig.sent if e == "call_cancelled"]
    assert {p["reason"] for p in cancelled} == {"ring_timeout"}
    assert len(rig.got("sid-alice", "incoming_call")) == 1
    assert len(rig.got("sid-bob", "incoming_call")) == 1


async def test_caller_hangup_while_ringing_cancels_every_offer() -> None:
    rig = Rig()
    await rig.agents("alice", "bob")
    await rig.queue()
    await rig.hub.publish(CallEndedMsg(call_id="c1", outcome="completed", by="caller"))
    for sid in ("sid-alice", "sid-bob"):
        assert rig.got(sid, "call_cancelled") == [{"callId": "c1", "reason": "caller_hangup"}]
    assert rig.router.offers == {}


async def test_caller_hangup_during_the_conversation_ends_it_for_the_agent() -> None:
    rig = Rig()
    await rig.agents("alice")
    await rig.queue()
    await rig.router.accept("alice", "c1")
    await rig.hub.publish(TurnMsg(call_id="c1", thread_id="t1", role=Role.CALLER,
                                  text="hello", at="x", seq=5))
    assert rig.got("sid-alice", "transcript")[0]["text"] == "hello"
    await rig.hub.publish(CallEndedMsg(call_id="c1", outcome="completed", by="caller"))
    assert rig.got("sid-alice", "call_ended") == [
        {"callId": "c1", "reason": "completed", "by": "caller"}]
    assert rig.router.agents["alice"].state()["status"] == "available"


async def test_the_winner_vanishing_requeues_the_call_to_the_others() -> None:
    rig = Rig()
    await rig.agents("alice", "bob")
    await rig.queue()
    await rig.router.accept("alice", "c1")
    await rig.router.disconnected("sid-alice", "alice")
    await asyncio.sleep(0.1)  # the reconnect grace (0.05 s) runs out
    assert AgentLeft(call_id="c1", agent_id="alice") in rig.hub.commands
    assert len(rig.got("sid-bob", "incoming_call")) == 2, "bob is offered the call again"


async def test_a_winner_who_reconnects_within_the_grace_keeps_the_call() -> None:
    rig = Rig(grace=0.2)
    await rig.agents("alice", "bob")
    await rig.queue()
    await rig.router.accept("alice", "c1")
    await rig.router.disconnected("sid-alice", "alice")
    await rig.router.connected("sid-alice-2", "alice", "Alice")
    await asyncio.sleep(0.3)
    assert not [c for c in rig.hub.commands if isinstance(c, AgentLeft)]
    assert rig.router.offers["c1"].accepted_by == "alice"


async def test_a_thousand_connects_and_disconnects_leave_no_state() -> None:
    rig = Rig()
    for i in range(1000):
        await rig.router.connected(f"s{i}", f"a{i % 7}", "x")
        await rig.router.disconnected(f"s{i}", f"a{i % 7}")
    assert rig.router.agents == {}
    assert rig.router.offers == {}


async def test_lost_media_requeues_the_call_unless_the_agent_renegotiates() -> None:
    rig = Rig(grace=0.05)
    await rig.agents("alice", "bob")
    await rig.queue()
    await rig.router.accept("alice", "c1")
    await rig.hub.publish(PeerLost(call_id="c1"))
    await asyncio.sleep(0.1)
    assert rig.got("sid-alice", "call_ended") == [
        {"callId": "c1", "reason": "media_lost", "by": "system"}]
    assert AgentLeft(call_id="c1", agent_id="alice") in rig.hub.commands
    assert len(rig.got("sid-bob", "incoming_call")) == 2, "bob is rung again"
    assert rig.router.agents["alice"].state()["status"] == "available"


async def test_a_new_offer_within_the_grace_keeps_the_call_with_the_agent() -> None:
    rig = Rig(grace=0.1)
    await rig.agents("alice")
    await rig.queue()
    await rig.router.accept("alice", "c1")
    await rig.hub.publish(PeerLost(call_id="c1"))
    rig.router.renegotiated("alice")
    await asyncio.sleep(0.2)
    assert rig.got("sid-alice", "call_ended") == []
    assert rig.router.offers["c1"].accepted_by == "alice"
