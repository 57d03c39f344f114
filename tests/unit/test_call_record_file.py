"""A call record is written whole (a reader never sees half of it) and private (0600)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from hitl_sip.worker.service import write_private


def test_a_record_replaces_the_old_one_whole_and_private(tmp_path: Path) -> None:
    path = tmp_path / "c1.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_private(path, json.dumps({"callId": "c1", "digits": "1234"}))
    assert json.loads(path.read_text()) == {"callId": "c1", "digits": "1234"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["c1.json"]  # no temporary file left
