"""The hub's aiohttp application: health, metrics and the worker link.

``create_app`` is a factory (aiohttp style); typed state lives under ``web.AppKey``s.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import WSMsgType, web

from hitl_sip.config import Config
from hitl_sip.hub.agentns import AgentNamespace
from hitl_sip.hub.agents import AgentStore
from hitl_sip.hub.api import HUB, setup_api
from hitl_sip.hub.botns import BotNamespace
from hitl_sip.hub.core import Hub
from hitl_sip.hub.dashboard import setup_dashboard
from hitl_sip.hub.login import setup_login
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.tokens import TokenError, TokenSigner
from hitl_sip.metrics import render

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", WorkerRegistry)
CONFIG = web.AppKey("config", Config)
WORKER_TOKEN = web.AppKey("worker_token", str)

MAX_WORKER_MESSAGE = 4 * 1024 * 1024


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    config = request.app[CONFIG]
    ready = registry.ready_workers()
    if registry.draining:
        status, code = "draining", 503
    elif ready:
        status, code = "ok", 200
    else:
        status, code = "starting", 503
    body = {
        "status": status,
        "workers": [w.public() for w in registry.workers.values()],
        "workersReady": len(ready),
        "workersExpected": config.worker.count,
        "activeCalls": sum(w.active_calls for w in registry.workers.values() if w.connected),
    }
    if registry.front is not None:
        body["front"] = registry.front()
    return web.json_response(body, status=code)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    snapshots: list[tuple[dict[str, str], list[dict[str, Any]]]] = [
        ({}, registry.metrics.snapshot())
    ]
    for w in registry.workers.values():
        if w.connected and w.metrics:
            snapshots.append(({"worker": w.worker_id}, w.metrics))
    return web.Response(text=render(snapshots), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def worker_socket(request: web.Request) -> web.StreamResponse:
    token = request.app[WORKER_TOKEN]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        log.warning("worker link refused from %s: bad token", request.remote)
        raise web.HTTPUnauthorized(text="unauthorized")
    registry = request.app[REGISTRY]
    ws = web.WebSocketResponse(heartbeat=10, max_msg_size=MAX_WORKER_MESSAGE)
    await ws.prepare(request)
    worker_id: str | None = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                if worker_id is None:
                    if data.get("type") != "hello" or not data.get("workerId"):
                        raise ValueError("first message must be a hello with a workerId")
                    worker_id = str(data["workerId"])
                    state = registry.connected(worker_id, data)
                    state.send_json = ws.send_json
                    log.info("worker %s connected (SIP %s)", worker_id, state.sip)
                elif HUB in request.app:
                    await request.app[HUB].on_worker_message(worker_id, data)
                else:
                    registry.handle(worker_id, data)
            except (ValueError, KeyError, TypeError) as e:
                registry.bad_worker_messages.inc()
                log.warning("ignored a malformed worker message: %s", e)
    finally:
        if worker_id is not None:
            registry.disconnected(worker_id)
            log.info("worker %s disconnected", worker_id)
    return ws


@dataclass
class AgentAuth:
    store: AgentStore
    signer: TokenSigner

    def verify(self, token: str) -> tuple[str, str]:
        try:
            claims = self.signer.verify(token)
        except TokenError as e:
            raise ValueError(f"token refused: {e.reason}") from e
        return claims.agent_id, claims.name

    async def exists(self, agent_id: str) -> bool:
        return await self.store.aget(agent_id) is not None


def create_app(
    config: Config,
    registry: WorkerRegistry,
    worker_token: str,
    hub: Hub | None = None,
    agent_auth: AgentAuth | None = None,
) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[WORKER_TOKEN] = worker_token
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/internal/worker", worker_socket)
    if hub is not None:
        setup_api(app, hub, agent_auth.verify if agent_auth else None)
        origins: list[str] | str = list(config.api.agent_origins) or "*"
        manager = (socketio.AsyncRedisManager(config.cluster.redis_url,
                                              channel="hitl-sip-socketio")
                   if config.cluster.redis_url else None)
        sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=origins,
                                   logger=False, engineio_logger=False,
                                   client_manager=manager)
        sio.register_namespace(BotNamespace(hub))
        if agent_auth is not None:
            setup_login(app, agent_auth.store, agent_auth.signer)
            sio.register_namespace(AgentNamespace(
                hub, agent_auth.verify, agent_auth.exists, origins=config.api.agent_origins,
                ring_timeout=config.routing.ring_timeout,
                reconnect_grace=config.routing.reconnect_grace,
                strategy=config.routing.strategy,
            ))
        sio.attach(app)
    if config.http.dashboard_dir:
        setup_dashboard(app, config.resolve_path(config.http.dashboard_dir))
    return app
