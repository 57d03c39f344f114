"""The hub's aiohttp application: health, metrics and the worker link.

``create_app`` is a factory (aiohttp style); typed state lives under ``web.AppKey``s.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
from collections.abc import Callable
from typing import Any

import socketio
from aiohttp import WSCloseCode, WSMsgType, web

from hitl_sip.config import Config
from hitl_sip.hub.accounts import setup_accounts
from hitl_sip.hub.agentns import AgentNamespace
from hitl_sip.hub.api import HUB, setup_api
from hitl_sip.hub.botns import BotNamespace
from hitl_sip.hub.carrier import setup_carrier
from hitl_sip.hub.core import Hub
from hitl_sip.hub.dashboard import setup_dashboard
from hitl_sip.hub.login import setup_login
from hitl_sip.hub.registry import WorkerRegistry, WorkerState
from hitl_sip.hub.sessions import Sessions
from hitl_sip.hub.tokens import parse_secret
from hitl_sip.hub.webedge import edge_headers, same_origin
from hitl_sip.metrics import CONTENT_TYPE
from hitl_sip.protocol.seal import Seal, SealedJson
from hitl_sip.protocol.wire import MAX_SOCKET_BYTES, SocketJson, WireError
from hitl_sip.protocol.worker import (
    Ack,
    Hello,
    Reliable,
    WorkerMessage,
    parse_worker_message,
)

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("registry", WorkerRegistry)
CONFIG = web.AppKey("config", Config)
WORKER_TOKEN = web.AppKey("worker_token", str)

MAX_WORKER_MESSAGE = 4 * 1024 * 1024


def _status(registry: WorkerRegistry) -> tuple[str, int]:
    if registry.draining:
        return "draining", 503
    if registry.ready_workers():
        return "ok", 200
    return "starting", 503


async def public_healthz(request: web.Request) -> web.Response:
    """What a load balancer needs, and a stranger no more: the state alone."""
    status, code = _status(request.app[REGISTRY])
    return web.json_response({"status": status}, status=code,
                             headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """The internal listener's: workers, their addresses and calls, the front."""
    registry = request.app[REGISTRY]
    config = request.app[CONFIG]
    ready = registry.ready_workers()
    status, code = _status(registry)
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
    """The hub's metrics and each connected worker's (``worker`` label), text format 0.0.4."""
    body = request.app[REGISTRY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                            "X-Content-Type-Options": "nosniff"})


async def worker_socket(request: web.Request) -> web.StreamResponse:
    """The worker link (hitl_sip.protocol.worker): a Hello, then validated messages. Each
    reliable one is applied once per worker epoch and acknowledged only once applied; a
    malformed one, or one that contradicts the hub's state, is counted and skipped. An
    error applying one (store, Redis, a handler's bug) is retried in place with backoff;
    when it persists, the link is closed without acknowledging it, and the worker sends it
    again after reconnecting (see :func:`_apply_worker_message`)."""
    token = request.app[WORKER_TOKEN]
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not token or not hmac.compare_digest(given.encode(), token.encode()):
        log.warning("worker link refused from %s: bad token", request.remote)
        raise web.HTTPUnauthorized(text="unauthorized")
    registry = request.app[REGISTRY]
    ws = web.WebSocketResponse(heartbeat=10, max_msg_size=MAX_WORKER_MESSAGE)
    await ws.prepare(request)
    state: WorkerState | None = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                message = parse_worker_message(msg.data, max_bytes=MAX_WORKER_MESSAGE)
                if (state is None) != isinstance(message, Hello):
                    raise WireError("bad_message", "a worker link starts with one hello")
            except WireError as e:
                registry.bad_worker_messages.inc()
                log.warning("ignored a malformed worker message: %s", e)
                continue
            if isinstance(message, Hello):
                state = registry.connected(message.worker_id, message)
                state.send_json = ws.send_json
                log.info("worker %s connected (SIP %s)", state.worker_id, state.sip)
                continue
            assert state is not None
            seq = message.link_seq if isinstance(message, Reliable) else 0
            if seq and seq <= state.applied_seq:  # sent again after a reconnect: applied
                await ws.send_str(Ack(link_seq=state.applied_seq).model_dump_json(by_alias=True))
                continue
            if not await _apply_worker_message(request.app, state.worker_id, message):
                registry.failed_worker_messages.inc()
                if seq:  # never acknowledged: the worker keeps it and resends it
                    log.error("worker %s: a %s message (linkSeq %d) could not be applied; "
                              "closing the link for the worker to send it again",
                              state.worker_id, message.type, seq)
                    await ws.close(code=WSCloseCode.TRY_AGAIN_LATER,
                                   message=b"a message could not be applied; send it again")
                    break
                log.error("worker %s: a %s message could not be applied; dropped (not "
                          "reliable)", state.worker_id, message.type)
                continue
            if seq:
                state.applied_seq = seq
                await ws.send_str(Ack(link_seq=seq).model_dump_json(by_alias=True))
    finally:
        if state is not None:
            registry.disconnected(state.worker_id)
            log.info("worker %s disconnected", state.worker_id)
    return ws


APPLY_ATTEMPTS = 6  # in place: 0.1 + 0.2 + ... + 1.6 s, a locked database or a Redis failover
APPLY_BACKOFF = 0.1  # seconds before the second attempt; doubled after each failure


