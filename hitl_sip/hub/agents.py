"""The agent store: who may log into the dashboard (PROTOCOL.md §3 ``/api/login``, §5 CLI).

Agents live in ``<data_dir>/agents.sqlite`` (created 0600). Passwords are kept as scrypt
hashes (``scrypt$n$r$p$salt_b64$hash_b64``); the parameters travel with each hash, so a
store with a different ``cost`` still verifies older hashes. ``verify`` spends one scrypt
computation whatever happens — unknown, disabled or malformed user names hash a dummy —
so response time does not reveal which names exist.

The store is thread-safe; the ``a*`` wrappers run the blocking work in a thread for asyncio.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from hitl_sip.log import now_iso

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32

NAME_MAX = 64
PASSWORD_MIN = 8
PASSWORD_MAX = 256  # the login endpoint accepts no longer password

_NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")

# Bounds on parameters read back from the database, so a tampered row cannot make one
# verification allocate gigabytes.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    created_at: str
    disabled: bool = False


def validate_name(name: str) -> None:
    """Raise ``ValueError`` naming the problem unless ``name`` is a valid agent name."""
    if not isinstance(name, str) or not name:
        raise ValueError("agent name must not be empty")
    if len(name) > NAME_MAX:
        raise ValueError(f"agent name is {len(name)} characters; at most {NAME_MAX} allowed")
    if not _NAME_RE.fullmatch(name):
        raise ValueError("agent name may contain only letters, digits and the characters . _ @ -")


def validate_password(password: str) -> None:
    """Raise ``ValueError`` naming the problem unless ``password`` is acceptable."""
    if not isinstance(password, str):
        raise ValueError("password must be a string")
    if len(password) < PASSWORD_MIN:
        raise ValueError(
            f"password is {len(password)} characters; at least {PASSWORD_MIN} required"
        )
    if len(password) > PASSWORD_MAX:
        raise ValueError(f"password is {len(password)} characters; at most {PASSWORD_MAX} allowed")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, *, dklen: int = KEY_BYTES) -> bytes:
    # OpenSSL needs about 128·r·(n + p) bytes; its default ceiling (32 MiB) is too tight
    # for some of the parameters check_password accepts.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem
    )


def hash_password(password: str, cost: int = SCRYPT_N) -> str:
    """Hash ``password`` as ``scrypt$n$r$p$salt_b64$hash_b64`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, cost, SCRYPT_R, SCRYPT_P)
    return f"scrypt${cost}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, stored: str) -> bool:
    """Recompute the hash of ``password`` with ``stored``'s salt and parameters; compare in
    constant time. A malformed ``stored`` value never matches."""
    try:
        scheme, n_s, r_s, p_s, salt_s, key_s = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(key_s, validate=True)
    except ValueError:
        return False
    if scheme != "scrypt" or not (1 < n <= _MAX_N and 0 < r <= _MAX_R and 0 < p <= _MAX_P):
        return False
    if n & (n - 1) or not 16 <= len(expected) <= 64:
        return False
    try:
        key = _scrypt(password, salt, n, r, p, dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(key, expected)


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class AgentStore:
    """SQLite-backed agents. ``cost`` is the scrypt N for new hashes (tests pass a cheap one)."""

    def __init__(self, path: Path, *, cost: int = SCRYPT_N) -> None:
        if cost < 2 or cost & (cost - 1) or cost > _MAX_N:
            raise ValueError(f"scrypt cost must be a power of two between 2 and {_MAX_N}")
        self.path = path
        self._cost = cost
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # Verified against when the name is unknown, so that path costs one scrypt too.
        self._dummy_hash = hash_password(secrets.token_urlsafe(16), cost)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, name: str, password: str) -> Agent:
        """Create an agent. ``ValueError`` for an invalid name or password, or a name that
        exists already (case-insensitively)."""
        validate_name(name)
        validate_password(password)
        password_hash = hash_password(password, self._cost)
        agent = Agent(agent_id=uuid.uuid4().hex, name=name, created_at=now_iso())
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO agents (agent_id, name, password_hash, created_at, disabled)"
                    " VALUES (?, ?, ?, ?, 0)",
                    (agent.agent_id, agent.name, password_hash, agent.created_at),
                )
            except sqlite3.IntegrityError as e:
                raise ValueError(f"an agent named {name!r} exists already") from e
        return agent

    def list(self) -> builtins.list[Agent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT agent_id, name, created_at, disabled FROM agents"
                " ORDER BY name COLLATE NOCASE"
            ).fetchall()
        return [_agent(row) for row in rows]

    def remove(self, name: str) -> bool:
        """Delete the agent called ``name`` (case-insensitive); False when there is none."""
        with self._lock:
            cur = self._db.execute("DELETE FROM agents WHERE name = ?", (name,))
        return cur.rowcount > 0

    def get(self, agent_id: str) -> Agent | None:
        """The enabled agent with this id, or None (unknown, removed or disabled)."""
        with self._lock:
            row = self._db.execute(
                "SELECT agent_id, name, created_at, disabled FROM agents"
                " WHERE agent_id = ? AND disabled = 0",
                (agent_id,),
            ).fetchone()
        return None if row is None else _agent(row)

    def verify(self, name: str, password: str) -> Agent | None:
        """The agent if ``password`` is right for the enabled agent ``name``, else None.
        Every outcome costs one scrypt computation, compared in constant time."""
        row: tuple[str, str, str, int, str] | None = None
        if isinstance(name, str) and _NAME_RE.fullmatch(name):
            with self._lock:
                row = self._db.execute(
                    "SELECT agent_id, name, created_at, disabled, password_hash FROM agents"
                    " WHERE name = ?",
                    (name,),
                ).fetchone()
        if not isinstance(password, str):
            password = ""
        # The hash runs outside the lock: concurrent logins must not queue behind it.
        ok = check_password(password, row[4] if row is not None else self._dummy_hash)
        if row is None or not ok or row[3]:
            return None
        return _agent(row[:4])

    async def averify(self, name: str, password: str) -> Agent | None:
        return await asyncio.to_thread(self.verify, name, password)

    async def aget(self, agent_id: str) -> Agent | None:
        return await asyncio.to_thread(self.get, agent_id)


def _agent(row: tuple[str, str, str, int] | tuple[str, str, str, int, str]) -> Agent:
    return Agent(agent_id=row[0], name=row[1], created_at=row[2], disabled=bool(row[3]))
