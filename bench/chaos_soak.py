"""Chaos soak: calls keep cycling while processes are SIGKILLed in turn; afterwards every
alive5 thread must equal the hub's local thread.

A real ``hitl-sip serve`` with two media workers behind the Kamailio front delivers to the
alive5 stand-in (``tests/support/alive5.py``). Three callers (``tests/support/rtpcaller.py``,
through the front) each cycle one call after the other: the bot greets ("Hello."), the
caller presses 1 (a ``[pressed 1]`` turn), the bot says "Connecting." and hands off, one of
three test agents (``hitl_sip/testing/agent.py``, WebRTC) accepts and talks (a human recording,
transcribed like any agent), the caller presses 2 and 3 (``[pressed N]`` turns) and hangs
up. Meanwhile, in turn (each once with ``--short``; round after round with ``--seconds``),
waiting for the calls to be where the kill hurts (a call with an agent on the target):

1. ``worker`` — SIGKILL a media worker (the one with a bridged call): the supervisor
   restarts it; its calls end ``worker_lost`` (by ``system``, PROTOCOL.md), their threads
   keep what reached the hub and end in alive5 (``end_voice_chat`` by the voice agent).
2. ``speech`` — SIGKILL a worker's speech process (its pocketsphinx child): open streams
   restart in a new child; no call may suffer.
3. ``front`` — SIGKILL Kamailio: the hub restarts it; established calls keep their media
   (RTP never passes the front), new INVITEs and BYEs are retransmitted until it is back.
4. ``alive5`` — SIGKILL the alive5 stand-in (a process of its own that journals what it
   stores before acknowledging it, ``tests/support/alive5_proc.py``), keep it down a few
   seconds, then start a new one on the same port and journal: the hub's outbox
   redelivers what piled up; what the killed one took just before the SIGKILL without its
   acknowledgement reaching the hub comes once more (at-least-once: reported apart, as for
   the hub's kill), anything else twice is a duplicate.

After each kill the soak waits for recovery (the worker back with a new pid, a new speech
process, the front restarted, the outbox backlog empty) and for calls to complete again.
At the end: every call hung up, the backlog drained, the server stopped; each thread of
the hub's local store (``<data_dir>/threads.sqlite``) is compared with the stand-in's:
turns expected (local) / delivered (in the stand-in, same key) / duplicated (a resent key,
or a second ``end_voice_chat``) / lost (in the hub, not in alive5), the order, the end.
Printed per kill (the calls that ended while it was the latest) and in total, with the
calls completed (bot, agent, caller's hang-up) and the calls lost with their killed worker.

5. ``hub`` — SIGKILL the hub (``hitl-sip serve``) and start it again at once, as systemd
   would: Kamailio dies with it; its workers learn of its death (PR_SET_PDEATHSIG), end
   their calls (``hub_lost``, by ``system``) and keep what it never acknowledged, which
   their successors send to the new hub; every thread of those calls ends in alive5 once
   (``call ended (hub_lost)``, or ``(hub_restart)`` when the new hub had to end it itself),
   with every turn the old hub stored. The observer and the agents log in again. What
   alive5 took in the second before the SIGKILL but whose acknowledgement the hub had not
   stored yet is sent again by its successor (at-least-once: a post carries its key): such
   a copy is reported apart, never as a duplicate; any other second copy is one.

6. ``redis`` — with two hubs on one Redis (hub A takes the calls; the last agent works on
   hub B, offered A's calls through the cluster): SIGKILL redis-server for a few seconds,
   then start an empty one on the same port. Each hub's own calls and agents go on; once
   it is back, the agent on hub B is offered A's calls again.

Usage: ``python bench/chaos_soak.py [--short | --seconds N] [--kills ...] [--keep DIR]
[--json]``. ``--short`` (what ``make test`` runs, through tests/integration/test_chaos.py)
does each kill once: about a minute on two cores. ``--seconds N`` repeats the round of kills
for N seconds (default 300; a round takes about 45 s). ``--keep DIR`` (a new directory)
keeps the server's config, data and log. Progress goes to stderr, the report to stdout
(``--json``: one more line, every figure). Exit status 1 when a call that was not on a
killed worker lost or duplicated a turn, a thread did not end exactly once, a lost call
did not end as the hub ends those, or a process did not come back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import socketio  # noqa: E402

from hitl_sip.media.ice import install_host_filter  # noqa: E402
from hitl_sip.testing.agent import MicrophoneTrack, Source, TestAgent, tone, wav_source  # noqa: E402
from tests.integration.test_agents import PASSWORD, add_agent  # noqa: E402
from tests.support.alive5 import API_KEY as ALIVE5_KEY  # noqa: E402
from tests.support.alive5_proc import Alive5Process  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.redis import CLUSTER_SECRET, RedisServer  # noqa: E402
from tests.support.rtpcaller import RtpCaller  # noqa: E402
from tests.support.server import Server, running_server  # noqa: E402

log = logging.getLogger("chaos_soak")

FLOW = """
name: chaos
start: menu
nodes:
  menu:
    type: ask
    prompt: "Hello."
    timeout: 20
    retries: 0
    dtmf_max: 1
    branches:
      - {dtmf: "1", next: agent}
    fail: bye
  agent: {type: agent, message: "Connecting.", fallback: bye}
  bye: {type: hangup}
