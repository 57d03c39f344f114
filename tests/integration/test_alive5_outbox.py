"""The alive5 outbox against the stand-in: every stored turn reaches the thread exactly
once and in order — through an outage at the start, a restart of alive5 mid-call and a
restart of the hub (a new outbox over the same store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hitl_sip.hub.alive5 import Alive5Profile, Outbox
from hitl_sip.hub.threads import ThreadStore, Turn
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
            outbox = Outbox(store, profile(a5), crm_id=lambda t: "crm-1")
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
