"""Supervision and transfer in the dashboard (PROTOCOL.md §6), end to end in Debian's
Chromium: the same features as tests/integration/test_supervision.py, driven through the
page's buttons instead of Socket.IO calls.

* a supervisor (sue, her fake microphone a 2 kHz tone) signs in, finds the call on the
  board and presses Listen, Whisper and Barge in turn, then Stop; the call's agent is a
  Python aiortc peer (alice, 1 kHz) whose ear we can analyse, the caller an RTP caller
  sending 440 Hz. In ``listen`` nobody hears 2 kHz; in ``whisper`` alice does and the caller
  does not; in ``barge`` both do. Each button's ``aria-pressed`` follows the mode, and alice
  gets ``call_monitored`` for each switch;
* two agents each in a Chromium of its own (alice 1 kHz, bob 1.5 kHz: Chromium's fake
  microphone is one file per browser process): alice accepts, opens Transfer, picks bob,
  cold, a note, sends; bob's page rings with the transfer's origin and note and he accepts;
  the caller then hears bob and no longer alice, alice's call ends as transferred and her
  wrap-up form is submitted; the caller hangs up on bob, who wraps up too (the hub counts
  each wrap-up). Two things the hub gets wrong are checked last, so that the rest runs:
  bob's view must turn "connected" (the hub's ``call_connected``) and alice's wrap-up of
  the call she handed on must be saved.

One server serves the module (the calls run one after the other). Screenshots go to
``tests/e2e/artifacts/<test>/`` like tests/e2e/test_dashboard.py's; the figures measured
(mode switch times at the listener's ear, tone shares) are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testing.agent import TestAgent, tone
from tests.e2e.test_dashboard import (
    Shots,
    above,
    agent_token,
    be_available,
    check_dashboard_is_built,
    equals,
    incoming,
    log_in,
    require_chromium,
    rest,
    wait_connected,
)
from tests.integration.test_agents import PASSWORD, add_agent
from tests.integration.test_supervision import Ear, caller_tone, share
from tests.support.browser import (
    Browser,
    BrowserError,
    Page,
    tid,
    wait_for_attr,
    wait_for_value,
)
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

#: The call goes straight to the agent node (no greeting, no menu to press 0 at).
FLOW = """
name: supervised
start: agent
nodes:
  agent:
    type: agent
    message: "Connecting you."
    fallback: bye
  bye:
    type: hangup
