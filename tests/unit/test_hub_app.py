"""The hub's HTTP surface: /healthz follows the workers, /metrics merges them, the worker
link refuses bad tokens and survives garbage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from hitl_sip.config import load_config
from hitl_sip.hub import app as app_module
from hitl_sip.hub.app import REGISTRY, create_app, create_internal_app
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.metrics import Registry
from hitl_sip.protocol.worker import CallStarted, WorkerMessage

TOKEN = "secret-token"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[aiohttp.web.Request, aiohttp.web.Application]]:
    config = load_config(None, env={})
    app = create_internal_app(config, WorkerRegistry(), TOKEN)
    async with TestClient(TestServer(app)) as c:
        yield c


async def test_the_public_listener_says_little_and_sends_the_browser_edge_headers() -> None:
    config = load_config(None, env={}, overrides={"http.dashboard_dir": ""})
    async with TestClient(TestServer(create_app(config, WorkerRegistry(), TOKEN))) as public:
        r = await public.get("/healthz")
        assert (r.status, await r.json()) == (503, {"status": "starting"})
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert "script-src 'self';" in r.headers["Content-Security-Policy"]
        assert r.headers["Referrer-Policy"] == "no-referrer"
        assert "Strict-Transport-Security" not in r.headers  # plain HTTP
        for internal in ("/metrics", "/internal/worker"):
            r = await public.get(internal)
            assert r.status == 404 and r.headers["X-Content-Type-Options"] == "nosniff"
    tls = load_config(None, env={}, overrides={"http.dashboard_dir": "", "http.tls": "true"})
    async with TestClient(TestServer(create_app(tls, WorkerRegistry(), TOKEN))) as public:
        r = await public.get("/healthz")
        assert r.headers["Strict-Transport-Security"] == "max-age=31536000"


HELLO = {
    "type": "hello", "workerId": "w1", "pid": 123, "sip": {"udp": "127.0.0.1:5060"},
    "profile": "local", "maxCalls": 3, "activeCalls": 0, "draining": False, "calls": [],
}


def worker_metrics() -> list[dict[str, object]]:
    r = Registry()
    r.counter("hitl_sip_calls_total", "Calls", ["outcome"]).inc(outcome="completed")
    return r.snapshot()


async def test_healthz_is_503_until_a_worker_registers_then_200(client: TestClient) -> None:  # type: ignore[type-arg]
    r = await client.get("/healthz")
    assert r.status == 503
    assert (await r.json())["status"] == "starting"
    ws = await client.ws_connect("/internal/worker", headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send_json(HELLO)
    await ws.send_json({"type": "status", "activeCalls": 1, "draining": False,
                        "metrics": worker_metrics()})
    for _ in range(100):
        r = await client.get("/healthz")
        body = await r.json()
        if r.status == 200 and body["activeCalls"] == 1:
            break
    assert r.status == 200
    assert body["workers"][0]["sip"] == {"udp": "127.0.0.1:5060"}
    metrics = await (await client.get("/metrics")).text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    assert samples[("hitl_sip_calls_total", (("outcome", "completed"), ("worker", "w1")))] == 1
    assert samples[("hitl_sip_hub_workers_connected", ())] == 1
    await ws.close()
    for _ in range(100):
        r = await client.get("/healthz")
        if r.status == 503:
            break
    assert r.status == 503


async def test_worker_link_refuses_a_missing_or_forged_token(client: TestClient) -> None:  # type: ignore[type-arg]
    for headers in ({}, {"Authorization": "Bearer forged"}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect("/internal/worker", headers=headers)
        assert info.value.status == 401


async def test_garbage_from_a_worker_is_counted_and_ignored(client: TestClient) -> None:  # type: ignore[type-arg]
    ws = await client.ws_connect("/internal/worker", headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send_str("not json")
    await ws.send_json({"type": "status"})  # before hello
    await ws.send_json(HELLO)
    await ws.send_json({"type": "no_such_type"})
    await ws.send_json({"type": "call_started"})  # missing callId
    await ws.send_json([1, 2, 3])
    await ws.send_str('{"type": "status", "metrics": ' + "[" * 5000 + "]" * 5000 + "}")
    await ws.send_json({"type": "status", "unknownField": 1})
    await ws.send_json({"type": "turn", "callId": "c1", "threadId": "t1", "role": "bot",
                        "text": "x" * 30_000, "at": "now", "seq": 1})  # text too long
    await ws.send_json({"type": "call_started", "callId": "c1", "threadId": "t1",
                        "caller": {"number": None}, "linkSeq": 1})
    ack = await ws.receive_json(timeout=5)  # the valid one is applied and acknowledged
    assert ack == {"type": "ack", "linkSeq": 1}
    for _ in range(100):
        text = await (await client.get("/metrics")).text()
        if "hitl_sip_hub_bad_worker_messages_total 8" in text.replace(".0\n", "\n"):
            break
    assert "hitl_sip_hub_bad_worker_messages_total 8" in text.replace(".0\n", "\n")
    assert (await client.get("/healthz")).status == 200
    await ws.close()


async def test_reliable_messages_are_applied_once_per_worker_epoch_and_acknowledged(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    registry = client.app[REGISTRY]
    started = {"type": "call_started", "callId": "c1", "threadId": "t1", "linkSeq": 1}
    ended = {"type": "call_ended", "callId": "c1", "outcome": "completed", "linkSeq": 2}
    ws = await client.ws_connect("/internal/worker", headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send_json({**HELLO, "epoch": "e1"})
    await ws.send_json(started)
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 1}
    assert "c1" in registry.calls
    await ws.close()
    # the worker reconnects and sends again what it had no ack for: seq 1 (already applied)
    ws = await client.ws_connect("/internal/worker", headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send_json({**HELLO, "epoch": "e1", "calls": []})
    await ws.send_json(ended)
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 2}
    assert "c1" not in registry.calls
    await ws.send_json(started)  # a duplicate of seq 1: acknowledged, not applied again
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 2}
    assert "c1" not in registry.calls
    await ws.close()
    # a new worker process (new epoch) starts counting again
    ws = await client.ws_connect("/internal/worker", headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send_json({**HELLO, "epoch": "e2", "calls": []})
    await ws.send_json(started)
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 1}
    assert registry.calls["c1"].thread_id == "t1"
    await ws.close()


class FlakyHandler:
    """Stands in for ``WorkerRegistry.handle``: a ``call_started`` fails ``failures`` times
    with an error the hub does not expect (a store or Redis outage), then applies."""

    def __init__(self, registry: WorkerRegistry, failures: int,
                 error: Exception | None = None) -> None:
        self.handle = registry.handle
        self.failures = failures
        self.error = error or OSError("database is locked")
        self.attempts = 0
        self.applied: list[int] = []

    def __call__(self, worker_id: str, message: WorkerMessage) -> None:
        if isinstance(message, CallStarted):
            self.attempts += 1
            if self.attempts <= self.failures:
                raise self.error
            self.applied.append(message.link_seq)
        self.handle(worker_id, message)


class Install(Protocol):
    def __call__(self, failures: int, error: Exception | None = None) -> FlakyHandler: ...


@pytest.fixture
def flaky(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Install:  # type: ignore[type-arg]
    monkeypatch.setattr(app_module, "APPLY_BACKOFF", 0.001)
    registry = client.app[REGISTRY]

    def install(failures: int, error: Exception | None = None) -> FlakyHandler:
        handler = FlakyHandler(registry, failures, error)
        monkeypatch.setattr(registry, "handle", handler)
        return handler

    return install


STARTED = {"type": "call_started", "callId": "c1", "threadId": "t1", "linkSeq": 1}


async def worker_link(client: TestClient) -> aiohttp.ClientWebSocketResponse:  # type: ignore[type-arg]
    ws = await client.ws_connect("/internal/worker", headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send_json({**HELLO, "epoch": "e1"})
    return ws


async def test_a_message_that_fails_a_few_times_is_applied_once_then_acknowledged(
    client: TestClient, flaky: Install,  # type: ignore[type-arg]
) -> None:
    handler = flaky(app_module.APPLY_ATTEMPTS - 1)
    ws = await worker_link(client)
    await ws.send_json(STARTED)
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 1}
    assert handler.applied == [1] and handler.attempts == app_module.APPLY_ATTEMPTS
    assert client.app[REGISTRY].failed_worker_messages.get() == 0
    await ws.close()


async def test_a_message_still_failing_after_the_attempts_closes_the_link_unacknowledged(
    client: TestClient, flaky: Install,  # type: ignore[type-arg]
) -> None:
    """The worker keeps what is not acknowledged and sends it again after reconnecting:
    the second time it applies, once, and only then is it acknowledged."""
    registry = client.app[REGISTRY]
    handler = flaky(app_module.APPLY_ATTEMPTS + 2)
    ws = await worker_link(client)
    await ws.send_json(STARTED)
    await ws.send_json({"type": "call_ended", "callId": "c1", "linkSeq": 2})  # behind it
    msg = await ws.receive(timeout=5)
    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.TRY_AGAIN_LATER)
    assert handler.applied == [] and "c1" not in registry.calls
    assert registry.failed_worker_messages.get() == 1
    ws = await worker_link(client)  # the worker's reconnect: both again, in order
    await ws.send_json(STARTED)
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 1}
    assert handler.applied == [1] and "c1" in registry.calls
    await ws.send_json({"type": "call_ended", "callId": "c1", "linkSeq": 2})
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 2}
    assert "c1" not in registry.calls and handler.applied == [1]
    assert registry.failed_worker_messages.get() == 1
    await ws.close()


async def test_a_message_that_never_applies_is_never_acknowledged(
    client: TestClient, flaky: Install,  # type: ignore[type-arg]
) -> None:
    registry = client.app[REGISTRY]
    flaky(10**9, RuntimeError("a handler's bug"))
    for attempt in range(1, 4):  # each reconnect tries again; none acknowledges it
        ws = await worker_link(client)
        await ws.send_json(STARTED)
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE,
                                        aiohttp.WSCloseCode.TRY_AGAIN_LATER)
        assert registry.failed_worker_messages.get() == attempt
        assert registry.workers["w1"].applied_seq == 0 and "c1" not in registry.calls


async def test_a_message_that_contradicts_the_hub_is_counted_skipped_and_acknowledged(
    client: TestClient, flaky: Install,  # type: ignore[type-arg]
) -> None:
    registry = client.app[REGISTRY]
    handler = flaky(1, ValueError("a handoff for an unknown call"))
    ws = await worker_link(client)
    await ws.send_json(STARTED)
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 1}
    assert handler.attempts == 1 and handler.applied == []
    assert registry.bad_worker_messages.get() == 1
    assert registry.failed_worker_messages.get() == 0
    await ws.close()


async def test_a_worker_counter_incremented_two_million_times_scrapes_exactly(
    client: TestClient,  # type: ignore[type-arg]
) -> None:
    """The worker's path: its registry's counter, its snapshot in a ``status``, the hub's
    collector, a real scrape of the internal listener, prometheus-client's parser.

    prometheus-client writes large values as Go does, all digits kept: 2,000,000 is
    ``2e+06`` (exact) and 2,000,001 ``2.000001e+06`` — the second sample shows no digit is
    rounded away (``{:g}`` would have printed ``2e+06`` for it too)."""
    worker = Registry()
    calls = worker.counter("hitl_sip_calls_total", "Calls", ["outcome"])
    for _ in range(2_000_000):
        calls.inc(outcome="completed")
    calls.inc(2_000_000, outcome="failed")
    calls.inc(outcome="failed")
    ws = await worker_link(client)
    await ws.send_json({"type": "status", "activeCalls": 0, "draining": False,
                        "metrics": worker.snapshot()})
    await ws.send_json(STARTED)  # applied in order: its ack means the status is in
    assert await ws.receive_json(timeout=5) == {"type": "ack", "linkSeq": 1}
    r = await client.get("/metrics")
    assert r.status == 200
    text = await r.text()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("hitl_sip_calls_total",
                    (("outcome", "completed"), ("worker", "w1")))] == 2_000_000
    assert samples[("hitl_sip_calls_total",
                    (("outcome", "failed"), ("worker", "w1")))] == 2_000_001
    await ws.close()
