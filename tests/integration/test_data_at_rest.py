"""Caller data at rest (issue 15): everything the server writes under its data directory —
recordings, call records, the thread and account databases with their WAL files, keys,
spills, the front's files — is readable by its user alone (0600 files, 0700 directories),
and a file an older release left readable by others is tightened; recordings, call records
and local threads older than ``retention_days`` are swept at start."""

from __future__ import annotations

import asyncio
import os
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.hub.threads import ThreadStore, Turn
from tests.support.server import running_server
from tests.support.sipp import SippResult, run_sipp

pytestmark = pytest.mark.sipp

API_KEY = "data-at-rest-api-key-0123"
DAY = 86400


def thread_status(base: str, thread_id: str) -> int:
    req = urllib.request.Request(f"{base}/api/threads/{thread_id}",
                                 headers={"X-Api-Key": API_KEY})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def seed(data_dir: Path) -> None:
    """What an older release left: world-readable files, an old thread and recording."""
    recordings = data_dir / "recordings"
    recordings.mkdir(parents=True)
    os.chmod(data_dir, 0o755)
    for name, age in (("old.wav", 40), ("old.json", 31), ("recent.json", 2)):
        path = recordings / name
        path.write_text("{}")
        os.chmod(path, 0o644)
        os.utime(path, (time.time() - age * DAY,) * 2)
    store = ThreadStore(data_dir / "threads.sqlite")
    for thread_id, at in (("t-old", "2020-01-01T00:00:00.000Z"),
                          ("t-new", time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))):
        asyncio.run(store.add(Turn(thread_id, "c", f"{thread_id}:1", "caller", "hello", at)))
    store.close()
    os.chmod(data_dir / "threads.sqlite", 0o644)


def loose(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` another local user could read or enter."""
    found = []
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            path = Path(root) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not path.is_symlink() and mode & 0o077:
                found.append(f"{path.relative_to(data_dir)} {mode:o}")
    return found


def test_files_are_private_and_old_caller_data_is_swept(tmp_path: Path) -> None:
    seed(tmp_path / "data")
    extra: dict[str, dict[str, Any]] = {"api": {"keys": [API_KEY]},
                                        "worker": {"record_calls": True}}
    with running_server(tmp_path, extra=extra) as srv:  # its data directory: tmp_path/data
        recordings = srv.data_dir / "recordings"
        srv.wait_for(lambda: not (recordings / "old.wav").exists(), 10, "the sweep")
        assert sorted(p.name for p in recordings.iterdir()) == ["recent.json"]
        assert thread_status(srv.http_url, "t-old") == 404
        assert thread_status(srv.http_url, "t-new") == 200
        assert srv.metric("hitl_sip_hub_retention_removed_total", kind="file") == 2
        assert srv.metric("hitl_sip_hub_retention_removed_total", kind="thread") == 1
        result = run_sipp("short_call", srv.sip_port(), tmp_path, duration_ms=1500)
        assert isinstance(result, SippResult) and result.ok, result
        srv.wait_for(lambda: len(list(recordings.glob("*.wav"))) == 1, 10, "the recording")
        srv.wait_for(lambda: len(list(recordings.glob("*.json"))) == 2, 10, "the call record")
        problems = loose(srv.data_dir)
        data_mode = stat.S_IMODE(srv.data_dir.stat().st_mode)
    assert problems == [], problems
    assert data_mode == 0o700
    assert "threads.sqlite was readable by others" in srv.log()
