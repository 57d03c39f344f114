"""Hubs over ``rediss://``: Debian's redis-server with TLS only (a self-signed certificate
for 127.0.0.1, a password), two hubs' cluster links and python-socketio's Redis manager
talking through it; a client that does not trust the certificate, or speaks plain Redis to
the TLS port, gets nowhere."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import socketio
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from hitl_sip.hub.cluster import Cluster, shown_url
from hitl_sip.hub.tokens import parse_secret
from hitl_sip.protocol.cluster import HubEvent
from hitl_sip.protocol.seal import Seal
from hitl_sip.protocol.worker import Caller, CallStarted
from tests.support.redis import CLUSTER_SECRET, RedisServer


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tls=tmp_path_factory.mktemp("redis-tls"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def hubs(tls_redis: RedisServer) -> AsyncIterator[tuple[Cluster, Cluster]]:
    seal = Seal(parse_secret(CLUSTER_SECRET))
    a, b = Cluster(tls_redis.url, "A", seal), Cluster(tls_redis.url, "B", seal)
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_two_hubs_share_call_events_over_tls(
        hubs: tuple[Cluster, Cluster], tls_redis: RedisServer) -> None:
    a, b = hubs
    heard: asyncio.Queue[tuple[str, HubEvent, str | None]] = asyncio.Queue()

    async def on_event(hub: str, message: HubEvent, worker_id: str | None) -> None:
        await heard.put((hub, message, worker_id))
    b.on_event = on_event
    started = CallStarted(call_id="c1", thread_id="t1", caller=Caller(number="+14155550100"))
    await a.publish(started, "w1")
    async with asyncio.timeout(5):
        assert await heard.get() == ("A", started, "w1")
    assert await a.claim("c1", "alice") and not await b.claim("c1", "bob")
    assert tls_redis.password not in a.where and "ssl_ca_certs" not in a.where


async def test_the_socketio_manager_emits_across_hubs_over_tls(tls_redis: RedisServer) -> None:
    """python-socketio's AsyncRedisManager (what lets a hub emit to another hub's socket)
    takes the same URL: what one manager publishes reaches the other's listener (its
    publish and listen halves, as the server's background task drives them)."""
    got: asyncio.Queue[bytes] = asyncio.Queue()
    one = socketio.AsyncRedisManager(tls_redis.url, channel="hitl-tls-test")
    two = socketio.AsyncRedisManager(tls_redis.url, channel="hitl-tls-test")

    async def listen() -> None:
        async for data in two._listen():
            await got.put(data)
    reader = asyncio.create_task(listen())
    try:
        async with asyncio.timeout(10):
            while got.empty():  # publish again until the listener has subscribed
                await one._publish({"method": "ping", "host_id": "one"})
                await asyncio.sleep(0.05)
        assert b'"method": "ping"' in await got.get()
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


async def test_a_client_that_does_not_trust_the_certificate_is_refused(
        tls_redis: RedisServer) -> None:
    untrusting = tls_redis.url.split("?", 1)[0]  # rediss:// with the system's CAs only
    client = aioredis.from_url(untrusting, socket_connect_timeout=2)
    try:
        with pytest.raises(RedisConnectionError) as refused:
            await client.ping()
        assert isinstance(refused.value.__cause__ or refused.value.__context__,
                          ssl.SSLCertVerificationError) or "certificate verify failed" in str(
                              refused.value)
    finally:
        await client.aclose()


async def test_plain_redis_on_the_tls_port_gets_nothing(tls_redis: RedisServer) -> None:
    plain = f"redis://:{tls_redis.password}@127.0.0.1:{tls_redis.port}/0"
    client = aioredis.from_url(plain, socket_connect_timeout=2, socket_timeout=2)
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
    assert shown_url(plain) == f"redis://127.0.0.1:{tls_redis.port}/0"


def test_redis_cli_over_tls_is_answered(tls_redis: RedisServer) -> None:
    assert tls_redis.ping()
    assert Path(tls_redis.url.rsplit("ssl_ca_certs=", 1)[1]).stat().st_mode & 0o077 == 0
