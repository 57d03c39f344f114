"""Supervisors on live calls and transfers between agents (PROTOCOL.md §6).

**Monitoring.** A supervisor (or admin) sends ``monitor_call {callId, mode}`` for a call an
agent holds; the hub tells the call's worker to expect one more WebRTC leg named after the
supervisor (:class:`~hitl_sip.protocol.worker.Leg`), and the supervisor's ``webrtc_offer``
for that call is relayed to it as that leg. ``monitor_mode`` switches who hears the
supervisor without renegotiating (the worker re-routes at the next frame); ``monitor_stop``
closes the leg. The agent holding the call gets ``call_monitored`` on every change (the
dashboard's discreet indicator). A call that leaves the human phase, and a supervisor who
disconnects, end the monitoring.

**Transfer.** The agent holding a call sends ``transfer_call`` to an agent or a queue, cold
or warm. The target(s) ring with ``incoming_call`` carrying ``transfer`` and the conversation
so far. When one accepts, the alive5 thread gets a notice ("Transferred to …", posted like a
bot turn) and the target joins the call as a full-duplex leg: ``cold`` — it becomes the
call's agent as soon as its audio flows (make before break: the caller hears no gap) and the
first agent's leg ends (``call_ended`` reason ``transferred``); ``warm`` — caller, first
agent and target hear each other until the first agent sends ``hangup``, which ends only its
own leg. Nobody accepting within ``routing.ring_timeout`` (or every target declining) gives
the first agent ``transfer_failed`` and it keeps the call.

Queues: hitl-sip has one pool of agents; a transfer to one of ``routing.queues`` rings every
available agent but the one transferring, per ``routing.strategy``'s order, all at once.

A cold transfer to a phone number (``to: {number}``) leaves the server: by REFER to the trunk
or the carrier's REST API (:mod:`hitl_sip.hub.phone_transfer`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hitl_sip.hub.events import CallEvent
from hitl_sip.hub.phone_transfer import PhoneTransfers
from hitl_sip.hub.sessions import audit
from hitl_sip.hub.threads import Turn
from hitl_sip.log import now_iso
from hitl_sip.protocol.agent import (
    BoardMonitor,
    CallCancelled,
    CallConnected,
    CallEnded,
    CancelReason,
    EndedBy,
    ErrorCode,
    IncomingCall,
    Monitored,
    MonitorMode,
    Transcript,
    TransferCall,
    TransferFailed,
    TransferInfo,
    TransferJoined,
    TransferMode,
    ok,
    refuse,
)
from hitl_sip.protocol.worker import (
    CallEndedMsg,
    CallState,
    Leg,
    LegMedia,
    LegRole,
    Role,
    SessionStateMsg,
    Whispered,
)

if TYPE_CHECKING:
    from hitl_sip.hub.core import Hub
    from hitl_sip.hub.routing import AgentPresence, Router

log = logging.getLogger(__name__)


@dataclass
class Transfer:
    call_id: str
    from_agent: str
    mode: TransferMode
    note: str
    target: str  # the agent id, or "queue:<name>"
    ringing: set[str] = field(default_factory=set)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    joined: str | None = None  # the target who accepted
    started: float = field(default_factory=time.monotonic)


class Supervision:
    def __init__(self, hub: Hub, router: Router) -> None:
        self.hub = hub
        self.router = router
        self.monitors: dict[str, dict[str, MonitorMode]] = {}  # call -> supervisor -> mode
        self.transfers: dict[str, Transfer] = {}
        m = hub.registry.metrics
        self.monitoring = m.gauge("hitl_sip_hub_monitoring",
                                  "Supervisors on live calls now, by mode", ["mode"])
        self.monitor_starts = m.counter("hitl_sip_hub_monitors_total",
                                        "Supervisors who joined a call, by first mode",
                                        ["mode"])
        self.transfers_done = m.counter(
            "hitl_sip_hub_transfers_total",
            "Transfers by mode and outcome (completed, no_answer, declined, caller_hangup, "
            "target_left, call_moved; to a phone number also failed)", ["mode", "outcome"])
        for mode in MonitorMode:
            self.monitoring.set(0, mode=mode.value)
        hub.subscribe(self._on_call_event)
        self.phone = PhoneTransfers(hub, router, self.transfers_done, self._notice)

    # -- who is on a call -----------------------------------------------------------------

    def leg_of(self, agent_id: str, call_id: str) -> str | None:
        """The call's leg ``agent_id``'s WebRTC belongs to: its own name when it monitors
        the call or is a transfer's target that joined it; None otherwise."""
        if agent_id in self.monitors.get(call_id, {}):
            return agent_id
        transfer = self.transfers.get(call_id)
        if transfer is not None and transfer.joined == agent_id:
            return agent_id
        return None

    def listeners(self, call_id: str) -> list[str]:
        """Who gets the call's live transcript besides its agent: a joined transfer target
        and the supervisors on it."""
        out = list(self.monitors.get(call_id, {}))
        transfer = self.transfers.get(call_id)
        if transfer is not None and transfer.joined is not None:
            out.append(transfer.joined)
        return out

    def board_monitors(self, call_id: str) -> list[BoardMonitor]:
        return [BoardMonitor(agent_id=a, mode=m.value)
                for a, m in self.monitors.get(call_id, {}).items()]

    def _count(self) -> None:
        for mode in MonitorMode:
            self.monitoring.set(sum(1 for sups in self.monitors.values()
                                    for m in sups.values() if m is mode), mode=mode.value)

    async def _tell_agent(self, call_id: str) -> None:
        """The agent holding the call learns who supervises it (the strongest mode)."""
        offer = self.router.offers.get(call_id)
        holder = self.router.agents.get(offer.accepted_by or "") if offer else None
        sups = self.monitors.get(call_id, {})
        order = [MonitorMode.BARGE, MonitorMode.WHISPER, MonitorMode.LISTEN]
        mode = next((m for m in order if m in sups.values()), None)
        if holder is not None:
            await self.router._to_agent(holder, Monitored(call_id=call_id, mode=mode,
                                                          monitors=len(sups)))
        if self.router.on_change is not None:
            self.router.on_change()

    # -- monitoring -----------------------------------------------------------------------

    async def monitor(self, agent_id: str, call_id: str, mode: MonitorMode) -> dict[str, Any]:
        agent = self.router.agents.get(agent_id)
        if agent is None or not agent.role.sees_all:
            return refuse(ErrorCode.FORBIDDEN, "monitoring is for supervisors and admins")
        call = self.hub.registry.calls.get(call_id)
        if call is None:
            return refuse(ErrorCode.NOT_FOUND, f"no call {call_id}")
        offer = self.router.offers.get(call_id)
        if call.state is not CallState.HUMAN or offer is None or offer.accepted_by is None:
            return refuse(ErrorCode.INVALID_STATE, "only a call an agent holds can be monitored")
        if agent_id == offer.accepted_by or self.leg_of(agent_id, call_id) is not None:
            return refuse(ErrorCode.INVALID_STATE, "you are already on this call")
        if not await self.hub.command(Leg(call_id=call_id, leg=agent_id, role=mode.leg)):
            return refuse(ErrorCode.UNAVAILABLE, "the call's worker is not reachable")
        self.monitors.setdefault(call_id, {})[agent_id] = mode
        await self.hub.offered(call_id, agent_id)  # it may read the thread after, too
        self.monitor_starts.inc(mode=mode.value)
        self._count()
        audit("monitor_call", agent=agent_id, call=call_id, mode=mode.value)
        log.info("[call %s] supervisor %s joins (%s)", call_id, agent_id, mode.value)
        await self._tell_agent(call_id)
        return ok()

    async def set_mode(self, agent_id: str, call_id: str, mode: MonitorMode) -> dict[str, Any]:
        sups = self.monitors.get(call_id, {})
        if agent_id not in sups:
            return refuse(ErrorCode.INVALID_STATE, "you are not monitoring this call")
        if not await self.hub.command(Leg(call_id=call_id, leg=agent_id, role=mode.leg)):
            return refuse(ErrorCode.UNAVAILABLE, "the call's worker is not reachable")
        sups[agent_id] = mode
        self._count()
        audit("monitor_mode", agent=agent_id, call=call_id, mode=mode.value)
        await self._tell_agent(call_id)
        return ok()

    async def stop(self, agent_id: str, call_id: str) -> dict[str, Any]:
        if agent_id not in self.monitors.get(call_id, {}):
            return refuse(ErrorCode.INVALID_STATE, "you are not monitoring this call")
        await self._drop_monitor(agent_id, call_id)
        audit("monitor_stop", agent=agent_id, call=call_id)
        return ok()

    async def _drop_monitor(self, agent_id: str, call_id: str, *, command: bool = True) -> None:
        sups = self.monitors.get(call_id, {})
        if sups.pop(agent_id, None) is None:
            return
        if not sups:
            self.monitors.pop(call_id, None)
        self._count()
        if command:
            await self.hub.command(Leg(call_id=call_id, leg=agent_id, role=None))
        await self._tell_agent(call_id)

    async def agent_gone(self, agent_id: str) -> None:
        """A supervisor's last socket closed: its monitoring ends."""
        for call_id in [c for c, sups in self.monitors.items() if agent_id in sups]:
            await self._drop_monitor(agent_id, call_id)

    # -- transfer -------------------------------------------------------------------------

    async def transfer(self, agent_id: str, request: TransferCall) -> dict[str, Any]:
        call_id = request.call_id
        call = self.hub.registry.calls.get(call_id)
        if call is None or call.state is not CallState.HUMAN:
            return refuse(ErrorCode.INVALID_STATE, "only a call in progress with you can move")
        if call_id in self.transfers or self.phone.busy(call_id):
            return refuse(ErrorCode.INVALID_STATE, "a transfer of this call is under way")
        to = request.to
        if to.number is not None:
            return self.phone.start(agent_id, call, to.number)
        if to.agent_id is not None:
            target = self.router.agents.get(to.agent_id)
            if to.agent_id == agent_id:
                return refuse(ErrorCode.BAD_REQUEST, "to.agentId: that is you")
            if target is None or not target.can_ring or self.leg_of(to.agent_id, call_id):
                return refuse(ErrorCode.INVALID_STATE,
                              f"agent {to.agent_id} is not available to take a call")
            targets = [target]
            name = f"agent:{to.agent_id}"
        else:
            assert to.queue is not None
            if to.queue not in self.hub.config.routing.queues:
                return refuse(ErrorCode.BAD_REQUEST,
                              f"to.queue: one of {', '.join(self.hub.config.routing.queues)}")
            targets = [a for a in self.router.agents.values()
                       if a.can_ring and a.agent_id != agent_id
                       and self.leg_of(a.agent_id, call_id) is None]
            targets.sort(key=lambda a: a.idle_since)
            if not targets:
                return refuse(ErrorCode.INVALID_STATE,
                              f"nobody in queue {to.queue} is available now")
            name = f"queue:{to.queue}"
        transfer = Transfer(call_id, agent_id, request.mode, request.note, name)
        self.transfers[call_id] = transfer
        audit("transfer_call", agent=agent_id, call=call_id, to=name, mode=request.mode.value)
        log.info("[call %s] %s transfer by %s to %s", call_id, request.mode.value, agent_id,
                 name)
        incoming = self._incoming(call_id, transfer)
        for target in targets:
            await self._ring(transfer, target, incoming)
        return ok()

    def _incoming(self, call_id: str, transfer: Transfer) -> IncomingCall:
        base = self.router._incoming(call_id)
        assert base is not None
        call = self.hub.registry.calls[call_id]
        sender = self.router.agents.get(transfer.from_agent)
        info = TransferInfo(from_agent_id=transfer.from_agent,
                            from_name=sender.name if sender else transfer.from_agent,
                            mode=transfer.mode, note=transfer.note)
        return base.model_copy(update={"transfer": info,
                                       "human_transcript": list(call.human_transcript)})

    async def _ring(self, transfer: Transfer, target: AgentPresence,
                    incoming: IncomingCall) -> None:
        transfer.ringing.add(target.agent_id)
        await self.hub.offered(transfer.call_id, target.agent_id)
        timeout = self.router.ring_timeout
        transfer.timers[target.agent_id] = asyncio.get_running_loop().call_later(
            timeout, lambda: self.router._spawn(
                self._ring_over(transfer.call_id, target.agent_id, "no_answer",
                                CancelReason.RING_TIMEOUT)))
        await self.router._to_agent(target, incoming)

    def _stop_ringing(self, transfer: Transfer, agent_id: str) -> None:
        transfer.ringing.discard(agent_id)
        timer = transfer.timers.pop(agent_id, None)
        if timer is not None:
            timer.cancel()

    async def _ring_over(self, call_id: str, agent_id: str, outcome: str,
                         reason: CancelReason) -> None:
        """One target stopped ringing (ring timeout or decline); the last one fails it."""
        transfer = self.transfers.get(call_id)
        if transfer is None or agent_id not in transfer.ringing:
            return
        self._stop_ringing(transfer, agent_id)
        target = self.router.agents.get(agent_id)
        if target is not None:
            await self.router._to_agent(target, CallCancelled(call_id=call_id, reason=reason))
        if not transfer.ringing and transfer.joined is None:
            await self._fail(transfer, outcome)

    async def _fail(self, transfer: Transfer, outcome: str) -> None:
        self.transfers.pop(transfer.call_id, None)
        for agent_id in list(transfer.ringing):
            self._stop_ringing(transfer, agent_id)
        self.transfers_done.inc(mode=transfer.mode.value, outcome=outcome)
        log.info("[call %s] transfer to %s failed: %s", transfer.call_id, transfer.target,
                 outcome)
        sender = self.router.agents.get(transfer.from_agent)
        if sender is not None and outcome != "caller_hangup":
            await self.router._to_agent(sender, TransferFailed(call_id=transfer.call_id,
                                                               reason=outcome))

    def rings_for(self, agent_id: str, call_id: str) -> bool:
        transfer = self.transfers.get(call_id)
        return transfer is not None and agent_id in transfer.ringing

    async def decline(self, agent_id: str, call_id: str) -> dict[str, Any]:
        await self._ring_over(call_id, agent_id, "declined", CancelReason.DECLINED)
        return ok()

    async def accept(self, agent_id: str, call_id: str) -> dict[str, Any]:
        """A target takes the transferred call: it joins as a full-duplex leg."""
        transfer = self.transfers[call_id]
        target = self.router.agents[agent_id]
        if transfer.joined is not None:
            return refuse(ErrorCode.ALREADY_ANSWERED, "another agent took the call")
        if not await self.hub.command(Leg(call_id=call_id, leg=agent_id, role=LegRole.AGENT,
                                          primary=transfer.mode is TransferMode.COLD)):
            return refuse(ErrorCode.UNAVAILABLE, "the call's worker is not reachable")
        transfer.joined = agent_id  # nothing awaited between the check and this
        for other_id in list(transfer.ringing):
            self._stop_ringing(transfer, other_id)
            other = self.router.agents.get(other_id)
            if other_id != agent_id and other is not None:
                await self.router._to_agent(other, CallCancelled(
                    call_id=call_id, reason=CancelReason.ANSWERED_ELSEWHERE))
        target.active_call = call_id
        await self.router._push_state(target)
        sender = self.router.agents.get(transfer.from_agent)
        if sender is not None:
            await self.router._to_agent(sender, TransferJoined(
                call_id=call_id, agent_id=agent_id, name=target.name, mode=transfer.mode))
        audit("transfer_accepted", agent=agent_id, call=call_id)
        await self._notice(call_id, f"Transferred to {target.name}"
                           + (" (warm)" if transfer.mode is TransferMode.WARM else ""))
        return ok()

    async def first_agent_leaves(self, agent_id: str, call_id: str) -> bool:
        """``hangup`` from the first agent of a warm transfer whose target joined: only its
        own leg ends (the target becomes the call's agent). False when that is not the
        case (a plain hang-up)."""
        transfer = self.transfers.get(call_id)
        if transfer is None or transfer.from_agent != agent_id or transfer.joined is None:
            return False
        return await self.hub.command(Leg(call_id=call_id, leg=transfer.joined,
                                          role=LegRole.AGENT, primary=True))

    async def target_leaves(self, agent_id: str, call_id: str) -> bool:
        """``hangup`` from a target that joined but does not hold the call yet: its leg
        ends, the first agent keeps the call (``transfer_failed`` target_left)."""
        transfer = self.transfers.get(call_id)
        if transfer is None or transfer.joined != agent_id:
            return False
        await self.hub.command(Leg(call_id=call_id, leg=agent_id, role=None))
        await self._release(agent_id, call_id, "left")
        transfer.joined = None
        await self._fail(transfer, "target_left")
        return True

    async def _release(self, agent_id: str, call_id: str, reason: str,
                       by: EndedBy = EndedBy.AGENT) -> None:
        agent = self.router.agents.get(agent_id)
        if agent is None:
            return
        await self.router._to_agent(agent, CallEnded(call_id=call_id, reason=reason, by=by))
        if agent.active_call == call_id:
            agent.active_call = None
            agent.idle_since = time.monotonic()
            await self.router._push_state(agent)
            await self.router._offer_waiting(agent)

    async def _completed(self, call_id: str, leg: str) -> None:
        """The worker made the target the call's agent: the hand-over is done."""
        transfer = self.transfers.pop(call_id, None)
        if transfer is None or transfer.joined != leg:
            return
        offer = self.router.offers.get(call_id)
        if offer is not None:
            offer.accepted_by = leg
        call = self.hub.registry.calls.get(call_id)
        if call is not None:
            call.agent_id = leg
            self.router.handed_over(call_id, transfer.from_agent)  # it may still wrap up
            self.router.held[call_id] = (leg, call.thread_id)
        self.transfers_done.inc(mode=transfer.mode.value, outcome="completed")
        log.info("[call %s] transferred from %s to %s (%s, %.1fs)", call_id,
                 transfer.from_agent, leg, transfer.mode.value,
                 time.monotonic() - transfer.started)
        await self._release(transfer.from_agent, call_id, "transferred")
        await self._tell_agent(call_id)

    async def _notice(self, call_id: str, text: str, thread_id: str | None = None) -> None:
        """A line of the thread, posted like a bot turn, shown to the call's agents;
        ``thread_id``: the call's, when the call may be over already."""
        call = self.hub.registry.calls.get(call_id)
        thread_id = call.thread_id if call is not None else thread_id
        if thread_id is None:
            return
        at = now_iso()
        await self.hub.notice(Turn(thread_id=thread_id, call_id=call_id,
                                   key=f"{call_id}:notice:{uuid.uuid4().hex[:12]}",
                                   role=Role.BOT.value, text=text, at=at,
                                   delivery="pending" if self.hub.outbox else "local"))

    # -- call events ----------------------------------------------------------------------

    async def _on_call_event(self, event: CallEvent) -> None:
        call_id = event.call_id
        match event:
            case LegMedia() if event.primary:
                await self._completed(call_id, event.leg)
            case LegMedia() if event.flowing:
                # a transfer's target hears the call now: its dashboard shows it connected
                transfer = self.transfers.get(call_id)
                target = self.router.agents.get(transfer.joined or "") if transfer else None
                if target is not None and transfer is not None and transfer.joined == event.leg:
                    await self.router._to_agent(target, CallConnected(call_id=call_id,
                                                                      at=now_iso()))
            case Whispered():
                await self._to_agents(call_id, Transcript(
                    call_id=call_id, thread_id=event.thread_id, role=event.role,
                    text=event.text, final=True, at=event.at, seq=event.seq))
            case CallEndedMsg():
                await self._call_left_human(call_id, ended=event.outcome or "ended")
            case SessionStateMsg() if event.state is not CallState.HUMAN:
                await self._call_left_human(call_id, ended=None)

    async def _to_agents(self, call_id: str, message: Transcript) -> None:
        """Whispers: to the agent holding the call and a joined target (not supervisors'
        own dashboards but the others')."""
        offer = self.router.offers.get(call_id)
        holders = [offer.accepted_by] if offer and offer.accepted_by else []
        transfer = self.transfers.get(call_id)
        if transfer is not None and transfer.joined:
            holders.append(transfer.joined)
        for agent_id in holders:
            agent = self.router.agents.get(agent_id)
            if agent is not None:
                await self.router._to_agent(agent, message)

    async def _call_left_human(self, call_id: str, *, ended: str | None) -> None:
        """The call ended (``ended``: its outcome) or left the human phase: supervisors and
        transfers are over."""
        self.phone.call_left(call_id, ended=ended)
        for agent_id in list(self.monitors.get(call_id, {})):
            await self._drop_monitor(agent_id, call_id, command=ended is None)
            agent = self.router.agents.get(agent_id)
            if agent is not None:
                await self.router._to_agent(agent, CallEnded(
                    call_id=call_id, reason="monitoring_over", by=EndedBy.SYSTEM))
        transfer = self.transfers.get(call_id)
        if transfer is None:
            return
        for agent_id in list(transfer.ringing):
            self._stop_ringing(transfer, agent_id)
            agent = self.router.agents.get(agent_id)
            if agent is not None:
                await self.router._to_agent(agent, CallCancelled(
                    call_id=call_id, reason=CancelReason.CALLER_HANGUP))
        if transfer.joined is not None:
            if ended is None:  # the call lives on (back to the bot, or queued): close the leg
                await self.hub.command(Leg(call_id=call_id, leg=transfer.joined, role=None))
            await self._release(transfer.joined, call_id, ended or "returned",
                                EndedBy.CALLER if ended else EndedBy.SYSTEM)
        self.transfers.pop(call_id, None)
        self.transfers_done.inc(mode=transfer.mode.value,
                                outcome="caller_hangup" if ended else "call_moved")
