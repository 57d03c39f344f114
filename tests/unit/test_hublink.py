"""The worker's hub link against a real websocket server on 127.0.0.1 that plays the hub:
nothing reliable is lost while the hub is away or dies mid-stream, status is coalesced,
and an outage longer than memory holds spills to a private file and still delivers all."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from hitl_sip.protocol.worker import Hello, Interim, Role, Say, Status, TurnMsg
from hitl_sip.worker.hublink import HubLink


class FakeHub:
    """Receives messages; acknowledges reliable ones unless told to stop; can drop the
    connection after ``drop_after`` messages (a hub that dies before applying them)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.hellos = 0
        self.ack = True
        self.drop_after: int | None = None
        self.changed = asyncio.Condition()
        self.sockets: list[web.WebSocketResponse] = []

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            async with self.changed:
                if data["type"] == "hello":
                    self.hellos += 1
                else:
                    self.received.append(data)
                self.changed.notify_all()
            if self.drop_after is not None and len(self.received) >= self.drop_after:
                self.drop_after = None
                await ws.close()
                break
            if self.ack and data.get("linkSeq"):
                await ws.send_str(json.dumps({"type": "ack", "linkSeq": data["linkSeq"]}))
        return ws

    async def wait(self, predicate: Any, limit: float = 10.0) -> None:
        async with asyncio.timeout(limit), self.changed:
            await self.changed.wait_for(predicate)

    def turns(self) -> list[int]:
        return [m["seq"] for m in self.received if m["type"] == "turn"]


def hello() -> Hello:
    return Hello(worker_id="w1", pid=1)


def turn(seq: int) -> TurnMsg:
    return TurnMsg(call_id="c1", thread_id="t1", role=Role.CALLER, text=f"words {seq}",
                   at="2026-12-04T20:00:00Z", seq=seq)


