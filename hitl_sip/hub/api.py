"""REST API (PROTOCOL.md §3) and the error envelope shared with Socket.IO acknowledgements.

Authentication here: API keys (``api.keys``, header ``Authorization: Bearer <key>`` or
``X-Api-Key``). Agent tokens (``POST /api/login``) arrive with the agent hub; until then the
read endpoints accept an API key, which PROTOCOL.md's agent-token requirement will extend,
not replace.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hitl_sip.hub.core import Hub
from hitl_sip.protocol.wire import WireError, loads_object
from hitl_sip.protocol.worker import CallState, Handoff

MAX_REST_BODY = 16 * 1024  # a handoff body is a reason; anything bigger is refused


class HandoffBody(BaseModel):
    """``POST /api/calls/{callId}/handoff``'s optional JSON body."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    reason: Annotated[str, Field(max_length=200)] = "api"

HUB = web.AppKey("hub", Hub)
AGENT_VERIFY = web.AppKey("agent_verify", object)


def error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"ok": False, "error": {"code": code, "message": message}},
                             status=status)


def api_key_ok(request: web.Request) -> bool:
    keys = request.app[HUB].config.api.keys
    given = request.headers.get("X-Api-Key") or request.headers.get(
        "Authorization", ""
    ).removeprefix("Bearer ").strip()
    if not given or not keys:
        return False
    return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


def agent_or_key_ok(request: web.Request) -> bool:
    """PROTOCOL.md §3 read endpoints: an agent token, or (extension) an API key."""
    if api_key_ok(request):
        return True
    verify = request.app.get(AGENT_VERIFY)
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not callable(verify) or not token:
        return False
    try:
        verify(token)
    except ValueError:
        return False
    return True


async def list_calls(request: web.Request) -> web.Response:
    if not agent_or_key_ok(request):
        return error("unauthorized", "an agent token or an API key is required", 401)
    calls = request.app[HUB].registry.calls.values()
    return web.json_response({"calls": [c.public() for c in calls]})


async def get_thread(request: web.Request) -> web.Response:
    if not agent_or_key_ok(request):
        return error("unauthorized", "an agent token or an API key is required", 401)
    thread_id = request.match_info["thread_id"]
    turns = await request.app[HUB].store.get(thread_id)
    if not turns:
        return error("not_found", f"no thread {thread_id}", 404)
    return web.json_response({"threadId": thread_id, "turns": [t.public() for t in turns]})


async def handoff(request: web.Request) -> web.Response:
    if not api_key_ok(request):
        return error("unauthorized", "a valid API key is required", 401)
    hub = request.app[HUB]
    call_id = request.match_info["call_id"]
    call = hub.registry.calls.get(call_id)
    if call is None:
        return error("not_found", f"no call {call_id}", 404)
    if call.state is not CallState.BOT:
        return error("invalid_state", f"call is {call.state.value}, not with the bot", 409)
    body = HandoffBody()
    if request.can_read_body:
        try:
            body = HandoffBody.model_validate(loads_object(await request.read(),
                                                           max_bytes=MAX_REST_BODY))
        except WireError as e:
            return error("bad_request", f"body: {e}", 400)
        except ValidationError as e:
            first = e.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return error("bad_request", f"{where}: {first['msg']}", 400)
    if not await hub.command(Handoff(call_id=call_id, reason=body.reason)):
        return error("unavailable", "the call's worker is not reachable", 503)
    return web.json_response({"ok": True})


def setup_api(
    app: web.Application, hub: Hub, verify: Callable[[str], object] | None = None
) -> None:
    app[HUB] = hub
    if verify is not None:
        app[AGENT_VERIFY] = verify
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/threads/{thread_id}", get_thread)
    app.router.add_post("/api/calls/{call_id}/handoff", handoff)
