"""The alive5 outbox against the stand-in: every stored turn reaches the thread exactly
once and in order — through an outage at the start, a restart of alive5 mid-call and a
restart of the hub (a new outbox over the same store, CRM data and end included); through
alive5 handlers that fail, drop the connection or never acknowledge; through SQLite errors
and a sender killed by an unexpected one (its supervisor restarts it); and for a thread
nobody woke (the sweep finds it)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.hub.alive5 import Alive5Error, Alive5Profile, Outbox, ThreadLink
from hitl_sip.hub.threads import ThreadStore, Turn
from hitl_sip.metrics import Registry
from hitl_sip.supervise import restart_counter
from tests.support.alive5 import API_KEY, Alive5StandIn


def turn(n: int, role: str = "caller", thread: str = "t-1") -> Turn:
    return Turn(thread_id=thread, call_id="c1", key=f"c1:{n}", role=role, text=f"turn {n}",
                at=f"2026-11-24T00:00:{n:02d}Z", delivery="pending")


def profile(a5: Alive5StandIn) -> Alive5Profile:
    return Alive5Profile(url=a5.url, api_key=API_KEY, ack_timeout=2.0)


def texts(a5: Alive5StandIn, thread: str = "t-1") -> list[str]:
    return [m["message_content"] for m in a5.threads[thread].messages]


async def settle(outbox: Outbox, store: ThreadStore, limit: float = 20) -> None:
    async with asyncio.timeout(limit):
        while await store.backlog() or await store.pending_threads():  # noqa: ASYNC110 - the store has no event
            await asyncio.sleep(0.05)


def test_turns_then_the_end_are_delivered_in_order_once(tmp_path: Path) -> None:
    with Alive5StandIn() as a5:
        async def run() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, profile(a5))
            await outbox.set_crm("t-1", "crm-1", [])
            for n, role in enumerate(["bot", "caller", "bot", "caller", "agent"], 1):
                await store.add(turn(n, role))
                outbox.notify("t-1")
            await store.add_end("t-1", "person", "the caller hung up")
            outbox.notify("t-1")
            await settle(outbox, store)
            await outbox.close()
            store.close()

        asyncio.run(run())
        thread = a5.threads["t-1"]
        assert texts(a5) == [f"turn {n}" for n in range(1, 6)]
        assert thread.duplicates == 0 and thread.crm_id == "crm-1"
        assert [e["end_by"] for e in thread.ended] == ["person"]


def test_alive5_down_at_the_start_then_restarting_mid_call_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    a5 = Alive5StandIn()  # not started: alive5 is down when the call begins

    async def run() -> None:
        store = ThreadStore(tmp_path / "threads.sqlite")
        outbox = Outbox(store, profile(a5), max_backoff=0.5)
        for n in range(1, 4):
            await store.add(turn(n))
            outbox.notify("t-1")
        await asyncio.sleep(1.0)
        assert await store.backlog() == 3 and outbox.failures >= 1
        await asyncio.to_thread(a5.start)  # back
        await settle(outbox, store)
        await asyncio.to_thread(a5.stop)  # restarts mid-call
        for n in range(4, 7):
            await store.add(turn(n))
            outbox.notify("t-1")
        await asyncio.sleep(0.5)
        await asyncio.to_thread(a5.start)
        await settle(outbox, store)
        await outbox.close()
        store.close()

    try:
        asyncio.run(run())
        assert texts(a5) == [f"turn {n}" for n in range(1, 7)]
        assert a5.threads["t-1"].duplicates == 0
    finally:
        a5.stop()


def test_a_restarted_hub_resumes_the_outbox_from_the_store(tmp_path: Path) -> None:
    with Alive5StandIn() as a5:
        async def before_crash() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            for n in range(1, 5):
                await store.add(turn(n))  # stored, never sent: the hub dies here
            await store.add_end("t-1", "human_agent")
            store.close()

        async def after_restart() -> int:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, profile(a5))
            resumed = await outbox.resume()
            await settle(outbox, store)
            await outbox.close()
            store.close()
            return resumed

        asyncio.run(before_crash())
        assert asyncio.run(after_restart()) == 1
        assert texts(a5) == [f"turn {n}" for n in range(1, 5)]
        assert a5.threads["t-1"].ended[0]["end_by"] == "human_agent"


# -- faults --------------------------------------------------------------------------------

CRM = [("phone", "+14155550100"), ("name", "Ann Caller")]


def fast(a5: Alive5StandIn) -> Alive5Profile:
    return Alive5Profile(url=a5.url, api_key=API_KEY, ack_timeout=1.0)


async def one_call(store: ThreadStore, outbox: Outbox, thread: str = "t-1", turns: int = 3,
                   crm: list[tuple[str, Any]] | None = None) -> None:
    """A call's worth of outbox: its CRM data, its turns, its end — each stored, then woken."""
    await outbox.set_crm(thread, f"crm-{thread}", CRM if crm is None else crm)
    for n in range(1, turns + 1):
        await store.add(Turn(thread_id=thread, call_id=f"c-{thread}", key=f"c-{thread}:{n}",
                             role="bot" if n % 2 else "caller", text=f"turn {n}", at="x",
                             delivery="pending"))
        outbox.notify(thread)
    await store.add_end(thread, "person", "the caller hung up")
    outbox.notify(thread)


