"""An agent's transfer of its call to a phone number (hitl_sip.hub.phone_transfer) on the
/agent namespace, with the recording stand-in of the hub core: which means is tried in which
order, what reaches the worker, the thread and the agent, and when it is refused."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hitl_sip.hub.carrier_control import (
    TWILIO_PARENT_KEY,
    Carrier,
    CarrierControl,
    CarrierError,
    CarrierLeg,
)
from hitl_sip.hub.phone_transfer import NO_MEANS, Means, PhoneTransfers, masked, plan
from hitl_sip.protocol import worker as w
from tests.unit.test_protocol_sockets import Rig, rig
from tests.unit.test_supervision_hub import held_by_alice

__all__ = ["rig"]

NUMBER = "+15551234567"
PARENT = "CA" + "0123456789abcdef" * 2
TRANSFER = {"callId": "c1", "to": {"number": NUMBER}, "mode": "cold"}


class FakeCarrier:
    """A carrier client that records what it is asked (and may fail, or wait)."""

    def __init__(self, carrier: Carrier = Carrier.TWILIO, *, fail: bool = False) -> None:
        self.carrier = carrier
        self.fail = fail
        self.transfers: list[tuple[CarrierLeg, str]] = []
        self.hangups: list[CarrierLeg] = []
        self.hold: asyncio.Event | None = None
        self.asked = asyncio.Event()

    async def transfer(self, leg: CarrierLeg, number: str) -> None:
        self.transfers.append((leg, number))
        self.asked.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail:
            raise CarrierError(self.carrier, "transfer: HTTP 400", 400)

    async def hangup(self, leg: CarrierLeg) -> None:
        self.hangups.append(leg)


def got(rig: Rig, event: str, sid: str = "sid-alice") -> list[dict[str, Any]]:
    return [json.loads(text) for text in rig.server.got(event, sid)]


def phone(rig: Rig) -> PhoneTransfers:
    return rig.agents.supervision.phone


def with_means(rig: Rig, *, refer: bool, carrier: FakeCarrier | None = None) -> None:
    p = phone(rig)
    p.refer = refer
    p.control = CarrierControl(twilio=carrier) if carrier is not None else CarrierControl()


async def settled(rig: Rig) -> None:
    """Until the transfer's task is over."""
    for transfer in list(phone(rig).active.values()):
        if transfer.task is not None:
            await asyncio.wait({transfer.task}, timeout=5)


def hangups(rig: Rig) -> list[w.Hangup]:
    return [c for c in rig.hub.commands if isinstance(c, w.Hangup)]


async def call_ends(rig: Rig, outcome: str, by: str) -> None:
    await rig.hub.publish(w.CallEndedMsg(call_id="c1", outcome=outcome, by=by))


