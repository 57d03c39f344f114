"""Call quality and recordings in the dashboard (issue 17), end to end in Debian's Chromium:
what tests/integration/test_quality.py measures over Socket.IO, as an agent and a supervisor
see it on the page.

* the quality badge: alice (role agent) takes a call from a clean RTP caller, then one from
  a lossy caller (5 % of packets dropped, up to 60 ms of send jitter). On each call the
  in-call badge (``quality-badge``: ``data-mos``, ``data-level``) is read once the page has
  been sent two ``call_quality`` reports (about every 2 s; counted from the page's own
  WebSocket frames) and shows the latest; its per-leg table is opened (a button with
  ``aria-expanded``) and screenshotted. The lossy call's MOS is lower by at least
  ``MOS_GAP`` and its level not "good". Her session history then lists both calls with no
  "Play recording" (recordings are for supervisors);
* the recording: sue (role supervisor, who takes calls too) answers a call, talks a few
  seconds and hangs up; in her session history "Play recording" fetches
  ``GET /api/recordings/<callId>`` and an ``<audio controls>`` appears that loads the
  recording (its metadata: ``readyState`` and ``duration``, the same length as the WAV on
  the server). The same URL with alice's token is refused (403).

One server serves the module (flow straight to the agent node, like
tests/e2e/test_supervision_browser.py). Screenshots go to ``tests/e2e/artifacts/<test>/``;
the figures (the two MOS values, the recording's length) are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testing.bursts import caller_source
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
    wait_connected,
)
from tests.e2e.test_supervision_browser import (
    ALICE_HZ,
    CALLER_HZ,
    FLOW,
    HEARD,
    SUE_HZ,
    caller_ear,
    diagnostics,
    until_heard,
    write_tone_wav,
)
from tests.integration.test_agents import add_agent
from tests.integration.test_supervision import share
from tests.support.browser import Browser, Page, tid, wait_for_attr, wait_for_value
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

#: The lossy line of tests/integration/test_quality.py (its caller leg: MOS ~3.3-3.9).
LOSS, JITTER, SEED = 0.05, 0.03, 7
#: How much lower the lossy call's badge must read than the clean one's.
MOS_GAP = 0.3
#: ``call_quality`` reports the page must have been sent before the badge is read.
REPORTS = 2
#: Seconds the supervisor's call lasts (its timer) before she hangs up.
TALK_S = 3
#: The page's meter of the caller while the caller's bursts play.
REMOTE_LEVEL_MIN = 30.0
#: The recording against the call (the caller's 200 OK to its BYE), in seconds.
RECORDING_SLACK_S = 0.5
#: A Socket.IO event frame: ``42``, the namespace, an optional ack id, then the JSON array.
EVENT_FRAME = re.compile(r"42(?:/[^,\[]*,)?\d*(\[.*)", re.DOTALL)
#: The recording's <audio> as a script reads it (NaN and Infinity come back as null).
AUDIO_STATE = """(selector) => {
  const a = document.querySelector(selector);
  if (!a) return null;
  return {readyState: a.readyState, duration: Number.isFinite(a.duration) ? a.duration : null,
          src: a.currentSrc || a.src, error: a.error ? a.error.code : null,
          controls: a.controls, paused: a.paused};
}"""
#: The page's requests (resource timing) to the recordings API.
RECORDING_REQUESTS = """performance.getEntriesByType('resource')
  .filter((e) => e.name.includes('/api/recordings/'))
  .map((e) => ({url: e.name, initiator: e.initiatorType, status: e.responseStatus ?? null}))"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    home = tmp_path_factory.mktemp("quality-browser")
    flow = home / "flow.yaml"
    flow.write_text(FLOW)
    install_host_filter(["127.0.0.1"])
    extra: dict[str, dict[str, Any]] = {
        "bot": {"flow": str(flow)},
        "routing": {"queue_timeout": 60},
        "webrtc": {"host_addresses": ["127.0.0.1"]},
    }
    with running_server(home, extra=extra) as server:
        with ThreadPoolExecutor() as pool:  # ~1.7 s each, SQLite: at once
            list(pool.map(lambda account: add_agent(server.data_dir, *account),
                          [("alice", "agent"), ("sue", "supervisor")]))
        check_dashboard_is_built(server)
        yield server


# --- helpers -------------------------------------------------------------------------------


