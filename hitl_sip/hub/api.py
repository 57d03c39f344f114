"""REST API (PROTOCOL.md §3) and the error envelope shared with Socket.IO acknowledgements.

Authentication here: API keys (``api.keys``, header ``Authorization: Bearer <key>`` or
``X-Api-Key``). Agent tokens (``POST /api/login``) arrive with the agent hub; until then the
read endpoints accept an API key, which PROTOCOL.md's agent-token requirement will extend,
not replace.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web

from hitl_sip.hub.core import Hub
from hitl_sip.protocol.worker import CallState, Handoff

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
    body: dict[str, Any] = {}
    if request.can_read_body:
        try:
            parsed = await request.json()
        except ValueError:
            return error("bad_request", "body must be JSON", 400)
        if not isinstance(parsed, dict):
            return error("bad_request", "body must be a JSON object", 400)
        body = parsed
    reason = body.get("reason", "api")
    if not isinstance(reason, str) or len(reason) > 200:
        return error("bad_request", "reason must be a string of at most 200 characters", 400)
    if not await hub.command(Handoff(call_id=call_id, reason=reason)):
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
