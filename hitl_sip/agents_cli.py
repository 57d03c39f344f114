"""``hitl-sip agents add NAME [--role ROLE] | list | remove NAME | role NAME ROLE |
passwd NAME`` (PROTOCOL.md §5, §6).

``add`` and ``passwd`` read the password from the first line of stdin (``echo "$PW" |
hitl-sip agents add alice``); on a terminal they prompt twice without echo. Passwords are
never printed. ``remove``, ``role`` and ``passwd`` end the account's sessions: a running hub
refuses its tokens at once and closes its sockets within a second. Every change is written
to the audit trail. Exit codes: 0 done, 2 usage or validation error (the problem named),
1 anything else.
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from hitl_sip.hub.agents import (
    OWASP,
    AgentStore,
    Hasher,
    Role,
    parse_role,
    validate_name,
    validate_password,
)
from hitl_sip.hub.sessions import audit

AGENTS_FILE = "agents.sqlite"

USAGE = """\
usage: hitl-sip agents add NAME [--role ROLE]  create an account (role agent, supervisor
                                              or admin; agent by default); the password is
                                              read from stdin
       hitl-sip agents list                    show the accounts and their roles
       hitl-sip agents remove NAME             delete an account (its sessions end)
       hitl-sip agents role NAME ROLE          change an account's role (its sessions end)
       hitl-sip agents passwd NAME             set a new password from stdin (sessions end)
"""

_COMMANDS = {"add": 1, "list": 0, "remove": 1, "role": 2, "passwd": 1}


def agents_command(
    argv_rest: list[str],
    data_dir: Path,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    *,
    ask_password: Callable[[str], str] = getpass.getpass,
    hasher: Hasher = OWASP,
    role: str | None = None,
) -> int:
    """Run one ``agents`` sub-command against ``<data_dir>/agents.sqlite``; the exit code.

    ``ask_password`` prompts on a terminal (``getpass.getpass`` in production); ``hasher``
    sets the Argon2id cost of new hashes; ``role`` is ``add``'s ``--role``."""
    if not argv_rest or argv_rest[0] in ("-h", "--help", "help"):
        (stdout if argv_rest else stderr).write(USAGE)
        return 0 if argv_rest else 2
    command, args = argv_rest[0], argv_rest[1:]
    if command not in _COMMANDS:
        stderr.write(f"hitl-sip agents: unknown command {command!r}\n{USAGE}")
        return 2
    if len(args) != _COMMANDS[command]:
        expected = {0: "no arguments", 1: "a NAME", 2: "a NAME and a ROLE"}[_COMMANDS[command]]
        stderr.write(f"hitl-sip agents {command}: expects {expected}\n{USAGE}")
        return 2
    if role is not None and command != "add":
        stderr.write(f"hitl-sip agents {command}: --role goes with add (use: agents role "
                     "NAME ROLE)\n")
        return 2
    try:
        new_role = parse_role(role or "agent") if command == "add" else (
            parse_role(args[1]) if command == "role" else Role.AGENT)
    except ValueError as e:
        stderr.write(f"hitl-sip agents {command}: {e}\n")
        return 2
    path = data_dir / AGENTS_FILE
    try:
        if command == "add":
            return _add(
                args[0],
                path,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                ask_password=ask_password,
                hasher=hasher,
                role=new_role,
            )
        if not path.exists():  # do not create a store just to look into it
            if command == "list":
                stdout.write("no agents\n")
                return 0
            stderr.write(f"hitl-sip agents {command}: no agent named {args[0]!r}\n")
            return 1
        store = AgentStore(path, hasher=hasher)
        try:
            if command == "list":
                return _list(store, stdout)
            return _change(command, args, new_role, store, stdin=stdin, stdout=stdout,
                           stderr=stderr, ask_password=ask_password)
        finally:
            store.close()
    except (OSError, sqlite3.Error) as e:
        stderr.write(f"hitl-sip agents {command}: {path}: {e}\n")
        return 1


def _change(command: str, args: list[str], role: Role, store: AgentStore, *, stdin: TextIO,
            stdout: TextIO, stderr: TextIO, ask_password: Callable[[str], str]) -> int:
    """``remove``, ``role`` or ``passwd`` on an existing account."""
    name = args[0]
    target = store.by_name(name)
    if target is None:
        stderr.write(f"hitl-sip agents {command}: no agent named {name!r}\n")
        return 1
    if command == "remove":
        store.remove(name)
        audit("account_removed", by="cli", agent=target.agent_id)
        stdout.write(f"removed agent {name}\n")
        return 0
    if command == "role":
        store.set_role(name, role)
        audit("account_changed", by="cli", agent=target.agent_id, role=role.value)
        stdout.write(f"agent {name} is now {role.value}; its sessions ended\n")
        return 0
    password = _read_password(stdin, stderr, ask_password, command)
    if password is None:
        return 2
    try:
        store.set_password(name, password)
    except ValueError as e:
        stderr.write(f"hitl-sip agents passwd: {e}\n")
        return 2
    audit("account_changed", by="cli", agent=target.agent_id, password=True)
    stdout.write(f"new password set for {name}; its sessions ended\n")
    return 0


def _read_password(stdin: TextIO, stderr: TextIO, ask_password: Callable[[str], str],
                   command: str = "add") -> str | None:
    """The new password, or None after writing why there is none."""
    if stdin.isatty():
        try:
            first = ask_password("Password: ")
            second = ask_password("Repeat password: ")
        except (EOFError, KeyboardInterrupt):
            stderr.write(f"\nhitl-sip agents {command}: no password given\n")
            return None
        if first != second:
            stderr.write(f"hitl-sip agents {command}: the passwords do not match\n")
            return None
        return first
    line = stdin.readline()
    if not line:
        stderr.write(f"hitl-sip agents {command}: no password on stdin (give it as the first "
                     "line)\n")
        return None
    return line.rstrip("\r\n")


def _add(
    name: str,
    path: Path,
    *,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    ask_password: Callable[[str], str],
    hasher: Hasher,
    role: Role,
) -> int:
    try:
        validate_name(name)
    except ValueError as e:
        stderr.write(f"hitl-sip agents add: {e}\n")
        return 2
    password = _read_password(stdin, stderr, ask_password)
    if password is None:
        return 2
    try:
        validate_password(password)
    except ValueError as e:
        stderr.write(f"hitl-sip agents add: {e}\n")
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    store = AgentStore(path, hasher=hasher)
    try:
        agent = store.add(name, password, role)
    except ValueError as e:  # the name is taken
        stderr.write(f"hitl-sip agents add: {e}\n")
        return 2
    finally:
        store.close()
    audit("account_added", by="cli", agent=agent.agent_id, role=agent.role.value)
    stdout.write(f"added {agent.role.value} {agent.name} (id {agent.agent_id})\n")
    return 0


def _list(store: AgentStore, stdout: TextIO) -> int:
    agents = store.list()
    if not agents:
        stdout.write("no agents\n")
        return 0
    rows = [("NAME", "ROLE", "ID", "CREATED")]
    rows += [
        (a.name + (" (disabled)" if a.disabled else ""), a.role.value, a.agent_id, a.created_at)
        for a in agents
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for name, role, agent_id, created in rows:
        stdout.write(f"{name:<{widths[0]}}  {role:<{widths[1]}}  {agent_id:<{widths[2]}}  "
                     f"{created}\n")
    return 0
