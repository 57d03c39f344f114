"""The hub process SIGKILLed with calls up, and started again by hand (as systemd would), on
a real server (two workers behind the Kamailio front) delivering to the alive5 stand-in:

* the workers learn of the hub's death (PR_SET_PDEATHSIG), end their calls at once
  (``hub_lost``, by the system) and keep what the dead hub never acknowledged; their
  successors send it to the new hub, so each thread ends in alive5 once, with every turn
  the hub stored, and the server takes calls again;
* when the workers die with the hub (nothing carried over), the new hub ends the threads its
  previous run left open itself after ``alive5.orphan_grace`` (``hub_restart``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator

import pytest

from tests.support.alive5 import API_KEY as ALIVE5_KEY
from tests.support.alive5 import Alive5StandIn
from tests.support.net import free_port
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

CALLS = 2


@pytest.fixture(scope="module")
def a5() -> Iterator[Alive5StandIn]:
    with Alive5StandIn() as stand_in:
        yield stand_in


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, a5: Alive5StandIn) -> Iterator[Server]:
    extra = {
        "alive5": {"url": a5.url, "api_key": ALIVE5_KEY, "ack_timeout": 3, "max_backoff": 2,
                   "orphan_grace": 3},
        "front": {"mode": "kamailio", "probe_interval": 1},
    }
    home = tmp_path_factory.mktemp("hub-restart")
    with running_server(home, workers=2, sip={"port": free_port()}, extra=extra) as server:
        yield server


def front_port(srv: Server) -> int:
    srv.wait_for(lambda: srv.health()[1].get("front", {}).get("running"), 15,
                 what="the SIP front running")
    return int(srv.health()[1]["front"]["sip"]["udp"].rsplit(":", 1)[1])


def local_turns(srv: Server, thread_id: str, delivery: str | None = None) -> list[str]:
    """The keys of the turns the hub stored for a thread (only those in ``delivery``)."""
    with sqlite3.connect(srv.data_dir / "threads.sqlite") as db:
        rows = db.execute("SELECT key FROM turns WHERE thread_id = ? AND delivery = "
                          "coalesce(?, delivery) ORDER BY id", (thread_id, delivery)).fetchall()
    return [str(r[0]) for r in rows]


def acknowledged(srv: Server, threads: set[str]) -> dict[str, set[str]]:
    """Wait for the hub to record alive5's ack of every turn so far; per thread, the keys
    recorded delivered. (A turn posted but not yet acknowledged when the hub dies is posted
    again with the same ``message_key``: at-least-once, by design.)"""
    srv.wait_for(lambda: all(not local_turns(srv, t, "pending") and
                             not local_turns(srv, t, "local") for t in threads),
                 15, what="the greetings acknowledged by alive5")
    return {t: set(local_turns(srv, t, "delivered")) for t in threads}


def calls_in_the_bot_phase(srv: Server, a5: Alive5StandIn) -> tuple[list[RtpCaller], set[str]]:
    """``CALLS`` calls up, each thread greeted in alive5; their thread ids."""
    before = set(a5.threads)
    port = front_port(srv)
    callers = []
    for _ in range(CALLS):
        caller = RtpCaller(port)
        caller.call(10)
        caller.start_media()
        callers.append(caller)
    a5.wait_for(lambda: len(set(a5.threads) - before) == CALLS
                and all(a5.threads[t].messages for t in set(a5.threads) - before),
                20, what="the greeting in each new thread")
    return callers, set(a5.threads) - before


def assert_ended_once_with_every_turn(srv: Server, a5: Alive5StandIn,
                                      delivered: dict[str, set[str]], text: str) -> None:
    threads = set(delivered)
    a5.wait_for(lambda: all(a5.threads[t].ended for t in threads), 40,
                what=f"every thread ended ({text})")
    for thread_id in threads:
        thread = a5.threads[thread_id]
        assert [e["message_content"] for e in thread.ended] == [text], thread
        # nothing acknowledged before the kill is sent again; at most what was in flight
        assert not set(thread.resent) & delivered[thread_id], thread
        assert len(thread.resent) <= 1, thread
        assert len(thread.messages) == len(local_turns(srv, thread_id)) > 0, thread


def kill_the_hub(srv: Server) -> None:
    srv.process.kill()
    srv.process.wait()


def test_calls_end_hub_lost_and_their_threads_once_after_a_hub_kill(
    srv: Server, a5: Alive5StandIn,
) -> None:
    callers, threads = calls_in_the_bot_phase(srv, a5)
    try:
        delivered = acknowledged(srv, threads)
        kill_the_hub(srv)
        srv.start_again(60)
        assert_ended_once_with_every_turn(srv, a5, delivered, "call ended (hub_lost)")
        assert "the hub process died: ending 1 live calls now" in srv.log_path.read_text()
        srv.wait_for(lambda: not list(srv.data_dir.glob("worker-*.pending")), 10,
                     what="the carried-over events all acknowledged")
        assert srv.metric("hitl_sip_alive5_backlog") == 0
    finally:
        for caller in callers:
            caller.close()
    # the restarted server takes calls again
    again, new = calls_in_the_bot_phase(srv, a5)
    for caller in again:
        caller.hangup()
        caller.close()
    a5.wait_for(lambda: all(a5.threads[t].ended for t in new), 20, what="the new calls ended")


def test_threads_whose_workers_died_with_the_hub_are_ended_by_its_successor(
    srv: Server, a5: Alive5StandIn,
) -> None:
    callers, threads = calls_in_the_bot_phase(srv, a5)
    try:
        delivered = acknowledged(srv, threads)
        workers = [int(w["pid"]) for w in srv.health()[1]["workers"]]
        for pid in workers:  # frozen: they will not see the hub die, nor keep anything
            os.kill(pid, signal.SIGSTOP)
        kill_the_hub(srv)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        srv.start_again(60)
        assert_ended_once_with_every_turn(srv, a5, delivered, "call ended (hub_restart)")
        assert "whose calls died with a previous run of the hub" in srv.log_path.read_text()
    finally:
        for caller in callers:
            caller.close()