def complete(a5: Alive5StandIn, thread: str = "t-1", turns: int = 3) -> None:
    got = a5.threads[thread]
    assert texts(a5, thread) == [f"turn {n}" for n in range(1, turns + 1)]
    assert [e["end_by"] for e in got.ended] == ["person"] and got.end_acks == 1


class FlakyStore(ThreadStore):
    """The thread store, with planned failures: the next calls of a method raise."""

    def __init__(self, path: Path, **faults: list[BaseException]) -> None:
        super().__init__(path)
        self.faults = faults

    def _fault(self, method: str) -> None:
        planned = self.faults.get(method)
        if planned:
            raise planned.pop(0)

    async def pending(self, thread_id: str) -> list[Turn]:
        self._fault("pending")
        return await super().pending(thread_id)

    async def mark_delivered(self, key: str, message_id: str) -> None:
        self._fault("mark_delivered")
        await super().mark_delivered(key, message_id)


def test_an_emit_on_a_dropped_connection_is_an_alive5_error() -> None:
    with Alive5StandIn() as a5:
        async def run() -> None:
            link = ThreadLink(fast(a5), "t-1", "crm-1")
            await link.open()
            await link.sio.disconnect()  # the connection is gone under the sender
            for send in (link.save_crm("phone", "+14155550100"), link.end("person"),
                         link.post("bot", "hello", "c1:1")):
                with pytest.raises(Alive5Error, match="not sent"):
                    await send

        asyncio.run(run())


def test_a_crm_handler_failing_once_and_an_end_dropping_the_connection_once_lose_nothing(
    tmp_path: Path,
) -> None:
    with Alive5StandIn() as a5:
        a5.fail_next("save_crm_data", "raise")  # no ack: the sender times out
        a5.fail_next("end_voice_chat", "disconnect")  # the sender sees the link drop

        async def run() -> int:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, fast(a5), max_backoff=0.5)
            await one_call(store, outbox)
            await settle(outbox, store)
            end = await store.end_state("t-1")
            await outbox.close()
            store.close()
            assert end is not None and end["delivered"] and end["attempts"] == 2
            return outbox.failures

        assert asyncio.run(run()) == 2
        complete(a5)
        assert a5.threads["t-1"].duplicates == 0
        assert a5.threads["t-1"].crm == dict(CRM)