"""
GREETING = "Hello."
API_KEY = "chaos-soak-api-key-0123456789"
TAG = "X-Chaos-Call"  # on each INVITE: which attempt of which caller (passed through)
CALLERS = 3
AGENTS = 3
KILLS = ("worker", "speech", "front", "alive5", "redis", "hub")
AGENT_CLIP = Path("/usr/share/pocketsphinx/test/data/librivox/"
                  "sense_and_sensibility_01_austen_64kb-0880.wav")
TALK_SECONDS = 5.0  # caller and agent connected, before the caller hangs up
OUTAGE_SECONDS = 4.0  # the alive5 stand-in stays down at least this long
COMPLETIONS_AFTER_KILL = 2  # calls completed after each recovery before the next kill
LOST = "worker_lost"  # the outcome the hub gives a call whose worker died (hub/core.py)
HUB_LOST = "hub_lost"  # what the workers report for the calls they end when the hub died
LOST_OUTCOMES = (LOST, HUB_LOST)
#: a thread's end text when its call ended by itself (the caller's or the agent's BYE)
NORMAL_ENDS = ("call ended (completed)",)


# -- what the soak records -----------------------------------------------------------------


@dataclass
class CallRun:
    """One call of one caller: how far it got and how it ended."""

    caller: int
    tag: str
    phase: str = ""  # the kill that was the latest when the call ended ("warm-up" before)
    call_id: str = ""
    thread_id: str = ""
    worker_id: str = ""
    reached: str = "dialing"  # dialing → bot → human → hung up
    outcome: str = ""  # the hub's call_ended (the /bot namespace's reason)
    agent_by: str = ""  # "reason/by" of the call_ended the accepting agent got
    human_at: float = 0.0  # time.monotonic() when the caller saw the agent take the call
    note: str = ""
    with_hub: bool = False  # live on the hub when it was killed: ends with it

    @property
    def completed(self) -> bool:
        return self.reached == "hung up" and self.outcome == "completed"


@dataclass
class Kill:
    kind: str
    target: str  # what was killed: "w2 pid 1234"
    phase: str
    recovered: bool = False
    recovery_s: float = 0.0
    detail: str = ""
    calls_on_target: list[str] = field(default_factory=list)  # callIds, at the kill
    at: float = 0.0  # time.monotonic() of the SIGKILL


@dataclass
class ThreadCheck:
    """The hub's local thread against the alive5 stand-in's."""

    thread_id: str
    expected: int  # turns in the hub's local store
    delivered: int  # of those, in the stand-in (same message_key)
    duplicated: int  # a key posted twice, or a second end_voice_chat (but for those below)
    lost: int  # in the hub, not in alive5
    unexpected: int  # in alive5, not in the hub
    in_order: bool
    ends: int  # end_voice_chat received by the stand-in
    end_by: str
    end_text: str
    local_end: str  # the hub's stored end ("" when none) and whether alive5 acknowledged it
    first_bad: str = ""  # the first lost / out-of-order turn, for the report
    roles: dict[str, int] = field(default_factory=dict)  # local turns per role
    # sent again by the restarted hub because the killed one died between alive5 taking it
    # and storing the acknowledgement: the first copy came in the IN_FLIGHT seconds before
    # the SIGKILL, the second after it (at-least-once; a post's key makes it recognisable)
    resent_over_kill: int = 0

    @property
    def equal(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.unexpected == 0
                and self.in_order and self.ends == 1)


# -- the observer: every call's start and end, from the /bot namespace -----------------------


class Observer:
    """A ``/bot`` client (``api.keys``): ``call_started`` (callId, threadId, our INVITE tag in
    the metadata) and ``call_ended`` (the outcome) of every call. With a flow file the bot
    namespace only listens; it drives nothing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.started: dict[str, dict[str, Any]] = {}  # tag -> call_started
        self.ended: dict[str, dict[str, Any]] = {}  # callId -> call_ended
        self.changed = asyncio.Event()

    async def connect(self) -> None:
        """Connect (again, after the hub restarted: a new client)."""
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("call_started", self._on_started, namespace="/bot")
        self.sio.on("call_ended", self._on_ended, namespace="/bot")
        await self.sio.connect(self.url, namespaces=["/bot"], auth={"apiKey": API_KEY},
                               transports=["websocket"])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.disconnect()

    async def _on_started(self, data: dict[str, Any]) -> None:
        tags = [str(v) for v in (data.get("metadata") or {}).values()]
        for tag in tags:
            if tag.startswith("chaos-"):
                self.started[tag] = data
        self.changed.set()

    async def _on_ended(self, data: dict[str, Any]) -> None:
        self.ended[str(data.get("callId"))] = data
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], limit: float) -> bool:
        """Whether ``predicate`` held within ``limit`` s; re-checked on every event."""
        deadline = time.monotonic() + limit
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True


# -- the soak --------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:160]