async def _apply_worker_message(app: web.Application, worker_id: str,
                                message: WorkerMessage) -> bool:
    """Apply one validated message; False when it failed ``APPLY_ATTEMPTS`` times.

    A ``ValueError``, ``KeyError`` or ``TypeError`` means the message contradicts the hub's
    state (a handoff for a call it does not know): it is counted as bad and skipped — True,
    so it is acknowledged, since sending it again cannot help. Any other error (the store,
    Redis, a bug) is retried with backoff; the caller closes the link when every attempt
    failed, so a message never applied is never acknowledged and comes back after the
    worker's reconnect. A message that always fails thus costs a reconnect every few
    seconds, each counted in ``hitl_sip_hub_failed_worker_messages_total``, and never
    blocks the link for longer than the attempts take.
    """
    registry = app[REGISTRY]
    for attempt in range(APPLY_ATTEMPTS):
        try:
            if HUB in app:
                await app[HUB].on_worker_message(worker_id, message)
            else:
                registry.handle(worker_id, message)
            return True
        except (ValueError, KeyError, TypeError) as e:  # it contradicts the hub's state
            registry.bad_worker_messages.inc()
            log.warning("ignored a worker %s message: %s", message.type, e)
            return True
        except Exception:
            if attempt == APPLY_ATTEMPTS - 1:
                log.exception("a worker %s message could not be applied in %d attempts",
                              message.type, APPLY_ATTEMPTS)
                return False
            log.warning("applying a worker %s message failed (attempt %d); retrying",
                        message.type, attempt + 1, exc_info=True)
            await asyncio.sleep(APPLY_BACKOFF * 2**attempt)
    return False


def create_internal_app(config: Config, registry: WorkerRegistry, worker_token: str,
                        hub: Hub | None = None) -> web.Application:
    """The internal listener (``http.internal_host:internal_port``, loopback by default):
    ``/metrics``, the detailed ``/healthz`` and the workers' link."""
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[WORKER_TOKEN] = worker_token
    if hub is not None:
        app[HUB] = hub
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/internal/worker", worker_socket)
    return app


def create_app(
    config: Config,
    registry: WorkerRegistry,
    worker_token: str,
    hub: Hub | None = None,
    sessions: Sessions | None = None,
) -> web.Application:
    """The public listener: the dashboard, REST, Socket.IO and a terse ``/healthz``, every
    answer with the browser-edge headers (hitl_sip.hub.webedge)."""
    app = web.Application(client_max_size=1024 * 1024,
                          middlewares=[edge_headers(hsts=config.http.tls)])
    app[CONFIG] = config
    app[REGISTRY] = registry
    app[WORKER_TOKEN] = worker_token
    app.router.add_get("/healthz", public_healthz)
    # the carriers' voice webhooks (each only with its secret set)
    setup_carrier(app, config.carrier, registry.metrics)
    if hub is not None:
        setup_api(app, hub)
        # by default a browser page may connect from the hub's own origin only
        origins: list[str] | Callable[[str | None, dict[str, Any]], bool] = (
            list(config.api.agent_origins) or same_origin(tls=config.http.tls))
        manager = None
        if config.cluster.redis_url:
            # python-socketio >= 5.14 speaks JSON on Redis (no pickle); sealed like ours
            SealedJson.seal = Seal(parse_secret(config.cluster.secret))
            counter = hub.cluster_refused
            SealedJson.on_refused = lambda reason: counter.inc(reason=reason)
            manager = socketio.AsyncRedisManager(config.cluster.redis_url,
                                                 channel="hitl-sip-socketio")
        refused = registry.metrics.counter(
            "hitl_sip_hub_socket_payloads_refused_total",
            "Socket.IO payloads refused at the edge (too large, too deep, not JSON)", ["reason"])
        SocketJson.on_refused = lambda reason: refused.inc(reason=reason)
        sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=origins,
                                   logger=False, engineio_logger=False,
                                   client_manager=manager, json=SocketJson,
                                   max_http_buffer_size=4 * MAX_SOCKET_BYTES)
        if manager is not None:  # set_server() gave it the packets' JSON module: seal it
            manager.json = SealedJson
        registry.metrics.gauge(
            "hitl_sip_hub_socket_sessions", "Engine.IO sessions open on the hub (/agent, /bot)",
        ).set_function(lambda: len(sio.eio.sockets))
        registry.metrics.gauge(
            "hitl_sip_hub_tasks", "asyncio tasks alive in the hub (one that only grows leaks)",
        ).set_function(_tasks_alive)
        sio.register_namespace(BotNamespace(hub))
        if sessions is not None:
            setup_login(app, sessions)
            setup_accounts(app)
            sio.register_namespace(AgentNamespace(
                hub, sessions, origins=config.api.agent_origins,
                ring_timeout=config.routing.ring_timeout,
                reconnect_grace=config.routing.reconnect_grace,
                strategy=config.routing.strategy,
            ))
        sio.attach(app)
    if config.http.dashboard_dir:
        setup_dashboard(app, config.resolve_path(config.http.dashboard_dir))
    return app


def _tasks_alive() -> float:
    """Tasks of the running loop (a scrape runs on it); NaN when read off the loop."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return math.nan
