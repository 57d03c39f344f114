"""The local thread store: every turn of every call, in order, in SQLite.

It is the sink when alive5 is not configured and the record alive5 delivery works from.
Writes are idempotent on a stable message key (``<callId>:<seq>``), so a worker that
re-sends after a reconnect does not duplicate turns. A thread's end and its caller's CRM
data (``crm_id`` and the ``save_crm_data`` items) are stored too, so a restarted hub
delivers them as the first run would have. Columns and tables added after the first
release are created on open (``CREATE TABLE IF NOT EXISTS``, ``ALTER TABLE`` when missing).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hitl_sip.files import private_file

ROLES = ("caller", "bot", "agent")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    at TEXT NOT NULL,
    delivery TEXT NOT NULL DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS turns_by_thread ON turns (thread_id, id);
CREATE TABLE IF NOT EXISTS thread_ends (
    thread_id TEXT PRIMARY KEY,
    end_by TEXT NOT NULL,
    text TEXT NOT NULL DEFAULT '',
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS thread_crm (
    thread_id TEXT PRIMARY KEY,
    crm_id TEXT NOT NULL DEFAULT '',
    items TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS wrapups (
    call_id TEXT PRIMARY KEY,
    thread_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    disposition TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS thread_access (
    thread_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    PRIMARY KEY (thread_id, agent_id)
);
"""

# Columns added after the first release: table -> (name, declaration).
_COLUMNS = {
    "turns": (
        ("message_id", "TEXT NOT NULL DEFAULT ''"),
        ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("last_error", "TEXT NOT NULL DEFAULT ''"),
    ),
    "thread_ends": (
        ("attempts", "INTEGER NOT NULL DEFAULT 0"),
        ("last_error", "TEXT NOT NULL DEFAULT ''"),
    ),
}


@dataclass(frozen=True)
class Turn:
    thread_id: str
    call_id: str
    key: str
    role: str
    text: str
    at: str
    delivery: str = "local"

    def public(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "at": self.at, "delivery": self.delivery}


@dataclass(frozen=True)
class WrapUpRecord:
    call_id: str
    thread_id: str
    agent_id: str
    disposition: str
    note: str
    at: str


class ThreadStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        for table, columns in _COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _add(self, turn: Turn) -> bool:
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO turns (thread_id, call_id, key, role, text, at, delivery)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (turn.thread_id, turn.call_id, turn.key, turn.role, turn.text, turn.at,
                 turn.delivery),
            )
            return cur.rowcount == 1

    async def add(self, turn: Turn) -> bool:
        """Store a turn; False when its key was already stored (a re-sent turn)."""
        if turn.role not in ROLES:
            raise ValueError(f"unknown role {turn.role!r}")
        return await asyncio.to_thread(self._add, turn)

    def _get(self, thread_id: str) -> list[Turn]:
        with self._lock:
            rows = self._db.execute(
                "SELECT thread_id, call_id, key, role, text, at, delivery FROM turns"
                " WHERE thread_id = ? ORDER BY id",
                (thread_id,),
            ).fetchall()
        return [Turn(*row) for row in rows]

    async def get(self, thread_id: str) -> list[Turn]:
        return await asyncio.to_thread(self._get, thread_id)

    # -- who may read a thread (PROTOCOL.md §6: an agent, the threads of its calls) ---------

    def _grant(self, thread_id: str, agent_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO thread_access (thread_id, agent_id)"
                             " VALUES (?, ?)", (thread_id, agent_id))

    async def grant(self, thread_id: str, agent_id: str) -> None:
        """``agent_id`` was offered the thread's call: it may read the thread from now on."""
        await asyncio.to_thread(self._grant, thread_id, agent_id)

    async def granted(self, thread_id: str, agent_id: str) -> bool:
        rows = await asyncio.to_thread(
            self._query, "SELECT 1 FROM thread_access WHERE thread_id = ? AND agent_id = ?",
            (thread_id, agent_id))
        return bool(rows)

    # -- wrap-up (PROTOCOL.md §6) ---------------------------------------------------------

    async def set_wrapup(self, wrapup: WrapUpRecord, *, deliver: bool) -> None:
        """The agent's wrap-up of a call (a later one replaces it); ``deliver``: alive5 is
        to get it as CRM data."""
        await asyncio.to_thread(
            self._query, "INSERT OR REPLACE INTO wrapups (call_id, thread_id, agent_id,"
            " disposition, note, at, delivered) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (wrapup.call_id, wrapup.thread_id, wrapup.agent_id, wrapup.disposition,
             wrapup.note, wrapup.at, 0 if deliver else 1))

    async def wrapups(self, thread_id: str, *, pending: bool = False) -> list[WrapUpRecord]:
        rows = await asyncio.to_thread(
            self._query, "SELECT call_id, thread_id, agent_id, disposition, note, at FROM"
            " wrapups WHERE thread_id = ?" + (" AND delivered = 0" if pending else "")
            + " ORDER BY at", (thread_id,))
        return [WrapUpRecord(*row) for row in rows]

    async def mark_wrapup_delivered(self, call_id: str, at: str) -> None:
        await asyncio.to_thread(
            self._query, "UPDATE wrapups SET delivered = 1 WHERE call_id = ? AND at = ?",
            (call_id, at))

    # -- retention (hitl_sip.hub.retention) ------------------------------------------------

    def _sweep(self, cutoff: str) -> tuple[int, int]:
        with self._lock:
            old = [row[0] for row in self._db.execute(
                "SELECT thread_id FROM turns GROUP BY thread_id HAVING MAX(at) < ?",
                (cutoff,))]
            undelivered = 0
            for thread_id in old:
                undelivered += self._db.execute(
                    "SELECT COUNT(*) FROM turns WHERE thread_id = ? AND delivery = 'pending'",
                    (thread_id,)).fetchone()[0] > 0
                for table in ("turns", "thread_ends", "thread_crm", "thread_access",
                              "wrapups"):
                    self._db.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))
        return len(old), undelivered

    async def sweep(self, cutoff: str) -> tuple[int, int]:
        """Delete every thread whose newest turn is older than ``cutoff`` (an ISO-8601 UTC
        time as the turns carry): (threads removed, of which not yet delivered)."""
        return await asyncio.to_thread(self._sweep, cutoff)

    # -- the outbox (alive5 delivery) ------------------------------------------------------

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    async def pending(self, thread_id: str) -> list[Turn]:
        """The thread's turns not yet acknowledged by alive5, in order."""
        rows = await asyncio.to_thread(
            self._query,
            "SELECT thread_id, call_id, key, role, text, at, delivery FROM turns"
            " WHERE thread_id = ? AND delivery = 'pending' ORDER BY id", (thread_id,))
        return [Turn(*row) for row in rows]

    async def pending_threads(self) -> list[str]:
        """Threads with undelivered turns or an undelivered end (resumed after a restart)."""
        rows = await asyncio.to_thread(
            self._query,
            "SELECT DISTINCT thread_id FROM turns WHERE delivery = 'pending' UNION"
            " SELECT thread_id FROM thread_ends WHERE delivered = 0 UNION"
            " SELECT thread_id FROM wrapups WHERE delivered = 0")
        return [str(r[0]) for r in rows]

    async def open_threads(self) -> list[str]:
        """Threads with turns and no end (at a hub's start: calls of a previous run)."""
        rows = await asyncio.to_thread(
            self._query,
            "SELECT DISTINCT thread_id FROM turns WHERE thread_id NOT IN"
            " (SELECT thread_id FROM thread_ends)")
        return [str(r[0]) for r in rows]

    async def mark_delivered(self, key: str, message_id: str) -> None:
        await asyncio.to_thread(
            self._query, "UPDATE turns SET delivery = 'delivered', message_id = ?,"
            " attempts = attempts + 1, last_error = '' WHERE key = ?", (message_id, key))

    async def mark_failed_attempt(self, key: str, error: str) -> None:
        await asyncio.to_thread(
            self._query, "UPDATE turns SET attempts = attempts + 1, last_error = ?"
            " WHERE key = ?", (error[:300], key))

    async def backlog(self) -> int:
        rows = await asyncio.to_thread(
            self._query, "SELECT COUNT(*) FROM turns WHERE delivery = 'pending'")
        return int(rows[0][0])

    async def add_end(self, thread_id: str, end_by: str, text: str = "") -> None:
        await asyncio.to_thread(
            self._query, "INSERT OR IGNORE INTO thread_ends (thread_id, end_by, text)"
            " VALUES (?, ?, ?)", (thread_id, end_by, text))

    async def pending_end(self, thread_id: str) -> tuple[str, str] | None:
        rows = await asyncio.to_thread(
            self._query, "SELECT end_by, text FROM thread_ends WHERE thread_id = ?"
            " AND delivered = 0", (thread_id,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def mark_end_delivered(self, thread_id: str) -> None:
        """alive5 acknowledged the end (``end_voice_chat``)."""
        await asyncio.to_thread(
            self._query, "UPDATE thread_ends SET delivered = 1, attempts = attempts + 1,"
            " last_error = '' WHERE thread_id = ?", (thread_id,))

    async def mark_end_failed_attempt(self, thread_id: str, error: str) -> None:
        await asyncio.to_thread(
            self._query, "UPDATE thread_ends SET attempts = attempts + 1, last_error = ?"
            " WHERE thread_id = ?", (error[:300], thread_id))

    async def end_state(self, thread_id: str) -> dict[str, Any] | None:
        """The thread's end as stored: ``end_by``, ``delivered``, ``attempts``, ``last_error``."""
        rows = await asyncio.to_thread(
            self._query, "SELECT end_by, delivered, attempts, last_error FROM thread_ends"
            " WHERE thread_id = ?", (thread_id,))
        if not rows:
            return None
        end_by, delivered, attempts, last_error = rows[0]
        return {"end_by": str(end_by), "delivered": bool(delivered),
                "attempts": int(attempts), "last_error": str(last_error)}

    # -- the caller's CRM data -------------------------------------------------------------

    async def set_crm(self, thread_id: str, crm_id: str, items: list[tuple[str, Any]]) -> None:
        """The thread's ``crm_id`` and the items alive5 gets as ``save_crm_data``."""
        await asyncio.to_thread(
            self._query, "INSERT OR REPLACE INTO thread_crm (thread_id, crm_id, items)"
            " VALUES (?, ?, ?)", (thread_id, crm_id, json.dumps([list(i) for i in items])))

    async def crm(self, thread_id: str) -> tuple[str, list[tuple[str, Any]]] | None:
        rows = await asyncio.to_thread(
            self._query, "SELECT crm_id, items FROM thread_crm WHERE thread_id = ?",
            (thread_id,))
        if not rows:
            return None
        return str(rows[0][0]), [(str(k), v) for k, v in json.loads(rows[0][1])]
