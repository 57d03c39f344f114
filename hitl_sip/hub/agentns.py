"""The ``/agent`` Socket.IO namespace (PROTOCOL.md §1): dashboards log in, ring, accept.

Connect with ``auth: {token}`` (from ``POST /api/login``); a missing, expired or forged
token is refused at connect with ``unauthorized``, and so is an Origin outside
``api.agent_origins`` (when the list is set). Every agent → server event is a model of
hitl_sip.protocol.agent, acknowledged ``{"ok": true, …}`` or ``{"ok": false, "error":
{code, message}}``; a malformed payload gets ``bad_request`` naming the field, is counted,
and changes nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import socketio

from hitl_sip.hub.board import BoardFeed
from hitl_sip.hub.core import Hub
from hitl_sip.hub.events import CallEvent
from hitl_sip.hub.routing import Router
from hitl_sip.hub.sessions import Session, SessionError, Sessions, audit
from hitl_sip.hub.supervision import Supervision
from hitl_sip.hub.threads import WrapUpRecord
from hitl_sip.hub.tokens import TokenClaims
from hitl_sip.log import now_iso
from hitl_sip.protocol import worker as cmd
from hitl_sip.protocol.agent import (
    AcceptCall,
    Board,
    BoardAck,
    BoardSubscribe,
    DeclineCall,
    DeskAgent,
    DeskOptions,
    DeskOptionsAck,
    ErrorCode,
    Hangup,
    MonitorCall,
    MonitorStop,
    Mute,
    OfferAnswer,
    Request,
    ReturnToBot,
    SetMonitorMode,
    SetStatus,
    TransferCall,
    WebrtcCandidate,
    WebrtcOffer,
    WrapUp,
    ok,
    parse_request,
    refuse,
)
from hitl_sip.protocol.wire import SocketJson, WireError
from hitl_sip.supervise import supervised

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Request)
# (namespace, agent_id, request) -> the acknowledgement
Handler = Callable[["AgentNamespace", str, R], Awaitable[dict[str, Any]]]
OnEvent = Callable[..., Awaitable[dict[str, Any]]]


def handles(model: type[R]) -> Callable[[Handler[R]], OnEvent]:
    """The Socket.IO handler of ``model``'s event: only a logged-in agent's well-formed
    request reaches ``handler``; a malformed one is answered ``bad_request`` and counted."""

    def wrap(handler: Handler[R]) -> OnEvent:
        @functools.wraps(handler)
        async def on_event(self: AgentNamespace, sid: str, data: Any = None,
                           *_: Any) -> dict[str, Any]:
            agent_id = self._agent(sid)
            if agent_id is None:
                return refuse(ErrorCode.UNAUTHORIZED, "not logged in")
            try:
                request = parse_request(model, data)
            except WireError as e:
                log.debug("/agent %s from %s refused: %s", model.event, agent_id, e)
                if SocketJson.on_refused is not None:
                    SocketJson.on_refused(e.reason)
                return refuse(ErrorCode.BAD_REQUEST, str(e))
            return await handler(self, agent_id, request)

        return on_event

    return wrap


class AgentNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, hub: Hub, auth: Sessions, *, origins: tuple[str, ...],
                 ring_timeout: float, reconnect_grace: float, strategy: str = "ring_all") -> None:
        super().__init__("/agent")
        self.hub = hub
        self.auth = auth
        self.origins = origins
        self.router = Router(hub, self._emit_to, ring_timeout, reconnect_grace, strategy)
        self.supervision = Supervision(hub, self.router)
        self.router.supervision = self.supervision
        self.board = BoardFeed(hub, self.router, self._send_board,
                               monitors=self.supervision.board_monitors)
        self.router.on_change = self.board.changed

        async def call_changed(event: CallEvent) -> None:
            if not isinstance(event, cmd.Interim):  # live captions do not change the board
                self.board.changed()
        hub.subscribe(call_changed)
        self.sessions: dict[str, Session] = {}  # sid -> the session its token opened
        self._watch: asyncio.Task[None] | None = None

    async def _emit_to(self, event: str, payload: dict[str, Any], sid: str) -> None:
        await self.emit(event, payload, to=sid)

    # -- connection -----------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        origin = environ.get("HTTP_ORIGIN")
        if self.origins and origin is not None and origin not in self.origins:
            log.warning("/agent connection refused: origin %s not allowed", origin)
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        try:
            session = await self.auth.check(token)
        except SessionError as e:
            log.warning("/agent connection refused: %s", e)
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from e
        self.sessions[sid] = session
        if self._watch is None:
            self._watch = asyncio.create_task(supervised(
                "agent sessions", lambda: self.auth.watch(self._claims, self._end),
                kind="agent_sessions"), name="agent-sessions")
        log.info("agent %s connected", session.agent_id)
        await self.router.connected(sid, session.agent_id, session.name, session.role)

    def _claims(self) -> dict[str, TokenClaims]:
        return {sid: s.claims for sid, s in self.sessions.items()}

    async def _end(self, sid: str) -> None:
        """The socket's session ended (account removed or changed, or logged out)."""
        session = self.sessions.pop(sid, None)
        if session is not None:
            await self.router.disconnected(sid, session.agent_id)
            self._left(session.agent_id)
        await self.disconnect(sid)

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        session = self.sessions.pop(sid, None)
        if session is not None:
            await self.router.disconnected(sid, session.agent_id)
            self._left(session.agent_id)

    def _left(self, agent_id: str) -> None:
        agent = self.router.agents.get(agent_id)
        if agent is None or not agent.sids:
            self.board.unsubscribe(agent_id)
            if any(agent_id in sups for sups in self.supervision.monitors.values()):
                self.router._spawn(self.supervision.agent_gone(agent_id))
        self.board.changed()

    async def _send_board(self, agent_id: str, board: Board) -> None:
        agent = self.router.agents.get(agent_id)
        for sid in list(agent.sids if agent else ()):
            await self.emit(board.event, board.wire(), to=sid)

    def _agent(self, sid: str) -> str | None:
        session = self.sessions.get(sid)
        return session.agent_id if session else None

    def _not_held(self, agent_id: str, call_id: str) -> dict[str, Any] | None:
        """The refusal when the agent does not hold the call (None when it does)."""
        offer = self.router.offers.get(call_id)
        if offer is None or offer.accepted_by != agent_id:
            if self.router.may_act(agent_id, call_id):
                return refuse(ErrorCode.INVALID_STATE, "accept the call first")
            return refuse(ErrorCode.FORBIDDEN, "the call is not yours")
        return None

    # -- events ---------------------------------------------------------------------------

    async def on_payload_refused(self, sid: str, data: Any = None, *_: Any) -> dict[str, Any]:
        """An event whose JSON was refused at the edge (hitl_sip.protocol.wire.SocketJson):
        too large or nested too deeply. The socket stays up; the sender gets bad_request."""
        message = data.get("message") if isinstance(data, dict) else None
        return refuse(ErrorCode.BAD_REQUEST,
                      f"payload refused: {str(message)[:200] if message else 'malformed'}")

    @handles(SetStatus)
    async def on_set_status(self, agent_id: str, request: SetStatus) -> dict[str, Any]:
        await self.router.set_status(agent_id, request.status)
        return ok()

    @handles(AcceptCall)
    async def on_accept_call(self, agent_id: str, request: AcceptCall) -> dict[str, Any]:
        return await self.router.accept(agent_id, request.call_id)

    @handles(DeclineCall)
    async def on_decline_call(self, agent_id: str, request: DeclineCall) -> dict[str, Any]:
        return await self.router.decline(agent_id, request.call_id)

    @handles(Hangup)
    async def on_hangup(self, agent_id: str, request: Hangup) -> dict[str, Any]:
        # in a warm transfer, either agent's hang-up ends only its own leg
        if (await self.supervision.first_agent_leaves(agent_id, request.call_id)
                or await self.supervision.target_leaves(agent_id, request.call_id)):
            return ok()
        refused = self._not_held(agent_id, request.call_id)
        if refused is not None:
            return refused
        if not await self.hub.command(cmd.Hangup(call_id=request.call_id, by="agent")):
            return refuse(ErrorCode.UNAVAILABLE, "the call's worker is not reachable")
        return ok()

    @handles(ReturnToBot)
    async def on_return_to_bot(self, agent_id: str, request: ReturnToBot) -> dict[str, Any]:
        refused = self._not_held(agent_id, request.call_id)
        if refused is not None:
            return refused
        if not await self.hub.command(cmd.Resume(call_id=request.call_id)):
            return refuse(ErrorCode.UNAVAILABLE, "the call's worker is not reachable")
        await self.router.release(agent_id, request.call_id)
        return ok()

    @handles(Mute)
    async def on_mute(self, agent_id: str, request: Mute) -> dict[str, Any]:
        refused = self._not_held(agent_id, request.call_id)
        if refused is not None:
            return refused
        await self.hub.command(cmd.Mute(call_id=request.call_id, muted=request.muted))
        return ok()

    @handles(WebrtcOffer)
    async def on_webrtc_offer(self, agent_id: str, request: WebrtcOffer) -> dict[str, Any]:
        # a supervisor's or a transfer target's offer is for a leg of its own
        leg = self.supervision.leg_of(agent_id, request.call_id)
        refused = None if leg else self._not_held(agent_id, request.call_id)
        if refused is not None:
            return refused
        if leg is None:
            self.router.renegotiated(agent_id)
        answer = await self.hub.request(cmd.WebrtcOffer(call_id=request.call_id,
                                                        sdp=request.sdp, leg=leg))
        if answer is None:
            return refuse(ErrorCode.UNAVAILABLE, "the call's worker did not answer the offer")
        if not answer.ok:
            if answer.error is None:
                return refuse(ErrorCode.BAD_REQUEST, "the offer was refused")
            try:
                code = ErrorCode(answer.error.code)
            except ValueError:  # not one of the contract's codes
                code = ErrorCode.BAD_REQUEST
            return refuse(code, answer.error.message)
        return OfferAnswer(sdp=answer.sdp).wire()

    @handles(BoardSubscribe)
    async def on_board_subscribe(self, agent_id: str, request: BoardSubscribe) -> dict[str, Any]:
        agent = self.router.agents.get(agent_id)
        if agent is None or not agent.role.sees_all:
            return refuse(ErrorCode.FORBIDDEN, "the board is for supervisors and admins")
        board = self.board.subscribe(agent_id)
        audit("board_subscribe", agent=agent_id)
        return BoardAck(calls=board.calls, agents=board.agents).wire()

    @handles(WrapUp)
    async def on_wrap_up(self, agent_id: str, request: WrapUp) -> dict[str, Any]:
        thread_id = self.router.may_wrap_up(agent_id, request.call_id)
        if thread_id is None:
            return refuse(ErrorCode.FORBIDDEN, "wrap up only a call you took")
        dispositions = self.hub.config.routing.dispositions
        if request.disposition not in dispositions:
            return refuse(ErrorCode.BAD_REQUEST,
                          f"disposition: one of {', '.join(dispositions)}")
        await self.hub.wrap_up(WrapUpRecord(
            call_id=request.call_id, thread_id=thread_id, agent_id=agent_id,
            disposition=request.disposition, note=request.note, at=now_iso()))
        return ok()

    @handles(WebrtcCandidate)
    async def on_webrtc_candidate(self, agent_id: str,
                                  request: WebrtcCandidate) -> dict[str, Any]:
        leg = self.supervision.leg_of(agent_id, request.call_id)
        refused = None if leg else self._not_held(agent_id, request.call_id)
        if refused is not None:
            return refused
        await self.hub.command(cmd.WebrtcCandidate(
            call_id=request.call_id, candidate=request.candidate, sdp_mid=request.sdp_mid,
            sdp_m_line_index=request.sdp_m_line_index, leg=leg))
        return ok()

    # -- supervision and transfer (PROTOCOL.md §6; hitl_sip.hub.supervision) --------------

    @handles(MonitorCall)
    async def on_monitor_call(self, agent_id: str, request: MonitorCall) -> dict[str, Any]:
        return await self.supervision.monitor(agent_id, request.call_id, request.mode)

    @handles(SetMonitorMode)
    async def on_monitor_mode(self, agent_id: str, request: SetMonitorMode) -> dict[str, Any]:
        return await self.supervision.set_mode(agent_id, request.call_id, request.mode)

    @handles(MonitorStop)
    async def on_monitor_stop(self, agent_id: str, request: MonitorStop) -> dict[str, Any]:
        return await self.supervision.stop(agent_id, request.call_id)

    @handles(TransferCall)
    async def on_transfer_call(self, agent_id: str, request: TransferCall) -> dict[str, Any]:
        refused = self._not_held(agent_id, request.call_id)
        if refused is not None:
            return refused
        return await self.supervision.transfer(agent_id, request)

    @handles(DeskOptions)
    async def on_desk_options(self, agent_id: str, request: DeskOptions) -> dict[str, Any]:
        routing = self.hub.config.routing
        agents = [DeskAgent(agent_id=a.agent_id, name=a.name, status=a.model().status)
                  for a in self.router.agents.values() if a.sids and a.agent_id != agent_id]
        return DeskOptionsAck(dispositions=list(routing.dispositions),
                              queues=list(routing.queues), agents=agents).wire()
