"""The hub's side of supervision and transfer (hitl_sip.hub.supervision) on the /agent
namespace with a recording stand-in for the hub core: who may do what, which commands reach
the call's worker, and what each agent is told."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hitl_sip.protocol import worker as w
from hitl_sip.protocol.worker import CallState
from tests.unit.test_protocol_sockets import Rig, rig

__all__ = ["rig"]


async def held_by_alice(rig: Rig) -> None:
    await rig.agent("alice")
    await rig.queue()
    assert await rig.ask("accept_call", {"callId": "c1"}) == {"ok": True}
    rig.hub.registry.calls["c1"].state = CallState.HUMAN


def legs(rig: Rig) -> list[tuple[str, str | None, bool]]:
    return [(c.leg, c.role.value if c.role else None, c.primary)
            for c in rig.hub.commands if isinstance(c, w.Leg)]


def got(rig: Rig, event: str, sid: str) -> list[dict[str, Any]]:
    return [json.loads(text) for text in rig.server.got(event, sid)]


async def test_a_supervisor_monitors_switches_and_stops(rig: Rig) -> None:
    await rig.agent("bob")
    sue = await rig.agent("sue")
    await rig.queue()
    early = await rig.ask("monitor_call", {"callId": "c1", "mode": "listen"}, sid=sue)
    assert early["error"]["code"] == "invalid_state"  # nobody holds it yet
    await rig.agent("alice")
    assert await rig.ask("accept_call", {"callId": "c1"}) == {"ok": True}
    rig.hub.registry.calls["c1"].state = CallState.HUMAN
    agent = await rig.ask("monitor_call", {"callId": "c1", "mode": "listen"}, sid="sid-bob")
    assert agent["error"]["code"] == "forbidden"
    assert await rig.ask("monitor_call", {"callId": "c1", "mode": "listen"}, sid=sue) == {
        "ok": True}
    again = await rig.ask("monitor_call", {"callId": "c1", "mode": "barge"}, sid=sue)
    assert again["error"]["code"] == "invalid_state"
    # the supervisor's offer is relayed for its own leg, not the agent's
    await rig.ask("webrtc_offer", {"callId": "c1", "sdp": "v=0\r\n"}, sid=sue)
    offer = rig.hub.commands[-1]
    assert isinstance(offer, w.WebrtcOffer) and offer.leg == "sue"
    assert await rig.ask("monitor_mode", {"callId": "c1", "mode": "whisper"}, sid=sue) == {
        "ok": True}
    assert await rig.ask("monitor_stop", {"callId": "c1"}, sid=sue) == {"ok": True}
    assert legs(rig) == [("sue", "listen", False), ("sue", "whisper", False),
                         ("sue", None, False)]
    assert [(m["mode"], m["monitors"]) for m in got(rig, "call_monitored", "sid-alice")] == [
        ("listen", 1), ("whisper", 1), (None, 0)]
    assert not got(rig, "call_monitored", "sid-bob")
    stopped = await rig.ask("monitor_mode", {"callId": "c1", "mode": "barge"}, sid=sue)
    assert stopped["error"]["code"] == "invalid_state"
    assert "sue" in rig.hub.registry.calls["c1"].offered_to  # it may read the thread


async def test_monitoring_ends_with_the_call(rig: Rig) -> None:
    await held_by_alice(rig)
    sue = await rig.agent("sue")
    await rig.ask("monitor_call", {"callId": "c1", "mode": "barge"}, sid=sue)
    await rig.hub.publish(w.CallEndedMsg(call_id="c1", outcome="completed", by="caller"))
    assert [e["reason"] for e in got(rig, "call_ended", sue)] == ["monitoring_over"]
    assert legs(rig) == [("sue", "barge", False)]  # the worker closed it with the call


async def test_a_cold_transfer_rings_the_target_with_the_conversation(rig: Rig) -> None:
    await held_by_alice(rig)
    bob = await rig.agent("bob")
    call = rig.hub.registry.calls["c1"]
    call.human_transcript.append(w.TranscriptLine(role=w.Role.AGENT, text="let me check",
                                                  at="x"))
    busy = await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "alice"},
                                           "mode": "cold"})
    assert busy["error"] == {"code": "bad_request", "message": "to.agentId: that is you"}
    ack = await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "bob"},
                                          "mode": "cold", "note": "refund"})
    assert ack == {"ok": True}
    twice = await rig.ask("transfer_call", {"callId": "c1", "to": {"queue": "support"},
                                            "mode": "cold"})
    assert twice["error"]["code"] == "invalid_state"
    ring = got(rig, "incoming_call", bob)[-1]
    assert ring["transfer"] == {"fromAgentId": "alice", "fromName": "Alice", "mode": "cold",
                                "note": "refund"}
    assert ring["humanTranscript"] == [{"role": "agent", "text": "let me check", "at": "x"}]
    assert await rig.ask("accept_call", {"callId": "c1"}, sid=bob) == {"ok": True}
    assert legs(rig) == [("bob", "agent", True)]  # it takes over once its audio flows
    assert [n.text for n in rig.hub.notices] == ["Transferred to Bob"]
    await rig.ask("webrtc_offer", {"callId": "c1", "sdp": "v=0\r\n"}, sid=bob)
    assert rig.hub.commands[-1].leg == "bob"  # type: ignore[union-attr]
    await rig.hub.publish(w.LegMedia(call_id="c1", leg="bob", flowing=True, primary=False))
    assert len(got(rig, "call_connected", bob)) == 1  # bob hears the call: connected
    await rig.hub.publish(w.LegMedia(call_id="c1", leg="bob", flowing=True, primary=True))
    assert [e["reason"] for e in got(rig, "call_ended", "sid-alice")] == ["transferred"]
    assert rig.agents.router.offers["c1"].accepted_by == "bob"
    assert call.agent_id == "bob"
    wrap = await rig.ask("wrap_up", {"callId": "c1", "disposition": "resolved"}, sid=bob)
    assert wrap == {"ok": True}  # the call is bob's now
    first = await rig.ask("wrap_up", {"callId": "c1", "disposition": "follow_up"})
    assert first == {"ok": True}  # and alice, who handed it over, wraps up her part
    hangup = await rig.ask("hangup", {"callId": "c1"}, sid="sid-alice")
    assert hangup["error"]["code"] in ("forbidden", "invalid_state")


async def test_a_warm_transfer_ends_only_the_first_agent_s_leg(rig: Rig) -> None:
    await held_by_alice(rig)
    bob = await rig.agent("bob")
    await rig.ask("transfer_call", {"callId": "c1", "to": {"queue": "support"},
                                    "mode": "warm"})
    await rig.ask("accept_call", {"callId": "c1"}, sid=bob)
    assert [n.text for n in rig.hub.notices] == ["Transferred to Bob (warm)"]
    assert got(rig, "transfer_joined", "sid-alice") == [
        {"callId": "c1", "agentId": "bob", "name": "Bob", "mode": "warm"}]
    assert await rig.ask("hangup", {"callId": "c1"}, sid="sid-alice") == {"ok": True}
    assert legs(rig) == [("bob", "agent", False), ("bob", "agent", True)]
    assert not [c for c in rig.hub.commands if isinstance(c, w.Hangup)]


async def test_a_declined_transfer_fails_and_the_first_agent_keeps_the_call(rig: Rig) -> None:
    await held_by_alice(rig)
    bob = await rig.agent("bob")
    number = await rig.ask("transfer_call", {"callId": "c1", "to": {"number": "+15551234567"},
                                             "mode": "cold"})
    assert number["error"]["code"] == "unavailable"
    both = await rig.ask("transfer_call", {"callId": "c1", "to": {"queue": "support",
                                                                  "agentId": "bob"},
                                           "mode": "cold"})
    assert both["error"]["message"].startswith("to: exactly one of agentId, queue, number")
    await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "bob"}, "mode": "warm"})
    assert await rig.ask("decline_call", {"callId": "c1"}, sid=bob) == {"ok": True}
    assert [f["reason"] for f in got(rig, "transfer_failed", "sid-alice")] == ["declined"]
    assert rig.agents.router.offers["c1"].accepted_by == "alice"
    assert not legs(rig)
    assert rig.agents.supervision.transfers_done.get(mode="warm", outcome="declined") == 1


async def test_a_call_back_with_the_bot_closes_a_joined_target_s_leg(rig: Rig) -> None:
    await held_by_alice(rig)
    bob = await rig.agent("bob")
    await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "bob"}, "mode": "warm"})
    await rig.ask("accept_call", {"callId": "c1"}, sid=bob)
    await rig.hub.publish(w.SessionStateMsg(call_id="c1", thread_id="t1", state=CallState.BOT,
                                            at="x"))
    assert legs(rig) == [("bob", "agent", False), ("bob", None, False)]
    assert [(e["reason"], e["by"]) for e in got(rig, "call_ended", bob)] == [
        ("returned", "system")]
    assert rig.agents.router.agents["bob"].active_call is None


async def test_a_transfer_nobody_answers_fails_with_no_answer_and_the_call_stays(
    rig: Rig,
) -> None:
    await held_by_alice(rig)
    bob = await rig.agent("bob")
    rig.agents.router.ring_timeout = 0.05
    failed = asyncio.Event()
    emit = rig.server.emit

    async def watched(event: str, data: Any = None, to: str | None = None,
                      **kw: Any) -> None:
        await emit(event, data, to, **kw)
        if event == "transfer_failed":
            failed.set()

    rig.server.emit = watched  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    asked = loop.time()
    assert await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "bob"},
                                           "mode": "cold", "note": "refund"}) == {"ok": True}
    assert got(rig, "incoming_call", bob)[-1]["ringTimeoutSec"] == 0.05
    await asyncio.wait_for(failed.wait(), 5)  # bob never answers
    assert loop.time() - asked >= 0.05
    assert got(rig, "transfer_failed", "sid-alice") == [{"callId": "c1", "reason": "no_answer"}]
    assert [c["reason"] for c in got(rig, "call_cancelled", bob)] == ["ring_timeout"]
    assert not got(rig, "transfer_failed", bob)
    # the call stays with alice: nobody joined, she may hand it over again
    assert rig.agents.router.offers["c1"].accepted_by == "alice"
    assert rig.hub.registry.calls["c1"].agent_id == "alice"
    assert not legs(rig) and not rig.hub.notices
    assert rig.agents.supervision.transfers_done.get(mode="cold", outcome="no_answer") == 1
    late = await rig.ask("accept_call", {"callId": "c1"}, sid=bob)
    assert "error" in late  # the ring is over for bob
    assert await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "bob"},
                                           "mode": "cold"}) == {"ok": True}
