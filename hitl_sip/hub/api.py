"""REST API (PROTOCOL.md §3) and the error envelope shared with Socket.IO acknowledgements.

Authentication here: agent tokens (``POST /api/login``; PROTOCOL.md §6 scopes an ``agent``
to the calls offered to or taken by it and their threads, ``supervisor`` and ``admin`` see
all) and API keys (``api.keys``, header ``Authorization: Bearer <key>`` or ``X-Api-Key``),
which see all and alone trigger a handoff.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hitl_sip.hub.agents import Role
from hitl_sip.hub.core import Hub
from hitl_sip.hub.login import bearer_session
from hitl_sip.hub.sessions import audit
from hitl_sip.protocol.agent import explain
from hitl_sip.protocol.wire import WireError, loads_object
from hitl_sip.protocol.worker import CallState, Handoff

MAX_REST_BODY = 16 * 1024  # a handoff body is a reason; anything bigger is refused


class HandoffBody(BaseModel):
    """``POST /api/calls/{callId}/handoff``'s optional JSON body."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    reason: Annotated[str, Field(max_length=200)] = "api"

HUB = web.AppKey("hub", Hub)


@dataclass(frozen=True)
class Reader:
    """Who reads: an agent account (scoped by its role) or an API key (sees all)."""

    agent_id: str | None = None
    role: Role | None = None

    @property
    def sees_all(self) -> bool:
        return self.role is None or self.role.sees_all


def error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"ok": False, "error": {"code": code, "message": message}},
                             status=status)


M = TypeVar("M", bound=BaseModel)


async def read_body(request: web.Request, model: type[M], max_bytes: int) -> M | web.Response:
    """A REST body as ``model`` — with the wire's size and depth limits — or the 400 that
    names the field at fault (as a refused Socket.IO payload does). A declared length over
    ``max_bytes`` is refused before anything is read."""
    if request.content_length is not None and request.content_length > max_bytes:
        return error("bad_request", f"body: {request.content_length} bytes, more than "
                     f"{max_bytes}", 400)
    return parse_body(await request.read(), model, max_bytes)


def parse_body(raw: bytes, model: type[M], max_bytes: int) -> M | web.Response:
    """``raw`` as ``model``, or the 400 that says why not; never raises."""
    try:
        return model.model_validate(loads_object(raw, max_bytes=max_bytes))
    except WireError as e:
        return error("bad_request", f"body: {e}", 400)
    except ValidationError as e:
        return error("bad_request", explain(e), 400)


def api_key_ok(request: web.Request) -> bool:
    keys = request.app[HUB].config.api.keys
    given = request.headers.get("X-Api-Key") or request.headers.get(
        "Authorization", ""
    ).removeprefix("Bearer ").strip()
    if not given or not keys:
        return False
    return any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)


async def reader(request: web.Request) -> Reader | None:
    """PROTOCOL.md §3 read endpoints: an agent token (§6: scoped by role), or (extension)
    an API key; None when neither opens."""
    if api_key_ok(request):
        return Reader()
    session = await bearer_session(request)
    return None if session is None else Reader(session.agent_id, session.role)


async def list_calls(request: web.Request) -> web.Response:
    who = await reader(request)
    if who is None:
        return error("unauthorized", "an agent token or an API key is required", 401)
    calls = [c for c in request.app[HUB].registry.calls.values()
             if who.sees_all  # else an agent: the calls offered to it or taken by it
             or who.agent_id in c.offered_to or c.agent_id == who.agent_id]
    return web.json_response({"calls": [c.public() for c in calls]})


async def get_thread(request: web.Request) -> web.Response:
    who = await reader(request)
    if who is None:
        return error("unauthorized", "an agent token or an API key is required", 401)
    hub = request.app[HUB]
    thread_id = request.match_info["thread_id"]
    if not who.sees_all and not (
            who.agent_id and await hub.store.granted(thread_id, who.agent_id)):
        return error("forbidden", "the thread is not one of your calls'", 403)
    turns = await hub.store.get(thread_id)
    if not turns:
        return error("not_found", f"no thread {thread_id}", 404)
    if who.agent_id:
        audit("thread_read", agent=who.agent_id, thread=thread_id)
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
        read = await read_body(request, HandoffBody, MAX_REST_BODY)
        if isinstance(read, web.Response):
            return read
        body = read
    if not await hub.command(Handoff(call_id=call_id, reason=body.reason)):
        return error("unavailable", "the call's worker is not reachable", 503)
    return web.json_response({"ok": True})


RECORDING_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg"}
CALL_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


async def get_recording(request: web.Request) -> web.StreamResponse:
    """``GET /api/recordings/{callId}`` (supervisor, admin or an API key): the call's
    two-channel recording, streamed (hitl_sip.worker.recorder)."""
    who = await reader(request)
    if who is None:
        return error("unauthorized", "an agent token or an API key is required", 401)
    if not who.sees_all:
        return error("forbidden", "recordings are for supervisors and admins", 403)
    call_id = request.match_info["call_id"]
    if not CALL_ID.fullmatch(call_id):
        return error("bad_request", "callId: letters, digits, '_' or '-'", 400)
    hub = request.app[HUB]
    folder = hub.config.resolve_path(hub.config.data_dir) / "recordings"
    path = next((folder / f"{call_id}{ext}" for ext in RECORDING_TYPES
                 if (folder / f"{call_id}{ext}").is_file()), None)
    if path is None:
        return error("not_found", f"no recording of call {call_id}", 404)
    if who.agent_id:
        audit("recording_read", agent=who.agent_id, call=call_id)
    return web.FileResponse(path, headers={
        "Content-Type": RECORDING_TYPES[path.suffix], "Cache-Control": "no-store",
        "Content-Disposition": f'inline; filename="{call_id}{path.suffix}"'})


def setup_api(app: web.Application, hub: Hub) -> None:
    app[HUB] = hub
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/threads/{thread_id}", get_thread)
    app.router.add_post("/api/calls/{call_id}/handoff", handoff)
    app.router.add_get("/api/recordings/{call_id}", get_recording)