def test_an_unacknowledged_end_is_resent_and_stays_pending_until_acknowledged(
    tmp_path: Path,
) -> None:
    with Alive5StandIn() as a5:
        a5.unacked.add("end_voice_chat")  # stored by alive5, never acknowledged

        async def run() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, fast(a5), max_backoff=0.5, end_attempts=1000)
            await one_call(store, outbox)
            await asyncio.to_thread(a5.wait_for, lambda: len(a5.thread("t-1").ended) >= 2,
                                    what="the end sent again")
            end = await store.end_state("t-1")
            assert end is not None and not end["delivered"] and end["attempts"] >= 1
            assert "end_voice_chat_ack" in end["last_error"]
            assert await store.pending_threads() == ["t-1"] and await store.backlog() == 0
            a5.unacked.clear()  # alive5 acknowledges from now on
            await settle(outbox, store)
            end = await store.end_state("t-1")
            assert end is not None and end["delivered"]
            await outbox.close()
            store.close()

        asyncio.run(run())
        assert texts(a5) == ["turn 1", "turn 2", "turn 3"]
        assert a5.threads["t-1"].end_acks == 1 and len(a5.threads["t-1"].ended) >= 2


def test_an_end_never_acknowledged_on_a_live_connection_is_given_up_after_the_attempts(
    tmp_path: Path,
) -> None:
    """PROTOCOL.md §4 names no acknowledgement for end_voice_chat: a server that sends
    none (neither event nor Socket.IO ack) gets the end a bounded number of times."""
    with Alive5StandIn() as a5:
        a5.unacked.add("end_voice_chat")

        async def run() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, fast(a5), max_backoff=0.2, end_attempts=2)
            await one_call(store, outbox)
            await settle(outbox, store)
            end = await store.end_state("t-1")
            assert end is not None and end["delivered"]
            await outbox.close()
            store.close()

        asyncio.run(run())
        assert texts(a5) == ["turn 1", "turn 2", "turn 3"]
        assert len(a5.threads["t-1"].ended) == 2 and a5.threads["t-1"].end_acks == 0


def test_a_socketio_acknowledgement_of_the_end_is_enough(tmp_path: Path) -> None:
    with Alive5StandIn() as a5:

        async def run() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            never = dataclasses.replace(fast(a5), event_end_ack="an_event_nobody_sends")
            outbox = Outbox(store, never, max_backoff=0.2)
            await one_call(store, outbox)
            await settle(outbox, store)
            end = await store.end_state("t-1")
            assert end is not None and end["delivered"] and end["attempts"] == 1
            await outbox.close()
            store.close()

        asyncio.run(run())
        assert len(a5.threads["t-1"].ended) == 1, "sent once: the emit itself was acknowledged"


def test_a_thread_whose_crm_data_is_never_acknowledged_holds_up_no_other(
    tmp_path: Path,
) -> None:
    with Alive5StandIn() as a5:
        a5.unacked.add("save_crm_data")

        async def run() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, fast(a5), max_backoff=0.5)
            await one_call(store, outbox, "t-stuck")
            await one_call(store, outbox, "t-free", crm=[])  # no CRM data to save
            await asyncio.to_thread(a5.wait_for, lambda: a5.thread("t-free").end_acks == 1,
                                    what="the other thread delivered")
            assert await store.pending_threads() == ["t-stuck"]
            a5.unacked.clear()
            await settle(outbox, store)
            await outbox.close()
            store.close()

        asyncio.run(run())
        complete(a5, "t-free")
        complete(a5, "t-stuck")


def test_a_restarted_hub_sends_the_stored_crm_data_and_the_pending_end(
    tmp_path: Path,
) -> None:
    a5 = Alive5StandIn()  # down for the whole first run

    async def first_run() -> None:
        store = ThreadStore(tmp_path / "threads.sqlite")
        outbox = Outbox(store, fast(a5), max_backoff=0.5)
        await outbox.start()
        await one_call(store, outbox)
        async with asyncio.timeout(10):
            while not outbox.failures:  # noqa: ASYNC110 - the outbox has no event for it
                await asyncio.sleep(0.05)
        await outbox.close()  # the hub stops with everything undelivered
        store.close()

    async def second_run() -> int:
        store = ThreadStore(tmp_path / "threads.sqlite")
        outbox = Outbox(store, fast(a5))
        resumed = await outbox.start()
        await settle(outbox, store)
        await outbox.close()
        store.close()
        return resumed

    try:
        asyncio.run(first_run())
        a5.start()
        assert asyncio.run(second_run()) == 1
        complete(a5)
        thread = a5.threads["t-1"]
        assert thread.crm_id == "crm-t-1" and thread.crm == dict(CRM)
    finally:
        a5.stop()


