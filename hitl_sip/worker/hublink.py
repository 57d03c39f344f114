"""The worker's connection to the hub: a websocket carrying the typed messages of
:mod:`hitl_sip.protocol.worker` both ways, with delivery that survives the hub.

* **Reliable events** (turns, call and state events, replies) get a link sequence number
  and stay in ``pending`` until the hub acknowledges them (cumulative :class:`Ack`). After
  a reconnect the :class:`Hello` goes first, then every unacknowledged event again, in
  order; the hub skips the ones it applied already (same worker ``epoch``, ``linkSeq`` at
  or below its last). Nothing is dropped: beyond ``memory_limit`` events the newest are
  appended to a spill file (``spill_path``, mode 0600, JSON lines; it holds transcripts)
  and read back as the hub catches up.
* **Carried over a restart.** What the hub has not acknowledged when the worker stops (the
  hub died first, or did not answer within ``flush_timeout``) is written to the spill file;
  the next worker process with the same id reads it at :meth:`start` and sends it again
  under its own epoch. A process holds ``<spill_path>.lock`` (``flock``) from
  :meth:`acquire` to its exit, so its successor reads the file only once it is complete.
  The hub's stores are idempotent (a turn's key, one end per thread), so an event the old
  hub applied but never acknowledged does no harm the second time.
* **Status** is coalesced: only the latest waits while the hub is away.
* **Interims** (live captions) and other best-effort messages wait in a bounded queue;
  when it is full the oldest are dropped and counted in :attr:`dropped`.
* **Supervised.** The connection loop and the status reporter (:meth:`start` with a
  ``status`` callable) run under :func:`hitl_sip.supervise.supervised`: an unexpected
  error restarts them with backoff instead of leaving the worker silently cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import secrets
from collections import deque
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from hitl_sip.protocol.wire import WireError
from hitl_sip.protocol.worker import (
    Ack,
    Hello,
    HubCommand,
    Msg,
    Reliable,
    Status,
    parse_hub_message,
    parse_worker_message,
)
from hitl_sip.supervise import RestartCounter, supervised

log = logging.getLogger(__name__)

MEMORY_LIMIT = 10_000  # reliable events kept in memory before the spill file is used
VOLATILE_LIMIT = 500


class HubLink:
    def __init__(
        self,
        url: str,
        token: str,
        hello: Callable[[], Hello],
        on_message: Callable[[HubCommand], None] | None = None,
        *,
        spill_path: Path | None = None,
        memory_limit: int = MEMORY_LIMIT,
        volatile_limit: int = VOLATILE_LIMIT,
        restarts: RestartCounter | None = None,
        restart_backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self.url = url
        self.token = token
        self.hello = hello
        self.on_message = on_message
        self.epoch = secrets.token_hex(8)
        self.spill_path = spill_path
        self.memory_limit = memory_limit
        self._seqs = itertools.count(1)
        self.pending: deque[tuple[int, str]] = deque()  # reliable, not yet acknowledged
        self._spilled = 0  # events in the spill file not yet read back
        self._spill_offset = 0
        self._sent_upto = 0  # the highest linkSeq sent on the current connection
        self.acked = 0
        self._volatile: deque[str] = deque(maxlen=volatile_limit)
        self._status: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self.restarts = restarts  # hitl_sip_task_restarts_total{task} of the worker
        self.restart_backoff = restart_backoff
        self.connected = asyncio.Event()
        self._all_acked = asyncio.Event()
        self._all_acked.set()
        self.dropped = 0
        self.bad_messages = 0
        self._lock_fd: int | None = None

    # -- the worker's side ----------------------------------------------------------------

    def send(self, message: Msg) -> None:
        """Queue a message for the hub (never blocks, never drops a reliable one)."""
        if isinstance(message, Status):
            self._status = message.model_dump_json(by_alias=True)
        elif isinstance(message, Reliable):
            seq = next(self._seqs)
            text = message.model_copy(update={"link_seq": seq}).model_dump_json(by_alias=True)
            self._all_acked.clear()
            if self._spilled or len(self.pending) >= self.memory_limit:
                self._spill(seq, text)
            else:
                self.pending.append((seq, text))
        else:
            if len(self._volatile) == self._volatile.maxlen:
                self.dropped += 1
            self._volatile.append(message.model_dump_json(by_alias=True))
        self._wake.set()

    @property
    def unacknowledged(self) -> int:
        return len(self.pending) + self._spilled

    async def wait_acknowledged(self) -> None:
        """Until the hub has acknowledged every reliable event sent so far."""
        await self._all_acked.wait()

    async def acquire(self, limit: float = 30.0) -> bool:
        """Take this worker id's lock (the previous process with the id holds it until it
        has written what its hub never acknowledged, and exits); False after ``limit``
        seconds without it (the carry-over is then read as it is)."""
        if self.spill_path is None or self._lock_fd is not None:
            return True
        path = self.spill_path.with_name(self.spill_path.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = asyncio.get_running_loop().time() + limit
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if asyncio.get_running_loop().time() > deadline:
                    log.error("the previous process of this worker still holds %s after "
                              "%.0f s: going on without it", path, limit)
                    os.close(fd)
                    return False
                if not waited:
                    log.warning("waiting for the previous process of this worker to finish "
                                "(%s)", path)
                    waited = True
                await asyncio.sleep(0.1)
                continue
            self._lock_fd = fd
            return True

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the flock goes with it
            self._lock_fd = None

    def start(self, status: Callable[[], Status] | None = None,
              interval: float = 1.0) -> None:
        """Connect (and keep connecting); with ``status``, also send ``status()`` every
        ``interval`` seconds (coalesced: the hub gets the latest). Both loops are
        supervised: restarted with backoff after an unexpected error."""
        self._carry_over()
        self._task = asyncio.create_task(self._supervise("hub link", "hub_link", self._run),
                                         name="hub-link")
        if status is not None:
            self._reporter = asyncio.create_task(
                self._supervise("hub status", "hub_status",
                                lambda: self._report(status, interval)),
                name="hub-status")

    async def _supervise(self, name: str, kind: str,
                         factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
        await supervised(name, factory, kind=kind, backoff=self.restart_backoff,
                         restarts=self.restarts)

    async def _report(self, status: Callable[[], Status], interval: float) -> None:
        while True:
            self.send(status())
            await asyncio.sleep(interval)

    async def close(self, flush_timeout: float = 2.0) -> None:
        """Stop, after giving the hub ``flush_timeout`` to acknowledge what is pending."""
        if self._reporter is not None:
            self._reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporter
            self._reporter = None
        if self._task is None:
            self.release()
            return
        if self.connected.is_set() and self.unacknowledged:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_acked.wait(), flush_timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self.unacknowledged:
            kept = self._keep_for_the_next_process()
            log.warning("%d event(s) for the hub not acknowledged at exit%s",
                        self.unacknowledged,
                        f": kept in {self.spill_path} for the next start" if kept else "")
        self.release()

    # -- the spill file -------------------------------------------------------------------

    def _spill(self, seq: int, text: str) -> None:
        if self.spill_path is None:  # nowhere to spill: memory it is
            self.pending.append((seq, text))
            return
        if not self._spilled:
            log.warning("hub unreachable with %d events pending: spilling to %s",
                        len(self.pending), self.spill_path)
            self._spill_offset = 0
            with contextlib.suppress(FileNotFoundError):
                self.spill_path.unlink()
        fd = os.open(self.spill_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{seq}\t{text}\n")
        self._spilled += 1

    def _unspill(self) -> None:
        """Read spilled events back while memory has room (oldest first)."""
        if not self._spilled or self.spill_path is None:
            return
        room = self.memory_limit - len(self.pending)
        if room <= 0:
            return
        with open(self.spill_path, encoding="utf-8") as f:
            f.seek(self._spill_offset)
            while room > 0 and self._spilled:
                line = f.readline()
                if not line:
                    break
                seq, _, text = line.rstrip("\n").partition("\t")
                self.pending.append((int(seq), text))
                self._spilled -= 1
                room -= 1
            self._spill_offset = f.tell()
        if not self._spilled:
            self.spill_path.unlink(missing_ok=True)
            self._spill_offset = 0

    def _unacknowledged_texts(self) -> list[str]:
        texts = [text for _, text in self.pending]
        if self._spilled and self.spill_path is not None:
            with open(self.spill_path, encoding="utf-8") as f:
                f.seek(self._spill_offset)
                texts += [line.rstrip("\n").partition("\t")[2] for line in f if line.strip()]
        return texts

    def _keep_for_the_next_process(self) -> bool:
        """Write every unacknowledged event to the spill file (replaced atomically, 0600)."""
        if self.spill_path is None:
            return False
        texts = self._unacknowledged_texts()
        tmp = self.spill_path.with_name(self.spill_path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(f"0\t{text}\n" for text in texts)
            os.replace(tmp, self.spill_path)
        except OSError as e:
            log.error("cannot keep the unacknowledged events in %s: %s", self.spill_path, e)
            return False
        return True

    def _carry_over(self) -> None:
        """Queue what an earlier process left in the spill file, under this epoch."""
        if self.spill_path is None or self._spilled or self.pending:
            return
        try:
            with open(self.spill_path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        except OSError as e:
            log.error("cannot read the events an earlier process left in %s: %s",
                      self.spill_path, e)
            return
        self.spill_path.unlink(missing_ok=True)
        carried = bad = 0
        for line in lines:
            try:
                message = parse_worker_message(line.partition("\t")[2])
            except WireError:
                bad += 1
                continue
            if isinstance(message, Reliable):
                self.send(message)
                carried += 1
        if carried or bad:
            log.warning("%d event(s) left by an earlier process will be sent to the hub%s",
                        carried, f" ({bad} unreadable, dropped)" if bad else "")

    def _on_ack(self, ack: Ack) -> None:
        while self.pending and self.pending[0][0] <= ack.link_seq:
            self.pending.popleft()
        self.acked = max(self.acked, ack.link_seq)
        self._unspill()
        if not self.unacknowledged:
            self._all_acked.set()
        self._wake.set()

    # -- the connection -------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.ws_connect(self.url, headers=headers, heartbeat=10) as ws:
                        backoff = 0.2
                        hello = self.hello().model_copy(update={"epoch": self.epoch})
                        await ws.send_str(hello.model_dump_json(by_alias=True))
                        self._sent_upto = self.acked  # everything unacknowledged goes again
                        self.connected.set()
                        log.info("connected to the hub at %s (%d events to resend)", self.url,
                                 self.unacknowledged)
                        reader = asyncio.create_task(self._read(ws))
                        try:
                            await self._write(ws, reader)
                        finally:
                            reader.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await reader
                except (aiohttp.ClientError, OSError, ConnectionError) as e:
                    log.warning("hub unreachable (%s); retrying in %.1fs", e, backoff)
                finally:
                    self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _next_reliable(self) -> str | None:
        for seq, text in self.pending:  # short scan: the sent ones are at the front
            if seq > self._sent_upto:
                self._sent_upto = seq
                return text
        return None

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, reader: asyncio.Task[None]) -> None:
        while not reader.done():
            self._wake.clear()
            while True:
                if self._status is not None:
                    text, self._status = self._status, None
                elif self._volatile:
                    text = self._volatile.popleft()
                else:
                    reliable = self._next_reliable()
                    if reliable is None:
                        break
                    text = reliable
                await ws.send_str(text)
            wake = asyncio.create_task(self._wake.wait())
            try:
                await asyncio.wait({wake, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                wake.cancel()  # done already, or left behind by the reader or a cancel

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = parse_hub_message(msg.data)
            except WireError as e:
                self.bad_messages += 1
                log.warning("ignored a message from the hub: %s", e)
                continue
            if isinstance(message, Ack):
                self._on_ack(message)
            elif self.on_message is not None:
                try:
                    self.on_message(message)
                except Exception:
                    log.exception("a command from the hub failed: %s", message.type)
