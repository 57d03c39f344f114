"""Digest auth behind the Kamailio front with several workers: the 401 comes from one worker
and the authenticated INVITE (a new transaction) may be dispatched to another, which must
accept a nonce it did not issue (the hub hands every worker the same secret).

The caller is SIPp's ``auth_call`` scenario (ACK and BYE follow the front's Record-Route)
made to wait a little before the retry, as a carrier does: meanwhile other calls change the
workers' loads, so the least-loaded worker for the retry is often not the one that challenged.
"""

from __future__ import annotations

import stat
from collections import Counter
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.server import running_server
from tests.support.sipp import SCENARIOS, SippResult, run_sipp

pytestmark = pytest.mark.sipp

WORKERS = 3
LIMIT = 2  # worker.max_calls: three calls at once never fit on one worker
CALLS = 20
RETRY_PAUSE_MS = 150


def front_auth_scenario(path: Path) -> Path:
    """``auth_call.xml`` (which follows the Record-Route set) with the retry delayed."""
    text = (SCENARIOS / "auth_call.xml").read_text(encoding="iso-8859-1")
    assert text.count("[routes]") == 2, "ACK and BYE follow the front's Record-Route"
    blocks = text.split("<send")
    for i, block in enumerate(blocks):
        if "CSeq: 2 INVITE" in block:  # the authenticated retry
            blocks[i - 1] += f'<pause milliseconds="{RETRY_PAUSE_MS}"/>\n  '
    text = "<send".join(blocks)
    assert text.count("<pause milliseconds=") == 1, text
    path.write_text(text, encoding="iso-8859-1")
    return path


def test_authenticated_calls_are_answered_on_every_worker_behind_the_front(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "auth.toml"
    profile.write_text(
        'name = "auth"\n[allow]\ncidrs = ["127.0.0.0/8"]\n'
        '[auth]\nenabled = true\nrealm = "hitl-sip"\nusers = { carrier = "s3cret" }\n'
    )
    scenario = front_auth_scenario(tmp_path / "auth_call_front.xml")
    port = free_port()
    with running_server(tmp_path, workers=WORKERS, profile=str(profile), sip={"port": port},
                        worker={"max_calls": LIMIT},
                        extra={"front": {"mode": "kamailio", "probe_interval": 1}}) as srv:
        srv.wait_for(lambda: srv.health()[1].get("front", {}).get("running"), 10,
                     what="the SIP front running")
        key = srv.data_dir / "digest.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        for worker in srv.health()[1]["workers"]:  # argv is readable by every local user
            assert key.read_bytes().hex() not in Path(f"/proc/{worker['pid']}/cmdline").read_text()
        result = run_sipp(str(scenario), port, tmp_path, calls=CALLS, limit=3, rate=20,
                          duration_ms=500, timeout=60,
                          extra=["-au", "carrier", "-ap", "s3cret"])
        assert isinstance(result, SippResult)
        assert result.ok, result.explain() + "\n--- server log ---\n" + srv.log()
        srv.wait_for(lambda: len(srv.call_records()) == CALLS, 15,
                     what=f"{CALLS} call records")
        answered = Counter(str(r["workerId"]) for r in srv.call_records())
        assert len(answered) >= 2, f"every call answered by one worker: {answered}"
        assert srv.metric("hitl_sip_calls_total", outcome="rejected_auth") == 0
        assert "failed digest auth" not in srv.log()