def test_a_store_from_before_crm_data_and_end_acks_opens_and_delivers(tmp_path: Path) -> None:
    path = tmp_path / "threads.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE turns (id INTEGER PRIMARY KEY AUTOINCREMENT, thread_id TEXT NOT NULL,
            call_id TEXT NOT NULL, key TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
            text TEXT NOT NULL, at TEXT NOT NULL, delivery TEXT NOT NULL DEFAULT 'local');
        CREATE TABLE thread_ends (thread_id TEXT PRIMARY KEY, end_by TEXT NOT NULL,
            text TEXT NOT NULL DEFAULT '', delivered INTEGER NOT NULL DEFAULT 0);
        INSERT INTO turns (thread_id, call_id, key, role, text, at, delivery)
            VALUES ('t-1', 'c1', 'c1:1', 'bot', 'turn 1', 'x', 'pending');
        INSERT INTO thread_ends (thread_id, end_by) VALUES ('t-1', 'person');
    """)
    db.close()
    with Alive5StandIn() as a5:
        async def run() -> None:
            store = ThreadStore(path)
            outbox = Outbox(store, fast(a5))
            assert await outbox.start() == 1
            await settle(outbox, store)
            end = await store.end_state("t-1")
            assert end is not None and end["delivered"]
            await outbox.close()
            store.close()

        asyncio.run(run())
        complete(a5, turns=1)
        assert a5.threads["t-1"].crm_id == "" and a5.threads["t-1"].crm == {}


def test_a_sender_killed_by_an_unexpected_error_is_restarted_by_its_supervisor(
    tmp_path: Path,
) -> None:
    with Alive5StandIn() as a5:
        async def run() -> float:
            store = FlakyStore(tmp_path / "threads.sqlite",
                               pending=[RuntimeError("a bug in the sender")])
            restarts = restart_counter(Registry())
            outbox = Outbox(store, fast(a5), max_backoff=0.5, restarts=restarts)
            await one_call(store, outbox)
            await settle(outbox, store)
            await outbox.close()
            store.close()
            return restarts.get(task="alive5_thread")

        assert asyncio.run(run()) == 1
        complete(a5)
        assert a5.threads["t-1"].duplicates == 0


def test_sqlite_errors_are_retried_by_the_sender_not_fatal(tmp_path: Path) -> None:
    with Alive5StandIn() as a5:
        async def run() -> tuple[float, int]:
            store = FlakyStore(
                tmp_path / "threads.sqlite",
                pending=[sqlite3.OperationalError("database is locked")],
                mark_delivered=[sqlite3.OperationalError("disk I/O error")])
            restarts = restart_counter(Registry())
            outbox = Outbox(store, fast(a5), max_backoff=0.5, restarts=restarts)
            await one_call(store, outbox)
            await settle(outbox, store)
            await outbox.close()
            store.close()
            return restarts.get(task="alive5_thread"), outbox.failures

        restarts, failures = asyncio.run(run())
        assert restarts == 0 and failures == 2
        complete(a5)
        # the turn whose delivery could not be recorded went again: known by its key
        assert a5.threads["t-1"].duplicates == 1


def test_the_sweep_starts_a_sender_for_a_thread_nobody_woke(tmp_path: Path) -> None:
    with Alive5StandIn() as a5:
        async def run() -> None:
            store = ThreadStore(tmp_path / "threads.sqlite")
            outbox = Outbox(store, fast(a5), sweep_interval=0.1)
            assert await outbox.start() == 0  # nothing to resume
            for n in range(1, 4):
                await store.add(turn(n, thread="t-quiet"))  # stored, never notified
            await store.add_end("t-quiet", "person")
            await settle(outbox, store)
            await outbox.close()
            store.close()

        asyncio.run(run())
        complete(a5, "t-quiet")
