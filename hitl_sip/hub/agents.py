"""The account store: who may log into the dashboard, and with which role (PROTOCOL.md §3
``/api/login``, §5 CLI, §6 roles).

Accounts live in ``<data_dir>/agents.sqlite`` (created 0600). Each has a ``role`` (``agent``,
``supervisor`` or ``admin``) and a ``token_version``: a token carries the version it was
issued under, and removing or disabling the account, changing its password or role, or
ending its sessions bumps the version, so every older token stops working at once. A logout
ends one token by its id (``revoked`` table, swept once the token would have expired).

Passwords are hashed with Argon2id (``argon2-cffi``) at OWASP's current minimum (19 MiB,
2 passes, 1 lane); older scrypt hashes (``scrypt$n$r$p$salt$hash``) still verify and are
rehashed to Argon2id at the next successful login, as are Argon2 hashes with weaker
parameters. ``verify`` spends one hash computation whatever happens — unknown, disabled or
malformed user names hash a dummy — so response time does not reveal which names exist.

The store is thread-safe; the ``a*`` wrappers run the blocking work in a thread for asyncio.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hitl_sip.files import private_file
from hitl_sip.log import now_iso
from hitl_sip.protocol.agent import AccountRole as Role

__all__ = ["OWASP", "Agent", "AgentStore", "Hasher", "Role", "check_password",
           "hash_password", "parse_role", "validate_name", "validate_password"]

NAME_MAX = 64
PASSWORD_MIN = 8
PASSWORD_MAX = 256  # the login endpoint accepts no longer password

_NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")

# Bounds on parameters read back from the database, so a tampered row cannot make one
# verification allocate gigabytes or run for minutes.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAX_ARGON2_KIB = 256 * 1024
_MAX_ARGON2_T = 16
_ARGON2_PARAMS = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS revoked (
    jti TEXT PRIMARY KEY,
    expires REAL NOT NULL
);
"""
_COLUMNS = {  # added to stores created before roles and token versions
    "role": "TEXT NOT NULL DEFAULT 'agent'",
    "token_version": "INTEGER NOT NULL DEFAULT 1",
}
_FIELDS = "agent_id, name, created_at, disabled, role, token_version"


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    created_at: str
    disabled: bool = False
    role: Role = Role.AGENT
    token_version: int = 1


@dataclass(frozen=True)
class Hasher:
    """Argon2id parameters for new hashes (``memory_kib`` KiB, ``time_cost`` passes)."""

    time_cost: int = 2
    memory_kib: int = 19 * 1024
    parallelism: int = 1

    def _argon2(self) -> PasswordHasher:
        return PasswordHasher(time_cost=self.time_cost, memory_cost=self.memory_kib,
                              parallelism=self.parallelism, type=Type.ID)

    def hash(self, password: str) -> str:
        return self._argon2().hash(password)

    def needs_rehash(self, stored: str) -> bool:
        if not stored.startswith("$argon2id$"):
            return True
        try:
            return self._argon2().check_needs_rehash(stored)
        except InvalidHashError:
            return True


OWASP = Hasher()  # OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1


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


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"role must be one of {', '.join(r.value for r in Role)}, "
                         f"not {value!r}") from None