def socket_events(frames: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The payloads of the Socket.IO events ``name`` among a page's WebSocket frames."""
    found = []
    for frame in frames:
        match = EVENT_FRAME.fullmatch(str(frame["payload"]))
        if match is None:
            continue
        message = json.loads(match.group(1))
        if message and message[0] == name and len(message) > 1:
            found.append(message[1])
    return found


async def quality_reports(page: Page, call_id: str) -> list[dict[str, Any]]:
    """The ``call_quality`` events the page has been sent for ``call_id``, in order."""
    return [q for q in socket_events(await page.ws_frames("call_quality"), "call_quality")
            if q.get("callId") == call_id]


async def read_badge(page: Page, call_id: str, shots: Shots, step: str) -> dict[str, Any]:
    """Once the page has had ``REPORTS`` quality reports for the call and its badge shows the
    latest: the badge (MOS, level, the legs in its opened table) and the reports."""
    badge = tid("quality-badge")

    async def look() -> tuple[list[dict[str, Any]], str | None]:
        reports = await quality_reports(page, call_id)
        shown = await page.query(badge, ("data-mos",))
        return reports, shown[0]["attrs"]["data-mos"] if shown else None

    def latest_shown(seen: tuple[list[dict[str, Any]], str | None]) -> bool:
        reports, mos = seen
        return len(reports) >= REPORTS and mos is not None and float(mos) == reports[-1]["mos"]

    reports, _ = await wait_for_value(look, latest_shown, 15,
                                      f"{REPORTS} call_quality reports shown by the badge")
    mos, level = await page.attr(badge, "data-mos"), await page.attr(badge, "data-level")
    label = await page.attr(badge, "aria-label")
    assert mos is not None and level in ("good", "fair", "poor"), (mos, level)
    assert label == f"Call quality: {level}, MOS {mos_text(float(mos))}", label

    # its details: a disclosure button over the per-leg table
    assert await page.attr(badge, "aria-expanded") == "false"
    await page.click(badge)
    await wait_for_attr(page, badge, "aria-expanded", equals("true"), 5)
    table = tid("quality-badge-legs")
    await page.wait_for(table, limit=5)
    assert await page.attr(badge, "aria-controls") == await page.attr(table, "id")
    rows = await page.query(f"{table} tbody tr", ("data-leg", "data-level"))
    legs = {str(r["attrs"]["data-leg"]): r for r in rows}
    await shots(page, step)
    return {"mos": float(mos), "level": level, "legs": legs, "reports": reports,
            "text": (await page.text(badge) or "").strip()}


def mos_text(mos: float) -> str:
    """The dashboard's (quality-badge.ts): one decimal, rounded down."""
    return f"{int(mos * 10 + 1e-6) / 10:.1f}"


def caller_leg(report: dict[str, Any]) -> dict[str, Any]:
    return next(leg for leg in report["legs"] if leg["leg"] == "caller")


async def take_a_call(page: Page, caller: RtpCaller) -> str:
    """The caller dials, the page rings and accepts; the call's id once it is connected."""
    await asyncio.to_thread(caller.call, 10)
    caller.start_media(caller_source)
    card = tid("incoming-call")
    await page.wait_for(card, limit=20)
    call_id = await page.attr(card, "data-call-id")
    assert call_id
    await page.click(f"{incoming(call_id)} {tid('accept-button')}")
    await wait_connected(page, call_id)
    # the caller's bursts on the page's meter (aria-valuenow 30 is -42 dBFS; they are ~-15)
    await wait_for_attr(page, tid("remote-level"), "aria-valuenow", above(REMOTE_LEVEL_MIN), 10)
    return call_id


def status_of(server: Server, path: str, token: str) -> int:
    req = urllib.request.Request(server.http_url + path,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5, context=server.ssl_context) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


# --- the tests -----------------------------------------------------------------------------


async def test_the_quality_badge_reads_lower_on_a_lossy_line(
    srv: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    shots = Shots(request.node.name)
    mic = write_tone_wav(tmp_path / "alice-mic.wav", ALICE_HZ)
    seen: dict[str, dict[str, Any]] = {}
    async with Browser() as browser:
        await browser.launch(mic)
        page = await browser.new_page("alice", srv.http_url + "/")
        async with diagnostics({"alice": browser}, shots, [page], srv):
            await log_in(page, "alice")
            await be_available(page)
            for kind, caller in (("clean", RtpCaller(srv.sip_port())),
                                 ("lossy", RtpCaller(srv.sip_port(), loss=LOSS,
                                                     jitter=JITTER, seed=SEED))):
                try:
                    call_id = await take_a_call(page, caller)
                    seen[kind] = await read_badge(page, call_id, shots, f"{kind}-badge")
                    seen[kind]["callId"] = call_id
                    await asyncio.to_thread(caller.hangup)
                    await page.wait_for(tid("call-ended"), limit=15)
                    assert await page.attr(tid("call-ended"), "data-by") == "caller"
                    await page.click(tid("dismiss-ended"))
                    await page.wait_for(tid("in-call"), state="detached", limit=5)
                finally:
                    await asyncio.to_thread(caller.close)

            # an agent's session history: both calls, and no recordings to play
            items = tid("history-item")
            await wait_for_value(lambda: page.query(items, ("data-call-id",)),
                                 lambda found: {i["attrs"]["data-call-id"] for i in found}
                                 >= {seen["clean"]["callId"], seen["lossy"]["callId"]},
                                 10, "both calls in alice's session history")
            await shots(page, "agent-history")
            plays = await page.count('[data-testid^="recording-play-"]')
            players = await page.count(f"{items} app-recording")

    clean, lossy = seen["clean"], seen["lossy"]
    print(f"\nquality badge: clean MOS {clean['mos']} ({clean['level']}, "
          f"{clean['text']!r}), lossy MOS {lossy['mos']} ({lossy['level']}, "
          f"{lossy['text']!r}); lossy caller leg "
          f"{caller_leg(lossy['reports'][-1])}; {len(clean['reports'])} + "
          f"{len(lossy['reports'])} reports; {time.monotonic() - started:.1f} s")
    assert lossy["mos"] <= clean["mos"] - MOS_GAP, (clean, lossy)
    assert lossy["level"] != "good", lossy
    assert clean["level"] == "good", clean
    for badge in (clean, lossy):
        assert set(badge["legs"]) == {"caller", "agent"}, badge["legs"]
        assert "You" in str(badge["legs"]["agent"]["text"])  # the agent's own leg
    assert lossy["legs"]["caller"]["attrs"]["data-level"] != "good", lossy["legs"]
    assert caller_leg(lossy["reports"][-1])["lossPct"] >= 1.0, lossy["reports"]
    assert (plays, players) == (0, 0), "an agent was offered a recording"


async def test_a_supervisor_plays_a_call_recording_in_the_page(
    srv: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    started = time.monotonic()
    shots = Shots(request.node.name)
    mic = write_tone_wav(tmp_path / "sue-mic.wav", SUE_HZ)
    caller = RtpCaller(srv.sip_port())
    out: dict[str, Any] = {}
    try:
        async with Browser() as browser:
            await browser.launch(mic)
            page = await browser.new_page("sue", srv.http_url + "/")
            async with diagnostics({"sue": browser}, shots, [page], srv):
                await log_in(page, "sue")
                await be_available(page)
                call_id = await take_a_call(page, caller)
                connected = time.monotonic()
                # she talks: the caller hears her, for TALK_S seconds on the call's timer
                await until_heard(caller_ear(caller), SUE_HZ, connected, "the caller from sue")
                await wait_for_attr(page, tid("call-timer"), "data-seconds",
                                    above(TALK_S - 1), TALK_S + 5)
                await shots(page, "on-call")
                await page.click(tid("hangup-button"))
                await page.wait_for(tid("call-ended"), limit=15)
                assert await page.attr(tid("call-ended"), "data-by") == "agent"
                assert await asyncio.to_thread(caller.wait_ended, 10)

                # her session history: the call, with its recording to play
                item = f'{tid("history-item")}[data-call-id="{call_id}"]'
                play = f"{item} {tid(f'recording-play-{call_id}')}"
                await page.wait_for(play, limit=10)
                assert "Play recording" in (await page.text(play) or "")
                await shots(page, "history")
                await page.click(play)
                audio = f"{item} {tid(f'recording-audio-{call_id}')}"
                await page.wait_for(audio, limit=10)
                state = await wait_for_value(
                    lambda: page.evaluate(AUDIO_STATE, arg=audio),
                    lambda s: s is not None and (s["error"] is not None or (
                        s["readyState"] >= 1 and (s["duration"] or 0) > 1)),
                    10, "the recording's metadata in the <audio>")
                out["audio"] = state
                out["requests"] = await page.evaluate(RECORDING_REQUESTS)
                out["message"] = await page.text(f"{item} {tid(f'recording-message-{call_id}')}")
                await shots(page, "recording-loaded")
    finally:
        await asyncio.to_thread(caller.close)

    path = srv.data_dir / "recordings" / f"{call_id}.wav"
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        on_disk = w.getnframes() / rate
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    assert caller.answered_at is not None and caller.ended_at is not None
    call_s = caller.ended_at - caller.answered_at
    # the caller on the left, what it heard on the right: sue's voice, a second before
    # the end (the last one may be cut by the hang-up)
    last = slice(-2 * rate, -rate)
    left = share(stereo[last, 0].tobytes(), CALLER_HZ, rate)
    right = share(stereo[last, 1].tobytes(), SUE_HZ, rate)
    refused = await asyncio.to_thread(status_of, srv, f"/api/recordings/{call_id}",
                                      agent_token(srv, "alice"))
    allowed = await asyncio.to_thread(status_of, srv, f"/api/recordings/{call_id}",
                                      agent_token(srv, "sue"))
    print(f"\nrecording: the page's <audio> {out['audio']}, the WAV on the server "
          f"{on_disk:.2f} s (the call {call_s:.2f} s; {CALLER_HZ} Hz share left {left:.2f}, "
          f"{SUE_HZ} Hz right {right:.2f}); requests {out['requests']}; alice gets "
          f"{refused}; {time.monotonic() - started:.1f} s")
    audio = out["audio"]
    assert audio["error"] is None, audio
    assert audio["readyState"] >= 1 and audio["duration"] > 1, audio
    assert audio["controls"] and str(audio["src"]).startswith("blob:"), audio
    assert abs(audio["duration"] - on_disk) < 0.1, (audio, on_disk)
    assert on_disk >= TALK_S and abs(on_disk - call_s) < RECORDING_SLACK_S, (on_disk, call_s)
    assert left > HEARD and right > HEARD, (left, right)
    assert [r["url"] for r in out["requests"]] == [
        f"{srv.http_url}/api/recordings/{call_id}"], out["requests"]
    assert not (out["message"] or "").strip(), out["message"]
    assert (allowed, refused) == (200, 403)
