"""Several hubs sharing one Redis (``cluster.redis_url``).

Each hub owns the calls of its own workers. What the others need of them travels over
Redis:

- **call events** (``hitl:events``): every hub publishes what its workers say about calls
  (started, handed off, state, connected, transcript turns, ended); the other hubs mirror
  those calls in their registry and feed the events to their routers, so a call queued on
  hub A rings the agents connected to hub B too;
- **the accept** (``SET hitl:accept:<callId> NX``): the first agent to claim a call wins,
  whichever hub it is connected to; the winner's hub tells the others (``accepted``) so their
  agents stop ringing with ``answered_elsewhere``; the claim is cleared when the call is
  queued again or ends;
- **commands** (``hitl:hub:<hubId>``, request/reply): a hub that has to tell a call's worker
  something (``agent_joined``, a WebRTC offer, mute, hang-up…) and does not own the call
  asks the owning hub, which forwards it and answers with the worker's reply;
- **presence** (``hitl:presence`` hash): each hub writes its agents' state, for operators;
- **liveness** (``hitl:alive:<hubId>``, a key with a short TTL each hub renews): when a hub
  dies, the others end the calls they mirrored from it (``hub_lost``), so no agent keeps
  ringing for, or holds, a call nobody owns.

Socket.IO itself runs on python-socketio's Redis manager, so an emit may target a socket on
any hub. The alive5 outbox stays with the owning hub (turns are stored and sent once).

Redis is treated as a network others may write to: every message published and every
liveness mark is sealed (hitl_sip.protocol.seal, HMAC with ``cluster.secret``) and opened
before it is parsed; what does not open — forged, altered, replayed — is dropped and counted
(``hitl_sip_hub_cluster_messages_refused_total{reason}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from hitl_sip.protocol.agent import AgentState
from hitl_sip.protocol.cluster import (
    REPLICATED,
    AliveMark,
    ClusterEvent,
    ClusterMessage,
    CommandReply,
    CommandRequest,
    HubEvent,
    parse_alive_mark,
    parse_cluster_message,
)
from hitl_sip.protocol.seal import Seal
from hitl_sip.protocol.wire import WireError
from hitl_sip.protocol.worker import HubCommand, Reply
from hitl_sip.supervise import supervised

log = logging.getLogger(__name__)

__all__ = ["HEARTBEAT", "REPLICATED", "Cluster", "RedisError"]

EVENTS = "hitl:events"
PRESENCE = "hitl:presence"
CLAIM_TTL = 4 * 3600  # seconds; a claim outlives no call
HEARTBEAT = 2.0  # seconds between a hub's "alive" marks
ALIVE_TTL = 6  # seconds: a hub silent this long is dead (its mirrored calls are ended)


OnEvent = Callable[[str, HubEvent, str | None], Awaitable[None]]  # hub, event, its worker
#: a command from another hub, and whether it wants the worker's reply → sent / the reply
OnCommand = Callable[[HubCommand, bool], Awaitable[bool | Reply | None]]


def shown_url(url: str) -> str:
    """``url`` without its user and password (``redis://:PASSWORD@host`` → ``redis://host``)
    and query: what a log line may carry."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Cluster:
    def __init__(self, url: str, hub_id: str, seal: Seal,
                 on_refused: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.hub_id = hub_id
        self.seal = seal
        self.on_refused = on_refused
        # one quick retry, not redis-py's default backoff of seconds: while Redis is away
        # every call that touches it (an agent's accept, a publish) must fail fast
        self.redis: aioredis.Redis = aioredis.from_url(
            url, decode_responses=True, socket_connect_timeout=1.0,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1))
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[CommandReply]] = {}
        self.on_event: OnEvent | None = None
        self.on_command: OnCommand | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self.refused = 0  # malformed messages from Redis, ignored
        self.failed = 0  # valid ones whose handling raised

    async def start(self) -> None:
        await self.redis.ping()
        self._pubsub = await self._subscribe()
        self._task = asyncio.create_task(
            supervised("cluster listener", self._listen, kind="cluster_listener"),
            name="cluster")
        log.info("hub %s joined the cluster at %s", self.hub_id, self.where)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.redis.aclose()

    @property
    def where(self) -> str:
        """The Redis URL as logs may show it: no password, no query (a CA path, options)."""
        return shown_url(self.url)

    @staticmethod
    def _channel(hub_id: str) -> str:
        return f"hitl:hub:{hub_id}"

    # -- events -----------------------------------------------------------------------------

    async def publish(self, message: HubEvent, worker_id: str | None = None) -> None:
        """Tell the other hubs about a call event (``worker_id``: the owning worker, for
        ``call_started``)."""
        await self.redis.publish(EVENTS, self.seal.seal(ClusterEvent(
            hub=self.hub_id, worker_id=worker_id, message=message).dumps()))

    async def _subscribe(self) -> Any:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(EVENTS, self._channel(self.hub_id))
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            raise
        return pubsub

    async def _listen(self) -> None:
        """Read the subscribed channels; when Redis goes away (killed, restarted empty),
        subscribe again with backoff until it is back — without it, this hub would stay
        deaf to the others for good."""
        backoff = 1.0
        while True:
            if self._pubsub is None:
                try:
                    self._pubsub = await self._subscribe()
                except (ConnectionError, OSError, RedisError) as e:
                    log.warning("cluster: Redis unreachable (%s); subscribing again in "
                                "%.0f s", e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 1.0
                log.warning("cluster: subscribed again at %s (events published meanwhile "
                            "are lost)", self.where)
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                         timeout=1.0)
            except (ConnectionError, OSError, RedisError, RuntimeError) as e:
                # RuntimeError: redis-py's "pubsub connection not set" after a failed
                # reconnect
                log.error("cluster: Redis link lost (%s)", e)
                pubsub, self._pubsub = self._pubsub, None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                continue
            if message is None:
                continue
            try:
                data = message["data"]
                if not isinstance(data, str | bytes):
                    raise WireError("bad_message", "not text")
                body = parse_cluster_message(self.seal.open(data))
            except WireError as e:
                self.refused += 1
                if self.on_refused is not None:
                    self.on_refused(e.reason)
                log.warning("cluster: ignored a message from Redis (%s): %s", e.reason, e)
                continue
            task = asyncio.create_task(self._handle(body))
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)

    async def _handle(self, body: ClusterMessage) -> None:
        """Apply one validated message; any error is contained here (logged, counted):
        the listener and the other messages go on."""
        try:
            if isinstance(body, ClusterEvent):
                if body.hub != self.hub_id and self.on_event is not None:
                    await self.on_event(body.hub, body.message, body.worker_id)
            elif isinstance(body, CommandReply):
                future = self._waiting.get(body.id)
                if future is not None and not future.done():
                    future.set_result(body)
            elif self.on_command is not None:
                outcome = await self.on_command(body.command, body.want_reply)
                reply = outcome if isinstance(outcome, Reply) else None
                answer = CommandReply(id=body.id, sent=outcome is True or reply is not None,
                                      reply=reply)
                await self.redis.publish(self._channel(body.sender),
                                         self.seal.seal(answer.dumps()))
        except Exception:
            self.failed += 1
            log.exception("cluster: a message could not be applied")

    # -- commands to another hub's worker ------------------------------------------------------

    async def command(self, owner: str, command: HubCommand, *,
                      want_reply: bool, wait: float = 10.0) -> CommandReply | None:
        """Ask hub ``owner`` to send ``command`` to the call's worker; its answer says
        whether it was sent and, with ``want_reply``, carries the worker's reply (None: no
        answer)."""
        request_id = f"{self.hub_id}:{next(self._ids)}"
        future: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self.redis.publish(self._channel(owner), self.seal.seal(CommandRequest(
                id=request_id, sender=self.hub_id, command=command,
                want_reply=want_reply).dumps()))
            return await asyncio.wait_for(future, wait)
        except TimeoutError:
            log.warning("[call %s] hub %s did not answer %s in %.0fs", command.call_id,
                        owner, command.type, wait)
            return None
        except (ConnectionError, OSError, RedisError) as e:
            log.warning("[call %s] %s not sent to hub %s: %s", command.call_id, command.type,
                        owner, e)
            return None
        finally:
            self._waiting.pop(request_id, None)

    # -- the accept -----------------------------------------------------------------------------

    async def claim(self, call_id: str, agent_id: str) -> bool:
        """Whether ``agent_id`` is the first to take ``call_id`` (across every hub)."""
        won = await self.redis.set(f"hitl:accept:{call_id}", agent_id, nx=True, ex=CLAIM_TTL)
        return bool(won)

    async def unclaim(self, call_id: str) -> None:
        await self.redis.delete(f"hitl:accept:{call_id}")

    async def heartbeat(self, calls: list[str] | None = None) -> None:
        """Mark this hub alive for ``ALIVE_TTL``, with the ids of the calls it owns and the
        time of the mark (this hub's clock, ms): the others drop their copies of calls whose
        ``call_ended`` they missed, judging only by marks written after they saw the call."""
        mark = AliveMark(at=int(time.time() * 1000), calls=frozenset(calls or []))
        await self.redis.set(f"hitl:alive:{self.hub_id}", self.seal.seal(mark.dumps()),
                             ex=ALIVE_TTL)

    async def alive(self, hubs: set[str]) -> dict[str, AliveMark | None]:
        """The hubs of ``hubs`` that marked themselves alive within ``ALIVE_TTL``, each
        with its mark (None: a mark not understood — alive, nothing more)."""
        if not hubs:
            return {}
        ordered = sorted(hubs)
        marks = await self.redis.mget([f"hitl:alive:{h}" for h in ordered])
        found: dict[str, AliveMark | None] = {}
        for hub, text in zip(ordered, marks, strict=True):
            if not text:
                continue
            try:
                found[hub] = parse_alive_mark(self.seal.open(text))
            except WireError as e:  # not sealed by this cluster, or not JSON: no mark
                if self.on_refused is not None:
                    self.on_refused(e.reason)
                log.warning("cluster: hub %s's liveness mark refused: %s", hub, e)
        return found

    async def presence(self, agent_id: str, state: AgentState | None) -> None:
        """Write (None: remove) an agent's ``agent_state`` for operators, with its hub."""
        if state is None:
            await self.redis.hdel(PRESENCE, agent_id)
        else:
            await self.redis.hset(PRESENCE, agent_id,
                                  json.dumps({**state.wire(), "hub": self.hub_id}))
