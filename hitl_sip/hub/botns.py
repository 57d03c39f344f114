"""The ``/bot`` Socket.IO namespace (PROTOCOL.md §2): an external logic engine drives calls.

Connect with ``auth: {apiKey}``. Server → engine: ``call_started``, ``caller_said``,
``dtmf``, ``call_ended``. Engine → server: ``say``, ``handoff``, ``hangup``, each
acknowledged ``{"ok": true}`` or ``{"ok": false, "error": {code, message}}``. Every payload
is a model of hitl_sip.protocol.bot: a malformed request is answered ``bad_request`` naming
the field, counted, and changes nothing.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import socketio

from hitl_sip.hub.core import Hub
from hitl_sip.hub.events import CallEvent
from hitl_sip.protocol import bot
from hitl_sip.protocol import worker as cmd
from hitl_sip.protocol.agent import ErrorCode, Event, Request, ok, parse_request, refuse
from hitl_sip.protocol.wire import SocketJson, WireError
from hitl_sip.protocol.worker import CallState

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Request)
Handler = Callable[["BotNamespace", R], Awaitable[dict[str, Any]]]
OnEvent = Callable[..., Awaitable[dict[str, Any]]]


def handles(model: type[R]) -> Callable[[Handler[R]], OnEvent]:
    """The Socket.IO handler of ``model``'s event: the payload is parsed, and a malformed
    one answered ``bad_request`` (and counted) before ``handler`` sees it."""

    def wrap(handler: Handler[R]) -> OnEvent:
        @functools.wraps(handler)
        async def on_event(self: BotNamespace, sid: str, data: Any = None,
                           *_: Any) -> dict[str, Any]:
            try:
                request = parse_request(model, data)
            except WireError as e:
                log.debug("/bot %s refused: %s", model.event, e)
                if SocketJson.on_refused is not None:
                    SocketJson.on_refused(e.reason)
                return refuse(ErrorCode.BAD_REQUEST, str(e))
            return await handler(self, request)

        return on_event

    return wrap


class BotNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, hub: Hub) -> None:
        super().__init__("/bot")
        self.hub = hub
        hub.subscribe(self._on_call_event)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        keys = self.hub.config.api.keys
        given = auth.get("apiKey") if isinstance(auth, dict) else None
        if not (isinstance(given, str) and keys
                and any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)):
            log.warning("/bot connection refused: bad or missing apiKey")
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        log.info("external logic engine connected (%s)", sid)

    async def on_payload_refused(self, sid: str, data: Any = None, *_: Any) -> dict[str, Any]:
        """An event whose JSON was refused at the edge (hitl_sip.protocol.wire.SocketJson)."""
        message = data.get("message") if isinstance(data, dict) else None
        return refuse(ErrorCode.BAD_REQUEST,
                      f"payload refused: {str(message)[:200] if message else 'malformed'}")

    def _unknown(self, call_id: str) -> dict[str, Any] | None:
        if call_id not in self.hub.registry.calls:
            return refuse(ErrorCode.NOT_FOUND, f"no call {call_id}")
        return None

    def _with_bot(self, call_id: str) -> dict[str, Any] | None:
        if self.hub.registry.calls[call_id].state is not CallState.BOT:
            return refuse(ErrorCode.INVALID_STATE, "the call is not with the bot")
        return None

    @handles(bot.Say)
    async def on_say(self, request: bot.Say) -> dict[str, Any]:
        refused = self._unknown(request.call_id) or self._with_bot(request.call_id)
        if refused is not None:
            return refused
        return await self._send(cmd.Say(call_id=request.call_id, text=request.text))

    @handles(bot.Handoff)
    async def on_handoff(self, request: bot.Handoff) -> dict[str, Any]:
        refused = self._unknown(request.call_id) or self._with_bot(request.call_id)
        if refused is not None:
            return refused
        reason = (request.reason or "external")[:200]
        return await self._send(cmd.Handoff(call_id=request.call_id, reason=reason))

    @handles(bot.Hangup)
    async def on_hangup(self, request: bot.Hangup) -> dict[str, Any]:
        refused = self._unknown(request.call_id)
        if refused is not None:
            return refused
        return await self._send(cmd.Hangup(call_id=request.call_id))

    async def _send(self, command: cmd.HubCommand) -> dict[str, Any]:
        if await self.hub.command(command):
            return ok()
        return refuse(ErrorCode.UNAVAILABLE, "the call's worker is not reachable")

    async def _on_call_event(self, event: CallEvent) -> None:
        """A call event (a validated worker message) for the engines."""
        message: Event
        match event:
            case cmd.CallStarted():
                message = bot.CallStarted(call_id=event.call_id, thread_id=event.thread_id,
                                          caller=event.caller, called=event.called,
                                          metadata=dict(event.metadata))
            case cmd.CallerSaid():
                message = bot.CallerSaid(call_id=event.call_id, text=event.text,
                                         final=event.final, at=event.at)
            case cmd.DtmfMsg():
                message = bot.Dtmf(call_id=event.call_id, digits=event.digits)
            case cmd.CallEndedMsg():
                message = bot.CallEnded(call_id=event.call_id, reason=event.outcome)
            case _:
                return
        await self.emit(message.event, message.wire())