class Soak:
    def __init__(self, srv: Server, a5: Alive5Process, front_port: int,
                 agent_source: Source, *, other: Server | None = None,
                 redis: RedisServer | None = None) -> None:
        self.srv = srv
        self.other = other  # hub B (with ``redis``): the last agent logs in there
        self.redis = redis
        self.a5 = a5
        self.front_port = front_port
        self.agent_source = agent_source
        self.observer = Observer(srv.http_url)
        self.runs: list[CallRun] = []
        self.kills: list[Kill] = []
        self.phase = "warm-up"
        self.stopping = False  # callers finish their call and stop
        self.agents_done = False
        self.refused: list[dict[str, str]] = []  # INVITEs not answered: phase, tag, why
        # INVITEs the old front took (its 100) when the hub was killed: the front died with
        # the hub and the worker that answered ended its calls, so no final answer ever came
        self.caught_by_hub_kill: list[dict[str, str]] = []
        self.hub_killed_at: list[float] = []  # time.monotonic() of each hub SIGKILL
        self.agent_ends: dict[str, dict[str, Any]] = {}  # callId -> the agent's call_ended
        self.with_hub: set[str] = set()  # callIds live on the hub when it was killed
        self.offered: dict[str, list[float]] = {}  # agent -> time.monotonic() of each offer

    # -- hub state over HTTP ---------------------------------------------------------------

    def _get(self, path: str) -> Any:
        req = urllib.request.Request(self.srv.http_url + path, headers={"X-Api-Key": API_KEY})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    async def calls(self) -> list[dict[str, Any]]:
        body = await asyncio.to_thread(self._get, "/api/calls")
        return list(body["calls"])

    async def local_turns(self, thread_id: str) -> list[dict[str, Any]]:
        try:
            body = await asyncio.to_thread(self._get, f"/api/threads/{thread_id}")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        return list(body["turns"])

    async def health(self) -> dict[str, Any]:
        return (await asyncio.to_thread(self.srv.health))[1]

    async def metric(self, name: str) -> float:
        return await asyncio.to_thread(self.srv.metric, name)

    async def until(self, predicate: Callable[[], Any], limit: float,
                    interval: float = 0.1) -> bool:
        """Poll an async ``predicate`` until it is true or ``limit`` s passed."""
        deadline = time.monotonic() + limit
        while True:
            try:
                if await predicate():
                    return True
            except (OSError, urllib.error.URLError, KeyError, ValueError) as e:
                log.debug("condition not checked: %s", e)
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    # -- callers ---------------------------------------------------------------------------

    def _ended(self, run: CallRun) -> bool:
        return bool(run.call_id) and (run.call_id in self.observer.ended or run.with_hub)

    async def _step(self, run: CallRun, check: Callable[[], Any], limit: float,
                    what: str) -> bool:
        """Wait for ``check`` (async) on ``run``'s call; False when the call ended first or
        the wait timed out (noted)."""
        async def done() -> bool:
            return self._ended(run) or bool(await check())
        if not await self.until(done, limit, interval=0.15):
            run.note = run.note or f"timed out waiting for {what}"
            return False
        return not self._ended(run)

    async def _state(self, run: CallRun) -> str:
        for call in await self.calls():
            if call["callId"] == run.call_id:
                run.worker_id = str(call.get("workerId") or run.worker_id)
                return str(call.get("state"))
        return ""

    async def _greeted(self, run: CallRun) -> bool:
        turns = await self.local_turns(run.thread_id)
        return any(t["role"] == "bot" and t["text"] == GREETING for t in turns)

    async def _talk(self, run: CallRun, caller: RtpCaller) -> None:
        """The caller and the agent talk; the caller presses 2, then 3 (``[pressed N]``)."""
        for digit in "23":
            if await self.observer.until(lambda: self._ended(run), TALK_SECONDS / 2):
                return
            try:
                await asyncio.to_thread(caller.dtmf, digit)
            except RuntimeError as e:  # the media stopped: the call is ending
                run.note = run.note or f"dtmf {digit}: {_first_line(e)}"
                return

    async def cycle(self, index: int, attempt: int) -> bool:
        """One call of caller ``index``; False when its INVITE was not answered."""
        tag = f"chaos-{index}-{attempt}"
        caller = RtpCaller(self.front_port, caller=f"+1415555030{index}",
                           headers={TAG: tag})
        run = CallRun(caller=index, tag=tag)
        try:
            try:
                await asyncio.to_thread(caller.call, 10)
            except (TimeoutError, RuntimeError) as e:
                entry = {"phase": self.phase, "tag": tag, "why": _first_line(e)}
                sent = caller.invite_sent_at
                if (isinstance(e, TimeoutError) and caller.provisional and sent is not None
                        and any(sent <= at for at in self.hub_killed_at)):
                    self.caught_by_hub_kill.append(entry)
                else:
                    self.refused.append(entry)
                log.info("caller %d: %s not answered (%s)", index, tag, _first_line(e))
                return False
            caller.start_media()
            self.runs.append(run)
            if not await self.observer.until(lambda: tag in self.observer.started, 15):
                run.note = "answered, but the hub never heard of the call"
                return True
            started = self.observer.started[tag]
            run.call_id, run.thread_id = str(started["callId"]), str(started["threadId"])
            run.reached = "bot"
            if await self._step(run, lambda: self._greeted(run), 20, "the greeting"):
                try:
                    await asyncio.to_thread(caller.dtmf, "1")
                except RuntimeError as e:
                    run.note = f"dtmf 1: {_first_line(e)}"
            if await self._step(run, lambda: self._human(run), 30, "an agent"):
                run.reached, run.human_at = "human", time.monotonic()
                await self._talk(run, caller)
            if not self._ended(run):
                try:
                    await asyncio.to_thread(caller.hangup, 8)
                    run.reached = "hung up" if run.reached == "human" else run.reached
                except (TimeoutError, RuntimeError, OSError) as e:
                    run.note = run.note or f"BYE: {_first_line(e)}"
            if not await self.observer.until(lambda: self._ended(run), 20):
                run.note = run.note or "the hub never ended the call"
            return True
        finally:
            with contextlib.suppress(RuntimeError, OSError):
                await asyncio.to_thread(caller.close)
            if run.call_id in self.observer.ended:
                run.outcome = str(self.observer.ended[run.call_id].get("reason") or "")
            run.phase = self.phase
            log.info("caller %d: %s %s reached %s, outcome %s%s", index, tag, run.call_id,
                     run.reached, run.outcome or "-", f" ({run.note})" if run.note else "")

    async def _human(self, run: CallRun) -> bool:
        return await self._state(run) == "human"

    async def caller_loop(self, index: int) -> None:
        attempt = 0
        while not self.stopping:
            attempt += 1
            if not await self.cycle(index, attempt):
                await asyncio.sleep(0.5)  # not answered: the front or a worker is down

    # -- agents ----------------------------------------------------------------------------

    async def agent_loop(self, agent: TestAgent) -> None:
        """Take any offered call (ring-all: another agent may be quicker), talk until it
        ends, then wait for the next one."""
        handled = 0
        while not self.agents_done:
            if not agent.sio.connected:  # the hub was killed: log in again once it is back
                try:
                    await agent.connect()
                except (OSError, urllib.error.URLError, socketio.exceptions.SocketIOError):
                    await asyncio.sleep(0.5)
                    continue
            try:
                offer = await agent.wait("incoming_call", handled + 1, limit=1.0)
            except TimeoutError:
                continue
            handled += 1
            self.offered.setdefault(agent.username, []).append(time.monotonic())
            call_id = str(offer["callId"])
            if call_id in self.observer.ended:
                continue
            try:
                ack = await agent.call("accept_call", {"callId": call_id})
                if not ack.get("ok"):
                    continue
                agent.call_id = call_id
                agent.mic = MicrophoneTrack(self.agent_source)
                await agent.start_media()
            except (RuntimeError, socketio.exceptions.SocketIOError) as e:
                log.info("agent %s: call %s: %s", agent.username, call_id, _first_line(e))
            await self._until_ended(agent, call_id)

    async def _until_ended(self, agent: TestAgent, call_id: str) -> None:
        """The agent talks until its call ends, then drops the call's media."""
        def told() -> bool:
            return any(e.get("callId") == call_id for e in agent.events.get("call_ended", []))
        await self.observer.until(lambda: told() or call_id in self.observer.ended
                                  or call_id in self.with_hub, 90)
        await self.observer.until(told, 5)  # the agent's own word, when it comes
        for event in agent.events.get("call_ended", []):
            if event.get("callId") == call_id:
                self.agent_ends[call_id] = event
        if agent.pc is not None:
            with contextlib.suppress(Exception):
                await agent.pc.close()
            agent.pc = None

    # -- kills -----------------------------------------------------------------------------

    async def _aim(self, limit: float = 60) -> tuple[str, list[str]]:
        """The worker of the call an agent took last (the most talk left: the kill catches
        it with caller and agent talking), and every call on that worker."""
        found: list[tuple[str, list[str]]] = []

        async def look() -> bool:
            talking = [r for r in self.runs if r.reached == "human" and not self._ended(r)]
            if not talking:
                return False
            newest = max(talking, key=lambda r: r.human_at)
            if time.monotonic() - newest.human_at > TALK_SECONDS / 2:
                return False  # it may hang up before the kill lands: wait for the next one
            calls = await self.calls()
            worker = next((str(c["workerId"]) for c in calls
                           if c["callId"] == newest.call_id), "")
            found.append((worker, [str(c["callId"]) for c in calls
                                   if c["workerId"] == worker]))
            return bool(worker)
        if not await self.until(look, limit, interval=0.1):
            raise RuntimeError(f"no call with an agent to aim the kill at in {limit:.0f} s")
        return found[-1]

    async def _worker_pid(self, worker_id: str) -> tuple[int, bool]:
        for w in (await self.health())["workers"]:
            if w["workerId"] == worker_id:
                return int(w["pid"]), bool(w["connected"])
        return 0, False

    async def kill_worker(self) -> Kill:
        worker_id, on_it = await self._aim()
        pid, _ = await self._worker_pid(worker_id)
        kill = Kill("worker", f"{worker_id} pid {pid}", self.phase, calls_on_target=on_it)
        for run in self.runs:  # a call still with the bot: the caller has not asked yet
            if run.call_id in on_it:
                run.worker_id = worker_id
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()

        async def back() -> bool:
            new, connected = await self._worker_pid(worker_id)
            body = await self.health()
            return new not in (0, pid) and connected and body["workersReady"] == 2
        kill.recovered = await self.until(back, 60)
        kill.recovery_s = time.monotonic() - t0
        new, _ = await self._worker_pid(worker_id)
        kill.detail = f"restarted as pid {new}; {len(on_it)} calls on it"
        return kill

    @staticmethod
    def _speech_pids(worker_pid: int) -> list[int]:
        try:
            children = psutil.Process(worker_pid).children()
        except psutil.Error:
            return []
        pids = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if any("spawn_main" in part for part in child.cmdline()):
                    pids.append(child.pid)
        return pids

    async def kill_speech(self) -> Kill:
        worker_id, on_it = await self._aim()
        worker_pid, _ = await self._worker_pid(worker_id)
        pids = self._speech_pids(worker_pid)
        if not pids:
            raise RuntimeError(f"worker {worker_id} (pid {worker_pid}) has no speech process")
        kill = Kill("speech", f"{worker_id}'s speech process pid {pids[0]}", self.phase,
                    calls_on_target=on_it)
        os.kill(pids[0], signal.SIGKILL)
        t0 = time.monotonic()

        async def respawned() -> bool:  # the open streams restart in a new child
            now = self._speech_pids(worker_pid)
            return bool(now) and pids[0] not in now
        kill.recovered = await self.until(respawned, 30)
        kill.recovery_s = time.monotonic() - t0
        kill.detail = (f"new speech process {self._speech_pids(worker_pid)}; "
                       f"{len(on_it)} calls on the worker")
        return kill

    async def kill_front(self) -> Kill:
        await self._aim()
        front = (await self.health())["front"]
        pid, restarts = int(front["pid"]), int(front["restarts"])
        kill = Kill("front", f"kamailio pid {pid}", self.phase)
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()

        async def back() -> bool:
            f = (await self.health())["front"]
            return bool(f["running"]) and int(f["restarts"]) > restarts
        kill.recovered = await self.until(back, 30)
        kill.recovery_s = time.monotonic() - t0
        kill.detail = f"restarted as pid {(await self.health())['front']['pid']}"
        return kill

    async def kill_alive5(self) -> Kill:
        await self._aim()
        pid = await asyncio.to_thread(self.a5.kill)
        kill = Kill("alive5", f"stand-in pid {pid} on port {self.a5.port}", self.phase)
        t0 = kill.at = time.monotonic()

        async def piling_up() -> bool:  # turns stored in the hub, waiting for alive5
            return await self.metric("hitl_sip_alive5_backlog") > 0
        piled = await self.until(piling_up, 20)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - t0)))
        backlog = await self.metric("hitl_sip_alive5_backlog")
        down = time.monotonic() - t0
        await asyncio.to_thread(self.a5.start)
        t1 = time.monotonic()

        async def drained() -> bool:
            return await self.metric("hitl_sip_alive5_backlog") == 0
        kill.recovered = await self.until(drained, 60, interval=0.25) and piled
        kill.recovery_s = time.monotonic() - t1
        kill.detail = (f"down {down:.1f} s, backlog {backlog:.0f} turns when it came back"
                       + ("" if piled else "; no backlog seen while down"))
        return kill

    async def kill_redis(self) -> Kill:
        """SIGKILL redis-server (both hubs' cluster) for a few seconds, then start an
        empty one on the same port: each hub's own calls and agents go on meanwhile; once it
        is back, the agent on hub B is offered calls from hub A's workers again."""
        assert self.redis is not None and self.other is not None
        await self._aim()
        pid = await asyncio.to_thread(self.redis.kill)
        kill = Kill("redis", f"redis-server pid {pid}", self.phase)
        t0 = time.monotonic()
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: nothing to wait for
        await asyncio.to_thread(self.redis.start)
        t1 = time.monotonic()
        remote = f"agent{AGENTS - 1}"

        async def offered_across() -> bool:
            return any(at > t1 for at in self.offered.get(remote, []))
        kill.recovered = await self.until(offered_across, 90, interval=0.25)
        kill.recovery_s = time.monotonic() - t1
        kill.detail = (f"down {t1 - t0:.1f} s; {remote} (hub B) "
                       + ("offered a call from hub A again" if kill.recovered
                          else "never offered a call from hub A again"))
        return kill

    async def kill_hub(self) -> Kill:
        """SIGKILL the hub (``hitl-sip serve``) with calls talking and start it again, as a
        process manager would: its workers end their calls (``hub_lost``) and keep what it
        never acknowledged for their successors; Kamailio goes with it."""
        await self._aim()
        # a call the hub already reported ended (its BYE crossed the listing) is not live
        live = [cid for cid in (str(c["callId"]) for c in await self.calls())
                if cid not in self.observer.ended]
        pid = self.srv.process.pid
        kill = Kill("hub", f"hub pid {pid}", self.phase, calls_on_target=live)
        self.with_hub.update(live)
        kill.at = time.monotonic()
        self.hub_killed_at.append(kill.at)
        self.srv.process.kill()
        await asyncio.to_thread(self.srv.process.wait)
        for run in self.runs:
            if run.call_id in live and run.call_id not in self.observer.ended:
                run.with_hub, run.outcome, run.worker_id = True, HUB_LOST, "hub"
        self.observer.changed.set()
        t0 = time.monotonic()
        try:
            await asyncio.to_thread(self.srv.start_again, 60)
            await self.observer.connect()
        except (AssertionError, OSError, socketio.exceptions.SocketIOError) as e:
            kill.detail = f"not back: {_first_line(e)}"
            return kill

        async def back() -> bool:
            f = (await self.health())["front"]
            return bool(f["running"]) and self.front_port == int(
                f["sip"]["udp"].rsplit(":", 1)[1])
        kill.recovered = await self.until(back, 30)
        kill.recovery_s = time.monotonic() - t0
        kill.detail = f"restarted as pid {self.srv.process.pid}; {len(live)} calls on it"
        return kill

    async def _completed_since(self, count: int, limit: float) -> bool:
        """Wait until ``count`` more calls completed (bot, agent, hang-up)."""
        base = sum(r.completed for r in self.runs)

        async def enough() -> bool:
            return sum(r.completed for r in self.runs) >= base + count
        return await self.until(enough, limit, interval=0.25)

    async def chaos(self, plan: list[str], deadline: float | None) -> None:
        killers = {"worker": self.kill_worker, "speech": self.kill_speech,
                   "front": self.kill_front, "alive5": self.kill_alive5,
                   "hub": self.kill_hub, "redis": self.kill_redis}
        if not await self._completed_since(1, 90):
            raise RuntimeError("no call completed before the first kill")
        round_no = 0
        while True:
            round_no += 1
            for kind in plan:
                if deadline is not None and time.monotonic() > deadline and round_no > 1:
                    return
                self.phase = f"{len(self.kills) + 1} {kind}"
                log.info("kill %s", self.phase)
                kill = await killers[kind]()
                self.kills.append(kill)
                log.info("  %s: %s, recovered %s in %.1f s", kill.target, kill.detail,
                         kill.recovered, kill.recovery_s)
                if not await self._completed_since(COMPLETIONS_AFTER_KILL, 120):
                    kill.detail += "; calls did not complete again afterwards"
                    kill.recovered = False
            if deadline is None or time.monotonic() > deadline:
                return

    # -- the whole run ---------------------------------------------------------------------

    async def run(self, plan: list[str], seconds: float | None) -> None:
        await self.observer.connect()
        def hub_of(i: int) -> str:  # with two hubs, the last agent works on hub B
            last = i == AGENTS - 1 and self.other is not None
            return self.other.http_url if last and self.other else self.srv.http_url
        agents = [TestAgent(hub_of(i), f"agent{i}", PASSWORD,
                            source=self.agent_source, codecs=("pcmu",))
                  for i in range(AGENTS)]
        for agent in agents:
            await agent.connect()
        agent_tasks = [asyncio.create_task(self.agent_loop(a)) for a in agents]
        callers = [asyncio.create_task(self.caller_loop(i)) for i in range(CALLERS)]
        try:
            deadline = None if seconds is None else time.monotonic() + seconds
            await self.chaos(plan, deadline)
        finally:
            self.stopping = True
            await asyncio.gather(*callers, return_exceptions=True)
            self.agents_done = True
            await asyncio.gather(*agent_tasks, return_exceptions=True)
            for agent in agents:
                await agent.close()
            await self.observer.close()
        for r in self.runs:
            told = self.agent_ends.get(r.call_id, {})
            r.agent_by = f"{told.get('reason', '')}/{told.get('by', '')}" if told else ""
        log.info("calls over; waiting for alive5 to have every end")
        threads = {r.thread_id for r in self.runs if r.thread_id}

        async def all_delivered() -> bool:
            delivered = self.a5.threads  # read from the stand-in's journal
            ended = all(t in delivered and delivered[t].ended for t in threads)
            return ended and await self.metric("hitl_sip_alive5_backlog") == 0
        if not await self.until(all_delivered, 60, interval=0.25):
            log.warning("some threads were not delivered in 60 s")


