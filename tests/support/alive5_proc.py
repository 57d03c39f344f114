"""The alive5 stand-in in a process of its own, so that a soak can SIGKILL it.

The child is :class:`~tests.support.alive5.Alive5StandIn` with a journal: everything it
stores is appended to a file as one JSON line, written before its acknowledgement goes out
(a SIGKILL loses no line the kernel took: the page cache outlives the process). A new
child on the same port and journal reads the journal back first, so a message resent across
the kill is still recognised by its ``message_key`` and counted as a resend, as a real
thread would show it twice. The parent (:class:`Alive5Process`) reads the threads from the
journal whenever asked: ``threads`` has the shape of the in-process stand-in's.

Run as ``python -m tests.support.alive5_proc --port P --journal FILE [--api-key K]``; it
prints ``ready`` once it listens and runs until it is killed or gets SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from tests.support.alive5 import API_KEY, Alive5StandIn, Alive5Thread
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]


def replay(journal: Path) -> dict[str, Alive5Thread]:
    """The threads a journal describes (an empty dict when there is none yet). A last
    line cut short by a SIGKILL in the middle of a write is ignored: nothing was
    acknowledged for it."""
    threads: dict[str, Alive5Thread] = {}
    try:
        text = journal.read_text()
    except FileNotFoundError:
        return threads
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        thread = threads.setdefault(record["thread"], Alive5Thread(record["thread"]))
        if record["event"] == "post":
            data = record["data"]
            if record["dup"]:
                thread.duplicates += 1
                thread.resent.append(str(data.get("message_key")))
                thread.resent_at.append(record["at"])
            else:
                thread.messages.append({**data, "_received": record["at"]})
        elif record["event"] == "crm":
            thread.crm[record["key"]] = record["value"]
        elif record["event"] == "end":
            thread.ended.append({**record["data"], "_received": record["at"]})
            thread.end_acks += int(record["acked"])
    return threads


class JournaledStandIn(Alive5StandIn):
    """The child's stand-in: starts from the journal, appends what it stores."""

    def __init__(self, port: int, journal: Path, api_key: str = API_KEY) -> None:
        super().__init__(port, api_key)
        self.threads = replay(journal)
        fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._journal: IO[str] = os.fdopen(fd, "a", encoding="utf-8")

    def _stored(self, event: str, thread_id: str, record: dict[str, Any]) -> None:
        self._journal.write(json.dumps({"event": event, "thread": thread_id, **record}) + "\n")
        self._journal.flush()  # in the kernel before the acknowledgement is sent


class Alive5Process:
    """The stand-in as a child process: ``start``, ``kill`` (SIGKILL), ``stop``; the
    threads it stored so far, read from its journal."""

    def __init__(self, journal: Path, port: int | None = None, api_key: str = API_KEY) -> None:
        self.journal = journal
        self.port = port or free_port(kind=1)  # TCP
        self.api_key = api_key
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def threads(self) -> dict[str, Alive5Thread]:
        return replay(self.journal)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> Alive5Process:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.alive5_proc", "--port", str(self.port),
             "--journal", str(self.journal), "--api-key", self.api_key],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout) or self.proc.stdout.readline().strip() != "ready":
                self.kill()
                raise RuntimeError(f"the alive5 stand-in process did not start on {self.port}")
        return self

    def kill(self) -> int:
        """SIGKILL the child and reap it; its pid."""
        assert self.proc is not None
        pid = self.proc.pid
        self.proc.kill()
        self.proc.wait(10)
        return pid

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> Alive5Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--journal", type=Path, required=True)
    p.add_argument("--api-key", default=API_KEY)
    args = p.parse_args(argv)
    stand_in = JournaledStandIn(args.port, args.journal, args.api_key).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("ready", flush=True)
    done.wait()
    stand_in.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
