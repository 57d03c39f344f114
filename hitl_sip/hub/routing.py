"""Agent presence and call routing: who is offered a queued call, who wins it.

The router is the single owner of offers. Strategies (``routing.strategy``): ``ring_all``
offers a call to every available agent at once; ``round_robin`` and ``longest_idle`` ring
one agent at a time (rotating, or the agent idle longest) and move to the next on a
decline or a ring timeout. The first ``accept_call`` wins atomically (the
loop runs one handler at a time and the winner is recorded before anything is awaited),
the others get ``call_cancelled answered_elsewhere``. A ring timeout or a decline stops
ringing that agent; agents who become available later are offered calls still waiting.
When the winning agent vanishes, the call is re-queued after a short grace period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from hitl_sip.hub.events import CallEvent, Notice
from hitl_sip.protocol import worker as wire
from hitl_sip.protocol.agent import (
    AccountRole,
    AgentState,
    AgentStatus,
    CallCancelled,
    CallConnected,
    CallEnded,
    CallQuality,
    CancelReason,
    EndedBy,
    ErrorCode,
    Event,
    IncomingCall,
    Transcript,
    call_quality_now,
    ok,
    refuse,
)
from hitl_sip.protocol.cluster import Accepted
from hitl_sip.protocol.worker import (
    AgentJoined,
    AgentLeft,
    CallEndedMsg,
    CallState,
    HandoffRequested,
    Interim,
    PeerLost,
    Quality,
    SessionStateMsg,
    TurnMsg,
)

if TYPE_CHECKING:
    from hitl_sip.hub.core import Hub as HubLike
    from hitl_sip.hub.supervision import Supervision

log = logging.getLogger(__name__)

STRATEGIES = ("ring_all", "round_robin", "longest_idle")
HELD_MAX = 10_000  # calls whose taker is remembered (for wrap_up), the oldest forgotten

Emit = Callable[[str, dict[str, Any], str], Awaitable[None]]  # event, payload, sid


@dataclass
class AgentPresence:
    agent_id: str
    name: str
    role: AccountRole = AccountRole.AGENT
    sids: set[str] = field(default_factory=set)
    status: AgentStatus = AgentStatus.AVAILABLE  # what the agent chose (busy is derived)
    active_call: str | None = None
    idle_since: float = field(default_factory=time.monotonic)

    def model(self) -> AgentState:
        status = AgentStatus.BUSY if self.active_call else self.status
        return AgentState(agent_id=self.agent_id, name=self.name, status=status,
                          active_call_id=self.active_call, role=self.role)

    def state(self) -> dict[str, Any]:
        """``agent_state`` on the wire (also the agent's presence in the cluster)."""
        return self.model().wire()

    @property
    def can_ring(self) -> bool:
        return (bool(self.sids) and self.status is AgentStatus.AVAILABLE
                and self.active_call is None)


@dataclass
class Offer:
    call_id: str
    ringing: set[str] = field(default_factory=set)  # agent ids
    offered: set[str] = field(default_factory=set)  # every agent ever offered this call
    accepted_by: str | None = None
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)