# -- the comparison ------------------------------------------------------------------------


SENDERS = {"caller": "person", "bot": "voice_agent", "agent": "human_agent"}


#: how long before a hub's SIGKILL a message may have reached alive5 and still be in flight
#: (its acknowledgement not yet stored): the ack comes back and is stored within
#: milliseconds on a live hub
IN_FLIGHT = 1.0
#: how long after the SIGKILL the stand-in may read what the killed hub wrote just before
#: it (the bytes were in the socket; a loaded stand-in reads them late)
RECEIPT_LAG = 0.5


def over_a_kill(first: float, again: float, kills: list[float]) -> bool:
    """A second copy that is the restarted hub's resend of one in flight at a SIGKILL:
    the first copy arrived at most IN_FLIGHT before the kill (or RECEIPT_LAG after it),
    the second after it."""
    return any(-RECEIPT_LAG <= k - first <= IN_FLIGHT and k <= again for k in kills)


def compare(db: Path, a5: Alive5Process,
            kills_at: Sequence[float] = ()) -> list[ThreadCheck]:
    """Every thread of the hub's local store against the stand-in's (read after the hub
    stopped). ``kills_at``: when the hub or the stand-in was SIGKILLed (time.monotonic()):
    what alive5 took just before such a kill may come again after it (at-least-once)."""
    kills = list(kills_at)
    stand_in = a5.threads
    con = sqlite3.connect(str(db))
    try:
        turns: dict[str, list[tuple[str, str, str]]] = {}
        for thread_id, key, role, text in con.execute(
                "SELECT thread_id, key, role, text FROM turns ORDER BY id"):
            turns.setdefault(str(thread_id), []).append((str(key), str(role), str(text)))
        ends = {str(t): (str(by), bool(d)) for t, by, d in con.execute(
            "SELECT thread_id, end_by, delivered FROM thread_ends")}
    finally:
        con.close()
    checks = []
    for thread_id in sorted(set(turns) | set(ends) | set(stand_in)):
        local = turns.get(thread_id, [])
        remote = stand_in.get(thread_id)
        messages = remote.messages if remote else []
        remote_keys = [str(m.get("message_key")) for m in messages]
        local_keys = [k for k, _, _ in local]
        lost = [k for k in local_keys if k not in set(remote_keys)]
        unexpected = [k for k in remote_keys if k not in set(local_keys)]
        delivered = [k for k in remote_keys if k in set(local_keys)]
        by_key = {m.get("message_key"): m for m in messages}
        wrong = [k for k, role, text in local if k in by_key and (
            by_key[k].get("message_content") != text
            or by_key[k].get("sender") != SENDERS.get(role, role))]
        in_order = delivered == [k for k in local_keys if k in set(remote_keys)] and not wrong
        first_at = {m.get("message_key"): m.get("_received", 0.0) for m in messages}
        posts_resent = sum(
            over_a_kill(first_at.get(key, 0.0), at, kills)
            for key, at in zip(remote.resent, remote.resent_at, strict=True)) if remote else 0
        ended = remote.ended if remote else []
        ended = ended[:1] + [e for e in ended[1:]  # an end resent over a kill counts once
                             if not over_a_kill(ended[0]["_received"], e["_received"], kills)]
        ends_resent = (len(remote.ended) if remote else 0) - len(ended)
        duplicated = ((remote.duplicates if remote else 0) - posts_resent
                      + max(0, len(ended) - 1))
        first_bad = ""
        if lost:
            k = lost[0]
            role, text = next((r, t) for kk, r, t in local if kk == k)
            first_bad = f"lost {k} ({role}: {text!r})"
        elif not in_order:
            first_bad = f"order: local {local_keys} vs alive5 {remote_keys}; wrong {wrong}"
        local_end = ends.get(thread_id)
        checks.append(ThreadCheck(
            thread_id=thread_id, expected=len(local), delivered=len(set(delivered)),
            duplicated=duplicated, lost=len(lost), unexpected=len(unexpected),
            in_order=in_order, ends=len(ended),
            end_by=str(ended[0].get("end_by")) if ended else "",
            end_text=str(ended[0].get("message_content")) if ended else "",
            local_end=(f"{local_end[0]}, {'acknowledged' if local_end[1] else 'NOT acknowledged'}"
                       if local_end else ""),
            first_bad=first_bad, roles={r: sum(1 for _, rr, _ in local if rr == r)
                                        for r in SENDERS},
            resent_over_kill=posts_resent + ends_resent))
    return checks


