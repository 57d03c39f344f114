"""Two hubs sharing one Redis (Debian's redis-server on a loopback port), each with its own
media worker: an agent connected to hub B is rung for, accepts and talks to a call that
arrived through hub A's worker; when agents on both hubs accept at the same moment, exactly
one wins and the other is told ``already_answered``; Redis asks for a password and what is
published there unsealed or sealed with another secret changes nothing."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from hitl_sip.media.ice import install_host_filter
from hitl_sip.protocol.cluster import ClusterEvent, CommandRequest
from hitl_sip.protocol.seal import Seal
from hitl_sip.protocol.worker import CallStarted, Hangup
from hitl_sip.testing.agent import RECORD_RATE, TestAgent, tone
from hitl_sip.testing.analysis import dominant_frequency
from tests.integration.test_agents import PASSWORD, add_agent, login
from tests.integration.test_bridge import record_of, states
from tests.support.redis import CLUSTER_SECRET, RedisServer, redis_server
from tests.support.rtpcaller import RtpCaller
from tests.support.server import ROOT, Server, running_server

FLOW = ROOT / "bench/flows/bridge.yaml"  # straight to the agent node
API_KEY = "cluster-test-api-key-0123"


@contextmanager
def two_hubs(tmp_path: Path, redis: RedisServer | None = None,
             ) -> Iterator[tuple[Server, Server]]:
    """Hubs A and B, each with one worker, on ``redis`` (a new one when not given)."""
    install_host_filter(["127.0.0.1"])
    with ExitStack() as stack:
        if redis is None:
            redis = stack.enter_context(redis_server())
        url = redis.url
        hubs = []
        for name in ("A", "B"):
            home = tmp_path / name
            home.mkdir()
            extra: dict[str, dict[str, Any]] = {
                "cluster": {"redis_url": url, "hub_id": name, "secret": CLUSTER_SECRET},
                "bot": {"flow": str(FLOW)},
                "routing": {"queue_timeout": 60},
                "webrtc": {"host_addresses": ["127.0.0.1"], "codecs": ["pcmu"]},
                "api": {"keys": [API_KEY]},
            }
            hubs.append(stack.enter_context(running_server(home, extra=extra)))
        yield hubs[0], hubs[1]


def caller_tone(n: int) -> bytes:
    return b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * (n * 160 + i)
                                                          / 8000))) for i in range(160))


def test_an_agent_on_hub_b_takes_a_call_that_arrived_through_hub_a(tmp_path: Path) -> None:
    with two_hubs(tmp_path) as (hub_a, hub_b):
        add_agent(hub_b.data_dir, "bob")

        async def scenario() -> tuple[TestAgent, dict[str, Any]]:
            bob = TestAgent(hub_b.http_url, "bob", PASSWORD, source=tone(1000),
                            codecs=("pcmu",))
            await bob.connect()
            caller = RtpCaller(hub_a.sip_port())
            try:
                await asyncio.to_thread(caller.call)
                caller.start_media(caller_tone)
                offer = await bob.wait("incoming_call", limit=20)
                await bob.accept(str(offer["callId"]))
                await bob.wait("call_connected", limit=15)
                await asyncio.sleep(2.0)
                await asyncio.to_thread(caller.hangup)
                ended = await bob.wait("call_ended", limit=15)
                heard_by_caller = caller.received_pcm()
            finally:
                await bob.close()
                await asyncio.to_thread(caller.close)
            return bob, {"offer": offer, "ended": ended, "caller_pcm": heard_by_caller}

        bob, seen = asyncio.run(scenario())
        # hub A's worker owns the call; hub B only mirrors it
        assert "lost" not in hub_a.log()
        assert seen["ended"]["by"] == "caller"
        heard = bytes(bob.heard[int(0.5 * RECORD_RATE) * 2:])
        assert abs(dominant_frequency(heard, RECORD_RATE) - 440) < 10  # caller → agent
        last = seen["caller_pcm"][-2 * 8000 * 1:]
        assert abs(dominant_frequency(last, 8000) - 1000) < 15  # agent → caller
        record = record_of(hub_a)
        assert states(record) == ["bot", "queued", "human", "ended"]  # hub A's worker had it


def test_simultaneous_accepts_on_two_hubs_have_one_winner(tmp_path: Path) -> None:
    with two_hubs(tmp_path) as (hub_a, hub_b):
        add_agent(hub_a.data_dir, "alice")
        add_agent(hub_b.data_dir, "bob")

        async def scenario() -> list[dict[str, Any]]:
            alice = TestAgent(hub_a.http_url, "alice", PASSWORD, codecs=("pcmu",))
            bob = TestAgent(hub_b.http_url, "bob", PASSWORD, codecs=("pcmu",))
            await alice.connect()
            await bob.connect()
            caller = RtpCaller(hub_a.sip_port())
            try:
                await asyncio.to_thread(caller.call)
                caller.start_media(caller_tone)
                offers = await asyncio.gather(alice.wait("incoming_call", limit=20),
                                              bob.wait("incoming_call", limit=20))
                call_id = str(offers[0]["callId"])
                assert offers[1]["callId"] == call_id
                acks = await asyncio.gather(
                    alice.call("accept_call", {"callId": call_id}),
                    bob.call("accept_call", {"callId": call_id}))
                loser = bob if acks[0].get("ok") else alice
                cancelled = await loser.wait("call_cancelled", limit=10)
                assert cancelled == {"callId": call_id, "reason": "answered_elsewhere"}
                await asyncio.to_thread(caller.hangup)
            finally:
                await alice.close()
                await bob.close()
                await asyncio.to_thread(caller.close)
            return list(acks)

        acks = asyncio.run(scenario())
        assert sorted(bool(a.get("ok")) for a in acks) == [False, True], acks
        lost = next(a for a in acks if not a.get("ok"))
        assert lost["error"]["code"] == "already_answered"


def test_a_dead_hub_s_calls_stop_ringing_on_the_other_hub(tmp_path: Path) -> None:
    with two_hubs(tmp_path) as (hub_a, hub_b):
        add_agent(hub_b.data_dir, "bob")

        async def scenario() -> tuple[dict[str, Any], float]:
            bob = TestAgent(hub_b.http_url, "bob", PASSWORD, codecs=("pcmu",))
            await bob.connect()
            caller = RtpCaller(hub_a.sip_port())
            try:
                await asyncio.to_thread(caller.call)
                caller.start_media(caller_tone)
                offer = await bob.wait("incoming_call", limit=20)
                hub_a.process.kill()  # the hub that owns the call dies, no goodbye
                killed = time.monotonic()
                cancelled = await bob.wait("call_cancelled", limit=20)
                assert cancelled["callId"] == offer["callId"]
                waited = time.monotonic() - killed
                ack = await bob.call("accept_call", {"callId": offer["callId"]})
                assert not ack.get("ok"), ack
            finally:
                await bob.close()
                await asyncio.to_thread(caller.close)
            return offer, waited

        offer, waited = asyncio.run(scenario())
        assert waited < 12, waited  # the liveness mark's TTL (6 s) plus a heartbeat or two
        assert "hub A is gone: ending the 1 calls it owned" in hub_b.log()
        token = login(hub_b, "bob")[1]["token"]
        req = urllib.request.Request(hub_b.http_url + "/api/calls",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert offer["callId"] not in {c["callId"] for c in json.loads(r.read())["calls"]}


def test_the_hubs_find_each_other_again_when_redis_restarts_empty(tmp_path: Path) -> None:
    """redis-server SIGKILLed (everything in it lost): each hub's own agents are still
    rung for its calls meanwhile; once a new Redis is up on the same address, an agent on
    hub B is rung for hub A's calls again (both hubs subscribe again, and neither takes
    the other for dead because its liveness mark vanished with the data)."""
    with redis_server() as redis, two_hubs(tmp_path, redis) as (hub_a, hub_b):
        add_agent(hub_a.data_dir, "alice")
        add_agent(hub_b.data_dir, "bob")

        async def ring(agents: list[TestAgent], before: list[int],
                       accept: TestAgent | None = None) -> list[str]:
            """One call through hub A, hung up once each of ``agents`` was rung (and
            ``accept`` took it)."""
            caller = RtpCaller(hub_a.sip_port())
            try:
                await asyncio.to_thread(caller.call)
                caller.start_media(caller_tone)
                offers = await asyncio.gather(*(
                    a.wait("incoming_call", n + 1, limit=20) for a, n in zip(
                        agents, before, strict=True)))
                if accept is not None:
                    ack = await accept.call("accept_call", {"callId": offers[0]["callId"]})
                    assert ack == {"ok": True}, ack
                await asyncio.to_thread(caller.hangup)
            finally:
                await asyncio.to_thread(caller.close)
            return [str(o["callId"]) for o in offers]

        def rung(agent: TestAgent) -> int:
            return len(agent.events.get("incoming_call", []))

        async def scenario() -> None:
            alice = TestAgent(hub_a.http_url, "alice", PASSWORD, codecs=("pcmu",))
            bob = TestAgent(hub_b.http_url, "bob", PASSWORD, codecs=("pcmu",))
            await alice.connect()
            await bob.connect()
            try:
                await ring([alice, bob], [0, 0])
                await asyncio.to_thread(redis.kill)
                # hub A's own agent: still rung while Redis is down, and takes the call
                await ring([alice], [rung(alice)], accept=alice)
                await asyncio.to_thread(redis.start)
                await asyncio.to_thread(
                    hub_b.wait_for, lambda: "cluster: subscribed again" in hub_b.log(), 20,
                    "hub B subscribed again")
                await asyncio.to_thread(
                    hub_a.wait_for, lambda: "cluster: subscribed again" in hub_a.log(), 20,
                    "hub A subscribed again")
                ids = await ring([alice, bob], [rung(alice), rung(bob)])
                assert ids[0] == ids[1]
            finally:
                await alice.close()
                await bob.close()

        asyncio.run(scenario())
        assert "is gone: ending" not in hub_a.log() + hub_b.log()


REFUSED = "hitl_sip_hub_cluster_messages_refused_total"


def test_forged_redis_messages_change_nothing_and_are_counted(tmp_path: Path) -> None:
    """Someone who can write to Redis (here: with the password) publishes, unsealed or
    sealed with another secret, a ringing call for the agents' dashboards, a cluster event
    and a hang-up of a live call: nothing happens, and each hub counts what it dropped."""
    forger = Seal(b"\x01" * 32)  # the wrong secret
    redis = RedisServer()
    redis.start()
    try:
        with two_hubs(tmp_path, redis) as (hub_a, hub_b):
            add_agent(hub_b.data_dir, "bob")
            fake_ring = json.dumps({
                "method": "emit", "event": "incoming_call", "namespace": "/agent",
                "room": None, "skip_sid": None, "callback": None, "host_id": "forger",
                "data": {"callId": "forged", "threadId": "t", "caller": {
                    "number": "+18005550199", "name": "Your Bank Security"}}})
            fake_event = ClusterEvent(hub="A", worker_id="w1", message=CallStarted(
                call_id="forged2", thread_id="t2")).dumps()

            async def scenario() -> dict[str, Any]:
                bob = TestAgent(hub_b.http_url, "bob", PASSWORD, codecs=("pcmu",))
                await bob.connect()
                for body in (fake_ring, forger.seal(fake_ring)):
                    redis.cli("PUBLISH", "hitl-sip-socketio", body)
                for body in (fake_event, forger.seal(fake_event)):
                    redis.cli("PUBLISH", "hitl:events", body)
                caller = RtpCaller(hub_a.sip_port())
                try:
                    await asyncio.to_thread(caller.call)
                    caller.start_media(caller_tone)
                    offer = await bob.wait("incoming_call", limit=20)
                    call_id = str(offer["callId"])
                    before = await asyncio.to_thread(hub_a.metric, REFUSED)
                    hangup = CommandRequest(id="B:666", sender="B",
                                            command=Hangup(call_id=call_id, by="agent")).dumps()
                    for body in (hangup, forger.seal(hangup)):
                        redis.cli("PUBLISH", "hitl:hub:A", body)
                    await asyncio.to_thread(
                        hub_a.wait_for, lambda: hub_a.metric(REFUSED) >= before + 2, 10,
                        "hub A to drop the forged hang-ups")
                    live = [c["callId"] for c in await asyncio.to_thread(
                        lambda: calls_of(hub_a))]
                    await bob.accept(call_id)
                    await bob.wait("call_connected", limit=15)
                    await asyncio.to_thread(caller.hangup)
                    ended = await bob.wait("call_ended", limit=15)
                finally:
                    await bob.close()
                    await asyncio.to_thread(caller.close)
                return {"offers": bob.events["incoming_call"], "live": live, "ended": ended,
                        "call_id": call_id}

            seen = asyncio.run(scenario())
            counts = {name: {reason: hub.metric(REFUSED, reason=reason)
                             for reason in ("unsigned", "bad_signature")}
                      for name, hub in (("A", hub_a), ("B", hub_b))}
    finally:
        redis.stop()
    assert [o["callId"] for o in seen["offers"]] == [seen["call_id"]]  # only the real one
    assert seen["live"] == [seen["call_id"]]  # the forged hang-ups did not end it
    assert seen["ended"]["by"] == "caller"
    # B dropped the ring (its Socket.IO manager listens once a socket connected) and the
    # event; A the event and the hang-ups on its own channel
    assert counts["B"] == {"unsigned": 2, "bad_signature": 2}, counts
    assert counts["A"] == {"unsigned": 2, "bad_signature": 2}, counts


def calls_of(server: Server) -> list[dict[str, Any]]:
    req = urllib.request.Request(server.http_url + "/api/calls",
                                 headers={"X-Api-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=5) as r:
        return list(json.loads(r.read())["calls"])