class Router:
    def __init__(self, hub: HubLike, emit: Emit, ring_timeout: float, reconnect_grace: float,
                 strategy: str = "ring_all") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown routing strategy {strategy!r}")
        self.hub = hub
        self.emit = emit
        self.strategy = strategy
        self._rr_next = 0
        self.ring_timeout = ring_timeout
        self.reconnect_grace = reconnect_grace
        self.agents: dict[str, AgentPresence] = {}
        self.offers: dict[str, Offer] = {}
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_change: Callable[[], None] | None = None  # an agent's state changed (board)
        # call id -> (the agent who took it, its thread)
        self.held: OrderedDict[str, tuple[str, str]] = OrderedDict()
        # call id -> the agents who held it before a transfer (they may wrap it up too)
        self.held_before: OrderedDict[str, set[str]] = OrderedDict()
        self.supervision: Supervision | None = None  # transfers ring through it
        hub.subscribe(self._on_call_event)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _to_agent(self, agent: AgentPresence, message: Event) -> None:
        payload = message.wire()
        for sid in list(agent.sids):
            await self.emit(message.event, payload, sid)

    async def _push_state(self, agent: AgentPresence) -> None:
        await self._to_agent(agent, agent.model())
        if self.on_change is not None:
            self.on_change()
        cluster = self.hub.cluster
        if cluster is not None:
            try:
                await cluster.presence(agent.agent_id, agent.model() if agent.sids else None)
            except (ConnectionError, OSError, RedisError) as e:
                log.warning("cluster: presence of %s not written: %s", agent.agent_id, e)

    # -- presence -------------------------------------------------------------------------

    async def connected(self, sid: str, agent_id: str, name: str,
                        role: AccountRole = AccountRole.AGENT) -> AgentPresence:
        agent = self.agents.get(agent_id)
        if agent is None:
            agent = self.agents[agent_id] = AgentPresence(agent_id, name, role)
        agent.role = role
        agent.sids.add(sid)
        grace = self._grace.pop(agent_id, None)
        if grace is not None:
            grace.cancel()
            log.info("agent %s reconnected within the grace period", agent_id)
        await self._push_state(agent)
        await self._offer_waiting(agent)
        return agent

    async def disconnected(self, sid: str, agent_id: str) -> None:
        agent = self.agents.get(agent_id)
        if agent is None:
            return
        agent.sids.discard(sid)
        if agent.sids:
            return
        for offer in self.offers.values():
            if agent_id in offer.ringing:
                self._stop_ringing(offer, agent_id)
        if agent.active_call is not None:
            call_id = agent.active_call
            log.info("[call %s] the agent's dashboard is gone: %.0fs grace", call_id,
                     self.reconnect_grace)
            self._grace[agent_id] = asyncio.get_running_loop().call_later(
                self.reconnect_grace, lambda: self._spawn(self._agent_lost(agent_id, call_id))
            )
        else:
            self.agents.pop(agent_id, None)

    async def set_status(self, agent_id: str, status: str) -> None:
        """``available`` or ``away`` (PROTOCOL.md §1 ``set_status``)."""
        agent = self.agents[agent_id]
        agent.status = AgentStatus(status)
        if agent.status is AgentStatus.AVAILABLE:
            agent.idle_since = time.monotonic()
        else:
            for offer in self.offers.values():
                if agent_id in offer.ringing:
                    self._stop_ringing(offer, agent_id)
                    await self._to_agent(agent, CallCancelled(
                        call_id=offer.call_id, reason=CancelReason.DECLINED))
        await self._push_state(agent)
        if agent.status is AgentStatus.AVAILABLE:
            await self._offer_waiting(agent)

    # -- offers ---------------------------------------------------------------------------

    def _incoming(self, call_id: str) -> IncomingCall | None:
        call = self.hub.registry.calls.get(call_id)
        if call is None:
            return None
        return IncomingCall(
            call_id=call_id,
            thread_id=call.thread_id,
            caller=call.caller,
            called=call.called,
            trunk=call.trunk,
            received_at=call.received_at,
            ring_timeout_sec=self.ring_timeout,
            bot_transcript=call.bot_transcript,
            metadata=call.metadata,
            # the best briefing now: the endpoint's once it answered, else the embedded one
            summary=call.summary.best if call.summary is not None else None,
        )

    async def _ring(self, offer: Offer, agent: AgentPresence) -> None:
        incoming = self._incoming(offer.call_id)
        if incoming is None:
            return
        offer.ringing.add(agent.agent_id)
        offer.offered.add(agent.agent_id)
        await self.hub.offered(offer.call_id, agent.agent_id)
        offer.timers[agent.agent_id] = asyncio.get_running_loop().call_later(
            self.ring_timeout,
            lambda: self._spawn(self._ring_timed_out(offer.call_id, agent.agent_id)),
        )
        await self._to_agent(agent, incoming)

    def _candidates(self, offer: Offer) -> list[AgentPresence]:
        """Agents who may ring for this offer now, in the strategy's order."""
        # an agent who declined or let it ring out is not rung again for this offer
        ready = [a for a in self.agents.values()
                 if a.can_ring and a.agent_id not in offer.offered]
        if self.strategy == "round_robin":
            ready.sort(key=lambda a: a.agent_id)
            if not ready:
                return []
            start = self._rr_next % len(ready)
            return ready[start:] + ready[:start]
        ready.sort(key=lambda a: a.idle_since)
        return ready

    async def _advance(self, offer: Offer) -> None:
        """Ring whoever the strategy says should ring next (nobody may be left)."""
        if offer.accepted_by is not None:
            return
        candidates = self._candidates(offer)
        if self.strategy == "ring_all":
            for agent in candidates:
                await self._ring(offer, agent)
        elif not offer.ringing and candidates:
            if self.strategy == "round_robin":
                self._rr_next += 1
            await self._ring(offer, candidates[0])

    async def offer(self, call_id: str) -> None:
        call = self.hub.registry.calls.get(call_id)
        # the first ring waits for the agent briefing, summary.budget after the handoff at
        # most (hitl_sip.hub.summary); the call may have moved on meanwhile
        if call is not None and call.summary is not None and (
                await call.summary.settle(call_id)) and (
                self.hub.registry.calls.get(call_id) is not call
                or call.state is not CallState.QUEUED):
            return
        offer = self.offers.setdefault(call_id, Offer(call_id))
        offer.accepted_by = None
        offer.offered = set(offer.ringing)  # a re-queued call may ring everyone again
        await self._advance(offer)

    async def _offer_briefed(self, call_id: str) -> None:
        """:meth:`offer` in a task of its own (its failure logged like a listener's)."""
        try:
            await self.offer(call_id)
        except Exception:
            log.exception("[call %s] the call was not offered", call_id)

    async def _offer_waiting(self, agent: AgentPresence) -> None:
        for offer in list(self.offers.values()):
            if agent.can_ring:
                await self._advance(offer)

    def _stop_ringing(self, offer: Offer, agent_id: str) -> None:
        offer.ringing.discard(agent_id)
        timer = offer.timers.pop(agent_id, None)
        if timer is not None:
            timer.cancel()

    async def _ring_timed_out(self, call_id: str, agent_id: str) -> None:
        offer = self.offers.get(call_id)
        agent = self.agents.get(agent_id)
        if offer is None or agent_id not in offer.ringing:
            return
        self._stop_ringing(offer, agent_id)
        if agent is not None:
            await self._to_agent(agent, CallCancelled(call_id=call_id,
                                                      reason=CancelReason.RING_TIMEOUT))
        await self._advance(offer)

    def handed_over(self, call_id: str, agent_id: str) -> None:
        """``agent_id`` held the call until a transfer: its wrap-up is still welcome."""
        self.held_before.setdefault(call_id, set()).add(agent_id)
        while len(self.held_before) > HELD_MAX:
            self.held_before.popitem(last=False)

    def may_wrap_up(self, agent_id: str, call_id: str) -> str | None:
        """The call's thread when ``agent_id`` took it (or held it before a transfer)."""
        held_by, thread_id = self.held.get(call_id, ("", ""))
        if held_by == agent_id or agent_id in self.held_before.get(call_id, ()):
            return thread_id
        return None

    def may_act(self, agent_id: str, call_id: str) -> bool:
        """An agent may act only on calls offered to it or accepted by it."""
        if self.supervision is not None and self.supervision.rings_for(agent_id, call_id):
            return True
        offer = self.offers.get(call_id)
        if offer is None:
            return False
        return agent_id in offer.ringing or offer.accepted_by == agent_id

    async def accept(self, agent_id: str, call_id: str) -> dict[str, Any]:
        if self.supervision is not None and self.supervision.rings_for(agent_id, call_id):
            return await self.supervision.accept(agent_id, call_id)
        offer = self.offers.get(call_id)
        if offer is None or self.hub.registry.calls.get(call_id) is None:
            return refuse(ErrorCode.NOT_FOUND, f"no call {call_id}")
        if offer.accepted_by is not None:
            return refuse(ErrorCode.ALREADY_ANSWERED, "another agent took the call")
        if agent_id not in offer.ringing:
            return refuse(ErrorCode.FORBIDDEN, "the call was not offered to you")
        cluster = self.hub.cluster
        if cluster is not None:  # agents on other hubs may be taking it right now
            try:
                won = await cluster.claim(call_id, agent_id)
            except (ConnectionError, OSError, RedisError) as e:
                if self.hub.registry.calls[call_id].hub not in (None, "", self.hub.hub_id):
                    return refuse(ErrorCode.UNAVAILABLE,
                                  "the call's hub cannot be reached now; try again")
                # this hub's own call, and no other hub can claim it without Redis either:
                # the accept is decided here, so the callers are not left waiting
                log.warning("[call %s] cluster unreachable (%s): accept decided locally",
                            call_id, e)
                won = True
            if not won:
                return refuse(ErrorCode.ALREADY_ANSWERED, "another agent took the call")
            if offer.accepted_by is not None or agent_id not in offer.ringing:
                await self._unclaim(call_id)
                return refuse(ErrorCode.ALREADY_ANSWERED, "another agent took the call")
        agent = self.agents[agent_id]
        offer.accepted_by = agent_id  # the atomic step: nothing awaited before it
        record = self.hub.registry.calls.get(call_id)
        # kept after the call, for its wrap-up
        self.held[call_id] = (agent_id, record.thread_id if record else "")
        while len(self.held) > HELD_MAX:
            self.held.popitem(last=False)
        agent.active_call = call_id
        for other_id in list(offer.ringing):
            self._stop_ringing(offer, other_id)
            other = self.agents.get(other_id)
            if other_id != agent_id and other is not None:
                await self._to_agent(other, CallCancelled(
                    call_id=call_id, reason=CancelReason.ANSWERED_ELSEWHERE))
        self.hub.registry.calls[call_id].agent_id = agent_id
        if cluster is not None:
            try:
                await cluster.publish(Accepted(call_id=call_id, agent_id=agent_id))
            except (ConnectionError, OSError, RedisError) as e:
                log.warning("[call %s] cluster: accepted not published: %s", call_id, e)
        await self.hub.command(AgentJoined(call_id=call_id, agent_id=agent_id))
        await self._push_state(agent)
        return ok()

    async def _unclaim(self, call_id: str) -> None:
        assert self.hub.cluster is not None
        try:
            await self.hub.cluster.unclaim(call_id)
        except (ConnectionError, OSError, RedisError) as e:
            log.warning("[call %s] cluster: claim not released: %s", call_id, e)

    async def decline(self, agent_id: str, call_id: str) -> dict[str, Any]:
        if self.supervision is not None and self.supervision.rings_for(agent_id, call_id):
            return await self.supervision.decline(agent_id, call_id)
        offer = self.offers.get(call_id)
        if offer is None or agent_id not in offer.ringing:
            return refuse(ErrorCode.FORBIDDEN, "the call is not ringing for you")
        self._stop_ringing(offer, agent_id)
        agent = self.agents[agent_id]
        await self._to_agent(agent, CallCancelled(call_id=call_id,
                                                  reason=CancelReason.DECLINED))
        await self._advance(offer)
        return ok()

    async def release(self, agent_id: str, call_id: str) -> None:
        """The agent is done with the call (hang-up, return to bot, call ended)."""
        agent = self.agents.get(agent_id)
        offer = self.offers.pop(call_id, None)
        if offer is not None:
            for aid in list(offer.ringing):
                self._stop_ringing(offer, aid)
        if agent is not None and agent.active_call == call_id:
            agent.active_call = None
            agent.idle_since = time.monotonic()
            await self._push_state(agent)
            await self._offer_waiting(agent)

    def _start_peer_grace(self, agent_id: str, call_id: str) -> None:
        """The agent's media is gone but its socket may live: a new offer within the grace
        keeps the call; otherwise it is queued again."""
        if agent_id in self._grace:
            return
        log.info("[call %s] the agent's media is gone: %.0fs to renegotiate", call_id,
                 self.reconnect_grace)
        self._grace[agent_id] = asyncio.get_running_loop().call_later(
            self.reconnect_grace, lambda: self._spawn(self._media_lost(agent_id, call_id))
        )

    def renegotiated(self, agent_id: str) -> None:
        """A new WebRTC offer from the agent: its media is coming back."""
        agent = self.agents.get(agent_id)
        if agent is not None and agent.sids:
            timer = self._grace.pop(agent_id, None)
            if timer is not None:
                timer.cancel()

    async def _media_lost(self, agent_id: str, call_id: str) -> None:
        self._grace.pop(agent_id, None)
        agent = self.agents.get(agent_id)
        if agent is None or not agent.sids:
            await self._agent_lost(agent_id, call_id)
            return
        offer = self.offers.get(call_id)
        if offer is None or offer.accepted_by != agent_id:
            return
        log.info("[call %s] the agent's media did not come back: the call is queued again",
                 call_id)
        offer.accepted_by = None
        agent.active_call = None
        agent.idle_since = time.monotonic()
        call = self.hub.registry.calls.get(call_id)
        if call is not None:
            call.agent_id = None
        await self._to_agent(agent, CallEnded(call_id=call_id, reason="media_lost",
                                              by=EndedBy.SYSTEM))
        await self.hub.command(AgentLeft(call_id=call_id, agent_id=agent_id))
        await self._push_state(agent)
        offer.offered = {agent_id}  # ring the others first
        await self._advance(offer)

    async def _agent_lost(self, agent_id: str, call_id: str) -> None:
        self._grace.pop(agent_id, None)
        agent = self.agents.get(agent_id)
        if agent is not None and agent.sids:
            return
        self.agents.pop(agent_id, None)
        offer = self.offers.get(call_id)
        if offer is None or offer.accepted_by != agent_id:
            return
        log.info("[call %s] the agent did not come back: the call is queued again", call_id)
        offer.accepted_by = None
        call = self.hub.registry.calls.get(call_id)
        if call is not None:
            call.agent_id = None
        await self.hub.command(AgentLeft(call_id=call_id, agent_id=agent_id))
        await self.offer(call_id)

    # -- hub events -----------------------------------------------------------------------

    async def _on_call_event(self, event: CallEvent) -> None:
        call_id = event.call_id
        match event:
            case HandoffRequested():
                call = self.hub.registry.calls.get(call_id)
                if call is not None and call.summary is not None and call.summary.pending:
                    # the ring waits for the briefing; the hub's other events do not
                    self._spawn(self._offer_briefed(call_id))
                else:
                    await self.offer(call_id)
            case PeerLost():
                offer = self.offers.get(call_id)
                if offer is not None and offer.accepted_by is not None:
                    self._start_peer_grace(offer.accepted_by, call_id)
            case wire.CallConnected():
                offer = self.offers.get(call_id)
                agent = self.agents.get(offer.accepted_by or "") if offer else None
                if agent is not None:
                    timer = self._grace.pop(agent.agent_id, None)
                    if timer is not None:  # the agent's media came back within the grace
                        timer.cancel()
                    await self._to_agent(agent, CallConnected(call_id=call_id, at=event.at))
            case Quality():
                call = self.hub.registry.calls.get(call_id)
                now = call_quality_now(call.quality) if call is not None else None
                offer = self.offers.get(call_id)
                ids = [offer.accepted_by] if offer and offer.accepted_by else []
                if self.supervision is not None:
                    ids += self.supervision.listeners(call_id)
                if now is not None:
                    quality = CallQuality(call_id=call_id, mos=now.mos, legs=now.legs)
                    for agent_id in ids:
                        agent = self.agents.get(agent_id)
                        if agent is not None:
                            await self._to_agent(agent, quality)
            case TurnMsg() | Interim() | Notice():
                offer = self.offers.get(call_id)
                ids = [offer.accepted_by] if offer and offer.accepted_by else []
                if self.supervision is not None:  # a joined transfer target, supervisors
                    ids += self.supervision.listeners(call_id)
                message = Transcript(
                    call_id=call_id, thread_id=event.thread_id, role=event.role,
                    text=event.text, final=not isinstance(event, Interim), at=event.at,
                    seq=event.seq)
                for agent_id in ids:
                    agent = self.agents.get(agent_id)
                    if agent is not None:
                        await self._to_agent(agent, message)
            case SessionStateMsg() if event.state is CallState.BOT:
                await self._withdraw(call_id, CancelReason.RING_TIMEOUT)
            case CallEndedMsg():
                await self._withdraw(call_id, CancelReason.CALLER_HANGUP, ended=event)
            case Accepted():  # by an agent on another hub
                offer = self.offers.get(call_id)
                if offer is not None and offer.accepted_by is None:
                    offer.accepted_by = event.agent_id
                    for agent_id in list(offer.ringing):
                        self._stop_ringing(offer, agent_id)
                        agent = self.agents.get(agent_id)
                        if agent is not None:
                            await self._to_agent(agent, CallCancelled(
                                call_id=call_id, reason=CancelReason.ANSWERED_ELSEWHERE))

    async def _withdraw(self, call_id: str, reason: CancelReason,
                        ended: CallEndedMsg | None = None) -> None:
        offer = self.offers.pop(call_id, None)
        if offer is None:
            return
        for agent_id in list(offer.ringing):
            self._stop_ringing(offer, agent_id)
            agent = self.agents.get(agent_id)
            if agent is not None:
                await self._to_agent(agent, CallCancelled(call_id=call_id, reason=reason))
        winner = self.agents.get(offer.accepted_by or "")
        if winner is not None and winner.active_call == call_id:
            winner.active_call = None
            winner.idle_since = time.monotonic()
            if ended is not None:
                outcome = ended.outcome
                by = _ended_by(ended.by)
                # a transfer to a phone number: the carrier's BYE may end our leg before we
                # do (the supervision hears of the call's end after the router)
                if self.supervision is not None and self.supervision.phone.left_by_transfer(
                        call_id):
                    outcome, by = "transferred", EndedBy.AGENT
                await self._to_agent(winner, CallEnded(call_id=call_id, reason=outcome, by=by))
            await self._push_state(winner)
            await self._offer_waiting(winner)


def _ended_by(by: str) -> EndedBy:
    """Who ended the call, as the agent sees it: a side it does not know of (an engine on
    ``/bot``) is the system's."""
    try:
        return EndedBy(by)
    except ValueError:
        return EndedBy.SYSTEM