# -- the report ----------------------------------------------------------------------------


def summarize(runs: list[CallRun], kills: list[Kill], checks: list[ThreadCheck],
              refused: list[dict[str, str]],
              caught_by_hub_kill: list[dict[str, str]] | None = None) -> dict[str, Any]:
    by_thread = {c.thread_id: c for c in checks}
    for r in runs:
        check = by_thread.get(r.thread_id)
        if r.with_hub and check and check.end_text in NORMAL_ENDS and check.ends == 1:
            # it ended by itself in the instant before the kill: the hub stored the end
            # but died before telling the observer; it is held to the normal standard
            r.outcome, r.note = "completed", r.note or "ended just before the hub was killed"
    killed_workers = {k.target.split()[0] for k in kills if k.kind == "worker"} | {"hub"}
    on_killed = {cid for k in kills if k.kind in ("worker", "hub")
                 for cid in k.calls_on_target}
    phases = ["warm-up", *[k.phase for k in kills]]
    rows = []
    for phase in [*phases, "total"]:
        mine = [r for r in runs if phase in ("total", r.phase)]
        lost_calls = [r for r in mine if r.outcome in LOST_OUTCOMES]
        kept = [by_thread[r.thread_id] for r in mine
                if r.outcome not in LOST_OUTCOMES and r.thread_id in by_thread]
        lost_checks = [by_thread[r.thread_id] for r in lost_calls if r.thread_id in by_thread]
        rows.append({
            "phase": phase, "calls": len(mine),
            "completed": sum(r.completed for r in mine),
            "refused": sum(1 for x in refused if phase in ("total", x["phase"])),
            "lost_with_worker": [f"{r.call_id} ({r.worker_id or '?'})" for r in lost_calls],
            "turns_expected": sum(c.expected for c in kept),
            "turns_delivered": sum(c.delivered for c in kept),
            "turns_duplicated": sum(c.duplicated for c in kept),
            "resent_over_kill": sum(c.resent_over_kill for c in [*kept, *lost_checks]),
            "turns_lost": sum(c.lost for c in kept),
            "threads_unequal": sum(not c.equal for c in kept),
            "lost_calls_turns": [sum(c.expected for c in lost_checks),
                                 sum(c.delivered for c in lost_checks),
                                 sum(c.duplicated for c in lost_checks),
                                 sum(c.lost for c in lost_checks)],
        })
    problems = []
    notes = [f"{r.tag} {r.call_id or ''} ({r.phase}): {r.note}" for r in runs if r.note]
    for r in runs:
        check = by_thread.get(r.thread_id)
        if not r.thread_id:
            continue
        if check is None:
            problems.append(f"{r.tag} {r.call_id}: thread {r.thread_id} in neither store")
            continue
        if r.outcome in LOST_OUTCOMES:
            if not (r.worker_id in killed_workers or r.call_id in on_killed):
                problems.append(f"{r.call_id} ended {r.outcome} but was on "
                                f"{r.worker_id or '?'}, not a killed worker or hub")
            if r.agent_by not in ("", f"{r.outcome}/system"):
                problems.append(f"{r.call_id} (lost with its worker): its agent was told "
                                f"{r.agent_by}, not {r.outcome}/system")
            # a hub's successor ends what no worker reported (hub_restart)
            ends = ((f"call ended ({LOST})",) if r.outcome == LOST else
                    (f"call ended ({HUB_LOST})", "call ended (hub_restart)"))
            if check.lost or check.duplicated or not check.in_order:
                problems.append(f"{r.call_id} (lost with its {r.worker_id}): thread "
                                f"{r.thread_id} lost {check.lost} duplicated "
                                f"{check.duplicated} {check.first_bad}")
            if (check.ends != 1 or check.end_text not in ends
                    or check.end_by != "voice_agent"):
                problems.append(f"{r.call_id} (lost with its worker): thread {r.thread_id} "
                                f"ends {check.ends} times, {check.end_by} "
                                f"{check.end_text!r}")
        elif not check.equal:
            problems.append(f"{r.call_id} ({r.phase}): thread {r.thread_id} expected "
                            f"{check.expected} delivered {check.delivered} duplicated "
                            f"{check.duplicated} lost {check.lost} unexpected "
                            f"{check.unexpected} ends {check.ends} {check.first_bad}")
    for k in kills:  # what a speech kill cost: the utterance being decoded
        if k.kind == "speech":
            turns = [by_thread[r.thread_id].roles.get("agent", 0) for r in runs
                     if r.call_id in k.calls_on_target and r.thread_id in by_thread]
            k.detail += f"; agent turns of those calls: {turns}"
    if refused:
        problems.append(f"{len(refused)} INVITEs refused while a worker had room: " + "; ".join(
            f"{x['phase']} {x['tag']}: {x['why']}" for x in refused))
    for k in kills:
        if not k.recovered:
            problems.append(f"kill {k.phase} ({k.target}) did not recover: {k.detail}")
    roles = {r: sum(c.roles.get(r, 0) for c in checks) for r in SENDERS}
    return {
        "rows": rows, "roles": roles, "problems": problems, "notes": notes,
        "refused": refused,
        "caught_by_hub_kill": caught_by_hub_kill or [],
        "kills": [asdict(k) for k in kills],
        "calls": [{**asdict(r), "completed": r.completed} for r in runs],
        "threads": [{**asdict(c), "equal": c.equal} for c in checks],
    }


