"""The hub's call-level logic: turns into the thread store, call states, the handoff queue.

Workers report what happens on their calls (``turn``, ``session_state``,
``handoff_requested``, ``caller_said``, ``dtmf``); the hub keeps the calls table behind
``GET /api/calls``, stores turns, holds handed-off calls in the queue and, when nobody takes
one within ``routing.queue_timeout``, tells the worker (``queue_timeout``) so the flow runs
its fallback branch. Listeners (the ``/bot`` namespace, later agent routing) get every call
event through :meth:`Hub.subscribe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

from hitl_sip.config import Config
from hitl_sip.hub.alive5 import Outbox
from hitl_sip.hub.calls import CallRecord, Handoff
from hitl_sip.hub.cluster import HEARTBEAT, Cluster, RedisError
from hitl_sip.hub.events import CallEvent, Listener, Notice
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.retention import sweep_forever
from hitl_sip.hub.sessions import audit
from hitl_sip.hub.summary import Summaries, config_secrets
from hitl_sip.hub.threads import ThreadStore, Turn, WrapUpRecord
from hitl_sip.hub.tokens import parse_secret
from hitl_sip.protocol.cluster import Accepted, HubEvent, Replicated, replicated
from hitl_sip.protocol.seal import Seal
from hitl_sip.protocol.worker import (
    CallConnected,
    CallEndedMsg,
    CallerSaid,
    CallStarted,
    CallState,
    CallSummary,
    DtmfMsg,
    HandoffRequested,
    HubCommand,
    Interim,
    LegMedia,
    PeerLost,
    Quality,
    QueueTimeout,
    Refer,
    Reply,
    Role,
    SessionStateMsg,
    TranscriptLine,
    TurnMsg,
    WebrtcCandidate,
    WebrtcOffer,
    Whispered,
    WorkerMessage,
)
from hitl_sip.supervise import restart_counter, supervised

log = logging.getLogger(__name__)

#: the commands a worker answers with a Reply (they carry a requestId)
Request = WebrtcOffer | WebrtcCandidate | Refer

HUMAN_TRANSCRIPT_MAX = 2000  # lines kept per call for a transfer's target
CLUSTER_BACKLOG_MAX = 10_000  # call events kept for the other hubs while Redis is away
CLUSTER_RETRY = (0.25, 5.0)  # first and longest wait between publishing attempts, seconds
ORPHAN_WORKERS_WAIT = 120.0  # seconds a restarted hub waits for its workers before sweeping
CALL_STATES = tuple(state.value for state in CallState)


class Hub:
    def __init__(self, config: Config, registry: WorkerRegistry, store: ThreadStore) -> None:
        self.config = config
        self.registry = registry
        self.store = store
        self._listeners: list[Listener] = []
        self._queue_timers: dict[str, asyncio.TimerHandle] = {}
        self._replies: dict[str, asyncio.Future[Reply]] = {}
        self._request_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        m = registry.metrics
        self.turns_stored = m.counter("hitl_sip_hub_turns_stored_total", "Turns stored", ["role"])
        self.handoffs = m.counter("hitl_sip_hub_handoffs_total", "Handoffs requested")
        self.calls_lost = m.counter("hitl_sip_hub_calls_lost_total",
                                    "Calls ended because their worker process died")
        self.queue_timeouts = m.counter(
            "hitl_sip_hub_queue_timeouts_total", "Queued calls sent back to the bot"
        )
        self.backlog = m.gauge("hitl_sip_alive5_backlog",
                               "Turns stored but not yet acknowledged by alive5")
        # call events Redis refused, published again in order once it takes them
        self._unreplicated: deque[tuple[str, Replicated]] = deque()
        self._replicate_wake = asyncio.Event()
        self.cluster_backlog = m.gauge(
            "hitl_sip_hub_cluster_backlog",
            "Call events not yet published to the other hubs (Redis unreachable)")
        self.cluster_dropped = m.counter(
            "hitl_sip_hub_cluster_events_dropped_total",
            "Call events never published to the other hubs: the oldest, past "
            "CLUSTER_BACKLOG_MAX while Redis was unreachable")
        c = config.cluster
        self.hub_id = c.hub_id or f"{socket.gethostname()}-{os.getpid()}"
        self.wrapups = m.counter("hitl_sip_hub_wrapups_total",
                                 "Agents' wrap-ups by disposition", ["disposition"])
        self.retention_removed = m.counter(
            "hitl_sip_hub_retention_removed_total",
            "Recordings and call records (file) and local threads (thread) removed past "
            "retention_days", ["kind"])
        cluster_refused = m.counter(
            "hitl_sip_hub_cluster_messages_refused_total",
            "Messages read from Redis and dropped: unsigned, bad_signature, stale (replayed), "
            "or malformed", ["reason"])
        self.cluster_refused = cluster_refused
        self.cluster = (Cluster(c.redis_url, self.hub_id, Seal(parse_secret(c.secret)),
                                on_refused=lambda reason: cluster_refused.inc(reason=reason))
                        if c.redis_url else None)
        self.task_restarts = restart_counter(m)
        self.outbox = (Outbox(store, config.alive5, restarts=self.task_restarts)
                       if config.alive5.url else None)
        self.briefings = briefings = m.counter(
            "hitl_sip_hub_briefings_total",
            "Agent briefings by the source the call was first offered with (llm, embedded)",
            ["source"])
        self.briefing_failures = briefing_failures = m.counter(
            "hitl_sip_hub_briefing_failures_total",
            "Summary endpoint requests that gave no summary (the embedded one stood), by "
            "reason: timeout, http, network, malformed", ["reason"])
        self.summaries = Summaries(
            config.summary, secrets=config_secrets(config),
            on_first_ring=lambda b: briefings.inc(source=b.source.value),
            on_failure=lambda reason: briefing_failures.inc(reason=reason))

    async def start(self) -> None:
        """Join the cluster (when ``cluster.redis_url`` is set); resume alive5 delivery of
        what a previous run left in the outbox."""
        if self.cluster is not None:
            self.cluster.on_event = self._on_cluster_event
            self.cluster.on_command = self._on_cluster_command
            await self.cluster.start()
            await self.cluster.heartbeat()
            self._spawn(supervised("cluster liveness", self._watch_hubs,
                                   kind="cluster_liveness", restarts=self.task_restarts))
            self._spawn(supervised("cluster backlog", self._replicate_backlog,
                                   kind="cluster_backlog", restarts=self.task_restarts))
        self._spawn(supervised(
            "retention sweep", lambda: sweep_forever(
                self.config.resolve_path(self.config.data_dir), self.store,
                self.config.retention_days, self.retention_removed),
            kind="retention", restarts=self.task_restarts))
        if self.outbox is not None:
            resumed = await self.outbox.start()
            if resumed:
                log.info("alive5: resuming delivery for %d threads", resumed)
            self._spawn(supervised("alive5 backlog", self._watch_backlog,
                                   kind="alive5_backlog", restarts=self.task_restarts))
            orphans = await self.store.open_threads()
            if orphans:
                self._spawn(self._end_orphans(orphans))

    async def _end_orphans(self, threads: list[str]) -> None:
        """Threads a previous run of this hub left open: their calls died with it. The
        workers that outlived it report their calls' ends (and what the old hub never
        acknowledged) within seconds of connecting; after ``alive5.orphan_grace`` every
        thread still open and not a live call's is ended (``call ended (hub_restart)``)."""
        grace = self.config.alive5.orphan_grace
        log.info("%d thread(s) left open by a previous run: ending those no worker reports "
                 "within %.0f s of all workers connecting", len(threads), grace)
        # the workers' carried-over events come right after their hello: wait for every
        # worker (a slow start under load must not let this sweep overtake them)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ORPHAN_WORKERS_WAIT
        hello = self.registry.worker_hello

        def all_connected() -> bool:
            connected = sum(w.connected for w in self.registry.workers.values())
            return connected >= self.config.worker.count

        while loop.time() < deadline:
            hello.clear()
            if all_connected():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hello.wait(), deadline - loop.time())
        await asyncio.sleep(grace)
        live = {c.thread_id for c in self.registry.calls.values()}
        still = set(await self.store.open_threads())
        ended = 0
        for thread_id in threads:
            if thread_id in live or thread_id not in still:
                continue
            try:
                await self.store.add_end(thread_id, "voice_agent", "call ended (hub_restart)")
            except sqlite3.Error as e:
                log.error("thread %s not ended: %s", thread_id, e)
                continue
            assert self.outbox is not None
            self.outbox.notify(thread_id)
            ended += 1
        if ended:
            log.warning("ended %d thread(s) whose calls died with a previous run of the hub",
                        ended)

    async def _watch_backlog(self) -> None:
        while True:
            try:
                self.backlog.set(await self.store.backlog())
            except sqlite3.Error as e:
                log.warning("alive5 backlog not counted: %s", e)
            await asyncio.sleep(1.0)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def _publish(self, event: CallEvent) -> None:
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("call event listener failed on %s", event.type)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self.cluster is not None:
            await self.cluster.close()
        if self.outbox is not None:
            await self.outbox.close()
        for timer in self._queue_timers.values():
            timer.cancel()
        self._queue_timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.summaries.aclose()

    async def wrap_up(self, wrapup: WrapUpRecord) -> None:
        """Store the agent's wrap-up with the call; alive5 gets it as CRM data."""
        await self.store.set_wrapup(wrapup, deliver=self.outbox is not None)
        if self.outbox is not None:
            self.outbox.notify(wrapup.thread_id)
        self.wrapups.inc(disposition=wrapup.disposition)
        audit("wrap_up", agent=wrapup.agent_id, call=wrapup.call_id,
              disposition=wrapup.disposition)

    async def offered(self, call_id: str, agent_id: str) -> None:
        """``agent_id`` is offered the call: from now on it may see the call and read its
        thread (PROTOCOL.md §6), during the call and after."""
        call = self.registry.calls.get(call_id)
        if call is None:
            return
        call.offered_to.add(agent_id)
        try:
            await self.store.grant(call.thread_id, agent_id)
        except sqlite3.Error as e:
            log.error("[call %s] the agent's access to its thread not stored: %s", call_id, e)

    # -- commands to workers --------------------------------------------------------------

    def _owner(self, call_id: str) -> str | None:
        """The hub that owns ``call_id`` when it is another one."""
        call = self.registry.calls.get(call_id)
        hub = call.hub if call else None
        return hub if hub and hub != self.hub_id else None

    async def command(self, command: HubCommand) -> bool:
        """Send ``command`` to the worker that owns its call (through the owning hub when
        another hub owns the call); False when it cannot be delivered."""
        call_id = command.call_id
        call = self.registry.calls.get(call_id)
        if call is None:
            return False
        owner = self._owner(call_id)
        if owner is not None and self.cluster is not None:
            answer = await self.cluster.command(owner, command, want_reply=False)
            return answer is not None and answer.sent
        return await self.registry.send(call.worker_id, command)

    async def request(self, command: Request, wait: float = 10.0) -> Reply | None:
        """A command the worker answers with a :class:`Reply`; None when it cannot be
        reached or does not answer in time."""
        call_id = command.call_id
        owner = self._owner(call_id)
        if owner is not None and self.cluster is not None:
            answer = await self.cluster.command(owner, command, want_reply=True, wait=wait)
            return answer.reply if answer is not None else None
        request_id = f"r{next(self._request_ids)}"
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._replies[request_id] = future
        try:
            if not await self.command(command.model_copy(update={"request_id": request_id})):
                return None
            return await asyncio.wait_for(future, wait)
        except TimeoutError:
            log.warning("[call %s] the worker did not answer %s in %.0fs", call_id,
                        command.type, wait)
            return None
        finally:
            self._replies.pop(request_id, None)

    # -- worker messages ------------------------------------------------------------------

    async def on_worker_message(self, worker_id: str, message: WorkerMessage) -> None:
        """Apply one validated message from a worker (hitl_sip.protocol.worker); an error
        from the store or Redis propagates (the link retries), a ValueError means the
        message contradicts what the hub knows."""
        await self._apply(worker_id, message)
        await self._replicate(worker_id, message)

    async def _apply(self, worker_id: str, typed: WorkerMessage) -> None:
        """Dispatch on the validated model; the listeners get the model itself."""
        match typed:
            case Reply():
                future = self._replies.get(typed.request_id)
                if future is not None and not future.done():
                    future.set_result(typed)
            case TurnMsg():
                await self._on_turn(typed)
            case SessionStateMsg():
                await self._on_state(typed)
            case HandoffRequested():
                await self._on_handoff(typed)
            case (CallerSaid() | DtmfMsg() | CallConnected() | PeerLost() | Interim()
                  | Whispered() | LegMedia()):
                await self._publish(typed)
            case Quality():
                call = self.registry.calls.get(typed.call_id)
                if call is not None:
                    call.quality = list(typed.legs)
                    await self._publish(typed)
            case CallStarted():
                if self.outbox is not None:
                    headers, caller = typed.metadata, typed.caller
                    crm_id = str(headers.get("crm_id") or headers.get("X-Alive5-Crm-Id")
                                 or caller.number or "")
                    await self.outbox.set_crm(typed.thread_id, crm_id, [
                        ("phone", caller.number), ("name", caller.name)])
                self.registry.handle(worker_id, typed)
                await self._publish(typed)
            case CallEndedMsg():
                self._cancel_queue_timer(typed.call_id)
                self._drop_summary(typed.call_id)
                await self._end_thread(typed)
                self.registry.handle(worker_id, typed)
                await self._publish(typed)
            case _:
                self.registry.handle(worker_id, typed)

    # -- other hubs (cluster) ---------------------------------------------------------------

    async def _replicate(self, worker_id: str, message: WorkerMessage) -> None:
        """Tell the other hubs (Redis) of a call event. When Redis refuses it, the event
        waits in order behind any other refused one and :meth:`_replicate_backlog`
        publishes them once Redis takes them again; the worker's link is never held up."""
        if self.cluster is None or not replicated(message):
            return
        if not self._unreplicated:
            try:
                await self._publish_to_cluster(worker_id, message)
                return
            except (ConnectionError, OSError, RedisError) as e:
                log.error("[call %s] cluster: %s not published (%s)%s", message.call_id,
                          message.type, e, "" if isinstance(message, Interim)
                          else "; kept, published again once Redis is back")
        if isinstance(message, Interim):
            return  # a live caption: stale by the time Redis is back, its final follows
        if len(self._unreplicated) >= CLUSTER_BACKLOG_MAX:
            self._unreplicated.popleft()
            self.cluster_dropped.inc()
        self._unreplicated.append((worker_id, message))
        self.cluster_backlog.set(len(self._unreplicated))
        self._replicate_wake.set()

    async def _publish_to_cluster(self, worker_id: str, message: Replicated) -> None:
        assert self.cluster is not None
        if isinstance(message, HandoffRequested | CallEndedMsg):
            # queued again, or over: claimable again
            await self.cluster.unclaim(message.call_id)
        await self.cluster.publish(
            message, worker_id if isinstance(message, CallStarted) else None)

    async def _replicate_backlog(self) -> None:
        """Publish the events Redis refused, oldest first, retrying with backoff."""
        delay = CLUSTER_RETRY[0]
        while True:
            await self._replicate_wake.wait()
            while self._unreplicated:
                worker_id, message = self._unreplicated[0]
                try:
                    await self._publish_to_cluster(worker_id, message)
                except (ConnectionError, OSError, RedisError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, CLUSTER_RETRY[1])
                    continue
                self._unreplicated.popleft()
                self.cluster_backlog.set(len(self._unreplicated))
                delay = CLUSTER_RETRY[0]
            self._replicate_wake.clear()

    async def _on_cluster_event(self, hub: str, message: HubEvent,
                                worker_id: str | None = None) -> None:
        """Another hub's call event (validated: hitl_sip.protocol.cluster): mirror the
        call, tell the listeners (routing)."""
        call_id = message.call_id
        calls = self.registry.calls
        match message:
            case CallStarted():
                # another hub's worker ids may equal ours: keep them apart
                summary = CallSummary.model_validate(message.model_dump(
                    exclude={"type", "link_seq"}))
                calls[call_id] = CallRecord.from_summary(summary, f"{hub}/{worker_id}",
                                                         hub=hub)
            case HandoffRequested() if call_id in calls:
                self._queued(calls[call_id], message)
            case SessionStateMsg() if call_id in calls:
                calls[call_id].state = message.state
            case CallEndedMsg():
                await self._publish(message)
                self._drop_summary(call_id)
                calls.pop(call_id, None)
                return
            case _:
                pass
        if isinstance(message, Accepted) or call_id in calls:
            await self._publish(message)

    async def _watch_hubs(self) -> None:
        """Renew this hub's liveness mark (with the calls it owns); end the mirrored calls
        of hubs that lost theirs, and those their owner no longer lists."""
        assert self.cluster is not None
        # mirrored call -> its owner's mark time when this hub first saw the call mirrored:
        # only a mark written a heartbeat later must list it (a dead hub's last mark, which
        # lives on for ALIVE_TTL, may predate the call)
        first_seen: dict[str, int] = {}
        while True:
            await asyncio.sleep(HEARTBEAT)
            owners = {c.hub for c in self.registry.calls.values()
                      if c.hub and c.hub != self.hub_id}
            try:
                alive = await self.cluster.alive(owners | {self.hub_id})
                await self.cluster.heartbeat([cid for cid, c in self.registry.calls.items()
                                              if not c.hub or c.hub == self.hub_id])
            except (ConnectionError, OSError, RedisError) as e:
                log.warning("cluster: liveness not checked: %s", e)
                continue
            dead = owners - set(alive)
            if self.hub_id not in alive:
                # this hub's own mark is gone too: Redis restarted empty (or this hub was
                # cut off longer than the mark lives); the others have not had a heartbeat
                # to mark themselves again yet
                if dead:
                    log.warning("cluster: every liveness mark was lost (Redis restarted?): "
                                "no hub is taken for dead this time")
                dead = set()
            mirrored = {cid for cid, c in self.registry.calls.items()
                        if c.hub and c.hub != self.hub_id}
            for hub in sorted(dead):
                lost = [cid for cid, c in self.registry.calls.items() if c.hub == hub]
                log.warning("cluster: hub %s is gone: ending the %d calls it owned", hub,
                            len(lost))
                for call_id in lost:
                    await self._on_cluster_event(hub, CallEndedMsg(
                        call_id=call_id, outcome="hub_lost", by="system"))
            # a living hub that no longer owns a call this hub mirrors: its call_ended was
            # lost (published while Redis was away), or it restarted
            calls = self.registry.calls
            first_seen = {cid: at for cid, at in first_seen.items() if cid in mirrored}
            for call_id in sorted(mirrored):
                mark = alive.get(calls[call_id].hub or "") if call_id in calls else None
                if mark is None:
                    continue
                since = first_seen.setdefault(call_id, mark.at)
                if call_id in mark.calls or mark.at < since + 1.5 * HEARTBEAT * 1000:
                    continue
                log.warning("[call %s] cluster: hub %s no longer has it (its end was lost, "
                            "or the hub restarted): ending it here", call_id,
                            calls[call_id].hub)
                first_seen.pop(call_id, None)
                await self._on_cluster_event(str(calls[call_id].hub), CallEndedMsg(
                    call_id=call_id, outcome="hub_lost", by="system"))

    async def _on_cluster_command(self, command: HubCommand,
                                  want_reply: bool) -> bool | Reply | None:
        """Another hub asks this one's worker something about a call it owns: whether the
        command was sent, or (``want_reply``) the worker's reply."""
        call_id = command.call_id
        if self._owner(call_id) is not None or call_id not in self.registry.calls:
            return None if want_reply else False
        if want_reply:
            if not isinstance(command, WebrtcOffer | WebrtcCandidate | Refer):
                log.warning("[call %s] cluster: no reply exists for %s", call_id, command.type)
                return None
            wait = command.timeout + 5 if isinstance(command, Refer) else 10.0
            return await self.request(command.model_copy(update={"request_id": None}), wait)
        return await self.command(command)

    async def worker_lost(self, worker_id: str) -> None:
        """The worker's process died: its calls are over. Each ends as if the worker had said
        so (``by: system``, outcome ``worker_lost``): agents get ``call_ended``, the threads
        keep every turn that reached the hub and are ended (alive5 gets ``end_voice_chat``)."""
        calls = self.registry.take_calls(worker_id)
        for call_id, call in calls.items():
            log.warning("[call %s] lost with its worker %s", call_id, worker_id)
            self.registry.calls[call_id] = call
            await self.on_worker_message(worker_id, CallEndedMsg(
                call_id=call_id, outcome="worker_lost", by="system"))
        if calls:
            self.calls_lost.inc(len(calls))

    async def _on_turn(self, m: TurnMsg) -> None:
        turn = Turn(
            thread_id=m.thread_id,
            call_id=m.call_id,
            key=f"{m.call_id}:{m.seq}",
            role=m.role.value,
            text=m.text,
            at=m.at,
            delivery="pending" if self.outbox is not None else "local",
        )
        call = self.registry.calls.get(m.call_id)
        if call is not None and call.state is CallState.HUMAN:
            call.human_transcript.append(TranscriptLine(role=m.role, text=m.text, at=m.at))
            del call.human_transcript[:-HUMAN_TRANSCRIPT_MAX]
        elif (call is not None and call.state is CallState.QUEUED
              and m.role in (Role.BOT, Role.CALLER)):
            # what the bot says after the handoff's snapshot (the agent node's own message,
            # spoken once the handoff is sent) belongs to the conversation an agent is shown
            call.bot_transcript.append(TranscriptLine(role=m.role, text=m.text, at=m.at))
            del call.bot_transcript[:-HUMAN_TRANSCRIPT_MAX]
        if await self.store.add(turn):
            self.turns_stored.inc(role=turn.role)
            if self.outbox is not None:
                self.outbox.notify(turn.thread_id)
            await self._publish(m)

    async def notice(self, turn: Turn) -> None:
        """A line the hub itself adds to a call's thread (a transfer's notice), posted to
        alive5 like a bot turn and shown to the call's agents."""
        if await self.store.add(turn):
            self.turns_stored.inc(role=turn.role)
            if self.outbox is not None:
                self.outbox.notify(turn.thread_id)
            await self._publish(Notice(call_id=turn.call_id, thread_id=turn.thread_id,
                                       role=Role(turn.role), text=turn.text, at=turn.at))

    async def _end_thread(self, m: CallEndedMsg) -> None:
        """The call is over: alive5 gets ``end_voice_chat`` after the thread's last turn."""
        call = self.registry.calls.get(m.call_id)
        # a call this hub does not know: one from before a restart of the hub, carried over
        # by its worker
        thread_id = call.thread_id if call is not None else m.thread_id
        if self.outbox is None or not thread_id:
            return
        end_by = {"caller": "person", "agent": "human_agent"}.get(m.by, "voice_agent")
        await self.store.add_end(thread_id, end_by, f"call ended ({m.outcome})")
        self.outbox.notify(thread_id)

    async def _on_state(self, m: SessionStateMsg) -> None:
        call = self.registry.calls.get(m.call_id)
        if call is not None:
            call.state = m.state
        if m.state is not CallState.QUEUED:
            self._cancel_queue_timer(m.call_id)
        await self._publish(m)

    def _queued(self, call: CallRecord, handoff: HandoffRequested) -> None:
        call.state = CallState.QUEUED
        call.queued_at = time.monotonic()
        call.handoff = Handoff(handoff.queue, handoff.skill, handoff.reason,
                               dict(handoff.answers))
        call.bot_transcript = list(handoff.transcript)
        # the agent briefing starts now; the first ring waits for it summary.budget at most
        self.summaries.start(call)

    def _drop_summary(self, call_id: str) -> None:
        """The call is over: its summary request, if still under way, is not needed."""
        call = self.registry.calls.get(call_id)
        if call is not None and call.summary is not None:
            call.summary.cancel()

    async def _on_handoff(self, typed: HandoffRequested) -> None:
        call_id = typed.call_id
        call = self.registry.calls.get(call_id)
        if call is None:
            raise ValueError(f"handoff for an unknown call {call_id}")
        self._queued(call, typed)
        self.handoffs.inc()
        timeout = self.config.routing.queue_timeout
        log.info("[call %s] queued for an agent (timeout %.0fs)", call_id, timeout)
        self._cancel_queue_timer(call_id)
        loop = asyncio.get_running_loop()
        self._queue_timers[call_id] = loop.call_later(
            timeout, lambda: self._spawn(self._queue_timed_out(call_id))
        )
        await self._publish(typed)

    def _cancel_queue_timer(self, call_id: str) -> None:
        timer = self._queue_timers.pop(call_id, None)
        if timer is not None:
            timer.cancel()

    async def _queue_timed_out(self, call_id: str) -> None:
        self._queue_timers.pop(call_id, None)
        call = self.registry.calls.get(call_id)
        if call is None or call.state is not CallState.QUEUED:
            return
        log.info("[call %s] no agent took the call: back to the bot", call_id)
        self.queue_timeouts.inc()
        with contextlib.suppress(ConnectionError):
            await self.command(QueueTimeout(call_id=call_id))
