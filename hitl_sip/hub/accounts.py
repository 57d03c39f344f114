"""Account administration over REST (PROTOCOL.md §6, extension): role ``admin`` only.

| method path | body | answer |
|---|---|---|
| ``GET /api/agents`` | | ``{agents: [{agentId, name, role, disabled, createdAt}]}`` |
| ``POST /api/agents`` | ``{name, password, role?}`` | ``201 {agent}`` |
| ``PATCH /api/agents/{agentId}`` | ``{password?, role?, disabled?}`` | ``{agent}`` |
| ``DELETE /api/agents/{agentId}`` | | ``{ok}`` |

Changing a password, a role or the disabled flag, or removing the account ends every
session of that account at once (REST 401, sockets closed). An admin cannot remove, disable
or demote itself: some admin must remain able to undo a mistake. Every change is audited.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from hitl_sip.hub.agents import PASSWORD_MAX, Agent, Role
from hitl_sip.hub.api import read_body
from hitl_sip.hub.login import SESSIONS, bearer_session, error
from hitl_sip.hub.sessions import Session, audit

MAX_BODY = 8 * 1024
Password = Annotated[str, Field(max_length=PASSWORD_MAX)]


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(max_length=64)]
    password: Password
    role: Role = Role.AGENT


class AccountChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    password: Password | None = None
    role: Role | None = None
    disabled: bool | None = None


def _public(agent: Agent) -> dict[str, object]:
    return {"agentId": agent.agent_id, "name": agent.name, "role": agent.role.value,
            "disabled": agent.disabled, "createdAt": agent.created_at}


Handler = Callable[[web.Request, Session], Awaitable[web.Response]]


def _admin(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def guarded(request: web.Request) -> web.Response:
        session = await bearer_session(request)
        if session is None:
            return error("unauthorized", "a valid agent token is required", 401)
        if session.role is not Role.ADMIN:
            return error("forbidden", "only an admin manages accounts", 403)
        try:
            return await handler(request, session)
        except sqlite3.Error as e:
            return error("unavailable", f"the account store failed: {e}", 503)
    return guarded


def _target(request: web.Request) -> Agent | None:
    store = request.app[SESSIONS].store
    agent_id = request.match_info["agent_id"]
    return next((a for a in store.list() if a.agent_id == agent_id), None)


@_admin
async def list_accounts(request: web.Request, session: Session) -> web.Response:
    agents = await asyncio.to_thread(request.app[SESSIONS].store.list)
    return web.json_response({"agents": [_public(a) for a in agents]})


@_admin
async def add_account(request: web.Request, session: Session) -> web.Response:
    body = await read_body(request, NewAccount, MAX_BODY)
    if isinstance(body, web.Response):
        return body
    store = request.app[SESSIONS].store
    try:
        agent = await asyncio.to_thread(store.add, body.name, body.password, body.role)
    except ValueError as e:
        status = 409 if "exists already" in str(e) else 400
        return error("invalid_state" if status == 409 else "bad_request", str(e), status)
    audit("account_added", by=session.agent_id, agent=agent.agent_id, role=agent.role.value)
    return web.json_response({"ok": True, "agent": _public(agent)}, status=201)


@_admin
async def change_account(request: web.Request, session: Session) -> web.Response:
    body = await read_body(request, AccountChange, MAX_BODY)
    if isinstance(body, web.Response):
        return body
    target = await asyncio.to_thread(_target, request)
    if target is None:
        return error("not_found", "no such account", 404)
    if target.agent_id == session.agent_id and (
            body.disabled or body.role not in (None, Role.ADMIN)):
        return error("forbidden", "an admin cannot disable or demote itself", 403)
    sessions = request.app[SESSIONS]
    store = sessions.store
    agent = target
    try:
        if body.password is not None:
            agent = await asyncio.to_thread(store.set_password, target.name, body.password)
        if body.role is not None and body.role is not agent.role:
            agent = await asyncio.to_thread(store.set_role, target.name, body.role)
        if body.disabled is not None and body.disabled != agent.disabled:
            agent = await asyncio.to_thread(store.set_disabled, target.name, body.disabled)
    except ValueError as e:
        return error("bad_request", str(e), 400)
    except KeyError:
        return error("not_found", "no such account", 404)
    sessions.ended_elsewhere()
    audit("account_changed", by=session.agent_id, agent=agent.agent_id, role=agent.role.value,
          disabled=agent.disabled, password=body.password is not None)
    return web.json_response({"ok": True, "agent": _public(agent)})


@_admin
async def remove_account(request: web.Request, session: Session) -> web.Response:
    target = await asyncio.to_thread(_target, request)
    if target is None:
        return error("not_found", "no such account", 404)
    if target.agent_id == session.agent_id:
        return error("forbidden", "an admin cannot remove itself", 403)
    sessions = request.app[SESSIONS]
    await asyncio.to_thread(sessions.store.remove, target.name)
    sessions.ended_elsewhere()
    audit("account_removed", by=session.agent_id, agent=target.agent_id)
    return web.json_response({"ok": True})


def setup_accounts(app: web.Application) -> None:
    """Add the admin endpoints (the sessions are the app's ``SESSIONS``)."""
    app.router.add_get("/api/agents", list_accounts)
    app.router.add_post("/api/agents", add_account)
    app.router.add_patch("/api/agents/{agent_id}", change_account)
    app.router.add_delete("/api/agents/{agent_id}", remove_account)
