"""The local thread store: every turn of every call, in order, in SQLite.

It is the sink when alive5 is not configured and the record alive5 delivery works from.
Writes are idempotent on a stable message key (``<callId>:<seq>``), so a worker that
re-sends after a reconnect does not duplicate turns.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
"""


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


class ThreadStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
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
