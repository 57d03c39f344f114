"""The account store: validation, case-insensitive names, Argon2id hashes (scrypt ones from
older stores verified and rehashed), constant-cost verify, roles and token versions."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from hitl_sip.hub import agents as agents_module
from hitl_sip.hub.agents import (
    OWASP,
    Agent,
    AgentStore,
    Hasher,
    Role,
    check_password,
    hash_password,
)

CHEAP = Hasher(time_cost=1, memory_kib=8)  # tests only; production uses OWASP


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "data" / "agents.sqlite", hasher=CHEAP)
    yield s
    s.close()


def test_the_database_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "agents.sqlite"
    AgentStore(path, hasher=CHEAP).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_added_agent_is_listed_without_its_password(store: AgentStore) -> None:
    agent = store.add("alice", "correct horse")
    assert len(agent.agent_id) == 32 and int(agent.agent_id, 16) >= 0
    assert agent.created_at.endswith("Z")
    assert store.list() == [agent]
    assert "correct horse" not in repr(store.list())


def test_agents_are_listed_by_name_ignoring_case(store: AgentStore) -> None:
    for name in ("carol", "Bob", "alice"):
        store.add(name, "password1")
    assert [a.name for a in store.list()] == ["alice", "Bob", "carol"]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        ("a" * 65, "at most 64"),
        ("al ice", "letters, digits"),
        ("al/ice", "letters, digits"),
        ("ålice", "letters, digits"),
    ],
)
def test_an_invalid_name_is_refused_with_the_reason(
    store: AgentStore, name: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        store.add(name, "password1")
    assert store.list() == []


def test_names_may_use_letters_digits_and_dot_underscore_at_dash(store: AgentStore) -> None:
    agent = store.add("Ann.Lee_2@acme-corp", "password1")
    assert store.verify("ann.lee_2@ACME-corp", "password1") == agent
    assert store.add("x" * 64, "password1").name == "x" * 64


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("", "0 characters; at least 8"),
        ("1234567", "7 characters; at least 8"),
        ("p" * 257, "257 characters; at most 256"),
    ],
)
def test_a_short_or_huge_password_is_refused_with_the_reason(
    store: AgentStore, password: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        store.add("alice", password)


def test_a_duplicate_name_is_refused_whatever_its_case(store: AgentStore) -> None:
    store.add("alice", "password1")
    with pytest.raises(ValueError, match="exists already"):
        store.add("ALICE", "password2")
    assert len(store.list()) == 1
    assert store.verify("alice", "password1") is not None


def test_verify_accepts_the_right_password_in_any_name_case(store: AgentStore) -> None:
    agent = store.add("Alice", "password1")
    assert store.verify("alice", "password1") == agent
    assert store.verify("ALICE", "password1") == agent


def test_verify_refuses_a_wrong_password_an_unknown_name_and_a_malformed_name(
    store: AgentStore,
) -> None:
    store.add("alice", "password1")
    assert store.verify("alice", "password2") is None
    assert store.verify("alice", "PASSWORD1") is None
    assert store.verify("bob", "password1") is None
    assert store.verify("no such/name", "password1") is None


def test_verify_hashes_once_for_unknown_users_as_for_known_ones(store: AgentStore) -> None:
    store.add("alice", "password1")
    with mock.patch.object(
        agents_module, "check_password", wraps=agents_module.check_password
    ) as check:
        store.verify("alice", "wrong-password")
        store.verify("nobody", "wrong-password")
        store.verify("bad name!", "wrong-password")
    assert check.call_count == 3
    stored_hashes = [c.args[1] for c in check.call_args_list]
    # The dummy hash has the same cost as a real one.
    assert len({h.split("$")[3] for h in stored_hashes}) == 1


def test_a_disabled_agent_cannot_log_in_or_be_fetched(store: AgentStore) -> None:
    store.add("alice", "password1")
    agent = store.set_disabled("alice", True)
    assert agent.token_version == 2
    assert store.verify("alice", "password1") is None
    assert store.get(agent.agent_id) is None
    assert store.list()[0].disabled


def test_remove_deletes_by_name_ignoring_case_and_reports_unknown_names(
    store: AgentStore,
) -> None:
    agent = store.add("alice", "password1")
    assert store.remove("ALICE") is True
    assert store.remove("alice") is False
    assert store.get(agent.agent_id) is None
    assert store.verify("alice", "password1") is None


def test_get_finds_an_agent_by_id(store: AgentStore) -> None:
    agent = store.add("alice", "password1")
    assert store.get(agent.agent_id) == agent
    assert store.get("0" * 32) is None


def test_agents_persist_across_store_instances(tmp_path: Path) -> None:
    path = tmp_path / "agents.sqlite"
    first = AgentStore(path, hasher=CHEAP)
    agent = first.add("alice", "password1")
    first.close()
    second = AgentStore(path, hasher=CHEAP)
    assert second.verify("alice", "password1") == agent
    second.close()


def test_hashes_are_argon2id_phc_strings_with_a_random_salt() -> None:
    first = hash_password("password1", CHEAP)
    second = hash_password("password1", CHEAP)
    _, scheme, version, params, salt, key = first.split("$")
    assert (scheme, version, params) == ("argon2id", "v=19", "m=8,t=1,p=1")
    assert len(salt) == 22 and len(key) == 43  # unpadded base64 of 16 and 32 bytes
    assert first != second
    assert check_password("password1", first) and check_password("password1", second)
    assert not check_password("password2", first)


def test_the_production_cost_is_owasp_argon2id() -> None:
    stored = hash_password("password1")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert check_password("password1", stored)
    assert Hasher(time_cost=2, memory_kib=19 * 1024, parallelism=1) == OWASP


def test_an_older_weaker_hash_verifies_and_is_rehashed_at_login(tmp_path: Path) -> None:
    key = hashlib.scrypt(b"password1", salt=b"saltsaltsaltsalt", n=16, r=8, p=1, dklen=32)
    legacy = f"scrypt$16$8$1$c2FsdHNhbHRzYWx0c2FsdA==${base64.b64encode(key).decode()}"
    assert check_password("password1", legacy)  # a store from before Argon2id
    path = tmp_path / "agents.sqlite"
    store = AgentStore(path, hasher=CHEAP)
    agent = store.add("alice", "password1")
    with store._lock:
        store._db.execute("UPDATE agents SET password_hash = ?", (legacy,))
    assert store.verify("alice", "password1") == agent  # the same account, version kept
    with store._lock:
        stored = store._db.execute("SELECT password_hash FROM agents").fetchone()[0]
    assert stored.startswith("$argon2id$") and check_password("password1", stored)
    store.close()
    dearer = AgentStore(path, hasher=Hasher(time_cost=2, memory_kib=16))
    assert dearer.verify("alice", "password1") is not None
    with dearer._lock:
        assert "m=16,t=2" in dearer._db.execute("SELECT password_hash FROM agents").fetchone()[0]
    dearer.close()


def test_roles_and_token_versions(store: AgentStore) -> None:
    agent = store.add("sue", "password1", Role.SUPERVISOR)
    assert (agent.role, agent.token_version) == (Role.SUPERVISOR, 1)
    assert store.set_role("SUE", Role.ADMIN).token_version == 2
    assert store.set_password("sue", "password2").token_version == 3
    assert store.verify("sue", "password2") == store.get(agent.agent_id)
    store.end_sessions(agent.agent_id)
    assert store.by_name("sue") == Agent(agent.agent_id, "sue", agent.created_at,
                                         role=Role.ADMIN, token_version=4)
    with pytest.raises(KeyError):
        store.set_role("nobody", Role.ADMIN)


def test_a_logged_out_token_stays_revoked_until_it_would_have_expired(
    store: AgentStore,
) -> None:
    store.revoke("jti-1", expires=time.time() + 60)
    store.revoke("jti-old", expires=time.time() - 1)
    assert store.revoked("jti-1")
    store.revoke("jti-2", expires=time.time() + 60)  # each revoke sweeps the expired ones
    assert not store.revoked("jti-old")
    assert not store.revoked("jti-3")


def test_a_store_from_before_roles_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "agents.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE agents (agent_id TEXT PRIMARY KEY, name TEXT NOT NULL "
                     "UNIQUE COLLATE NOCASE, password_hash TEXT NOT NULL, created_at TEXT NOT "
                     "NULL, disabled INTEGER NOT NULL DEFAULT 0);"
                     "INSERT INTO agents VALUES ('a1', 'old', 'x', 'then', 0);")
    db.close()
    store = AgentStore(path, hasher=CHEAP)
    assert store.by_name("old") == Agent("a1", "old", "then", role=Role.AGENT, token_version=1)
    store.close()


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "bcrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$16$8$1$not-base64$" + "A" * 44,
        "scrypt$15$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # N not a power of two
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # N too large
        "scrypt$16$8$1$AAAAAAAAAAAAAAAAAAAAAA==",
    ],
)
def test_a_malformed_stored_hash_never_matches(stored: str) -> None:
    assert check_password("password1", stored) is False


def test_concurrent_adds_and_verifies_do_not_interfere(store: AgentStore) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            store.add(f"agent{i}", f"password{i}")
            assert store.verify(f"agent{i}", f"password{i}") is not None
        except BaseException as e:  # collected and re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.list()) == 16


async def test_async_wrappers_run_verify_and_get(store: AgentStore) -> None:
    agent = store.add("alice", "password1")
    assert await store.averify("alice", "password1") == agent
    assert await store.averify("alice", "nope-nope") is None
    assert await store.aget(agent.agent_id) == agent
