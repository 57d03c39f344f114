"""The agent store: validation, case-insensitive names, scrypt hashes, constant-cost verify."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from hitl_sip.hub import agents as agents_module
from hitl_sip.hub.agents import (
    SCRYPT_N,
    AgentStore,
    check_password,
    hash_password,
)

CHEAP = 16  # scrypt N for tests; production uses SCRYPT_N


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AgentStore]:
    s = AgentStore(tmp_path / "data" / "agents.sqlite", cost=CHEAP)
    yield s
    s.close()


def test_the_database_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "agents.sqlite"
    AgentStore(path, cost=CHEAP).close()
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
    assert len({h.split("$")[1] for h in stored_hashes}) == 1


def test_a_disabled_agent_cannot_log_in_or_be_fetched(store: AgentStore) -> None:
    agent = store.add("alice", "password1")
    with store._lock:  # no public disable yet; the column is reserved for it
        store._db.execute("UPDATE agents SET disabled = 1 WHERE agent_id = ?", (agent.agent_id,))
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
    first = AgentStore(path, cost=CHEAP)
    agent = first.add("alice", "password1")
    first.close()
    second = AgentStore(path, cost=CHEAP)
    assert second.verify("alice", "password1") == agent
    second.close()


def test_hashes_use_the_documented_format_with_a_random_salt() -> None:
    first = hash_password("password1", cost=CHEAP)
    second = hash_password("password1", cost=CHEAP)
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(CHEAP), "8", "1")
    assert len(salt) == 24 and len(key) == 44  # base64 of 16 and 32 bytes
    assert first != second
    assert check_password("password1", first) and check_password("password1", second)


def test_the_production_cost_is_scrypt_n_2_pow_14() -> None:
    assert SCRYPT_N == 2**14
    stored = hash_password("password1")
    assert stored.startswith("scrypt$16384$8$1$")
    assert check_password("password1", stored)


def test_a_hash_verifies_whatever_cost_the_store_now_uses(tmp_path: Path) -> None:
    path = tmp_path / "agents.sqlite"
    cheap = AgentStore(path, cost=CHEAP)
    cheap.add("alice", "password1")
    cheap.close()
    dearer = AgentStore(path, cost=32)
    assert dearer.verify("alice", "password1") is not None
    dearer.close()


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