def print_report(result: dict[str, Any], seconds: float) -> None:
    print("chaos soak: 3 callers cycling (bot, handoff, a talking agent, hang-up), "
          "2 workers behind Kamailio, the alive5 stand-in")
    print(f"  date     {result['date']}")
    print(f"  machine  {result['machine']}")
    print(f"  run      {seconds:.0f} s, {len(result['kills'])} kills, "
          f"{len(result['refused'])} INVITEs not answered (retried)")
    print()
    print("kill                         recovery  target / what happened")
    for k in result["kills"]:
        state = f"{k['recovery_s']:5.1f} s" if k["recovered"] else "  NOT   "
        print(f"  {k['phase']:<26} {state}  {k['target']}: {k['detail']}")
    print()
    print("calls that ended during each kill (until the next), and their threads "
          "(hub local → alive5 stand-in)")
    print("phase                 INVITEs refused  calls  completed  lost with worker   "
          "turns: expected delivered duplicated lost  unequal threads")
    for row in result["rows"]:
        lost = len(row["lost_with_worker"])
        print(f"  {row['phase']:<20} {row['refused']:15}  {row['calls']:5}  {row['completed']:9}"
              f"  {lost:16}   "
              f"{row['turns_expected']:15} {row['turns_delivered']:9} "
              f"{row['turns_duplicated']:10} {row['turns_lost']:4}  "
              f"{row['threads_unequal']:15}")
    print("  turns by role (every thread): " + ", ".join(
        f"{role} {n}" for role, n in result["roles"].items()))
    total = result["rows"][-1]
    if total["lost_with_worker"]:
        e, d, dup, lost = total["lost_calls_turns"]
        print("calls lost with their killed worker or hub: "
              f"{', '.join(total['lost_with_worker'])}")
        print(f"  their threads: turns expected {e} delivered {d} duplicated {dup} lost {lost}"
              f" (each ended in alive5 once by the voice agent: 'call ended ({LOST})', or "
              f"'({HUB_LOST})' / '(hub_restart)' for a killed hub)")
    if total["resent_over_kill"]:
        print(f"sent again by the restarted hub, in flight when the hub was killed (alive5 "
              f"had it, its ack was not stored yet): {total['resent_over_kill']}")
    if result["caught_by_hub_kill"]:
        print("INVITEs in flight when the hub was killed (the old front's 100, then no final "
              "answer: the front died with the hub; a carrier fails over, the caller tried "
              "again): " + ", ".join(f"{x['tag']} ({x['phase']})"
                                     for x in result["caught_by_hub_kill"]))
    reasons = Counter(f"{x['phase']}: {x['why']}" for x in result["refused"])
    if reasons:
        print("INVITEs not answered (the caller tried again):")
        for why, n in reasons.items():
            print(f"  {n} × {why}")
    if result["notes"]:
        print("calls that did not run the whole scenario:")
        for n in result["notes"]:
            print(f"  {n}")
    print()
    if result["problems"]:
        print("PROBLEMS")
        for p in result["problems"]:
            print(f"  {p}")
    else:
        print("every thread not lost with a killed worker equals the hub's local thread "
              "(every turn once, in order, one end)")


