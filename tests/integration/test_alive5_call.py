"""A whole call into the alive5 stand-in: the bot's turns, the handoff, the agent's spoken
words transcribed from its WebRTC audio, the end event — in order, with the right roles."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.testagent import TestAgent, wav_source
from tests.integration.test_agents import PASSWORD, add_agent
from tests.integration.test_pocketsphinx import _go_forward
from tests.support.alive5 import API_KEY, Alive5StandIn
from tests.support.rtpcaller import RtpCaller
from tests.support.server import running_server

pytestmark = pytest.mark.sipp

FLOW = """
name: a5
start: hello
nodes:
  hello: {type: say, text: "Hello, this is the assistant.", barge_in: false, next: agent}
  agent: {type: agent, message: "Connecting you now.", fallback: bye}
  bye: {type: hangup}
"""


def test_a_whole_call_reaches_the_alive5_thread_in_order(tmp_path: Path) -> None:
    flow = tmp_path / "a5.yaml"
    flow.write_text(FLOW)
    speech = tmp_path / "agent.wav"
    with wave.open(str(speech), "wb") as w:  # the agent says "go forward ten meters"
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(16000) + _go_forward().pcm + bytes(64000))
    install_host_filter(["127.0.0.1"])
    with Alive5StandIn() as a5:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(flow)}, "routing": {"queue_timeout": 60},
            "webrtc": {"host_addresses": ["127.0.0.1"]},
            "alive5": {"url": a5.url, "api_key": API_KEY, "ack_timeout": 3}}
        with running_server(tmp_path, extra=extra) as srv:
            add_agent(srv.data_dir, "alice")

            async def call() -> str:
                agent = TestAgent(srv.http_url, "alice", PASSWORD,
                                  source=wav_source(speech, loop=False), codecs=("pcmu",))
                await agent.connect()
                caller = RtpCaller(srv.sip_port())
                try:
                    await asyncio.to_thread(caller.call)
                    caller.start_media()
                    offer = await agent.answer_next_call(limit=30)
                    await agent.wait("call_connected", limit=15)
                    await asyncio.sleep(6.0)  # the agent speaks, the recogniser finishes
                    await asyncio.to_thread(caller.hangup)
                    await agent.wait("call_ended", limit=15)
                finally:
                    await agent.close()
                    await asyncio.to_thread(caller.close)
                return str(offer["threadId"])

            thread_id = asyncio.run(call())
            a5.wait_for(lambda: thread_id in a5.threads and a5.threads[thread_id].ended,
                        20, what="the end of the thread")
    thread = a5.threads[thread_id]
    roles = ["agent" if "voiceAgentId" in m else "caller" for m in thread.messages]
    said = [m["message_content"] for m in thread.messages]
    assert said[:2] == ["Hello, this is the assistant.", "Connecting you now."], said
    assert any("forward" in s for s in said[2:]), said  # the human agent's words
    assert "caller" not in roles[:2]
    assert thread.duplicates == 0
    assert [e["end_by"] for e in thread.ended] == ["person"]
    assert thread.crm_id == "+14155550100"