"""
CALLER_HZ, ALICE_HZ, BOB_HZ, SUE_HZ = 440, 1000, 1500, 2000
MIC_RATE = 16000
MIC_DBFS = -12.0
BURST_S, GAP_S = 0.35, 0.15
#: A tone is heard when it carries this share of a window's energy, unheard under LEAK.
HEARD, LEAK = 0.2, 0.01
#: A party still heard under a louder one.
STILL_HEARD = 0.1
#: How long each mode is listened to, and the part of it skipped (the switch itself).
WINDOW_S, SKIP_S = 1.2, 0.2
#: From the click on a mode's button to the listener's ear (measured: 3 to 190 ms).
SWITCH_LIMIT = 1.0
#: The meter of the supervisor's monitored audio: 30 is -42 dBFS (the call is ~-14).
MONITOR_LEVEL_MIN = 30.0
NOTE = "billing question, card ending 42"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    home = tmp_path_factory.mktemp("supervision-browser")
    flow = home / "flow.yaml"
    flow.write_text(FLOW)
    install_host_filter(["127.0.0.1"])  # the Python agent's ICE candidates
    extra: dict[str, dict[str, Any]] = {
        "bot": {"flow": str(flow)},
        "routing": {"queue_timeout": 60},
        "webrtc": {"host_addresses": ["127.0.0.1"]},
    }
    with running_server(home, extra=extra) as server:
        # each `hitl-sip agents add` takes ~1.7 s (start-up, password hashing); the store is
        # SQLite, so they may run at once
        with ThreadPoolExecutor() as pool:
            list(pool.map(lambda account: add_agent(server.data_dir, *account),
                          [("alice", "agent"), ("bob", "agent"), ("sue", "supervisor")]))
        check_dashboard_is_built(server)
        yield server


# --- audio ---------------------------------------------------------------------------------


def write_tone_wav(path: Path, freq: float, dbfs: float = MIC_DBFS) -> Path:
    """A fake microphone (16-bit mono 16 kHz, looped by Chromium): bursts of a sine at
    ``dbfs`` RMS, ``BURST_S`` on (10 ms ramps) and ``GAP_S`` off, like syllables. A steady
    tone would not do: the dashboard asks for noise suppression, which takes a stationary
    tone for noise and fades it out within seconds (measured: a steady 2 kHz at -12 dBFS
    left Chromium at -29 dBFS then ~nothing; these bursts keep ~0.8 of the share)."""
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    on, ramp = round(BURST_S * MIC_RATE), round(0.01 * MIC_RATE)
    envelope = np.concatenate([np.linspace(0, 1, ramp), np.ones(on - 2 * ramp),
                               np.linspace(1, 0, ramp), np.zeros(round(GAP_S * MIC_RATE))])
    envelope = np.tile(envelope, 4)
    n = np.arange(len(envelope))
    pcm = np.round(amplitude * envelope * np.sin(2 * math.pi * freq * n / MIC_RATE))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(MIC_RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    return path


def caller_ear(caller: RtpCaller) -> Callable[[], Ear]:
    """What the caller has heard so far, each time it is called."""
    return lambda: Ear.of_caller(caller)


def agent_ear(agent: TestAgent) -> Callable[[], Ear]:
    return lambda: Ear.of_agent(agent)


def onset(ear: Ear, freq: float, since: float, block: int = 5) -> float | None:
    """Seconds from ``since`` to the first run of ``block`` frames (100 ms) after it that
    ``freq`` dominates (a share above ``HEARD``), or None."""
    frames = [(at, pcm) for at, pcm in ear.frames if at >= since]
    for i in range(len(frames) - block + 1):
        if share(b"".join(pcm for _, pcm in frames[i:i + block]), freq) > HEARD:
            return frames[i][0] - since
    return None


async def until_heard(ear: Callable[[], Ear], freq: float, since: float, what: str,
                      limit: float = 10.0) -> float:
    """Polls until ``freq`` is heard after ``since``; the delay since then, in seconds."""
    async def look() -> float | None:
        return onset(ear(), freq, since)

    found = await wait_for_value(look, lambda d: d is not None, limit,
                                 f"{freq} Hz heard by {what}")
    return float(found)


async def settle(seconds: float = WINDOW_S) -> tuple[float, float]:
    """Lets audio flow ``seconds``: the window (monotonic clock) to analyse, less its first
    ``SKIP_S``."""
    start = time.monotonic()
    await asyncio.sleep(seconds)
    return start + SKIP_S, time.monotonic()


def shares(ear: Ear, window: tuple[float, float], *freqs: float) -> dict[float, float]:
    return {f: round(ear.hears(f, *window), 3) for f in freqs}


# --- pages ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def diagnostics(browsers: dict[str, Browser], shots: Shots, pages: list[Page],
                      server: Server) -> AsyncIterator[None]:
    """tests/e2e/test_dashboard.py's, for several browsers: on a failure a last screenshot
    of each page, the consoles and the server log; each browser's console kept either way."""
    try:
        yield
    except BaseException:
        for page in pages:
            with contextlib.suppress(BrowserError, TimeoutError):
                await shots(page, f"{page.name}-failure")
        (shots.directory / "server.log").write_text(server.log())
        for name, browser in browsers.items():
            print(f"--- {name}'s browser console ---\n{browser.console_text(300)}")
        print(f"--- server log ---\n{server.log()}")
        raise
    finally:
        for name, browser in browsers.items():
            (shots.directory / f"console-{name}.log").write_text(
                browser.console_text(5000) + "\n")


async def be_away(page: Page) -> None:
    toggle = tid("status-toggle")
    await page.wait_for(toggle)
    if await page.attr(toggle, "aria-pressed") == "true":
        await page.click(toggle)
    await wait_for_attr(page, toggle, "aria-pressed", equals("false"), 10)


async def press_mode(page: Page, row: str, mode: str) -> float:
    """Presses a monitor button; once the hub has acknowledged it (the button pressed, the
    others not, the status line in that mode) returns when it was pressed."""
    pressed = time.monotonic()
    await page.click(f"{row} {tid(f'monitor-{mode}')}")
    for other in ("listen", "whisper", "barge"):
        await wait_for_attr(page, f"{row} {tid(f'monitor-{other}')}", "aria-pressed",
                            equals(str(other == mode).lower()), 10)
    await wait_for_attr(page, tid("monitor-status"), "data-mode", equals(mode), 5)
    return pressed


