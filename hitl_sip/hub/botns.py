"""The ``/bot`` Socket.IO namespace (PROTOCOL.md §2): an external logic engine drives calls.

Connect with ``auth: {apiKey}``. Server → engine: ``call_started``, ``caller_said``,
``dtmf``, ``call_ended``. Engine → server: ``say``, ``handoff``, ``hangup``, each
acknowledged ``{"ok": true}`` or ``{"ok": false, "error": {code, message}}``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import socketio

from hitl_sip.hub.core import Hub
from hitl_sip.protocol.worker import CallState

log = logging.getLogger(__name__)

MAX_SAY = 2000


def ack_error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


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

    def _call(self, data: Any) -> tuple[str | None, dict[str, Any] | None]:
        if not isinstance(data, dict):
            return None, ack_error("bad_request", "payload must be an object")
        call_id = data.get("callId")
        if not isinstance(call_id, str) or not call_id:
            return None, ack_error("bad_request", "callId must be a non-empty string")
        call = self.hub.registry.calls.get(call_id)
        if call is None:
            return None, ack_error("not_found", f"no call {call_id}")
        return call_id, None

    async def on_payload_refused(self, sid: str, data: Any = None) -> dict[str, Any]:
        """An event whose JSON was refused at the edge (hitl_sip.protocol.wire.SocketJson)."""
        message = data.get("message") if isinstance(data, dict) else None
        return ack_error("bad_request", f"payload refused: {message or 'malformed'}")

    async def on_say(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id, err = self._call(data)
        if err is not None or call_id is None:
            return err or ack_error("bad_request", "bad payload")
        text = data.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_SAY:
            return ack_error("bad_request", f"text must be 1..{MAX_SAY} characters")
        if self.hub.registry.calls[call_id].state is not CallState.BOT:
            return ack_error("invalid_state", "the call is not with the bot")
        return await self._send(call_id, {"type": "say", "text": text})

    async def on_handoff(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id, err = self._call(data)
        if err is not None or call_id is None:
            return err or ack_error("bad_request", "bad payload")
        if self.hub.registry.calls[call_id].state is not CallState.BOT:
            return ack_error("invalid_state", "the call is not with the bot")
        reason = data.get("reason") or "external"
        if not isinstance(reason, str):
            return ack_error("bad_request", "reason must be a string")
        return await self._send(call_id, {"type": "handoff", "reason": reason[:200]})

    async def on_hangup(self, sid: str, data: Any = None) -> dict[str, Any]:
        call_id, err = self._call(data)
        if err is not None or call_id is None:
            return err or ack_error("bad_request", "bad payload")
        return await self._send(call_id, {"type": "hangup"})

    async def _send(self, call_id: str, message: dict[str, Any]) -> dict[str, Any]:
        if await self.hub.command(call_id, message):
            return {"ok": True}
        return ack_error("unavailable", "the call's worker is not reachable")

    async def _on_call_event(self, event: str, data: dict[str, Any]) -> None:
        if event == "call_started":
            payload = {k: data.get(k) for k in ("callId", "threadId", "caller", "called")}
            payload["metadata"] = data.get("metadata") or {}
            await self.emit("call_started", payload)
        elif event == "caller_said":
            await self.emit("caller_said", {k: data.get(k) for k in
                                            ("callId", "text", "final", "at")})
        elif event == "dtmf":
            await self.emit("dtmf", {"callId": data.get("callId"), "digits": data.get("digits")})
        elif event == "call_ended":
            await self.emit("call_ended", {"callId": data.get("callId"),
                                           "reason": data.get("outcome")})
