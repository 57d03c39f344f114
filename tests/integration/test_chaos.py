"""The chaos soak's short mode (bench/chaos_soak.py --short): three calls keep cycling (bot,
handoff, a talking test agent, hang-up) through two workers behind Kamailio while a media
worker, a worker's speech process, Kamailio and the alive5 stand-in (a process of its own
that journals what it takes) are SIGKILLed and started again, redis-server (shared with a
second hub that has one of the agents) is SIGKILLed and started again empty, and the hub
itself is SIGKILLed and started again (as a process manager would), in turn. Afterwards
every alive5 thread must equal the hub's local thread — every turn once, in order, one
end — and a call lost with its killed worker or hub ends the way PROTOCOL.md says
(``worker_lost`` / ``hub_lost``, by the system), still with every turn the hub stored and
exactly one end in alive5.

The soak runs as its own process (it is a benchmark too) and hands its figures back as
JSON; its report and the server's log are kept under the test's tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.server import ROOT

SOAK = ROOT / "bench" / "chaos_soak.py"
KILLS = ["worker", "speech", "front", "alive5", "redis", "hub"]
LOST = "worker_lost"
HUB_LOST = "hub_lost"


def run_soak(tmp_path: Path) -> tuple[dict[str, Any], str]:
    """The soak's figures (its JSON line) and its printed report."""
    home = tmp_path / "soak"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--short", "--json", "--keep", str(home)],
        cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    (tmp_path / "soak-report.txt").write_text(done.stdout)
    (tmp_path / "soak-progress.txt").write_text(done.stderr)
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), (
        f"the soak failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
        f"{done.stderr[-5000:]}")
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def test_every_alive5_thread_equals_the_hub_s_through_kills_of_each_process(
    tmp_path: Path,
) -> None:
    result, report = run_soak(tmp_path)
    context = f"\n{report}\n(the progress and the server's log: {tmp_path})"

    # each kill landed while calls were talking, and everything came back
    assert [k["kind"] for k in result["kills"]] == KILLS, context
    for kill in result["kills"]:
        assert kill["recovered"], f"{kill}{context}"
    worker_kill = result["kills"][0]
    killed_worker = worker_kill["target"].split()[0]
    assert worker_kill["calls_on_target"], context  # aimed at a call with an agent

    threads = {t["thread_id"]: t for t in result["threads"]}
    calls = [c for c in result["calls"] if c["thread_id"]]
    lost = [c for c in calls if c["outcome"] == LOST]
    with_hub = [c for c in calls if c["outcome"] == HUB_LOST]
    kept = [c for c in calls if c["outcome"] not in (LOST, HUB_LOST)]
    # calls kept cycling: several went the whole way after every kill
    assert sum(c["completed"] for c in kept) >= 2 * len(KILLS), context

    # every call not on the killed worker: the alive5 thread is the hub's local thread
    for call in kept:
        thread = threads[call["thread_id"]]
        what = f"call {call['call_id']} ({call['phase']}): {thread}{context}"
        if call["completed"]:  # the bot's two prompts; [pressed 1], [pressed 2], [pressed 3]
            assert thread["roles"]["bot"] == 2 and thread["roles"]["caller"] >= 3, what
        assert thread["lost"] == 0, what
        assert thread["duplicated"] == 0, what  # Alive5Thread.duplicates, a second end
        # the resend of what alive5 took just before the hub's or its own SIGKILL
        assert thread["resent_over_kill"] == 0 or call["phase"].endswith(
            (" hub", " alive5")), what
        assert thread["unexpected"] == 0, what
        assert thread["in_order"], what
        assert thread["delivered"] == thread["expected"], what
        assert thread["ends"] == 1, what
        assert thread["local_end"].endswith(", acknowledged"), what
    totals = result["rows"][-1]
    assert totals["turns_lost"] == totals["turns_duplicated"] == 0, context

    # the calls lost with their worker end as the hub ends them, and end in alive5
    assert lost, f"the worker kill caught no call{context}"
    for call in lost:
        thread = threads[call["thread_id"]]
        what = f"call {call['call_id']}: {call} {thread}{context}"
        assert call["worker_id"] == killed_worker or (
            call["call_id"] in worker_kill["calls_on_target"]), what
        assert call["agent_by"] in ("", f"{LOST}/system"), what
        assert thread["ends"] == 1, what
        assert thread["end_by"] == "voice_agent", what
        assert thread["end_text"] == f"call ended ({LOST})", what
        assert thread["duplicated"] == 0 and thread["lost"] == 0, what

    # the calls live on the hub when it was killed: every turn it stored, one end
    hub_kill = next(k for k in result["kills"] if k["kind"] == "hub")
    assert with_hub, f"the hub kill caught no call{context}"
    for call in with_hub:
        thread = threads[call["thread_id"]]
        what = f"call {call['call_id']}: {call} {thread}{context}"
        assert call["call_id"] in hub_kill["calls_on_target"], what
        assert thread["ends"] == 1 and thread["end_by"] == "voice_agent", what
        assert thread["end_text"] in (f"call ended ({HUB_LOST})",
                                      "call ended (hub_restart)"), what
        assert thread["duplicated"] == 0 and thread["lost"] == 0, what
        assert thread["delivered"] == thread["expected"] and thread["in_order"], what

    # no INVITE refused while a worker had room: one sent to the killed worker, or to its
    # restarting successor, goes to the other worker (the front's failure route). One the
    # old front had taken (its 100) when the hub was SIGKILLed is counted apart
    # (caught_by_hub_kill): the front dies with the hub, so its final answer has no way back.
    assert all(x["phase"].endswith(" hub") for x in result["caught_by_hub_kill"]), context
    assert result["refused"] == [], context
    assert result["problems"] == [], context