async def wrap_up(page: Page, shots: Shots, disposition: str, note: str) -> str | None:
    """Fills and submits the wrap-up form of the call that just ended on ``page``; None once
    the hub saved it (``wrapup-done``), else the error the form shows."""
    await page.wait_for(tid("wrapup-form"), limit=5)
    await shots(page, f"{page.name}-wrapup-form")
    field = tid("wrapup-disposition")
    await wait_for_value(lambda: page.query(f"{field} option", ("value",)),
                         lambda o: any(x["attrs"]["value"] == disposition for x in o), 5,
                         f"{disposition} among the dispositions on {page.name}'s form")
    assert await page.select_option(field, disposition) == [disposition]
    await page.fill(tid("wrapup-note"), note)
    await page.click(tid("wrapup-submit"))
    await page.wait_for(f'{tid("wrapup-done")}, {tid("wrapup-error")}', limit=10)
    await shots(page, f"{page.name}-wrapup-submitted")
    refused = await page.query(tid("wrapup-error"))
    return str(refused[0]["text"]).strip() if refused else None


# --- the tests -----------------------------------------------------------------------------


async def test_a_supervisor_listens_whispers_and_barges_from_the_board(
    srv: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = Shots(request.node.name)
    mic = write_tone_wav(tmp_path / "sue-mic.wav", SUE_HZ)
    alice = TestAgent(srv.http_url, "alice", PASSWORD, source=tone(ALICE_HZ), codecs=("pcmu",))
    caller = RtpCaller(srv.sip_port())
    out: dict[str, Any] = {}
    try:
        async with Browser() as browser:
            async def alice_takes_the_call() -> str:
                await alice.connect()
                await asyncio.to_thread(caller.call, 10)
                caller.start_media(caller_tone)
                offer = await alice.answer_next_call(limit=30)
                await alice.wait("call_connected", limit=15)
                return str(offer["callId"])

            _, call_id = await asyncio.gather(browser.launch(mic), alice_takes_the_call())
            page = await browser.new_page("sue", srv.http_url + "/")
            async with diagnostics({"sue": browser}, shots, [page], srv):
                await log_in(page, "sue")  # after the call was taken: nothing rings her

                # the board: the call, with alice, and its monitor buttons
                await page.wait_for(tid("board"), limit=10)
                row = tid(f"board-call-{call_id}")
                await page.wait_for(row, limit=10)
                assert await page.attr(row, "data-state") == "human"
                assert "alice" in (await page.text(row) or "")
                for mode in ("listen", "whisper", "barge"):
                    assert await page.attr(f"{row} {tid(f'monitor-{mode}')}",
                                           "aria-pressed") == "false"
                await shots(page, "board")

                # listen: sue hears the call (her meter), nobody hears her
                await press_mode(page, row, "listen")
                await wait_for_attr(page, f"{tid('monitor-status')} .peer", "data-state",
                                    equals("connected"), 15)
                await alice.wait("call_monitored", 1, 5)
                await wait_for_attr(page, tid("monitor-level"), "aria-valuenow",
                                    above(MONITOR_LEVEL_MIN), 10)
                out["listen"] = await settle(2 * WINDOW_S)  # sue's audio flows meanwhile
                await shots(page, "listen")

                # whisper: alice hears sue, the caller does not
                pressed = await press_mode(page, row, "whisper")
                out["whisper_on"] = await until_heard(agent_ear(alice), SUE_HZ, pressed,
                                                      "alice (whisper)")
                await alice.wait("call_monitored", 2, 5)
                out["whisper"] = await settle()
                await shots(page, "whisper")

                # barge: the caller hears sue too
                pressed = await press_mode(page, row, "barge")
                out["barge_on"] = await until_heard(caller_ear(caller), SUE_HZ,
                                                    pressed, "the caller (barge)")
                await alice.wait("call_monitored", 3, 5)
                out["barge"] = await settle()
                await shots(page, "barge")

                # stop: the call goes on without her
                await page.click(f"{row} {tid('monitor-stop')}")
                await page.wait_for(tid("monitor-status"), state="detached", limit=5)
                await alice.wait("call_monitored", 4, 5)
                for mode in ("listen", "whisper", "barge"):
                    assert await page.attr(f"{row} {tid(f'monitor-{mode}')}",
                                           "aria-pressed") == "false"
                await shots(page, "stopped")

                await asyncio.to_thread(caller.hangup)
                await alice.wait("call_ended", limit=10)
                await page.wait_for(row, state="detached", limit=10)
                await shots(page, "call-over")
    finally:
        await alice.close()
        await asyncio.to_thread(caller.close)

    the_caller, the_agent = Ear.of_caller(caller), Ear.of_agent(alice)
    heard = {
        mode: {"caller": shares(the_caller, out[mode], CALLER_HZ, ALICE_HZ, SUE_HZ),
               "alice": shares(the_agent, out[mode], CALLER_HZ, ALICE_HZ, SUE_HZ)}
        for mode in ("listen", "whisper", "barge")
    }
    print(f"\nsupervision: tone shares by mode {heard}; 2 kHz reached alice "
          f"{out['whisper_on'] * 1000:.0f} ms after Whisper was pressed, the caller "
          f"{out['barge_on'] * 1000:.0f} ms after Barge")
    assert max(out["whisper_on"], out["barge_on"]) < SWITCH_LIMIT
    monitored = alice.events["call_monitored"]
    assert [(m["callId"], m["mode"], m["monitors"]) for m in monitored] == [
        (call_id, "listen", 1), (call_id, "whisper", 1), (call_id, "barge", 1),
        (call_id, None, 0)]
    # the call itself both ways, whatever the mode (sue's tone, which Chromium's gain control
    # lifts, takes ~0.8 of the mix where she is heard: the others keep ~0.2)
    for mode, ears in heard.items():
        assert ears["caller"][ALICE_HZ] > STILL_HEARD, (mode, ears)
        assert ears["alice"][CALLER_HZ] > STILL_HEARD, (mode, ears)
    assert heard["listen"]["caller"][SUE_HZ] < LEAK
    assert heard["listen"]["alice"][SUE_HZ] < LEAK
    assert heard["whisper"]["alice"][SUE_HZ] > HEARD
    assert heard["whisper"]["caller"][SUE_HZ] < LEAK
    assert heard["barge"]["alice"][SUE_HZ] > HEARD
    assert heard["barge"]["caller"][SUE_HZ] > HEARD


async def test_an_agent_transfers_a_call_to_another_agent_then_wraps_up(
    srv: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    shots = Shots(request.node.name)
    mics = {name: write_tone_wav(tmp_path / f"{name}-mic.wav", hz)
            for name, hz in (("alice", ALICE_HZ), ("bob", BOB_HZ))}
    token = agent_token(srv, "sue")
    caller = RtpCaller(srv.sip_port())
    out: dict[str, Any] = {}
    try:
        async with Browser() as alice_browser, Browser() as bob_browser:
            await asyncio.gather(alice_browser.launch(mics["alice"]),
                                 bob_browser.launch(mics["bob"]))
            alice, bob = await asyncio.gather(
                alice_browser.new_page("alice", srv.http_url + "/"),
                bob_browser.new_page("bob", srv.http_url + "/"))
            browsers = {"alice": alice_browser, "bob": bob_browser}
            async with diagnostics(browsers, shots, [alice, bob], srv):
                await asyncio.gather(log_in(alice, "alice"), log_in(bob, "bob"))
                await asyncio.gather(be_available(alice), be_away(bob))  # only alice rings

                await asyncio.to_thread(caller.call, 10)
                caller.start_media(caller_tone)
                card = tid("incoming-call")
                await alice.wait_for(card, limit=20)
                call_id = await alice.attr(card, "data-call-id")
                assert call_id
                thread_id = (await alice.text(f"{card} {tid('incoming-thread-id')}") or "").strip()
                await alice.click(f"{incoming(call_id)} {tid('accept-button')}")
                await wait_connected(alice, call_id)
                await until_heard(caller_ear(caller), ALICE_HZ, time.monotonic(),
                                  "the caller from alice")
                await shots(alice, "alice-connected")

                # bob becomes available; alice fills the Transfer dialog
                await be_available(bob)
                await alice.click(tid("transfer-open"))
                await alice.wait_for(tid("transfer-dialog"), limit=5)
                target = tid("transfer-target")

                async def bob_option() -> dict[str, Any] | None:
                    options = await alice.query(f"{target} option", ("value", "disabled"))
                    return next((o for o in options if "bob" in (o["text"] or "")
                                 and o["attrs"]["disabled"] is None), None)

                option = await wait_for_value(bob_option, lambda o: o is not None, 10,
                                              "bob, available, in the Transfer dialog")
                assert str(option["attrs"]["value"]).startswith("agent:")
                await alice.select_option(target, str(option["attrs"]["value"]))
                await alice.click(tid("transfer-mode-cold"))
                await alice.fill(tid("transfer-note"), NOTE)
                await shots(alice, "alice-transfer-dialog")
                await alice.click(tid("transfer-send"))
                await alice.wait_for(f'{tid("transfer-pending")}[data-mode="cold"]', limit=5)
                await shots(alice, "alice-transfer-pending")

                # bob's page rings with where the call comes from and the note
                offer = incoming(call_id)
                await bob.wait_for(offer, limit=10)
                info = f"{offer} {tid('transfer-info')}"
                assert await bob.attr(info, "data-mode") == "cold"
                assert "alice" in (await bob.text(info) or "")
                assert NOTE in (await bob.text(f"{info} {tid('transfer-info-note')}") or "")
                assert (await bob.text(f"{offer} {tid('incoming-thread-id')}")
                        or "").strip() == thread_id
                await shots(bob, "bob-ringing")
                await bob.click(f"{offer} {tid('accept-button')}")
                accepted = time.monotonic()
                view = tid("in-call")
                await bob.wait_for(view, limit=10)
                assert await bob.attr(view, "data-call-id") == call_id
                await wait_for_attr(bob, tid("peer-state"), "data-state", equals("connected"), 15)

                # alice's call ends as transferred; the caller hears bob, no longer alice
                ended = tid("call-ended")
                await alice.wait_for(ended, limit=15)
                out["alice_gone"] = time.monotonic()
                assert await alice.attr(ended, "data-reason") == "transferred"
                assert await alice.attr(tid("in-call"), "data-state") == "ended"
                out["bob_on"] = await until_heard(caller_ear(caller), BOB_HZ, accepted,
                                                  "the caller from bob")
                await shots(bob, "bob-connected")
                # the hub's call_connected turns the view from "Connecting…" to "On call"
                out["bob_view"] = await bob.attr(view, "data-state")
                out["after"] = await settle(1.5)
                calls = [c for c in (await asyncio.to_thread(rest, srv, "/api/calls", token))
                         ["calls"] if c["callId"] == call_id]
                assert [c["state"] for c in calls] == ["human"]  # with bob now

                # alice's wrap-up (the hub's answer is on the form: saved, or why not)
                out["alice_wrapup"] = await wrap_up(alice, shots, "resolved",
                                                    "handed to bob for billing")

                # the caller hangs up on bob, who wraps up too
                await asyncio.to_thread(caller.hangup)
                await bob.wait_for(ended, limit=15)
                assert await bob.attr(ended, "data-by") == "caller"
                await shots(bob, "bob-call-ended")
                assert await wrap_up(bob, shots, "follow_up", NOTE) is None
                assert srv.metric("hitl_sip_hub_wrapups_total", disposition="follow_up") >= 1
    finally:
        await asyncio.to_thread(caller.close)

    the_caller = Ear.of_caller(caller)
    after = shares(the_caller, out["after"], ALICE_HZ, BOB_HZ)
    print(f"\ntransfer: bob reached the caller {out['bob_on'] * 1000:.0f} ms after his "
          f"Accept; the caller's tone shares afterwards {after}")
    assert after[BOB_HZ] > HEARD
    assert after[ALICE_HZ] < LEAK
    thread = await asyncio.to_thread(rest, srv, f"/api/threads/{thread_id}", token)
    assert any(t["text"].startswith("Transferred to bob") for t in thread["turns"]), thread
    # the transfer's target shows the call connected; the agent who handed it over may
    # wrap up its part (counted)
    assert out["bob_view"] == "connected"
    assert out["alice_wrapup"] is None
    assert srv.metric("hitl_sip_hub_wrapups_total", disposition="resolved") >= 1
