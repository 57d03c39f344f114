"""Retention (hitl_sip.hub.retention): files and threads older than retention_days go, the
rest stays and is made private; undelivered threads past the cutoff go too (counted)."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from hitl_sip.hub.retention import DAY, sweep
from hitl_sip.hub.threads import ThreadStore, Turn
from hitl_sip.metrics import Registry

NOW = 1_900_000_000.0


def turn(thread_id: str, at: str, n: int = 1, delivery: str = "local") -> Turn:
    return Turn(thread_id, "c", f"{thread_id}:{n}", "caller", "hi", at, delivery)


async def test_a_sweep_keeps_what_is_younger_than_the_cutoff(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir(mode=0o755)
    for name, age in (("a.wav", 31), ("a.json", 31), ("b.wav", 29)):
        path = recordings / name
        path.write_bytes(b"x")
        path.chmod(0o644)
        os.utime(path, (NOW - age * DAY,) * 2)
    (recordings / "sub").mkdir()  # not a recording: left alone
    store = ThreadStore(tmp_path / "threads.sqlite")
    old, new = "2030-01-01T00:00:00.000Z", time.strftime("%Y-%m-%dT%H:%M:%S.000Z",
                                                         time.gmtime(NOW - DAY))
    await store.add(turn("t-old", old))
    await store.add(turn("t-pending", old, delivery="pending"))
    await store.add(turn("t-mixed", old))
    await store.add(turn("t-mixed", new, 2))  # its newest turn is recent: kept whole
    await store.add_end("t-old", "person", "call ended")
    await store.grant("t-old", "alice")
    counter = Registry().counter("removed_total", "removed", ["kind"])
    assert await sweep(tmp_path, store, 30, counter, now=NOW) == (2, 2)
    assert sorted(p.name for p in recordings.iterdir()) == ["b.wav", "sub"]
    assert stat.S_IMODE((recordings / "b.wav").stat().st_mode) == 0o600
    assert stat.S_IMODE(recordings.stat().st_mode) == 0o700
    assert await store.get("t-old") == [] and await store.get("t-pending") == []
    assert len(await store.get("t-mixed")) == 2
    assert await store.end_state("t-old") is None
    assert not await store.granted("t-old", "alice")
    assert (counter.get(kind="file"), counter.get(kind="thread")) == (2, 2)
    assert await sweep(tmp_path, store, 30, counter, now=NOW) == (0, 0)
    store.close()


async def test_a_sweep_without_recordings_is_no_error(tmp_path: Path) -> None:
    store = ThreadStore(tmp_path / "threads.sqlite")
    assert await sweep(tmp_path, store, 1, now=NOW) == (0, 0)
    store.close()
