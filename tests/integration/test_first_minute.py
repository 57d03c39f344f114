"""A new user's first minute, end to end: ``hitl-sip serve`` with alive5 given only as
flags (PROTOCOL.md §5), the demo flow, and callers who press keys while the 7.3 s greeting
(which cannot be interrupted) still plays — type-ahead DTMF, the way every IVR keeps digits.

One server and one alive5 stand-in serve every test of the module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.support.alive5 import API_KEY, Alive5StandIn, Alive5Thread
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

pytestmark = pytest.mark.sipp

GREETING = ("Hello, thanks for calling. This is the virtual assistant. Press zero or say "
            "agent to talk to a person.")
MENU = "How can I help you today?"
NO_INPUT = "Sorry, I didn't hear anything. Press zero or say agent to talk to a person."
NO_MATCH = "Sorry, I didn't get that. Press zero or say agent to talk to a person."
HOLD = "Please hold while I connect you to an agent."
GREETING_SECONDS = 7.3  # rtp/prompts/greeting.wav


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Alive5StandIn]]:
    tmp = tmp_path_factory.mktemp("first-minute")
    with Alive5StandIn() as a5, running_server(
        tmp, args=["--alive5-url", a5.url, "--alive5-api-key", API_KEY,
                   "--alive5-channel-id", "chan-first-minute"],
    ) as srv:
        yield srv, a5


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00")).timestamp()


def new_thread(a5: Alive5StandIn, known: set[str], text: str) -> Alive5Thread | None:
    """The thread, not among ``known``, that has received ``text`` (None yet)."""
    for thread_id, thread in list(a5.threads.items()):
        if thread_id not in known and any(m["message_content"] == text
                                          for m in list(thread.messages)):
            return thread
    return None


def call_pressing(srv: Server, a5: Alive5StandIn,
                  presses: list[tuple[float, str]]) -> tuple[Alive5Thread, dict[str, Any]]:
    """Call, press each digit that many seconds after the media started (during the
    greeting), wait until the bot's hold message reaches alive5 (the agent node), hang up.
    Returns the call's alive5 thread and its call record."""
    known = set(a5.threads)
    records = len(srv.call_records())
    with RtpCaller(srv.sip_port()) as caller:
        caller.call()
        caller.start_media()
        started = time.monotonic()
        for offset, digit in presses:
            # the caller's own timing (seconds into the greeting), not a wait for an event
            time.sleep(max(0.0, started + offset - time.monotonic()))
            caller.dtmf(digit)
        a5.wait_for(lambda: new_thread(a5, known, HOLD) is not None, 20,
                    what="the agent node's hold message in alive5")
        caller.hangup()
    srv.wait_for(lambda: len(srv.call_records()) == records + 1, what="the call record")
    thread = new_thread(a5, known, HOLD)
    assert thread is not None
    a5.wait_for(lambda: bool(thread.ended), 15, what="the thread's end")
    return thread, srv.call_records()[-1]


def test_zero_pressed_during_the_greeting_reaches_the_agent_node_without_a_no_input(
    stack: tuple[Server, Alive5StandIn],
) -> None:
    srv, a5 = stack
    thread, record = call_pressing(srv, a5, [(4.0, "0")])
    said = [(m["sender"], m["message_content"]) for m in thread.messages]
    assert said == [("voice_agent", GREETING), ("voice_agent", MENU),
                    ("person", "[pressed 0]"), ("voice_agent", HOLD)], said
    states = [e for e in record["events"] if e["type"] == "state"]
    assert [e["state"] for e in states] == ["bot", "queued", "ended"]
    digit = next(e for e in record["events"] if e["type"] == "dtmf")
    queued = next(e for e in states if e["state"] == "queued")
    # kept while the greeting played (not dropped, not cutting it), then taken at its end
    waited = at(queued) - at(digit)
    assert GREETING_SECONDS - 4.0 - 1.0 < waited < GREETING_SECONDS - 4.0 + 1.5, waited
    assert thread.messages[0]["message_content"] == GREETING
    assert a5.threads[record["threadId"]] is thread  # the thread alive5 got is the call's


def test_one_then_zero_during_the_greeting_are_a_no_match_then_the_reprompt_s_answer(
    stack: tuple[Server, Alive5StandIn],
) -> None:
    srv, a5 = stack
    thread, record = call_pressing(srv, a5, [(3.0, "1"), (4.5, "0")])
    said = [m["message_content"] for m in thread.messages]
    assert said == [GREETING, MENU, "[pressed 1]", "[pressed 0]", NO_MATCH, MENU, HOLD], said
    assert NO_INPUT not in said
    assert [e["state"] for e in record["events"] if e["type"] == "state"] == [
        "bot", "queued", "ended"]
    assert [e["digit"] for e in record["events"] if e["type"] == "dtmf"] == ["1", "0"]


def test_the_alive5_flags_alone_configure_the_connector(
    stack: tuple[Server, Alive5StandIn],
) -> None:
    srv, a5 = stack
    assert a5.threads, "run after the calls above (the module shares the server)"
    assert not a5.refused, "the stand-in refused the server's handshake (api key)"
    for thread in a5.threads.values():
        assert thread.channel_id == "chan-first-minute"
        assert thread.voice_agent_id and thread.ended
    assert API_KEY not in srv.log(), "the key is never logged"