def hash_password(password: str, hasher: Hasher = OWASP) -> str:
    """An Argon2id hash of ``password`` (PHC string) with a fresh random salt."""
    return hasher.hash(password)


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (Argon2id, or a legacy scrypt hash), in
    constant time. A malformed or out-of-bounds ``stored`` value never matches."""
    if stored.startswith("$argon2id$"):
        match = _ARGON2_PARAMS.match(stored)
        if match is None or int(match[1]) > _MAX_ARGON2_KIB or int(match[2]) > _MAX_ARGON2_T \
                or not 0 < int(match[3]) <= _MAX_P:
            return False
        try:
            return PasswordHasher().verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    return _check_scrypt(password, stored)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, *, dklen: int) -> bytes:
    # OpenSSL needs about 128·r·(n + p) bytes; its default ceiling (32 MiB) is too tight
    # for some of the parameters _check_scrypt accepts.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem
    )


def _check_scrypt(password: str, stored: str) -> bool:
    """The hashes of stores from before Argon2id: ``scrypt$n$r$p$salt_b64$hash_b64``."""
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


class AgentStore:
    """SQLite-backed accounts. ``hasher`` sets the Argon2id cost of new hashes (tests pass a
    cheap one)."""

    def __init__(self, path: Path, *, hasher: Hasher = OWASP) -> None:
        self.path = path
        self.hasher = hasher
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 5000")  # the CLI writes while the hub runs
        self._db.executescript(_SCHEMA)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(agents)")}
        for column, kind in _COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE agents ADD COLUMN {column} {kind}")
        self._lock = threading.Lock()
        # Verified against when the name is unknown, so that path costs one hash too.
        self._dummy_hash = hasher.hash(secrets.token_urlsafe(16))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, where: str, args: tuple[object, ...]) -> Agent | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_FIELDS} FROM agents WHERE {where}",
                                   args).fetchone()
        return None if row is None else _agent(row)

    def add(self, name: str, password: str, role: Role = Role.AGENT) -> Agent:
        """Create an account. ``ValueError`` for an invalid name or password, or a name
        that exists already (case-insensitively)."""
        validate_name(name)
        validate_password(password)
        password_hash = self.hasher.hash(password)
        agent = Agent(agent_id=uuid.uuid4().hex, name=name, created_at=now_iso(),
                      role=Role(role))
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO agents (agent_id, name, password_hash, created_at, disabled,"
                    " role, token_version) VALUES (?, ?, ?, ?, 0, ?, 1)",
                    (agent.agent_id, agent.name, password_hash, agent.created_at,
                     agent.role.value),
                )
            except sqlite3.IntegrityError as e:
                raise ValueError(f"an agent named {name!r} exists already") from e
        return agent

    def list(self) -> builtins.list[Agent]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_FIELDS} FROM agents ORDER BY name COLLATE NOCASE").fetchall()
        return [_agent(row) for row in rows]

    def remove(self, name: str) -> bool:
        """Delete the account called ``name`` (case-insensitive); False when there is none."""
        with self._lock:
            cur = self._db.execute("DELETE FROM agents WHERE name = ?", (name,))
        return cur.rowcount > 0

    def get(self, agent_id: str) -> Agent | None:
        """The enabled account with this id, or None (unknown, removed or disabled)."""
        return self._one("agent_id = ? AND disabled = 0", (agent_id,))

    def by_name(self, name: str) -> Agent | None:
        """The account called ``name`` (case-insensitive), disabled or not."""
        return self._one("name = ?", (name,))

    def _update(self, name: str, assignments: str, args: tuple[object, ...]) -> Agent:
        """Change the account and bump its token version (its tokens stop working)."""
        with self._lock:
            cur = self._db.execute(
                f"UPDATE agents SET {assignments}, token_version = token_version + 1"
                " WHERE name = ?", (*args, name))
        if cur.rowcount == 0:
            raise KeyError(name)
        agent = self.by_name(name)
        assert agent is not None
        return agent

    def set_password(self, name: str, password: str) -> Agent:
        """A new password; every token of the account ends. ``KeyError``: no such name."""
        validate_password(password)
        return self._update(name, "password_hash = ?", (self.hasher.hash(password),))

    def set_role(self, name: str, role: Role) -> Agent:
        return self._update(name, "role = ?", (Role(role).value,))

    def set_disabled(self, name: str, disabled: bool) -> Agent:
        return self._update(name, "disabled = ?", (int(disabled),))

    def end_sessions(self, agent_id: str) -> None:
        """Every token the account holds stops working."""
        with self._lock:
            self._db.execute("UPDATE agents SET token_version = token_version + 1"
                             " WHERE agent_id = ?", (agent_id,))

    def revoke(self, jti: str, expires: float) -> None:
        """End one token (a logout) until it would have expired anyway."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO revoked (jti, expires) VALUES (?, ?)",
                             (jti, expires))
            self._db.execute("DELETE FROM revoked WHERE expires < ?", (time.time(),))

    def revoked(self, jti: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM revoked WHERE jti = ?",
                                    (jti,)).fetchone() is not None

    def version(self) -> int:
        """Changes whenever another connection (the CLI, another hub) commits a write:
        cheap enough to poll."""
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def verify(self, name: str, password: str) -> Agent | None:
        """The account if ``password`` is right for the enabled account ``name``, else None.
        Every outcome costs one hash computation. A hash older or weaker than the store's
        is replaced by a fresh Argon2id one (without ending the account's sessions)."""
        row: tuple[str, str, str, int, str, int, str] | None = None
        if isinstance(name, str) and _NAME_RE.fullmatch(name):
            with self._lock:
                row = self._db.execute(
                    f"SELECT {_FIELDS}, password_hash FROM agents WHERE name = ?",
                    (name,),
                ).fetchone()
        if not isinstance(password, str):
            password = ""
        # The hash runs outside the lock: concurrent logins must not queue behind it.
        ok = check_password(password, row[6] if row is not None else self._dummy_hash)
        if row is None or not ok or row[3]:
            return None
        if self.hasher.needs_rehash(row[6]):
            fresh = self.hasher.hash(password)
            with self._lock:
                self._db.execute("UPDATE agents SET password_hash = ? WHERE agent_id = ?"
                                 " AND password_hash = ?", (fresh, row[0], row[6]))
        return _agent(row[:6])

    async def averify(self, name: str, password: str) -> Agent | None:
        return await asyncio.to_thread(self.verify, name, password)

    async def aget(self, agent_id: str) -> Agent | None:
        return await asyncio.to_thread(self.get, agent_id)


def _agent(row: tuple[object, ...]) -> Agent:
    agent_id, name, created_at, disabled, role, version = row[:6]
    return Agent(agent_id=str(agent_id), name=str(name), created_at=str(created_at),
                 disabled=bool(disabled), role=Role(str(role)),
                 token_version=int(str(version)))
