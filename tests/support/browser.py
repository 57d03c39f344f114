"""Drives Debian's Chromium from a test through ``agent-app/e2e/driver.mjs`` (playwright-core).

The driver is a Node process speaking JSON lines: one command per line on its stdin, one
reply per command on its stdout (``{"id", "ok", "result"|"error"}``), plus unsolicited
``{"event": "console", ...}`` lines for the pages' console output, uncaught errors and
failed requests. :class:`Browser` starts it (``async with Browser() as browser``), numbers
the requests, waits for each reply with a timeout, raises :class:`BrowserError` with the
driver's message on a failure and keeps the console lines in :attr:`Browser.console` (a
test dumps them when it fails: :meth:`Browser.console_text`). :class:`Page` is a handle
bound to one page (each page is its own browser context: two agents share no storage).

Selectors are Playwright's (CSS by default); :func:`tid` builds ``[data-testid="..."]``.
Single-element actions are strict (two matches is an error; add ``>> nth=0``). ``limit``
arguments are seconds the browser waits for the element (Playwright's own timeout); the
reply is awaited that long plus :data:`REPLY_MARGIN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DRIVER = ROOT / "agent-app" / "e2e" / "driver.mjs"
CHROMIUM = Path("/usr/bin/chromium")
# the Node scripts/bootstrap.sh installs when the system's is too old (scripts/node.sh)
LOCAL_NODE = Path(os.environ.get("HITL_SIP_NODE_PREFIX", ROOT / ".node")) / "bin" / "node"

#: Seconds a reply may take beyond the browser-side timeout of the command.
REPLY_MARGIN = 10.0
#: Browser-side timeout (ms) of commands that wait for an element, unless told.
DEFAULT_WAIT_MS = 10_000
#: How often :func:`wait_for_attr` and friends look at the page.
POLL_SECONDS = 0.1

log = logging.getLogger(__name__)

__all__ = [
    "Browser",
    "BrowserError",
    "ConsoleLine",
    "Page",
    "tid",
    "wait_for_attr",
    "wait_for_value",
]


class BrowserError(RuntimeError):
    """A command the driver answered with an error (its message), or a dead driver."""


@dataclass(frozen=True)
class ConsoleLine:
    page: str
    type: str  # log, info, warning, error, debug..., pageerror, crash, requestfailed
    text: str
    at: float  # time.monotonic() when the line reached the test

    def __str__(self) -> str:
        return f"[{self.page or 'driver'}] {self.type}: {self.text}"


def tid(name: str, *more: str) -> str:
    """``[data-testid="name"]``, and descendants for ``more``. (Not ``testid``: pytest would
    collect a ``test*`` name imported into a test module as a test.)"""
    return " ".join(f'[data-testid="{n}"]' for n in (name, *more))


class Browser:
    """One driver process and (after :meth:`launch`) one Chromium."""

    def __init__(self, *, node: str | None = None, reply_margin: float = REPLY_MARGIN) -> None:
        self.node = node or (str(LOCAL_NODE) if LOCAL_NODE.exists() else "node")
        self.reply_margin = reply_margin
        self.console: list[ConsoleLine] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr: list[str] = []
        self._dead: str | None = None

    # --- lifetime ---------------------------------------------------------------------------

    async def start(self) -> Browser:
        if self._proc is not None:
            raise BrowserError("the driver is already running")
        self._proc = await asyncio.create_subprocess_exec(
            self.node, str(DRIVER),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,  # evaluate() results and Playwright's call logs
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        self._reader = asyncio.create_task(self._read_replies())
        self._stderr_task = asyncio.create_task(self._read_stderr())
        return self

    async def __aenter__(self) -> Browser:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self, limit: float = 15.0) -> None:
        """Closes the browser and the driver (always: kills a driver that does not stop)."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None and self._dead is None:
            with contextlib.suppress(BrowserError, TimeoutError):
                await self.request("close", _timeout=limit)
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()  # the driver exits when its stdin closes
        try:
            await asyncio.wait_for(proc.wait(), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for task in (self._reader, self._stderr_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(task, 5)
        self._fail_pending("the driver was closed")

    # --- the wire ---------------------------------------------------------------------------

    async def _read_replies(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            while True:
                try:
                    raw = await proc.stdout.readline()
                except (ValueError, asyncio.LimitOverrunError) as e:
                    self.console.append(ConsoleLine("", "driver", f"unreadable line: {e}",
                                                    time.monotonic()))
                    continue
                if not raw:
                    break
                self._on_line(raw.decode("utf-8", errors="replace"))
        finally:
            self._dead = "the driver exited" + self._stderr_tail()
            self._fail_pending(self._dead)

    def _on_line(self, line: str) -> None:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            self.console.append(ConsoleLine("", "stdout", line.rstrip(), time.monotonic()))
            return
        if not isinstance(msg, dict):
            return
        if "event" in msg:
            entry = ConsoleLine(str(msg.get("page") or ""), str(msg.get("type") or msg["event"]),
                                str(msg.get("text") or ""), time.monotonic())
            self.console.append(entry)
            log.debug("%s", entry)
            return
        request_id = msg.get("id")
        future = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if future is None:
            if not msg.get("ok", True):
                self.console.append(ConsoleLine("", "driver", str(msg.get("error")),
                                                time.monotonic()))
            return
        if future.done():
            return
        if msg.get("ok"):
            future.set_result(msg.get("result"))
        else:
            future.set_exception(BrowserError(str(msg.get("error"))))

    async def _read_stderr(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                return
            text = raw.decode("utf-8", errors="replace").rstrip()
            self._stderr.append(text)
            del self._stderr[:-200]

    def _stderr_tail(self) -> str:
        return ("; stderr:\n" + "\n".join(self._stderr[-30:])) if self._stderr else ""

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(BrowserError(why))

    async def request(self, op: str, *, _timeout: float | None = None, **params: Any) -> Any:
        """Sends one command and returns its result. ``_timeout`` (s) bounds the wait for the
        reply; by default the command's own ``timeout`` (ms) plus :attr:`reply_margin`."""
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise BrowserError("the driver is not started")
        if self._dead is not None:
            raise BrowserError(self._dead)
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        line = json.dumps({"id": request_id, "op": op, **params}) + "\n"
        try:
            proc.stdin.write(line.encode())
            await proc.stdin.drain()
        except (ConnectionError, RuntimeError) as e:
            self._pending.pop(request_id, None)
            raise BrowserError(f"cannot reach the driver: {e}{self._stderr_tail()}") from e
        if _timeout is None:
            browser_ms = params.get("timeout")
            _timeout = (float(browser_ms) / 1000 if isinstance(browser_ms, (int, float))
                        else DEFAULT_WAIT_MS / 1000) + self.reply_margin
        try:
            return await asyncio.wait_for(future, _timeout)
        except TimeoutError:
            self._pending.pop(request_id, None)
            raise BrowserError(f"no reply to {op} {params} in {_timeout:.1f}s") from None

    # --- commands ---------------------------------------------------------------------------

    async def launch(
        self, fake_audio_wav: Path | None = None, *, args: list[str] | None = None,
        headless: bool = True,
    ) -> str:
        """Starts Chromium (fake media devices, the microphone read from ``fake_audio_wav``,
        looped); returns its version."""
        params: dict[str, Any] = {"headless": headless, "timeout": 30_000}
        if fake_audio_wav is not None:
            params["fakeAudioWav"] = str(fake_audio_wav)
        if args:
            params["args"] = args
        result = await self.request("launch", **params)
        return str(result["version"])

    async def new_page(
        self, name: str, url: str | None = None, *, viewport: tuple[int, int] | None = None,
        self_signed: bool = False,
    ) -> Page:
        """A page in a browser context of its own (microphone and notifications granted),
        loading ``url`` when given; ``self_signed``: trust an HTTPS hub's self-signed
        certificate."""
        params: dict[str, Any] = {"name": name, "timeout": 30_000,
                                  "ignoreHttpsErrors": self_signed}
        if url is not None:
            params["url"] = url
        if viewport is not None:
            params["viewport"] = {"width": viewport[0], "height": viewport[1]}
        await self.request("newPage", **params)
        return Page(self, name)

    async def close(self) -> None:
        """Closes every page and the browser (the driver keeps running)."""
        await self.request("close", _timeout=30)

    def csp_violations(self) -> list[str]:
        """What Chromium reported the pages' Content-Security-Policy refused."""
        return [str(line) for line in self.console if "Content Security Policy" in line.text]

    def console_text(self, last: int = 200) -> str:
        return "\n".join(str(line) for line in self.console[-last:])


class Page:
    """A handle on one driver page; every method is one driver command."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name

    def __repr__(self) -> str:
        return f"Page({self.name!r})"

    async def _do(self, op: str, **params: Any) -> Any:
        return await self.browser.request(op, page=self.name, **params)

    async def goto(self, url: str, limit: float = 30.0) -> int | None:
        result = await self._do("goto", url=url, timeout=_ms(limit))
        status = result.get("status") if isinstance(result, dict) else None
        return int(status) if status is not None else None

    async def click(self, selector: str, limit: float = 10.0) -> None:
        await self._do("click", selector=selector, timeout=_ms(limit))

    async def fill(self, selector: str, value: str, limit: float = 10.0) -> None:
        await self._do("fill", selector=selector, value=value, timeout=_ms(limit))

    async def select_option(self, selector: str, value: str, limit: float = 10.0) -> list[str]:
        """Picks the option whose value (or else label) is ``value`` in the ``<select>``
        matching ``selector``; returns the values now selected."""
        result = await self._do("selectOption", selector=selector, value=value,
                                timeout=_ms(limit))
        return [str(v) for v in result or []]

    async def press(self, selector: str, key: str, limit: float = 10.0) -> None:
        await self._do("press", selector=selector, key=key, timeout=_ms(limit))

    async def wait_for(self, selector: str, state: str = "visible", limit: float = 10.0) -> None:
        """Until some element matches ``selector`` in ``state`` (attached, detached, visible,
        hidden)."""
        await self._do("waitFor", selector=selector, state=state, timeout=_ms(limit))

    async def text(self, selector: str, limit: float = 10.0) -> str | None:
        result = await self._do("text", selector=selector, timeout=_ms(limit))
        return None if result is None else str(result)

    async def attr(self, selector: str, name: str, limit: float = 10.0) -> str | None:
        result = await self._do("attr", selector=selector, name=name, timeout=_ms(limit))
        return None if result is None else str(result)

    async def count(self, selector: str) -> int:
        return int(await self._do("count", selector=selector))

    async def query(self, selector: str, attrs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every element matching now (no waiting): ``[{"text": ..., "attrs": {...}}]``."""
        result = await self._do("query", selector=selector, attrs=list(attrs))
        return list(result)

    async def evaluate(self, expression: str, arg: Any = None, limit: float = 10.0) -> Any:
        """``expression`` evaluated in the page (awaited when it is a promise); with ``arg``,
        ``expression`` is a function source called with it."""
        params: dict[str, Any] = {"expression": expression, "timeout": _ms(limit)}
        if arg is not None:
            params["arg"] = arg
        return await self._do("evaluate", **params)

    async def ws_frames(self, contains: str | None = None) -> list[dict[str, Any]]:
        """The text frames the page's WebSockets have received so far (the driver keeps the
        last 2000), oldest first, those including ``contains`` when given:
        ``[{"at": ms since the epoch, "url": ..., "payload": ...}]``."""
        params: dict[str, Any] = {} if contains is None else {"contains": contains}
        return list(await self._do("wsFrames", **params))

    async def screenshot(self, path: Path, full_page: bool = True) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        await self._do("screenshot", path=str(path), fullPage=full_page, timeout=15_000)
        return path

    async def set_offline(self, offline: bool) -> None:
        await self._do("setOffline", offline=offline)

    async def close(self) -> None:
        await self._do("closePage")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def wait_for_value(
    read: Callable[[], Awaitable[Any]],
    predicate: Callable[[Any], bool],
    limit: float,
    what: str,
    interval: float = POLL_SECONDS,
) -> Any:
    """Polls ``await read()`` every ``interval`` seconds until ``predicate(value)``; returns
    that value, or raises ``AssertionError`` naming ``what`` and the last value seen."""
    deadline = time.monotonic() + limit
    last: Any = None
    while True:
        last = await read()
        if predicate(last):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit:.0f}s waiting for {what}; "
                                 f"last value {last!r}")
        await asyncio.sleep(interval)


async def wait_for_attr(
    page: Page,
    selector: str,
    name: str,
    predicate: Callable[[str | None], bool],
    limit: float = 10.0,
) -> str | None:
    """Polls attribute ``name`` of the first element matching ``selector`` (``None`` while
    there is none, or it lacks the attribute) until ``predicate(value)`` holds."""

    async def read() -> str | None:
        found = await page.query(selector, (name,))
        return found[0]["attrs"][name] if found else None

    value = await wait_for_value(read, predicate, limit,
                                 f"{name} of {selector} on page {page.name}")
    return None if value is None else str(value)
