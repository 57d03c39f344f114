"""``hitl-sip agents add | list | remove`` through ``agents_command`` with in-memory streams."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hitl_sip.agents_cli import AGENTS_FILE, agents_command
from hitl_sip.hub.agents import AgentStore, Hasher, Role

CHEAP = Hasher(time_cost=1, memory_kib=8)  # tests only: production uses agents.OWASP


@dataclass
class Result:
    code: int
    out: str
    err: str


class TtyInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def no_prompt(prompt: str) -> str:
    raise AssertionError("no prompt expected when stdin is not a terminal")


def run(
    data_dir: Path,
    *argv: str,
    stdin: io.StringIO | None = None,
    ask_password: Callable[[str], str] = no_prompt,
    role: str | None = None,
) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = agents_command(
        list(argv),
        data_dir,
        stdin or io.StringIO(""),
        out,
        err,
        ask_password=ask_password,
        hasher=CHEAP,
        role=role,
    )
    return Result(code, out.getvalue(), err.getvalue())


def verify(data_dir: Path, name: str, password: str) -> bool:
    store = AgentStore(data_dir / AGENTS_FILE, hasher=CHEAP)
    try:
        return store.verify(name, password) is not None
    finally:
        store.close()


def test_add_reads_the_password_from_the_first_line_of_stdin(tmp_path: Path) -> None:
    r = run(tmp_path, "add", "alice", stdin=io.StringIO("correct horse\nignored\n"))
    assert r.code == 0 and r.err == ""
    assert r.out.startswith("added agent alice (id ")
    assert "correct horse" not in r.out + r.err
    assert verify(tmp_path, "alice", "correct horse")


def test_add_keeps_spaces_but_not_the_line_ending(tmp_path: Path) -> None:
    assert run(tmp_path, "add", "alice", stdin=io.StringIO(" pass word \r\n")).code == 0
    assert verify(tmp_path, "alice", " pass word ")


def test_add_on_a_terminal_prompts_twice(tmp_path: Path) -> None:
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "correct horse"

    r = run(tmp_path, "add", "alice", stdin=TtyInput(), ask_password=ask)
    assert r.code == 0
    assert prompts == ["Password: ", "Repeat password: "]
    assert verify(tmp_path, "alice", "correct horse")


def test_add_on_a_terminal_refuses_passwords_that_differ(tmp_path: Path) -> None:
    answers = iter(["correct horse", "correct hose"])
    r = run(tmp_path, "add", "alice", stdin=TtyInput(), ask_password=lambda _: next(answers))
    assert r.code == 2
    assert "do not match" in r.err
    assert "correct" not in r.err + r.out
    assert not verify(tmp_path, "alice", "correct horse")


def test_add_of_a_duplicate_name_exits_2(tmp_path: Path) -> None:
    assert run(tmp_path, "add", "alice", stdin=io.StringIO("password1\n")).code == 0
    r = run(tmp_path, "add", "Alice", stdin=io.StringIO("password2\n"))
    assert r.code == 2
    assert "exists already" in r.err
    assert verify(tmp_path, "alice", "password1")


def test_add_with_a_short_password_exits_2_naming_the_problem(tmp_path: Path) -> None:
    r = run(tmp_path, "add", "alice", stdin=io.StringIO("short\n"))
    assert r.code == 2
    assert r.err == "hitl-sip agents add: password is 5 characters; at least 8 required\n"
    assert "alice" not in run(tmp_path, "list").out


def test_add_without_a_password_on_stdin_exits_2(tmp_path: Path) -> None:
    r = run(tmp_path, "add", "alice")
    assert r.code == 2
    assert "no password on stdin" in r.err


def test_add_with_an_invalid_name_exits_2_before_reading_a_password(tmp_path: Path) -> None:
    stdin = io.StringIO("password1\n")
    r = run(tmp_path, "add", "bad name", stdin=stdin)
    assert r.code == 2
    assert "letters, digits" in r.err
    assert stdin.tell() == 0


def test_list_shows_name_id_and_creation_time_but_no_password(tmp_path: Path) -> None:
    for name, password in (("bob", "password-b"), ("alice", "password-a")):
        run(tmp_path, "add", name, stdin=io.StringIO(password + "\n"))
    r = run(tmp_path, "list")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "ID", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["alice", "agent"], ["bob", "agent"]]
    assert all(len(line.split()[2]) == 32 and line.endswith("Z") for line in lines[1:])
    assert "password" not in r.out and "argon2" not in r.out


def test_list_without_a_store_says_so_and_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    r = run(data_dir, "list")
    assert (r.code, r.out) == (0, "no agents\n")
    assert not data_dir.exists()


def test_remove_deletes_the_agent(tmp_path: Path) -> None:
    run(tmp_path, "add", "alice", stdin=io.StringIO("password1\n"))
    r = run(tmp_path, "remove", "ALICE")
    assert r.code == 0 and "removed agent" in r.out
    assert run(tmp_path, "list").out == "no agents\n"


def test_remove_of_an_unknown_agent_exits_1_with_a_message(tmp_path: Path) -> None:
    run(tmp_path, "add", "alice", stdin=io.StringIO("password1\n"))
    r = run(tmp_path, "remove", "bob")
    assert r.code == 1
    assert "no agent named 'bob'" in r.err
    assert run(tmp_path / "empty", "remove", "bob").code == 1


def test_usage_errors_exit_2_with_the_usage(tmp_path: Path) -> None:
    for argv in ((), ("frobnicate",), ("add",), ("remove",), ("list", "extra"), ("add", "a", "b")):
        r = run(tmp_path, *argv)
        assert r.code == 2, argv
        assert "usage: hitl-sip agents" in r.err


def test_help_prints_the_usage_and_exits_0(tmp_path: Path) -> None:
    r = run(tmp_path, "--help")
    assert r.code == 0 and r.out.startswith("usage: hitl-sip agents")


def test_an_unusable_data_directory_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run(blocker, "add", "alice", stdin=io.StringIO("password1\n"))
    assert r.code == 1
    assert "hitl-sip agents add" in r.err


def account(data_dir: Path, name: str) -> tuple[Role, int]:
    store = AgentStore(data_dir / AGENTS_FILE, hasher=CHEAP)
    try:
        agent = store.by_name(name)
        assert agent is not None
        return agent.role, agent.token_version
    finally:
        store.close()


def test_add_with_a_role_and_role_changes_it_ending_the_sessions(tmp_path: Path) -> None:
    r = run(tmp_path, "add", "sue", stdin=io.StringIO("password1\n"), role="supervisor")
    assert r.code == 0 and r.out.startswith("added supervisor sue"), r
    assert account(tmp_path, "sue") == (Role.SUPERVISOR, 1)
    r = run(tmp_path, "role", "sue", "admin")
    assert r.code == 0 and "sessions ended" in r.out
    assert account(tmp_path, "sue") == (Role.ADMIN, 2)
    assert run(tmp_path, "list").out.splitlines()[1].split()[:2] == ["sue", "admin"]


def test_an_unknown_role_exits_2_naming_the_roles(tmp_path: Path) -> None:
    r = run(tmp_path, "add", "sue", stdin=io.StringIO("password1\n"), role="boss")
    assert r.code == 2 and "agent, supervisor, admin" in r.err
    run(tmp_path, "add", "sue", stdin=io.StringIO("password1\n"))
    assert run(tmp_path, "role", "sue", "root").code == 2
    assert run(tmp_path, "remove", "sue", role="admin").code == 2  # --role is add's
    assert account(tmp_path, "sue") == (Role.AGENT, 1)


def test_passwd_sets_a_new_password_and_ends_the_sessions(tmp_path: Path) -> None:
    run(tmp_path, "add", "alice", stdin=io.StringIO("password1\n"))
    r = run(tmp_path, "passwd", "alice", stdin=io.StringIO("password2\n"))
    assert r.code == 0, r
    assert not verify(tmp_path, "alice", "password1")
    assert verify(tmp_path, "alice", "password2")
    assert account(tmp_path, "alice") == (Role.AGENT, 2)
    assert run(tmp_path, "passwd", "nobody", stdin=io.StringIO("password2\n")).code == 1
    assert run(tmp_path, "passwd", "alice", stdin=io.StringIO("short\n")).code == 2
