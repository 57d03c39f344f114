"""The agent dashboard end to end: Debian's Chromium (playwright-core, tests/support/browser.py)
logs in to the real hub, rings, accepts a call from a real SIP/RTP caller and talks to it over
WebRTC with a fake microphone fed from a WAV.

The microphone file is 1 s of a 1000 Hz tone, 0.4 s of silence, a human sentence (Debian's
pocketsphinx-testdata) and 2 s of silence, looped by Chromium: the tone proves the agent's
audio reaches the caller (its dominant frequency in what the caller receives), the sentence
that the agent's leg is transcribed (live on the page and into the alive5 stand-in). The
caller sends a 440 Hz tone once it has pressed 0 at the demo flow's menu, so the page's
remote-audio meter has something to show.

Elements are found by the dashboard's ``data-testid`` contract. Each step is screenshotted
to ``tests/e2e/artifacts/<test>/NN-step.png`` (git-ignored); on a failure the pages' console
and the server log are printed (pytest shows them) and written next to the screenshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import time
import urllib.error
import urllib.request
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from hitl_sip.config import RoutingConfig
from hitl_sip.media.wav import read_wav, resample
from hitl_sip.testing.analysis import best_correlation, dominant_frequency, rms_dbfs
from tests.integration.test_agents import PASSWORD, add_agent, login
from tests.integration.test_pocketsphinx import Clip, _librivox
from tests.support.alive5 import API_KEY, Alive5StandIn
from tests.support.browser import (
    CHROMIUM,
    Browser,
    BrowserError,
    Page,
    tid,
    wait_for_attr,
    wait_for_value,
)
from tests.support.rtpcaller import RtpCaller
from tests.support.server import ROOT, Server, running_server
from tests.support.sipwire import CALLER_NUMBER
from tests.support.tcpproxy import TcpProxy

ARTIFACTS = Path(__file__).parent / "artifacts"

MIC_RATE = 16000
AGENT_TONE_HZ = 1000.0
AGENT_TONE_DBFS = -12.0
CALLER_TONE_HZ = 440.0
CALLER_TONE_DBFS = -20.0  # the remote meter reads (-20 + 60) / 60 → ~67
SPEECH_CLIP = "0880"  # "he was not an ill disposed young man"
MENU_PROMPT = "How can I help you today?"  # flows/demo.yaml's menu: 0 reaches the agent node
DTMF_RETRY_S = 1.0
DEMO_FLOW = ROOT / "flows" / "demo.yaml"  # the server's default flow
#: The greeting's tail scores ~1.0 at the caller once played (the rest of it under 0.3).
GREETING_MATCH = 0.7

#: The remote meter shows the caller: aria-valuenow 30 is -42 dBFS (the tone is ~-20).
REMOTE_LEVEL_MIN = 30.0
REMOTE_DBFS_MIN = -42.0
#: The microphone meter shows the agent (tone -12 dBFS → 80, speech ~-25 dBFS → ~58).
MIC_LEVEL_MIN = 30.0
#: Windows of the caller's received audio the agent's tone must dominate (0.6 s of 1 s).
TONE_WINDOW_S = 0.2
TONE_WINDOWS_MIN = 3
TONE_TOLERANCE_HZ = 25.0
#: Distinct words of the sentence the transcripts must contain (pocketsphinx through G.711
#: gets about half of a sentence's words wrong: tests/integration/test_alive5_call.py).
WORDS_MIN = 4

SERVER_EXTRA: dict[str, dict[str, Any]] = {
    "routing": {"queue_timeout": 60},
    "webrtc": {"host_addresses": ["127.0.0.1"]},
}


# --- audio ---------------------------------------------------------------------------------


def _tone(freq: float, dbfs: float, seconds: float, rate: int, start: int = 0) -> bytes:
    """A sine whose RMS level is ``dbfs`` (a sine's peak is √2 × its RMS)."""
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    n = np.arange(start, start + round(seconds * rate))
    return np.round(amplitude * np.sin(2 * math.pi * freq * n / rate)).astype("<i2").tobytes()


def write_agent_microphone(path: Path) -> Clip:
    """The fake microphone's WAV (16-bit mono 16 kHz); returns the sentence it speaks."""
    speech = next(c for c in _librivox() if c.name.endswith(SPEECH_CLIP))
    tone = _tone(AGENT_TONE_HZ, AGENT_TONE_DBFS, 1.0, MIC_RATE)
    assert abs(rms_dbfs(tone) - AGENT_TONE_DBFS) < 0.5
    pcm = tone + bytes(round(0.4 * MIC_RATE) * 2) + speech.pcm + bytes(2 * MIC_RATE * 2)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(pcm)
    return speech


class CallerVoice:
    """The caller's RTP source: silence until :meth:`start`, then a steady 440 Hz tone (a
    tone during the bot phase would barge into its prompts)."""

    def __init__(self) -> None:
        self.on = False

    def start(self) -> None:
        self.on = True

    def __call__(self, n: int) -> bytes:
        if not self.on:
            return bytes(320)
        return _tone(CALLER_TONE_HZ, CALLER_TONE_DBFS, 0.02, 8000, start=n * 160)


def tone_windows(caller: RtpCaller, since: float, freq: float) -> int:
    """How many ``TONE_WINDOW_S`` windows of the audio the caller received after ``since``
    (time.monotonic()) are audible and dominated by ``freq``."""
    pcm = b"".join(p.pcm for p in list(caller.received) if p.arrival >= since)
    size = round(TONE_WINDOW_S * 8000) * 2
    found = 0
    for at in range(0, len(pcm) - size + 1, size):
        window = pcm[at : at + size]
        if rms_dbfs(window) > -45 and abs(dominant_frequency(window, 8000) - freq) < \
                TONE_TOLERANCE_HZ:
            found += 1
    return found


async def caller_hears_the_agent_tone(caller: RtpCaller, since: float, what: str) -> None:
    async def count() -> int:
        return tone_windows(caller, since, AGENT_TONE_HZ)

    await wait_for_value(count, lambda n: n >= TONE_WINDOWS_MIN, 20,
                         f"the agent's {AGENT_TONE_HZ:.0f} Hz tone at the caller {what}")


def words_of(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


# --- the hub's REST API --------------------------------------------------------------------


def rest(server: Server, path: str, token: str) -> Any:
    req = urllib.request.Request(server.http_url + path,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5, context=server.ssl_context) as r:
        return json.loads(r.read())


def agent_token(server: Server, name: str) -> str:
    status, body = login(server, name)
    assert status == 200, body
    return str(body["token"])


async def live_calls(server: Server, token: str) -> list[dict[str, Any]]:
    body = await asyncio.to_thread(rest, server, "/api/calls", token)
    return [c for c in body["calls"] if c["state"] != "ended"]


def greeting_tail() -> bytes:
    """The last second of the demo flow's greeting (8 kHz), during which digits are
    ignored (barge_in: false): the caller presses 0 once it has heard it."""
    flow = yaml.safe_load(DEMO_FLOW.read_text())
    rate, pcm = read_wav(ROOT / flow["nodes"]["greet"]["audio"])
    samples = np.frombuffer(resample(pcm, rate, 8000), dtype="<i2")
    end = int(np.flatnonzero(np.abs(samples) > 300)[-1]) + 1
    return samples[max(0, end - 8000) : end].tobytes()


async def press_zero_at_the_menu(server: Server, token: str, caller: RtpCaller) -> dict[str, Any]:
    """Once the caller has heard the greeting to its end, presses 0 (again every second
    until the call leaves the bot, should it still have been playing) and returns the call
    as GET /api/calls shows it."""
    await wait_for_value(lambda: live_calls(server, token), lambda c: len(c) == 1, 15,
                         "the call in GET /api/calls")
    tail = greeting_tail()

    async def heard() -> float:
        return best_correlation(caller.received_pcm(), tail, 8000)[0]

    await wait_for_value(heard, lambda score: score >= GREETING_MATCH, 30,
                         "the end of the greeting at the caller")

    async def press_and_look() -> list[dict[str, Any]]:
        calls = await live_calls(server, token)
        if calls and calls[0]["state"] == "bot":
            await asyncio.to_thread(caller.dtmf, "0")
            await asyncio.sleep(DTMF_RETRY_S - 0.1)  # the digit's effect, not an event
            calls = await live_calls(server, token)
        return calls

    calls = await wait_for_value(press_and_look,
                                 lambda c: len(c) == 1 and c[0]["state"] in ("queued", "human"),
                                 20, "the handoff after pressing 0")
    return dict(calls[0])


def check_dashboard_is_built(server: Server) -> None:
    try:
        with urllib.request.urlopen(server.http_url + "/", timeout=5,
                                    context=server.ssl_context) as r:
            body = r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        pytest.fail(f"GET / answered {e.code}: {e.read().decode(errors='replace')}"
                    "(build it: cd agent-app && npx ng build)")
    assert "<app-root" in body or "<html" in body.lower(), body[:500]


# --- the page ------------------------------------------------------------------------------


class Shots:
    """Numbered screenshots of each step in ``tests/e2e/artifacts/<test>/``."""

    def __init__(self, test_name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        ignore = ARTIFACTS / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# screenshots and logs of the end-to-end tests\n*\n")
        self.directory = ARTIFACTS / re.sub(r"[^\w.-]+", "_", test_name)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir()
        self.count = 0

    async def __call__(self, page: Page, step: str) -> None:
        self.count += 1
        await page.screenshot(self.directory / f"{self.count:02d}-{step}.png")


@contextlib.asynccontextmanager
async def diagnostics(browser: Browser, shots: Shots, pages: list[Page],
                      server: Server) -> AsyncIterator[None]:
    """On a failure: a last screenshot of each page, the pages' console and the server log
    (printed, and written to the artifacts directory). The console is kept either way."""
    try:
        yield
    except BaseException:
        for page in pages:
            with contextlib.suppress(BrowserError, TimeoutError):
                await shots(page, f"{page.name}-failure")
        (shots.directory / "server.log").write_text(server.log())
        print(f"--- browser console ---\n{browser.console_text(400)}")
        print(f"--- server log ---\n{server.log()}")
        raise
    finally:
        (shots.directory / "console.log").write_text(browser.console_text(5000) + "\n")


def equals(expected: str) -> Callable[[str | None], bool]:
    return lambda value: value == expected


def above(threshold: float) -> Callable[[str | None], bool]:
    def check(value: str | None) -> bool:
        try:
            return value is not None and float(value) > threshold
        except ValueError:
            return False
    return check


def incoming(call_id: str) -> str:
    return f'{tid("incoming-call")}[data-call-id="{call_id}"]'


async def log_in(page: Page, name: str) -> None:
    await page.wait_for(tid("login-username"), limit=20)
    await page.fill(tid("login-username"), name)
    await page.fill(tid("login-password"), PASSWORD)
    await page.click(tid("login-submit"))
    await page.wait_for(tid("agent-name"), limit=15)
    await wait_for_value(lambda: page.text(tid("agent-name")), lambda t: name in (t or ""), 15,
                         f"{name}'s name in the header")  # the hub's agent_state names it
    await wait_for_attr(page, tid("connection-state"), "data-state", equals("connected"), 15)


async def be_available(page: Page) -> None:
    toggle = tid("status-toggle")
    await page.wait_for(toggle)
    if await page.attr(toggle, "aria-pressed") != "true":
        await page.click(toggle)
    await wait_for_attr(page, toggle, "aria-pressed", equals("true"), 10)
    assert "available" in (await page.text(toggle) or "").lower()


async def wait_connected(page: Page, call_id: str) -> None:
    view = tid("in-call")
    await page.wait_for(view, limit=15)
    assert await page.attr(view, "data-call-id") == call_id
    await wait_for_attr(page, view, "data-state", equals("connected"), 20)


async def call_seconds(page: Page) -> int:
    value = await page.attr(tid("call-timer"), "data-seconds")
    assert value is not None and value.isdigit(), value
    return int(value)


async def transcript_words(page: Page, role: str) -> set[str]:
    lines = await page.query(tid("transcript-line"), ("data-role", "data-final"))
    return words_of(" ".join(str(line["text"] or "") for line in lines
                             if line["attrs"]["data-role"] == role
                             and line["attrs"]["data-final"] == "true"))


#: Records every value the connection indicator and the error banner take (a reconnect can
#: be quicker than a poll), in window.__e2eConnection.
WATCH_CONNECTION = """() => {
  const seen = window.__e2eConnection = [];
  const look = () => {
    const state = document.querySelector('[data-testid="connection-state"]');
    const banner = document.querySelector('[data-testid="error-banner"]');
    const entry = (state ? state.getAttribute('data-state') : 'none') + ' '
      + (banner ? banner.getAttribute('data-code') : '-');
    if (seen[seen.length - 1] !== entry) seen.push(entry);
  };
  new MutationObserver(look).observe(document.body, {subtree: true, childList: true,
    attributes: true, attributeFilter: ['data-state', 'data-code']});
  look();
  return seen.slice();
}"""


def require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make test does)")


# --- the tests -----------------------------------------------------------------------------


async def test_an_agent_answers_a_call_in_the_browser(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_chromium()
    shots = Shots(request.node.name)
    mic = tmp_path / "agent-mic.wav"
    speech = write_agent_microphone(mic)
    reference = words_of(speech.reference)
    voice = CallerVoice()
    with Alive5StandIn() as a5, running_server(tmp_path, extra={
        **SERVER_EXTRA, "alive5": {"url": a5.url, "api_key": API_KEY, "ack_timeout": 3},
        "http": {"tls": True},  # HTTPS (self-signed) with the CSP on: what agents get
    }) as srv:
        add_agent(srv.data_dir, "alice")
        check_dashboard_is_built(srv)
        add_agent(srv.data_dir, "sue", "supervisor")  # watches every call over REST
        token = agent_token(srv, "sue")
        async with Browser() as browser:
            await browser.launch(mic)
            assert srv.http_url.startswith("https://")
            page = await browser.new_page("alice", srv.http_url + "/", self_signed=True)
            async with diagnostics(browser, shots, [page], srv):
                await page.wait_for(tid("login-username"), limit=20)
                await shots(page, "login")
                await log_in(page, "alice")
                await shots(page, "logged-in")
                await be_available(page)
                await shots(page, "available")

                with RtpCaller(srv.sip_port()) as caller:
                    await asyncio.to_thread(caller.call)
                    caller.start_media(voice)
                    call = await press_zero_at_the_menu(srv, token, caller)
                    voice.start()
                    call_id, thread_id = call["callId"], call["threadId"]

                    # the offer: caller, thread (the hub's and alive5's)
                    offer = incoming(call_id)
                    await page.wait_for(offer, limit=15)
                    number = await page.text(f"{offer} {tid('incoming-caller-number')}")
                    assert CALLER_NUMBER in (number or "")
                    shown_thread = await page.text(f"{offer} {tid('incoming-thread-id')}")
                    assert (shown_thread or "").strip() == thread_id
                    assert thread_id in a5.threads
                    bot = await page.text(f"{offer} {tid('incoming-bot-transcript')}")
                    assert MENU_PROMPT in (bot or ""), bot
                    countdown = await page.text(f"{offer} {tid('incoming-countdown')}")
                    assert re.search(r"\d", countdown or ""), countdown
                    await shots(page, "incoming-call")

                    await page.click(f"{offer} {tid('accept-button')}")
                    await wait_connected(page, call_id)
                    connected_at = time.monotonic()
                    assert CALLER_NUMBER in (await page.text(tid("call-caller-number")) or "")
                    assert (await page.text(tid("call-thread-id")) or "").strip() == thread_id
                    await wait_for_attr(page, tid("in-call"), "data-state",
                                        equals("connected"), 5)
                    await shots(page, "connected")

                    # both ways: the caller on the page's meter, the agent's tone at the caller
                    await wait_for_attr(page, tid("remote-level"), "aria-valuenow",
                                        above(REMOTE_LEVEL_MIN), 10)
                    await wait_for_attr(page, tid("remote-level"), "data-dbfs",
                                        above(REMOTE_DBFS_MIN), 5)
                    await caller_hears_the_agent_tone(caller, connected_at, "after the accept")
                    await wait_for_attr(page, tid("mic-level"), "aria-valuenow",
                                        above(MIC_LEVEL_MIN), 10)
                    peer = await page.text(tid("peer-state"))
                    assert "connected" in (peer or "").lower(), peer
                    started = await call_seconds(page)
                    await wait_for_attr(page, tid("call-timer"), "data-seconds",
                                        above(started), 5)
                    timer = await page.text(tid("call-timer"))
                    assert re.fullmatch(r"\s*\d{2,}:\d{2}\s*", timer or ""), timer
                    await shots(page, "audio-both-ways")

                    # the agent's words: live on the page, then in the alive5 thread
                    await wait_for_value(
                        lambda: transcript_words(page, "agent"),
                        lambda w: len(w & reference) >= WORDS_MIN, 30,
                        f"the agent's words ({speech.reference!r}) in the live transcript")
                    await shots(page, "agent-transcript")

                    def alive5_has_the_agent_words() -> bool:
                        said = " ".join(m["message_content"]
                                        for m in a5.threads[thread_id].messages
                                        if m.get("sender") == "human_agent")
                        return len(words_of(said) & reference) >= WORDS_MIN

                    await asyncio.to_thread(a5.wait_for, alive5_has_the_agent_words, 20,
                                            "the agent's words in the alive5 thread")

                    # the caller hangs up
                    await asyncio.to_thread(caller.hangup)
                    await page.wait_for(tid("call-ended"), limit=15)
                    assert await page.attr(tid("call-ended"), "data-by") == "caller"
                    assert await page.attr(tid("call-ended"), "data-reason")
                    assert await page.attr(tid("in-call"), "data-state") == "ended"
                    await shots(page, "call-ended")
                    await page.wait_for(f'{tid("history-item")}[data-call-id="{call_id}"]',
                                        limit=10)
                    await shots(page, "history")
                    # the whole call ran under the hub's Content-Security-Policy
                    assert browser.csp_violations() == [], browser.csp_violations()


async def test_ring_all_answered_elsewhere_and_socket_drop_restores_the_call(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require_chromium()
    assert RoutingConfig().strategy == "ring_all"  # the default, which this server runs
    shots = Shots(request.node.name)
    mic = tmp_path / "agent-mic.wav"
    write_agent_microphone(mic)
    voice = CallerVoice()
    with running_server(tmp_path, extra=SERVER_EXTRA) as srv:
        add_agent(srv.data_dir, "alice")
        add_agent(srv.data_dir, "bob")
        check_dashboard_is_built(srv)
        add_agent(srv.data_dir, "sue", "supervisor")  # watches every call over REST
        token = agent_token(srv, "sue")
        hub_port = int(srv.http_url.rsplit(":", 1)[1])
        async with TcpProxy("127.0.0.1", hub_port) as proxy, Browser() as browser:
            await browser.launch(mic)
            # alice's dashboard goes through the cuttable proxy, bob's straight to the hub
            alice = await browser.new_page("alice", proxy.url + "/")
            bob = await browser.new_page("bob", srv.http_url + "/")
            async with diagnostics(browser, shots, [alice, bob], srv):
                await asyncio.gather(log_in(alice, "alice"), log_in(bob, "bob"))
                await asyncio.gather(be_available(alice), be_available(bob))
                await shots(alice, "alice-available")
                await shots(bob, "bob-available")

                with RtpCaller(srv.sip_port()) as caller:
                    await asyncio.to_thread(caller.call)
                    caller.start_media(voice)
                    call = await press_zero_at_the_menu(srv, token, caller)
                    voice.start()
                    call_id = call["callId"]

                    # ring all: both dashboards show the same call
                    offer = incoming(call_id)
                    await asyncio.gather(alice.wait_for(offer, limit=15),
                                         bob.wait_for(offer, limit=15))
                    await shots(alice, "alice-ringing")
                    await shots(bob, "bob-ringing")

                    # alice wins; bob's offer is withdrawn as answered elsewhere
                    await alice.click(f"{offer} {tid('accept-button')}")
                    await bob.wait_for(offer, state="detached", limit=10)
                    notice = f'{tid("call-notice")}[data-reason="answered_elsewhere"]'
                    await bob.wait_for(notice, limit=10)
                    assert "answered elsewhere" in (await bob.text(notice) or "").lower()
                    await shots(bob, "bob-answered-elsewhere")

                    await wait_connected(alice, call_id)
                    connected_at = time.monotonic()
                    await wait_for_attr(alice, tid("remote-level"), "aria-valuenow",
                                        above(REMOTE_LEVEL_MIN), 10)
                    await caller_hears_the_agent_tone(caller, connected_at, "after the accept")
                    await shots(alice, "alice-connected")

                    # the blip: alice's Socket.IO connection dies, the media does not
                    seen = await alice.evaluate(WATCH_CONNECTION, arg={})
                    assert seen and seen[0].startswith("connected"), seen
                    before_cut = await call_seconds(alice)
                    accepted = proxy.accepted
                    cut_at = time.monotonic()
                    assert proxy.cut() >= 1
                    await shots(alice, "alice-socket-cut")
                    await wait_for_attr(alice, tid("connection-state"), "data-state",
                                        equals("connected"), 20)
                    seen = await alice.evaluate("window.__e2eConnection")
                    assert any(s.startswith("reconnecting") for s in seen), seen
                    assert proxy.accepted > accepted  # it came back through the proxy
                    await shots(alice, "alice-reconnected")

                    # the same call, still connected, its timer still running
                    view = tid("in-call")
                    await alice.wait_for(view, limit=10)
                    assert await alice.attr(view, "data-call-id") == call_id
                    assert await alice.attr(view, "data-state") == "connected"
                    after = await call_seconds(alice)
                    assert after >= before_cut, (before_cut, after)
                    await wait_for_attr(alice, tid("call-timer"), "data-seconds",
                                        above(after), 5)
                    calls = await live_calls(srv, token)
                    assert [(c["callId"], c["state"]) for c in calls] == [(call_id, "human")]

                    # and the audio still flows both ways
                    await wait_for_attr(alice, tid("remote-level"), "aria-valuenow",
                                        above(REMOTE_LEVEL_MIN), 10)
                    await caller_hears_the_agent_tone(caller, cut_at, "after the cut")
                    await shots(alice, "alice-restored")

                    await asyncio.to_thread(caller.hangup)
                    await alice.wait_for(tid("call-ended"), limit=15)
                    assert await alice.attr(tid("call-ended"), "data-by") == "caller"
                    await shots(alice, "alice-call-ended")
                    await shots(bob, "bob-after-the-call")
