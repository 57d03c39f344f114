"""DTMF digits are redacted everywhere they leave the call (issue 15): a caller types a card
number at a node that collects it and a menu choice at a node that says ``safe_digits``;
the alive5 thread, the call record, every file of the data directory and the server's log
(at ``debug``, where a log line's personal-data fields are printed) keep the menu digit
and only that a digit was pressed at the card node — never one of its digits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.alive5 import API_KEY, Alive5StandIn
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

pytestmark = pytest.mark.sipp

CARD = "40128888"  # a test card number: its digits are 0, 1, 2, 4 and 8
CHOICE = "7"  # the menu's digit, not one of the card's
CARD_PROMPT = "Type your card number."
MENU_PROMPT = "Press seven to finish."
GOODBYE = "Goodbye."
FLOW = f"""
name: redaction
start: card
nodes:
  card:
    type: ask
    prompt: "{CARD_PROMPT}"
    timeout: 15
    retries: 0
    dtmf_max: {len(CARD)}
    store_as: card
    branches:
      - {{any: true, next: menu}}
    fail: bye
  menu:
    type: ask
    prompt: "{MENU_PROMPT}"
    timeout: 15
    retries: 0
    safe_digits: true
    branches:
      - {{dtmf: "{CHOICE}", next: bye}}
    fail: bye
  bye: {{type: hangup, text: "{GOODBYE}"}}
"""
# a digit as a log line gives it: our DTMF line's redactable field ("'digit': '7'"), a
# transcript turn ("[pressed 7]"), rtpengine's RFC 4733 trace ("DTMF event packet: event 7")
DTMF_LINE = re.compile(r"dtmf|digit|pressed", re.IGNORECASE)  # a line about a digit
LOGGED_DIGIT = re.compile(r"(?i:\bevent|\bdigits?|\bpressed)\W{0,4}([0-9*#•])(?!\w)")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Server, Alive5StandIn]]:
    flow = tmp_path / "redaction.yaml"
    flow.write_text(FLOW)
    with Alive5StandIn() as a5:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(flow)}, "log": {"level": "debug"},
            "alive5": {"url": a5.url, "api_key": API_KEY, "ack_timeout": 3}}
        with running_server(tmp_path, extra=extra) as srv:
            yield srv, a5


def said(a5: Alive5StandIn, text: str) -> bool:
    return any(m["message_content"] == text for t in list(a5.threads.values())
               for m in list(t.messages))


def test_card_digits_are_masked_everywhere_and_a_menu_digit_is_kept(
    stack: tuple[Server, Alive5StandIn],
) -> None:
    srv, a5 = stack
    with RtpCaller(srv.sip_port()) as caller:
        caller.call()
        caller.start_media()
        a5.wait_for(lambda: said(a5, CARD_PROMPT), 20, what="the card prompt")
        for digit in CARD:
            caller.dtmf(digit)
        # the menu's digit once the flow is at the menu (its prompt has reached alive5)
        a5.wait_for(lambda: said(a5, MENU_PROMPT), 20, what="the menu prompt")
        caller.dtmf(CHOICE)
        assert caller.wait_ended(20), "the flow did not hang up"
        assert caller.ended_by_server
    srv.wait_for(lambda: len(srv.call_records()) == 1, what="the call record")
    record = srv.call_records()[0]
    thread = a5.threads[record["threadId"]]
    a5.wait_for(lambda: bool(thread.ended), 15, what="the thread's end")
    log = srv.log_path.read_text(errors="replace")

    # alive5: every digit of the card as "[pressed •]", the menu's as itself
    pressed = [m["message_content"] for m in thread.messages
               if m["message_content"].startswith("[pressed")]
    assert pressed == ["[pressed •]"] * len(CARD) + [f"[pressed {CHOICE}]"], pressed
    texts = [m["message_content"] for m in thread.messages]
    assert texts[0] == CARD_PROMPT and GOODBYE in texts, texts
    posted = json.dumps([thread.messages, thread.crm, thread.ended], ensure_ascii=False)
    assert CARD not in posted

    # the call record, likewise
    assert [e["digit"] for e in record["events"] if e["type"] == "dtmf"] == (
        ["•"] * len(CARD) + [CHOICE])

    # the log prints a digit's field at debug: the menu's, never a card digit
    lines = [line for line in log.splitlines() if DTMF_LINE.search(line)]
    logged = [d for line in lines for d in LOGGED_DIGIT.findall(line)]
    assert CHOICE in logged, logged  # the check below reads the lines digits are logged on
    assert not set(logged) & set(CARD), [line for line in lines
                                          if set(LOGGED_DIGIT.findall(line)) & set(CARD)]
    assert sorted(logged) == sorted(["•"] * len(CARD) + [CHOICE]), logged
    assert CARD not in log

    # nothing the server keeps (call records, threads, audit) has the number
    kept = [p for p in srv.data_dir.rglob("*") if p.is_file() and p.suffix != ".wav"]
    assert any(p.name == "threads.sqlite" for p in kept)
    for path in kept:
        assert CARD.encode() not in path.read_bytes(), path