@pytest.fixture
async def hub() -> AsyncIterator[tuple[FakeHub, TestServer]]:
    fake = FakeHub()
    app = web.Application()
    app.router.add_get("/internal/worker", fake.handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, server
    await server.close()


def url(server: TestServer) -> str:
    return str(server.make_url("/internal/worker")).replace("http", "ws", 1)


async def test_events_queued_while_the_hub_is_away_arrive_in_order_after_it_comes(
    hub: tuple[FakeHub, TestServer],
) -> None:
    fake, server = hub
    link = HubLink(url(server), "t", hello)
    for seq in range(1, 51):
        link.send(turn(seq))
    link.start()
    await fake.wait(lambda: len(fake.turns()) == 50)
    assert fake.turns() == list(range(1, 51))
    assert [m["linkSeq"] for m in fake.received] == list(range(1, 51))
    async with asyncio.timeout(10):
        await link.wait_acknowledged()
    await link.close()


async def test_events_the_hub_never_acknowledged_are_sent_again_after_a_reconnect(
    hub: tuple[FakeHub, TestServer],
) -> None:
    fake, server = hub
    fake.drop_after = 3  # the hub "dies" after receiving 3, acknowledging 2
    link = HubLink(url(server), "t", hello)
    link.start()
    for seq in range(1, 6):
        link.send(turn(seq))
    await fake.wait(lambda: fake.hellos == 2 and set(fake.turns()) == {1, 2, 3, 4, 5})
    async with asyncio.timeout(10):
        await link.wait_acknowledged()
    turns = fake.turns()
    assert turns[:3] == [1, 2, 3]
    assert turns[3:] == [3, 4, 5], "the unacknowledged one again, then the rest, in order"
    await link.close()


async def test_status_is_coalesced_and_interims_are_best_effort(
    hub: tuple[FakeHub, TestServer],
) -> None:
    fake, server = hub
    link = HubLink(url(server), "t", hello, volatile_limit=3)
    for n in range(100):
        link.send(Status(active_calls=n))
    for n in range(1, 6):
        link.send(Interim(call_id="c1", thread_id="t1", role=Role.AGENT, text=str(n), at="x",
                          seq=n))
    link.send(turn(1))
    link.start()
    await fake.wait(lambda: fake.turns() == [1])
    statuses = [m for m in fake.received if m["type"] == "status"]
    assert [s["activeCalls"] for s in statuses] == [99], "only the latest status"
    assert [m["text"] for m in fake.received if m["type"] == "interim"] == ["3", "4", "5"]
    assert link.dropped == 2
    await link.close()


async def test_a_long_outage_spills_to_a_private_file_and_delivers_everything(
    hub: tuple[FakeHub, TestServer], tmp_path: Path,
) -> None:
    fake, server = hub
    spill = tmp_path / "worker-w1.pending"
    link = HubLink(url(server), "t", hello, spill_path=spill, memory_limit=20)
    for seq in range(1, 201):
        link.send(turn(seq))
    assert len(link.pending) == 20 and link.unacknowledged == 200
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600
    assert "words 200" in spill.read_text()
    link.start()
    await fake.wait(lambda: len(fake.turns()) == 200)
    async with asyncio.timeout(10):
        await link.wait_acknowledged()
    assert fake.turns() == list(range(1, 201))
    assert not spill.exists(), "the spill file is removed once everything is acknowledged"
    await link.close()


async def test_a_malformed_message_from_the_hub_is_counted_and_commands_still_arrive(
    hub: tuple[FakeHub, TestServer],
) -> None:
    fake, server = hub
    commands: list[Any] = []
    link = HubLink(url(server), "t", hello, commands.append)
    link.start()
    await fake.wait(lambda: fake.hellos == 1)
    ws = fake.sockets[-1]
    await ws.send_str("[" * 5000 + "]" * 5000)
    await ws.send_str(json.dumps({"type": "say", "callId": "c1"}))  # no text
    await ws.send_str(json.dumps({"type": "say", "callId": "c1", "text": "hi"}))
    link.send(turn(1))
    await fake.wait(lambda: fake.turns() == [1])
    async with asyncio.timeout(5):
        while not commands:  # noqa: ASYNC110 - the link exposes no event for commands
            await asyncio.sleep(0.01)
    assert commands == [Say(call_id="c1", text="hi")]
    assert link.bad_messages == 2
    await link.close()


async def test_what_the_hub_never_acknowledged_outlives_the_worker_process(
    hub: tuple[FakeHub, TestServer], tmp_path: Path,
) -> None:
    """The hub dies, the worker stops: the next worker process with the same id sends it."""
    fake, server = hub
    spill = tmp_path / "worker-w1.pending"
    fake.ack = False  # the hub receives, but dies before it acknowledges anything
    first = HubLink(url(server), "t", hello, spill_path=spill, memory_limit=3)
    assert await first.acquire()
    first.start()
    for seq in range(1, 6):  # 3 in memory, 2 spilled
        first.send(turn(seq))
    await fake.wait(lambda: len(fake.turns()) >= 3)
    # its successor starts while it is still writing: it waits for the old one's exit
    second = HubLink(url(server), "t", hello, spill_path=spill)
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(0.3)  # give the successor time to (wrongly) get the lock
    assert not waiting.done()
    await first.close(flush_timeout=0.2)
    assert await asyncio.wait_for(waiting, 5)
    assert stat.S_IMODE(spill.stat().st_mode) == 0o600
    assert [json.loads(line.split("\t", 1)[1])["seq"]
            for line in spill.read_text().splitlines()] == [1, 2, 3, 4, 5]

    fake.ack, fake.received = True, []
    second.start()
    second.send(turn(6))  # the new process's own events come after the carried ones
    await fake.wait(lambda: len(fake.turns()) == 6)
    async with asyncio.timeout(10):
        await second.wait_acknowledged()
    assert fake.turns() == [1, 2, 3, 4, 5, 6]
    seqs = [m["linkSeq"] for m in fake.received]
    assert seqs == sorted(seqs) and seqs[0] == 1, "resent under the new process's epoch"
    assert not spill.exists()
    await second.close()


async def test_an_unreadable_carried_over_line_is_dropped_and_the_rest_still_sent(
    hub: tuple[FakeHub, TestServer], tmp_path: Path,
) -> None:
    fake, server = hub
    spill = tmp_path / "worker-w1.pending"
    good = turn(7).model_dump_json(by_alias=True)
    spill.write_text(f"0\t{{not json\n0\t{good}\n0\t{json.dumps({'type': 'turn'})}\n")
    link = HubLink(url(server), "t", hello, spill_path=spill)
    link.start()
    await fake.wait(lambda: len(fake.turns()) == 1)
    assert fake.turns() == [7]
    await link.close()


class Restarts:
    """A restart counter (the RestartCounter protocol) that records the task kinds."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.kinds.append(labels["task"])

    def get(self, **labels: str) -> float:
        return float(self.kinds.count(labels["task"]))


async def test_a_crash_in_the_connection_loop_is_restarted_and_delivery_goes_on(
    hub: tuple[FakeHub, TestServer],
) -> None:
    fake, server = hub
    calls = 0

    def crashing_hello() -> Hello:  # an error the loop does not expect, on the first connect
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the hello")
        return hello()

    restarts = Restarts()
    link = HubLink(url(server), "t", crashing_hello, restarts=restarts,
                   restart_backoff=(0.01, 0.05))
    link.send(turn(1))
    link.start()
    await fake.wait(lambda: fake.turns() == [1])
    async with asyncio.timeout(10):
        await link.wait_acknowledged()
    assert calls == 2 and fake.hellos == 1
    assert restarts.kinds == ["hub_link"]
    await link.close()


async def test_the_status_reporter_is_supervised_too(hub: tuple[FakeHub, TestServer]) -> None:
    fake, server = hub
    reads = 0

    def status() -> Status:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise RuntimeError("a bug reading the metrics")
        return Status(active_calls=reads)

    restarts = Restarts()
    link = HubLink(url(server), "t", hello, restarts=restarts, restart_backoff=(0.01, 0.05))
    link.start(status, interval=0.01)
    await fake.wait(lambda: any(m["type"] == "status" for m in fake.received))
    assert restarts.kinds == ["hub_status"]
    assert min(m["activeCalls"] for m in fake.received if m["type"] == "status") >= 2
    await link.close()
