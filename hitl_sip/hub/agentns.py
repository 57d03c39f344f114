"""The ``/agent`` Socket.IO namespace (PROTOCOL.md §1): dashboards log in, ring, accept.

Connect with ``auth: {token}`` (from ``POST /api/login``); a missing, expired or forged
token is refused at connect with ``unauthorized``, and so is an Origin outside
``api.agent_origins`` (when the list is set). Every agent → server event is acknowledged
``{"ok": true, …}`` or ``{"ok": false, "error": {code, message}}``; a malformed payload gets
``bad_request`` and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from hitl_sip.hub.core import Hub
from hitl_sip.hub.routing import Router
from hitl_sip.protocol.worker import MAX_CANDIDATE

log = logging.getLogger(__name__)

# token -> (agent_id, name); raises ValueError (or a subclass) when it is not valid
Verify = Callable[[str], tuple[str, str]]
# agent_id -> does the account still exist (a removed agent's token must stop working)
Exists = Callable[[str], Awaitable[bool]]


def _err(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


BAD_PAYLOAD = _err("bad_request", "payload must be an object with a non-empty string callId")


def _call_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    call_id = data.get("callId")
    if not isinstance(call_id, str) or not call_id or len(call_id) > 128:
        return None
    return call_id


class AgentNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, hub: Hub, verify: Verify, exists: Exists, *, origins: tuple[str, ...],
                 ring_timeout: float, reconnect_grace: float, strategy: str = "ring_all") -> None:
        super().__init__("/agent")
        self.hub = hub
        self.verify = verify
        self.exists = exists
        self.origins = origins
        self.router = Router(hub, self._emit_to, ring_timeout, reconnect_grace, strategy)
        self.sessions: dict[str, tuple[str, str]] = {}  # sid -> (agent_id, name)

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
            agent_id, name = self.verify(token)
        except ValueError as e:
            log.warning("/agent connection refused: %s", e)
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from e
        if not await self.exists(agent_id):
            log.warning("/agent connection refused: the agent account no longer exists")
            raise socketio.exceptions.ConnectionRefusedError("unauthorized")
        self.sessions[sid] = (agent_id, name)
        log.info("agent %s connected", agent_id)
        await self.router.connected(sid, agent_id, name)

    async def on_disconnect(self, sid: str, *args: Any) -> None:
        session = self.sessions.pop(sid, None)
        if session is not None:
            await self.router.disconnected(sid, session[0])

    def _agent(self, sid: str) -> str | None:
        session = self.sessions.get(sid)
        return session[0] if session else None

    # -- events ---------------------------------------------------------------------------

    async def on_set_status(self, sid: str, data: Any = None) -> dict[str, Any]:
        agent_id = self._agent(sid)
        if agent_id is None:
            return _err("unauthorized", "not logged in")
        status = data.get("status") if isinstance(data, dict) else None
        if status not in ("available", "away"):
            return _err("bad_request", 'status must be "available" or "away"')
        await self.router.set_status(agent_id, status)
        return {"ok": True}

    async def on_accept_call(self, sid: str, data: Any = None) -> dict[str, Any]:
        agent_id, call_id = self._agent(sid), _call_id(data)
        if agent_id is None:
            return _err("unauthorized", "not logged in")
        if call_id is None:
            return BAD_PAYLOAD
        return await self.router.accept(agent_id, call_id)

    async def on_decline_call(self, sid: str, data: Any = None) -> dict[str, Any]:
        agent_id, call_id = self._agent(sid), _call_id(data)
        if agent_id is None:
            return _err("unauthorized", "not logged in")
        if call_id is None:
            return BAD_PAYLOAD
        return await self.router.decline(agent_id, call_id)

    async def _owned(self, sid: str, data: Any) -> tuple[str, str] | dict[str, Any]:
        agent_id, call_id = self._agent(sid), _call_id(data)
        if agent_id is None:
            return _err("unauthorized", "not logged in")
        if call_id is None:
            return BAD_PAYLOAD
        offer = self.router.offers.get(call_id)
        if offer is None or offer.accepted_by != agent_id:
            if self.router.may_act(agent_id, call_id):
                return _err("invalid_state", "accept the call first")
            return _err("forbidden", "the call is not yours")
        return agent_id, call_id

    async def on_hangup(self, sid: str, data: Any = None) -> dict[str, Any]:
        owned = await self._owned(sid, data)
        if isinstance(owned, dict):
            return owned
        _, call_id = owned
        if not await self.hub.command(call_id, {"type": "hangup", "by": "agent"}):
            return _err("unavailable", "the call's worker is not reachable")
        return {"ok": True}

    async def on_return_to_bot(self, sid: str, data: Any = None) -> dict[str, Any]:
        owned = await self._owned(sid, data)
        if isinstance(owned, dict):
            return owned
        agent_id, call_id = owned
        if not await self.hub.command(call_id, {"type": "resume"}):
            return _err("unavailable", "the call's worker is not reachable")
        await self.router.release(agent_id, call_id)
        return {"ok": True}

    async def on_mute(self, sid: str, data: Any = None) -> dict[str, Any]:
        owned = await self._owned(sid, data)
        if isinstance(owned, dict):
            return owned
        muted = data.get("muted")
        if not isinstance(muted, bool):
            return _err("bad_request", "muted must be true or false")
        await self.hub.command(owned[1], {"type": "mute", "muted": muted})
        return {"ok": True}

    async def on_payload_refused(self, sid: str, data: Any = None) -> dict[str, Any]:
        """An event whose JSON was refused at the edge (hitl_sip.protocol.wire.SocketJson):
        too large or nested too deeply. The socket stays up; the sender gets bad_request."""
        message = data.get("message") if isinstance(data, dict) else None
        return _err("bad_request", f"payload refused: {message or 'malformed'}")

    async def on_webrtc_offer(self, sid: str, data: Any = None) -> dict[str, Any]:
        owned = await self._owned(sid, data)
        if isinstance(owned, dict):
            return owned
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0") or len(sdp) > 64 * 1024:
            return _err("bad_request", "sdp must be an SDP offer (v=0 …, at most 64 KiB)")
        self.router.renegotiated(owned[0])
        reply = await self.hub.request(owned[1], {"type": "webrtc_offer", "sdp": sdp})
        if reply is None:
            return _err("unavailable", "the call's worker did not answer the offer")
        if not reply.get("ok"):
            error = reply.get("error") or {}
            return _err(str(error.get("code", "bad_request")),
                        str(error.get("message", "the offer was refused")))
        return {"ok": True, "sdp": reply.get("sdp")}

    async def on_webrtc_candidate(self, sid: str, data: Any = None) -> dict[str, Any]:
        owned = await self._owned(sid, data)
        if isinstance(owned, dict):
            return owned
        candidate = data.get("candidate")
        if candidate is not None and (not isinstance(candidate, str)
                                      or len(candidate) > MAX_CANDIDATE):
            return _err("bad_request",
                        f"candidate must be a string (at most {MAX_CANDIDATE}) or null")
        mid, index = data.get("sdpMid"), data.get("sdpMLineIndex")
        if (mid is not None and (not isinstance(mid, str) or len(mid) > 256)) or (
            index is not None and (not isinstance(index, int) or isinstance(index, bool)
                                   or not 0 <= index <= 64)
        ):
            return _err("bad_request", "sdpMid must be a string, sdpMLineIndex 0..64")
        await self.hub.command(owned[1], {"type": "webrtc_candidate", "candidate": candidate,
                                          "sdpMid": mid, "sdpMLineIndex": index})
        return {"ok": True}
