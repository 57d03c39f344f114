"""``hitl-sip agents add NAME | list | remove NAME`` (PROTOCOL.md §5).

``add`` reads the password from the first line of stdin (``echo "$PW" | hitl-sip agents add
alice``); on a terminal it prompts twice without echo. Passwords are never printed.
Exit codes: 0 done, 2 usage or validation error (the problem named), 1 anything else.
"""

from __future__ import annotations

import getpass
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from hitl_sip.hub.agents import SCRYPT_N, AgentStore, validate_name, validate_password

AGENTS_FILE = "agents.sqlite"

USAGE = """\
usage: hitl-sip agents add NAME      create an agent; the password is read from stdin
       hitl-sip agents list          show the agents
       hitl-sip agents remove NAME   delete an agent
"""

_COMMANDS = {"add": 1, "list": 0, "remove": 1}


def agents_command(
    argv_rest: list[str],
    data_dir: Path,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    *,
    ask_password: Callable[[str], str] = getpass.getpass,
    cost: int = SCRYPT_N,
) -> int:
    """Run one ``agents`` sub-command against ``<data_dir>/agents.sqlite``; the exit code.

    ``ask_password`` prompts on a terminal (``getpass.getpass`` in production); ``cost`` is
    the scrypt N for new hashes."""
    if not argv_rest or argv_rest[0] in ("-h", "--help", "help"):
        (stdout if argv_rest else stderr).write(USAGE)
        return 0 if argv_rest else 2
    command, args = argv_rest[0], argv_rest[1:]
    if command not in _COMMANDS:
        stderr.write(f"hitl-sip agents: unknown command {command!r}\n{USAGE}")
        return 2
    if len(args) != _COMMANDS[command]:
        expected = "a NAME" if _COMMANDS[command] else "no arguments"
        stderr.write(f"hitl-sip agents {command}: expects {expected}\n{USAGE}")
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
                cost=cost,
            )
        if not path.exists():  # do not create a store just to look into it
            if command == "list":
                stdout.write("no agents\n")
                return 0
            stderr.write(f"hitl-sip agents remove: no agent named {args[0]!r}\n")
            return 1
        store = AgentStore(path, cost=cost)
        try:
            if command == "list":
                return _list(store, stdout)
            if not store.remove(args[0]):
                stderr.write(f"hitl-sip agents remove: no agent named {args[0]!r}\n")
                return 1
            stdout.write(f"removed agent {args[0]}\n")
            return 0
        finally:
            store.close()
    except (OSError, sqlite3.Error) as e:
        stderr.write(f"hitl-sip agents {command}: {path}: {e}\n")
        return 1


def _read_password(stdin: TextIO, stderr: TextIO, ask_password: Callable[[str], str]) -> str | None:
    """The new password, or None after writing why there is none."""
    if stdin.isatty():
        try:
            first = ask_password("Password: ")
            second = ask_password("Repeat password: ")
        except (EOFError, KeyboardInterrupt):
            stderr.write("\nhitl-sip agents add: no password given\n")
            return None
        if first != second:
            stderr.write("hitl-sip agents add: the passwords do not match\n")
            return None
        return first
    line = stdin.readline()
    if not line:
        stderr.write("hitl-sip agents add: no password on stdin (give it as the first line)\n")
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
    cost: int,
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
    store = AgentStore(path, cost=cost)
    try:
        agent = store.add(name, password)
    except ValueError as e:  # the name is taken
        stderr.write(f"hitl-sip agents add: {e}\n")
        return 2
    finally:
        store.close()
    stdout.write(f"added agent {agent.name} (id {agent.agent_id})\n")
    return 0


def _list(store: AgentStore, stdout: TextIO) -> int:
    agents = store.list()
    if not agents:
        stdout.write("no agents\n")
        return 0
    rows = [("NAME", "ID", "CREATED")]
    rows += [
        (a.name + (" (disabled)" if a.disabled else ""), a.agent_id, a.created_at) for a in agents
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, agent_id, created in rows:
        stdout.write(f"{name:<{widths[0]}}  {agent_id:<{widths[1]}}  {created}\n")
    return 0
