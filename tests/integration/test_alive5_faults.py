"""Faults on the way to alive5, end to end: the hub killed with turns still in its outbox
and started again (the caller's CRM data and the end delivered after the restart); the
speech process killed mid-call. Each time the thread in the stand-in ends up with every
turn exactly once, in order. The outbox's own faults (alive5 handlers failing or never
acknowledging, SQLite errors, a sender killed, the sweep) are in test_alive5_outbox.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.test_alive5_call import Talker
from tests.integration.test_bot_flow import API_KEY as API_KEY_REST
from tests.integration.test_bot_flow import get_json
from tests.integration.test_pocketsphinx import _librivox
from tests.support.alive5 import API_KEY, Alive5StandIn
from tests.support.rtpcaller import RtpCaller
from tests.support.server import running_server

pytestmark = pytest.mark.sipp

def extra(flow: Path, a5: Alive5StandIn) -> dict[str, dict[str, Any]]:
    return {"bot": {"flow": str(flow)}, "api": {"keys": [API_KEY_REST]},
            "alive5": {"url": a5.url, "api_key": API_KEY, "ack_timeout": 2,
                       "max_backoff": 1}}


def test_a_hub_killed_with_turns_in_its_outbox_delivers_them_after_a_restart(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text('name: f\nstart: hello\nnodes:\n'
                    '  hello: {type: say, text: "Hello there.", barge_in: false, next: bye}\n'
                    '  bye: {type: hangup, text: "Goodbye now."}\n')
    a5 = Alive5StandIn()  # down for the whole first run
    try:
        with running_server(tmp_path, extra=extra(flow, a5)) as srv:
            with RtpCaller(srv.sip_port()) as caller:
                caller.call()
                caller.start_media()
                assert caller.wait_ended(20), "the flow should hang up"
            srv.wait_for(lambda: srv.metric("hitl_sip_alive5_backlog") == 2, 10,
                         what="two turns waiting in the outbox")
            srv.wait_for(lambda: not get_json(srv, "/api/calls")["calls"], 10,
                         what="the call ended at the hub (its end in the outbox too)")
            os.kill(srv.process.pid, signal.SIGKILL)  # the hub dies with them
            srv.process.wait(10)
        a5.start()
        with running_server(tmp_path, extra=extra(flow, a5)) as srv:
            a5.wait_for(lambda: any(t.ended for t in a5.threads.values()), 20,
                        what="the thread delivered after the restart")
            srv.wait_for(lambda: srv.metric("hitl_sip_alive5_backlog") == 0, 10,
                         what="an empty outbox")
        (thread,) = a5.threads.values()
        assert [m["message_content"] for m in thread.messages] == ["Hello there.",
                                                                   "Goodbye now."]
        assert thread.duplicates == 0
        assert [e["end_by"] for e in thread.ended] == ["voice_agent"] and thread.end_acks == 1
        # the caller's CRM data outlived the hub too: stored with the thread
        assert thread.crm_id == "+14155550100" and thread.crm["phone"] == "+14155550100"
    finally:
        a5.stop()


FLOW_TWICE = """
name: twice
start: ask1
nodes:
  ask1:
    type: ask
    prompt: "Say something."
    timeout: 30
    retries: 0
    branches: [{any: true, next: ok}]
    fail: bye
  ok: {type: say, text: "Thanks.", barge_in: false, next: ask2}
  ask2:
    type: ask
    prompt: "And again."
    timeout: 30
    retries: 0
    branches: [{any: true, next: bye}]
    fail: bye
  bye: {type: hangup, text: "Goodbye."}
"""


def test_the_speech_process_killed_mid_call_the_call_and_the_thread_go_on(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "twice.yaml"
    flow.write_text(FLOW_TWICE)
    clips = {c.name.rsplit("-", 1)[1]: c for c in _librivox()}
    with Alive5StandIn() as a5, running_server(tmp_path, extra=extra(flow, a5)) as srv:
        talker = Talker()
        with RtpCaller(srv.sip_port()) as caller:
            caller.call()
            caller.start_media(talker)
            talker.say(bytes(32000) + clips["0880"].pcm + bytes(32000))
            a5.wait_for(lambda: any(m["message_content"] == "Thanks."
                                    for t in a5.threads.values() for m in t.messages),
                        25, what="the bot's answer to the first sentence")
            worker = psutil.Process(srv.worker_pid())
            speech = [p for p in worker.children() if "spawn_main" in " ".join(p.cmdline())
                      and "resource_tracker" not in " ".join(p.cmdline())]
            assert len(speech) == 1, [p.cmdline() for p in worker.children()]
            speech[0].kill()  # the recogniser dies mid-call
            time.sleep(2.0)
            talker.say(clips["0930"].pcm + bytes(32000))
            assert caller.wait_ended(30), "the flow should go on to its goodbye"
        a5.wait_for(lambda: any(t.ended for t in a5.threads.values()), 20,
                    what="the end of the thread")
        records = srv.call_records()
    (thread,) = a5.threads.values()
    roles = ["caller" if "voiceAgentId" not in m else "bot" for m in thread.messages]
    texts = [m["message_content"] for m in thread.messages]
    assert roles == ["bot", "caller", "bot", "bot", "caller", "bot"], texts
    assert texts[0] == "Say something." and texts[2:4] == ["Thanks.", "And again."]
    assert texts[5] == "Goodbye."
    assert "made" in texts[4] or "amiable" in texts[4] or "himself" in texts[4], texts
    assert thread.duplicates == 0
    assert records[0]["outcome"] == "completed"


def test_alive5_down_when_the_call_starts_back_mid_call_then_restarting(
    tmp_path: Path,
) -> None:
    flow = tmp_path / "twice.yaml"
    flow.write_text(FLOW_TWICE)
    clips = {c.name.rsplit("-", 1)[1]: c for c in _librivox()}
    a5 = Alive5StandIn()  # down when the call starts
    try:
        with running_server(tmp_path, extra=extra(flow, a5)) as srv:
            talker = Talker()
            with RtpCaller(srv.sip_port()) as caller:
                caller.call()
                caller.start_media(talker)
                talker.say(bytes(32000) + clips["0880"].pcm + bytes(32000))
                srv.wait_for(lambda: srv.metric("hitl_sip_alive5_backlog") >= 3, 25,
                             what="the first turns waiting for alive5")
                (call,) = get_json(srv, "/api/calls")["calls"]
                turns = get_json(srv, f"/api/threads/{call['threadId']}")["turns"]
                assert {t["delivery"] for t in turns} == {"pending"}  # visible as such
                a5.start()  # back mid-call
                a5.wait_for(lambda: any(len(t.messages) >= 3 for t in a5.threads.values()),
                            20, what="the backlog delivered")
                a5.stop()  # and restarting
                talker.say(clips["0930"].pcm + bytes(32000))
                time.sleep(2.0)
                a5.start()
                assert caller.wait_ended(30), "the call goes on to the flow's goodbye"
            a5.wait_for(lambda: any(t.ended for t in a5.threads.values()), 20,
                        what="the end of the thread")
            records = srv.call_records()
    finally:
        a5.stop()
    (thread,) = a5.threads.values()
    texts = [m["message_content"] for m in thread.messages]
    assert [m["sender"] for m in thread.messages] == [
        "voice_agent", "person", "voice_agent", "voice_agent", "person", "voice_agent"], texts
    assert texts[2:4] == ["Thanks.", "And again."] and texts[5] == "Goodbye."
    assert thread.duplicates == 0
    assert records[0]["outcome"] == "completed"