def _agent_voice(path: Path) -> Source:
    """The agents' microphone: a 3 s sentence between pauses, looped (an utterance ends
    within each call's talk), or a tone when Debian's pocketsphinx-testdata is missing."""
    if not AGENT_CLIP.is_file():
        return tone(440)
    with wave.open(str(AGENT_CLIP), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(int(0.3 * rate) * 2) + pcm + bytes(int(1.5 * rate) * 2))
    return wav_source(path)


def soak(plan: list[str], seconds: float | None, keep: Path | None = None) -> dict[str, Any]:
    """Run the soak; ``keep``: the server's directory (config, data, server.log) is kept
    there instead of a temporary one."""
    install_host_filter(["127.0.0.1"])
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if keep is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hitl-chaos-")))
        else:
            home = keep
            home.mkdir(parents=True)  # a new directory: old threads would be compared too
        a5 = stack.enter_context(Alive5Process(home / "alive5.journal"))
        agent_source = _agent_voice(home / "agent.wav")
        flow = home / "chaos.yaml"
        flow.write_text(FLOW)
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(flow)},
            "api": {"keys": [API_KEY]},
            "routing": {"queue_timeout": 60},
            "webrtc": {"host_addresses": ["127.0.0.1"]},
            "front": {"mode": "kamailio", "probe_interval": 1},
            "alive5": {"url": a5.url, "api_key": ALIVE5_KEY, "ack_timeout": 3,
                       "max_backoff": 2},
        }
        redis = other = None
        if "redis" in plan:  # two hubs on one Redis: A takes the calls, B has an agent
            redis = RedisServer()
            redis.start()
            stack.callback(redis.stop)
            extra["cluster"] = {"redis_url": redis.url, "hub_id": "A",
                                "secret": CLUSTER_SECRET}
            (home / "B").mkdir()
            other = stack.enter_context(running_server(home / "B", extra={
                "bot": {"flow": str(flow)}, "api": {"keys": [API_KEY]},
                "routing": {"queue_timeout": 60},
                "webrtc": {"host_addresses": ["127.0.0.1"]},
                "cluster": {"redis_url": redis.url, "hub_id": "B",
                            "secret": CLUSTER_SECRET}}))
            for i in range(AGENTS):
                add_agent(other.data_dir, f"agent{i}")
        with running_server(home, workers=2, sip={"port": free_port()}, extra=extra) as srv:
            for i in range(AGENTS):
                add_agent(srv.data_dir, f"agent{i}")
            srv.wait_for(lambda: srv.health()[1].get("front", {}).get("running"), 10,
                         what="the SIP front running")
            front_port = int(srv.health()[1]["front"]["sip"]["udp"].rsplit(":", 1)[1])
            run = Soak(srv, a5, front_port, agent_source, other=other, redis=redis)
            try:
                asyncio.run(run.run(plan, seconds))
            finally:
                srv.stop()
        checks = compare(srv.data_dir / "threads.sqlite", a5,
                         [k.at for k in run.kills if k.kind in ("hub", "alive5")])
    result = summarize(run.runs, run.kills, checks, run.refused, run.caught_by_hub_kill)
    result["date"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result["machine"] = (f"{psutil.cpu_count()} cores, {platform.system()} "
                         f"{platform.release()}, Python {platform.python_version()}")
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="each kill once (about 2 minutes)")
    p.add_argument("--seconds", type=float, default=300.0,
                   help="repeat the round of kills this long (ignored with --short)")
    p.add_argument("--kills", nargs="+", choices=KILLS, default=list(KILLS))
    p.add_argument("--keep", type=Path, help="keep the server's directory and log here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    result = soak(args.kills, None if args.short else args.seconds, args.keep)
    print_report(result, result["seconds"])
    if args.json:
        print(json.dumps(result))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
