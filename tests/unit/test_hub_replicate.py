"""Call events for the other hubs while Redis is away: kept in order and published once
Redis takes them again; the worker's messages are applied meanwhile. Redis URLs in logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from hitl_sip.config import load_config
from hitl_sip.hub import core
from hitl_sip.hub.cluster import shown_url
from hitl_sip.hub.core import Hub
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.threads import ThreadStore
from hitl_sip.protocol.cluster import HubEvent
from hitl_sip.protocol.worker import CallStarted, Hello, Interim, Role, TurnMsg


class FlakyCluster:
    """Stands in for :class:`hitl_sip.hub.cluster.Cluster`: Redis refuses while ``down``."""

    def __init__(self) -> None:
        self.down = True
        self.published: list[HubEvent] = []
        self.refused = 0
        self.changed = asyncio.Event()

    def _check(self) -> None:
        if self.down:
            self.refused += 1
            self.changed.set()
            raise RedisConnectionError("Connection refused")

    async def unclaim(self, call_id: str) -> None:
        self._check()

    async def publish(self, message: HubEvent, worker_id: str | None = None) -> None:
        self._check()
        self.published.append(message)
        self.changed.set()

    async def close(self) -> None:
        self.down = True


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Hub]:
    monkeypatch.setattr(core, "CLUSTER_RETRY", (0.001, 0.005))
    config = load_config(None, env={}, overrides={"data_dir": str(tmp_path)})
    registry = WorkerRegistry()
    registry.connected("w1", Hello(worker_id="w1"))
    store = ThreadStore(tmp_path / "threads.sqlite")
    h = Hub(config, registry, store)
    yield h
    await h.close()
    store.close()


def turn(seq: int) -> TurnMsg:
    return TurnMsg(call_id="c1", thread_id="t1", role=Role.BOT, text=f"line {seq}",
                   at="2026-12-06T10:00:00Z", seq=seq)


async def until(event: asyncio.Event, predicate: Callable[[], bool]) -> None:
    """Wait for ``predicate`` to hold, re-checked each time the cluster stand-in acts."""
    async with asyncio.timeout(5):
        while not predicate():
            event.clear()
            await event.wait()


async def test_events_redis_refused_are_published_in_order_once_it_is_back(hub: Hub) -> None:
    cluster = FlakyCluster()
    hub.cluster = cluster  # type: ignore[assignment]
    backlog = asyncio.create_task(hub._replicate_backlog())
    try:
        started = CallStarted(call_id="c1", thread_id="t1")
        await hub.on_worker_message("w1", started)
        for seq in (1, 2, 3):
            await hub.on_worker_message("w1", turn(seq))
        await hub.on_worker_message("w1", Interim(
            call_id="c1", thread_id="t1", role=Role.CALLER, text="hel", at="x", seq=4))
        # applied here at once; waiting for the other hubs, not dropped, captions aside
        assert "c1" in hub.registry.calls
        assert [t.text for t in await hub.store.get("t1")] == ["line 1", "line 2", "line 3"]
        assert hub.cluster_backlog.get() == 4
        await until(cluster.changed, lambda: cluster.refused >= 3)  # retried meanwhile
        assert cluster.published == []
        cluster.down = False
        await until(cluster.changed, lambda: len(cluster.published) == 4)
        assert cluster.published == [started, turn(1), turn(2), turn(3)]
        assert hub.cluster_backlog.get() == 0
        await hub.on_worker_message("w1", turn(5))  # straight through again
        assert cluster.published[-1] == turn(5)
    finally:
        backlog.cancel()
        with pytest.raises(asyncio.CancelledError):
            await backlog


async def test_the_backlog_is_bounded_oldest_first_and_counted(
        hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "CLUSTER_BACKLOG_MAX", 2)
    cluster = FlakyCluster()
    hub.cluster = cluster  # type: ignore[assignment]
    for seq in (1, 2, 3):
        await hub.on_worker_message("w1", turn(seq))
    assert [m for _, m in hub._unreplicated] == [turn(2), turn(3)]
    assert hub.cluster_dropped.get() == 1


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
    ("rediss://hub:s3cret@redis.example:6380/1?ssl_ca_certs=/etc/ca.pem",
     "rediss://redis.example:6380/1"),
    ("redis://[::1]:6379", "redis://[::1]:6379"),
])
def test_a_redis_url_is_logged_without_its_password_or_query(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert "s3cret" not in shown_url(url)
