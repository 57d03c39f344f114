"""The chaos soak's comparison of the hub's threads with the alive5 stand-in's: a copy the
restarted hub sent again because the killed one died with it in flight is reported apart;
any other second copy stays a duplicate."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
from pathlib import Path
from types import ModuleType

from hitl_sip.hub.threads import _SCHEMA
from tests.support.alive5 import Alive5StandIn, Alive5Thread

ROOT = Path(__file__).resolve().parents[2]


def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_soak", ROOT / "bench" / "chaos_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("chaos_soak", module)
    spec.loader.exec_module(module)
    return module


def store(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.executescript(_SCHEMA)
    for i, role in enumerate(["bot", "caller"]):
        con.execute("INSERT INTO turns (thread_id, call_id, key, role, text, at) "
                    "VALUES ('t', 'c', ?, ?, ?, 'now')", (f"c:{i}", role, f"text {i}"))
    con.execute("INSERT INTO thread_ends (thread_id, end_by, delivered) VALUES ('t', 'person', 1)")
    con.commit()
    con.close()
    return path


def stand_in(end_times: list[float], resend_of_second_at: float | None) -> Alive5StandIn:
    a5 = Alive5StandIn(port=1)
    thread = Alive5Thread("t")
    thread.messages = [
        {"message_key": "c:0", "sender": "voice_agent", "message_content": "text 0",
         "_received": 10.0},
        {"message_key": "c:1", "sender": "person", "message_content": "text 1",
         "_received": 10.5}]
    if resend_of_second_at is not None:
        thread.duplicates = 1
        thread.resent, thread.resent_at = ["c:1"], [resend_of_second_at]
    thread.ended = [{"end_by": "person", "message_content": "call ended (completed)",
                     "_received": at} for at in end_times]
    a5.threads["t"] = thread
    return a5


def test_an_end_and_a_post_in_flight_at_the_hub_kill_are_resent_not_duplicated(
    tmp_path: Path,
) -> None:
    m = soak()
    db = store(tmp_path / "threads.sqlite")
    # the end reached alive5 0.8 s before the SIGKILL at 11.6 and the new hub sent it
    # again; the post came 1.1 s before it, long acknowledged: its second copy is a duplicate
    (check,) = m.compare(db, stand_in([10.8, 14.0], 13.0), [11.6])
    assert (check.duplicated, check.resent_over_kill, check.ends) == (1, 1, 1)
    # with the kill at 11.0 the post (0.5 s before) was in flight too
    (check,) = m.compare(db, stand_in([10.8, 14.0], 13.0), [11.0])
    assert (check.duplicated, check.resent_over_kill, check.ends) == (0, 2, 1) and check.equal
    (check,) = m.compare(db, stand_in([10.8, 14.0], None), [11.0])
    assert (check.duplicated, check.resent_over_kill, check.ends) == (0, 1, 1) and check.equal


def test_a_second_copy_without_a_kill_in_between_is_a_duplicate(tmp_path: Path) -> None:
    m = soak()
    db = store(tmp_path / "threads.sqlite")
    (check,) = m.compare(db, stand_in([10.8, 14.0], 13.0), [])  # no hub kill
    assert (check.duplicated, check.resent_over_kill, check.ends) == (2, 0, 2)
    # the first copy was acknowledged long before the kill: not in flight, a real duplicate
    (check,) = m.compare(db, stand_in([10.8, 14.0], None), [12.5])
    assert (check.duplicated, check.ends) == (1, 2) and not check.equal
    # a copy before the kill and another before it too: not the successor's resend
    (check,) = m.compare(db, stand_in([10.8, 10.9], None), [11.0])
    assert (check.duplicated, check.ends) == (1, 2)
