"""An agent's cold transfer of its call to a phone number (PROTOCOL.md §6, ``to: {number}``).

The means, tried in this order (:func:`plan`):

1. **SIP REFER** on the trunk leg, when the trunk profile says the carrier takes it
   (``[transfer] refer = true``): the call's worker sends ``REFER`` with ``Refer-To:
   <sip:+1…@host>`` and answers with the final status of the carrier's NOTIFY (sipfrag);
2. **the carrier's REST API** (:mod:`hitl_sip.hub.carrier_control`), when its credentials
   are configured and the call names its carrier leg (Twilio's parent CallSid, Vonage's call
   uuid) — after a failed REFER too;
3. neither: ``transfer_call`` is refused (``unavailable``).

``transfer_call`` is acknowledged once a means exists; the means run after. On success the
thread gets "Transferred to +1…" (posted like a bot turn), our leg ends (``Hangup`` with
outcome ``transferred``: the carrier keeps the caller) and the agent gets ``call_ended``
reason ``transferred`` — also when the carrier's own BYE overtakes ours. When every means
failed the agent gets ``transfer_failed`` (reason ``refer_failed`` or ``carrier_failed``) and
keeps the call. Counted in ``hitl_sip_hub_transfers_total{mode="cold"}`` (completed, failed,
caller_hangup, call_moved) and, per means, in ``hitl_sip_hub_transfer_out_attempts_total``.

The same carrier control hangs up the carrier's leg of a call whose worker process died: our
SIP leg vanished without a BYE, and the carrier would keep the caller in silence.

The number is personal data: log records carry it only as a ``redact`` field; the audit trail
gets it masked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hitl_sip.errors import ConfigError
from hitl_sip.hub.carrier_control import CarrierControl, CarrierError, CarrierLeg
from hitl_sip.hub.sessions import audit
from hitl_sip.metrics import Counter
from hitl_sip.protocol.agent import ErrorCode, TransferFailed, ok, refuse
from hitl_sip.protocol.worker import CallEndedMsg, CallStarted, CallState, Hangup, Refer
from hitl_sip.sip.profile import load_profile

if TYPE_CHECKING:
    from hitl_sip.config import Config
    from hitl_sip.hub.calls import CallRecord
    from hitl_sip.hub.core import Hub
    from hitl_sip.hub.events import CallEvent
    from hitl_sip.hub.routing import Router

log = logging.getLogger(__name__)

NO_MEANS = "transfer to a phone number needs REFER on the trunk or carrier API credentials"
REPLY_MARGIN = 10.0  # seconds the hub waits for the worker's reply beyond the REFER's wait


class Means(StrEnum):
    REFER = "refer"
    TWILIO = "twilio"
    VONAGE = "vonage"


def plan(refer: bool, leg: CarrierLeg | None) -> list[Means]:
    """The means to try, in order: REFER when the profile allows it, then the carrier's API
    when the call has a leg this hub can act on."""
    means = [Means.REFER] if refer else []
    if leg is not None:
        means.append(Means(leg.carrier.value))
    return means


def masked(number: str) -> str:
    """``+1********67``: enough to tell numbers apart in an audit trail, not to dial one."""
    return number[:2] + "*" * max(0, len(number) - 4) + number[-2:]


def profile_refers(config: Config) -> bool:
    """The trunk profile's ``[transfer] refer`` (False when the profile does not load: the
    server checked it at start)."""
    try:
        profile = load_profile(config.sip.profile, config.resolve_path(config.profiles_dir))
    except ConfigError as e:
        log.warning("transfers to a phone number will not use REFER: %s", e)
        return False
    return profile.transfer.refer


@dataclass
class PhoneTransfer:
    call_id: str
    thread_id: str  # for the notice, even when the carrier's BYE ended the call first
    from_agent: str
    number: str = field(repr=False)
    means: list[Means]
    leg: CarrierLeg | None
    started: float = field(default_factory=time.monotonic)
    # a means succeeded, or the carrier's API is moving the caller now (its BYE may come
    # before its answer): the call's end is the transfer's
    leaving: bool = False
    task: asyncio.Task[None] | None = None


class PhoneTransfers:
    """The transfers to phone numbers under way, by call."""

    def __init__(self, hub: Hub, router: Router, transfers_done: Counter,
                 notice: Callable[[str, str, str], Awaitable[None]], *,
                 refer: bool | None = None, control: CarrierControl | None = None) -> None:
        self.hub = hub
        self.router = router
        self.transfers_done = transfers_done
        self.notice = notice
        self.refer = profile_refers(hub.config) if refer is None else refer
        self.refer_timeout = hub.config.carrier.refer_timeout
        self.control = CarrierControl.from_config(hub.config) if control is None else control
        self.active: dict[str, PhoneTransfer] = {}
        self.legs: dict[str, CarrierLeg] = {}  # the carrier legs of this hub's live calls
        self._tasks: set[asyncio.Task[Any]] = set()
        self.attempts = hub.registry.metrics.counter(
            "hitl_sip_hub_transfer_out_attempts_total",
            "Means tried for transfers to a phone number, by means (refer, twilio, vonage) "
            "and outcome (ok, failed)", ["means", "outcome"])
        self.carrier_hangups = hub.registry.metrics.counter(
            "hitl_sip_hub_carrier_hangups_total",
            "Carrier legs hung up through the carrier's API (their worker died), by outcome",
            ["outcome"])
        if self.control.clients:
            hub.subscribe(self._on_call_event)

    def busy(self, call_id: str) -> bool:
        return call_id in self.active

    def left_by_transfer(self, call_id: str) -> bool:
        """Whether the call's end is a transfer's (the agent's ``call_ended`` says so)."""
        transfer = self.active.get(call_id)
        return transfer is not None and transfer.leaving

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- start ----------------------------------------------------------------------------

    def start(self, agent_id: str, call: CallRecord, number: str) -> dict[str, Any]:
        """``transfer_call {to: {number}}`` from the agent holding ``call``: the ack."""
        leg = self.control.leg(call.metadata, call.called)
        means = plan(self.refer, leg)
        if not means:
            return refuse(ErrorCode.UNAVAILABLE, NO_MEANS)
        transfer = PhoneTransfer(call.call_id, call.thread_id, agent_id, number, means, leg)
        self.active[call.call_id] = transfer
        audit("transfer_call", agent=agent_id, call=call.call_id, to=f"number:{masked(number)}",
              mode="cold", means=",".join(means))
        log.info("[call %s] cold transfer by %s to a phone number (%s)", call.call_id, agent_id,
                 ", ".join(means), extra={"redact": {"number": number}})
        transfer.task = self._spawn(self._run(transfer))
        return ok()

    # -- the means --------------------------------------------------------------------------

    async def _run(self, transfer: PhoneTransfer) -> None:
        for means in transfer.means:
            if means is Means.REFER:
                done = await self._refer(transfer)
            else:
                done = await self._carrier_api(transfer, means)
            if done:
                await self._succeeded(transfer, means)
                return
            if not self._still_held(transfer):
                return  # the call ended or moved meanwhile (counted there)
        await self._failed(transfer)

    def _still_held(self, transfer: PhoneTransfer) -> bool:
        call = self.hub.registry.calls.get(transfer.call_id)
        return (self.active.get(transfer.call_id) is transfer and call is not None
                and call.state is CallState.HUMAN)

    async def _refer(self, transfer: PhoneTransfer) -> bool:
        reply = await self.hub.request(
            Refer(call_id=transfer.call_id, number=transfer.number, timeout=self.refer_timeout),
            wait=self.refer_timeout + REPLY_MARGIN)
        if reply is not None and reply.ok:
            self.attempts.inc(means=Means.REFER.value, outcome="ok")
            return True
        self.attempts.inc(means=Means.REFER.value, outcome="failed")
        detail = ("the call's worker did not answer" if reply is None
                  else reply.error.message if reply.error else "refused")
        log.warning("[call %s] transfer by REFER failed: %s", transfer.call_id, detail)
        return False

    async def _carrier_api(self, transfer: PhoneTransfer, means: Means) -> bool:
        assert transfer.leg is not None
        transfer.leaving = True  # the carrier's BYE on our leg may come before its answer
        try:
            await self.control.transfer(transfer.leg, transfer.number)
        except CarrierError as e:
            transfer.leaving = False
            self.attempts.inc(means=means.value, outcome="failed")
            log.warning("[call %s] transfer by the carrier's API failed: %s", transfer.call_id,
                        e)
            return False
        self.attempts.inc(means=means.value, outcome="ok")
        return True

    # -- outcomes ---------------------------------------------------------------------------

    async def _succeeded(self, transfer: PhoneTransfer, means: Means) -> None:
        """The carrier has the caller: the thread gets the notice, our leg ends."""
        transfer.leaving = True
        call_id = transfer.call_id
        self.transfers_done.inc(mode="cold", outcome="completed")
        audit("transfer_done", agent=transfer.from_agent, call=call_id, means=means.value)
        log.info("[call %s] transferred to a phone number by %s (%.1fs)", call_id, means.value,
                 time.monotonic() - transfer.started, extra={"redact": {"number": transfer.number}})
        await self.notice(call_id, f"Transferred to {transfer.number}", transfer.thread_id)
        if not await self.hub.command(Hangup(call_id=call_id, by="agent", outcome="transferred")):
            log.info("[call %s] our leg was already gone (the carrier ended it)", call_id)

    async def _failed(self, transfer: PhoneTransfer) -> None:
        if self.active.get(transfer.call_id) is transfer:
            del self.active[transfer.call_id]
        self.transfers_done.inc(mode="cold", outcome="failed")
        reason = "refer_failed" if transfer.means[-1] is Means.REFER else "carrier_failed"
        log.info("[call %s] transfer to a phone number failed (%s): the agent keeps the call",
                 transfer.call_id, reason)
        agent = self.router.agents.get(transfer.from_agent)
        if agent is not None:
            await self.router._to_agent(agent, TransferFailed(call_id=transfer.call_id,
                                                              reason=reason))

    def call_left(self, call_id: str, *, ended: str | None) -> None:
        """The call ended (``ended``: its outcome) or left the human phase: a transfer still
        trying is over; one that succeeded is forgotten when the call ends."""
        transfer = self.active.get(call_id)
        if transfer is None:
            return
        if transfer.leaving:
            if ended is not None:
                del self.active[call_id]
            return
        del self.active[call_id]
        if transfer.task is not None:
            transfer.task.cancel()
        self.transfers_done.inc(mode="cold",
                                outcome="caller_hangup" if ended else "call_moved")

    # -- the carrier legs of calls whose worker died ------------------------------------------

    async def _on_call_event(self, event: CallEvent) -> None:
        call_id = event.call_id
        if isinstance(event, CallStarted):
            call = self.hub.registry.calls.get(call_id)
            # this hub's own calls only (another hub hangs up the legs of its workers)
            if call is not None and (call.hub is None or call.hub == self.hub.hub_id):
                leg = self.control.leg(call.metadata)
                if leg is not None:
                    self.legs[call_id] = leg
        elif isinstance(event, CallEndedMsg):
            leg = self.legs.pop(call_id, None)
            if leg is not None and event.outcome == "worker_lost":
                self._spawn(self._hang_up_carrier(call_id, leg))

    async def _hang_up_carrier(self, call_id: str, leg: CarrierLeg) -> None:
        try:
            await self.control.hangup(leg)
        except CarrierError as e:
            self.carrier_hangups.inc(outcome="failed")
            log.warning("[call %s] the carrier's leg could not be hung up: %s", call_id, e)
            return
        self.carrier_hangups.inc(outcome="ok")
        log.info("[call %s] its worker died: the carrier's leg was hung up", call_id)