def test_the_means_are_refer_then_the_carrier_s_api() -> None:
    leg = CarrierLeg(Carrier.VONAGE, "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    assert plan(True, leg) == [Means.REFER, Means.VONAGE]
    assert plan(False, leg) == [Means.VONAGE]
    assert plan(True, None) == [Means.REFER]
    assert plan(False, None) == []
    assert masked(NUMBER) == "+1********67"


async def test_without_refer_or_credentials_the_transfer_is_refused(rig: Rig) -> None:
    await held_by_alice(rig)
    rig.hub.registry.calls["c1"].metadata[TWILIO_PARENT_KEY] = PARENT  # no credentials: no use
    answer = await rig.ask("transfer_call", TRANSFER)
    assert answer["error"] == {"code": "unavailable", "message": NO_MEANS}
    assert not phone(rig).active and not rig.hub.commands[1:]


async def test_a_refer_that_succeeds_ends_our_leg_as_transferred(rig: Rig) -> None:
    await held_by_alice(rig)
    with_means(rig, refer=True)
    rig.hub.reply = w.Reply(request_id="r1", call_id="c1", ok=True)
    assert await rig.ask("transfer_call", TRANSFER) == {"ok": True}
    await settled(rig)
    refer = [c for c in rig.hub.commands if isinstance(c, w.Refer)]
    assert [(r.number, r.timeout) for r in refer] == [(NUMBER, 60.0)]
    assert [(n.text, n.thread_id, n.role) for n in rig.hub.notices] == [
        (f"Transferred to {NUMBER}", "t1", "bot")]
    assert [(h.by, h.outcome) for h in hangups(rig)] == [("agent", "transferred")]
    # a second transfer while this one leaves is refused
    again = await rig.ask("transfer_call", {"callId": "c1", "to": {"agentId": "bob"},
                                            "mode": "cold"})
    assert again["error"]["code"] == "invalid_state"
    await call_ends(rig, "transferred", "agent")
    assert got(rig, "call_ended") == [
        {"callId": "c1", "reason": "transferred", "by": "agent"}]
    assert not got(rig, "transfer_failed")
    assert not phone(rig).active
    done = rig.agents.supervision.transfers_done
    assert done.get(mode="cold", outcome="completed") == 1
    assert phone(rig).attempts.get(means="refer", outcome="ok") == 1


async def test_a_refused_refer_falls_back_to_the_carrier_s_api(rig: Rig) -> None:
    await held_by_alice(rig)
    rig.hub.registry.calls["c1"].metadata[TWILIO_PARENT_KEY] = PARENT
    twilio = FakeCarrier()
    with_means(rig, refer=True, carrier=twilio)
    rig.hub.reply = w.Reply(request_id="r1", call_id="c1", ok=False, error=w.ErrorBody(
        code="refer_failed", message="603 Decline"))
    assert await rig.ask("transfer_call", TRANSFER) == {"ok": True}
    await settled(rig)
    # the call's called number (+1556) is no E.164 number: Vonage would pick a "from"
    assert twilio.transfers == [(CarrierLeg(Carrier.TWILIO, PARENT, ""), NUMBER)]
    assert [h.outcome for h in hangups(rig)] == ["transferred"]
    attempts = phone(rig).attempts
    assert attempts.get(means="refer", outcome="failed") == 1
    assert attempts.get(means="twilio", outcome="ok") == 1


async def test_the_carrier_s_bye_before_its_answer_still_ends_the_call_as_transferred(
    rig: Rig,
) -> None:
    await held_by_alice(rig)
    rig.hub.registry.calls["c1"].metadata[TWILIO_PARENT_KEY] = PARENT
    twilio = FakeCarrier()
    twilio.hold = asyncio.Event()
    with_means(rig, refer=False, carrier=twilio)
    assert await rig.ask("transfer_call", TRANSFER) == {"ok": True}
    await asyncio.wait_for(twilio.asked.wait(), 5)
    # Twilio ends its <Dial> (a BYE on our leg) before its API answered us
    await call_ends(rig, "completed", "caller")
    twilio.hold.set()
    await asyncio.gather(*phone(rig)._tasks)
    assert got(rig, "call_ended") == [
        {"callId": "c1", "reason": "transferred", "by": "agent"}]
    assert [n.text for n in rig.hub.notices] == [f"Transferred to {NUMBER}"]
    assert rig.agents.supervision.transfers_done.get(mode="cold", outcome="completed") == 1


async def test_when_every_means_fails_the_agent_keeps_the_call(rig: Rig) -> None:
    await held_by_alice(rig)
    rig.hub.registry.calls["c1"].metadata[TWILIO_PARENT_KEY] = PARENT
    with_means(rig, refer=True, carrier=FakeCarrier(fail=True))
    rig.hub.reply = None  # the worker does not answer
    assert await rig.ask("transfer_call", TRANSFER) == {"ok": True}
    await settled(rig)
    assert got(rig, "transfer_failed") == [{"callId": "c1", "reason": "carrier_failed"}]
    assert not hangups(rig) and not rig.hub.notices
    assert rig.agents.router.offers["c1"].accepted_by == "alice"
    assert not phone(rig).active
    assert rig.agents.supervision.transfers_done.get(mode="cold", outcome="failed") == 1
    # and it may try again
    with_means(rig, refer=True)
    rig.hub.reply = w.Reply(request_id="r2", call_id="c1", ok=False)
    assert await rig.ask("transfer_call", TRANSFER) == {"ok": True}
    await settled(rig)
    assert [f["reason"] for f in got(rig, "transfer_failed")] == ["carrier_failed",
                                                                  "refer_failed"]


async def test_a_caller_who_hangs_up_during_the_refer_ends_the_transfer(rig: Rig) -> None:
    await held_by_alice(rig)
    with_means(rig, refer=True)
    rig.hub.before_reply = asyncio.Event()
    rig.hub.reply = w.Reply(request_id="r1", call_id="c1", ok=False)
    assert await rig.ask("transfer_call", TRANSFER) == {"ok": True}
    await asyncio.sleep(0)
    await call_ends(rig, "completed", "caller")
    rig.hub.before_reply.set()
    await asyncio.gather(*phone(rig)._tasks, return_exceptions=True)
    assert got(rig, "call_ended") == [{"callId": "c1", "reason": "completed", "by": "caller"}]
    assert not got(rig, "transfer_failed")
    assert rig.agents.supervision.transfers_done.get(mode="cold",
                                                     outcome="caller_hangup") == 1


async def test_a_warm_transfer_to_a_number_is_refused_by_the_model(rig: Rig) -> None:
    await held_by_alice(rig)
    with_means(rig, refer=True)
    answer = await rig.ask("transfer_call", {**TRANSFER, "mode": "warm"})
    assert answer["error"]["code"] == "bad_request"
    bad = await rig.ask("transfer_call", {**TRANSFER, "to": {"number": "5551234567"}})
    assert bad["error"]["code"] == "bad_request"


@pytest.mark.parametrize("outcome", ["worker_lost", "completed"])
async def test_the_carrier_leg_of_a_call_whose_worker_died_is_hung_up(
    rig: Rig, outcome: str,
) -> None:
    await held_by_alice(rig)
    rig.hub.registry.calls["c1"].metadata[TWILIO_PARENT_KEY] = PARENT
    twilio = FakeCarrier()
    own = phone(rig)
    own.control = CarrierControl(twilio=twilio)
    rig.hub.subscribe(own._on_call_event)  # as it does when built with credentials
    await rig.hub.publish(w.CallStarted(call_id="c1", thread_id="t1"))
    await call_ends(rig, outcome, "system")
    await asyncio.gather(*own._tasks)
    assert twilio.hangups == ([CarrierLeg(Carrier.TWILIO, PARENT)]
                              if outcome == "worker_lost" else [])
    assert not own.legs
