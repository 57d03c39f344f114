"""A whole call into the alive5 stand-in: the bot's turns, the caller's words in the bot
phase (an ask node), the handoff, then the human agent's and the caller's words (each leg
transcribed on its own), the caller's details and the end event — in order, with the right
roles.

Speech is human (Debian's pocketsphinx-testdata): the caller says "go forward ten meters"
to the bot and a Sense and Sensibility sentence to the agent; the agent, through its
WebRTC microphone, says two others. The agent's and the caller's words must each come out
within a word error rate of 0.65 (measured: 0.50 for the agent's two sentences, 0.43 for
the caller's; the G.711 corpus figure is 0.40, tests/integration/test_pocketsphinx.py —
a couple of sentences vary more than a corpus).
"""

from __future__ import annotations

import asyncio
import threading
import wave
from pathlib import Path
from typing import Any

import pytest

from hitl_sip.media.ice import install_host_filter
from hitl_sip.media.wav import resample
from hitl_sip.testing.agent import TestAgent, wav_source
from hitl_sip.testing.wer import word_error_rate
from tests.integration.test_agents import PASSWORD, add_agent
from tests.integration.test_pocketsphinx import _go_forward, _librivox
from tests.support.alive5 import API_KEY, Alive5StandIn
from tests.support.rtpcaller import RtpCaller
from tests.support.server import running_server

pytestmark = pytest.mark.sipp

FLOW = """
name: a5
start: hello
nodes:
  hello:
    type: ask
    prompt: "Hello, this is the assistant."
    timeout: 15
    retries: 0
    branches:
      - {any: true, next: agent}
    fail: agent
  agent: {type: agent, message: "Connecting you now.", fallback: bye}
  bye: {type: hangup}
"""
AGENT_WER_BOUND = 0.65


class Talker:
    """The caller's microphone: silence, or what the test queued (8 kHz s16le)."""

    def __init__(self) -> None:
        self._pcm = bytearray()
        self._lock = threading.Lock()

    def say(self, pcm16k: bytes) -> None:
        with self._lock:
            self._pcm += resample(pcm16k, 16000, 8000)

    def __call__(self, n: int) -> bytes:
        with self._lock:
            chunk = bytes(self._pcm[:320])
            del self._pcm[:320]
        return chunk.ljust(320, b"\0")


def test_a_whole_call_reaches_the_alive5_thread_in_order(tmp_path: Path) -> None:
    flow = tmp_path / "a5.yaml"
    flow.write_text(FLOW)
    clips = {c.name.rsplit("-", 1)[1]: c for c in _librivox()}
    agent_clips = [clips["0880"], clips["0930"]]
    caller_clip = clips["0890"]
    speech = tmp_path / "agent.wav"
    with wave.open(str(speech), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(16000) + agent_clips[0].pcm + bytes(48000) + agent_clips[1].pcm
                      + bytes(64000))
    install_host_filter(["127.0.0.1"])
    with Alive5StandIn() as a5:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(flow)}, "routing": {"queue_timeout": 60},
            "webrtc": {"host_addresses": ["127.0.0.1"]},
            "alive5": {"url": a5.url, "api_key": API_KEY, "ack_timeout": 3}}
        with running_server(tmp_path, extra=extra) as srv:
            add_agent(srv.data_dir, "alice")

            async def call() -> tuple[str, list[dict[str, Any]], list[Any]]:
                agent = TestAgent(srv.http_url, "alice", PASSWORD,
                                  source=wav_source(speech, loop=False), codecs=("pcmu",))
                await agent.connect()
                talker = Talker()
                caller = RtpCaller(srv.sip_port())
                try:
                    await asyncio.to_thread(caller.call)
                    talker.say(bytes(64000) + _go_forward().pcm)  # after the prompt
                    caller.start_media(talker)
                    offer = await agent.answer_next_call(limit=30)
                    await agent.wait("call_connected", limit=15)
                    await asyncio.sleep(9.0)  # the agent's two sentences
                    talker.say(caller_clip.pcm + bytes(32000))
                    await asyncio.sleep(caller_clip.seconds + 2.5)
                    await asyncio.to_thread(caller.hangup)
                    await agent.wait("call_ended", limit=15)
                    # the agent's wrap-up after the call (PROTOCOL.md §6)
                    wrap = [await agent.call("wrap_up", {
                        "callId": offer["callId"], "disposition": "dancing"}),
                        await agent.call("wrap_up", {
                            "callId": offer["callId"], "disposition": "resolved",
                            "note": "refund issued"})]
                finally:
                    await agent.close()
                    await asyncio.to_thread(caller.close)
                return str(offer["threadId"]), agent.events.get("transcript", []), wrap

            thread_id, captions, wrap = asyncio.run(call())
            a5.wait_for(lambda: thread_id in a5.threads and a5.threads[thread_id].ended,
                        20, what="the end of the thread")
            a5.wait_for(lambda: "agent_note" in a5.threads[thread_id].crm, 20,
                        what="the wrap-up in the thread's CRM data")
    assert wrap[0]["error"]["code"] == "bad_request" and "resolved" in wrap[0]["error"][
        "message"]
    assert wrap[1] == {"ok": True}
    thread = a5.threads[thread_id]
    said = [(m["sender"], m["message_content"]) for m in thread.messages]
    texts = [t for _, t in said]
    hello, handoff = texts.index("Hello, this is the assistant."), texts.index(
        "Connecting you now.")
    assert hello < handoff
    assert {r for r, _ in said[:handoff + 1]} == {"voice_agent", "person"}
    bot_phase_caller = [t for r, t in said[:handoff] if r == "person"]
    assert any("forward" in t for t in bot_phase_caller), said
    after = said[handoff + 1:]
    assert {r for r, _ in after} == {"human_agent", "person"}  # no bot after the handoff
    agent_words = " ".join(t for r, t in after if r == "human_agent")
    caller_words = " ".join(t for r, t in after if r == "person")
    reference = " ".join(c.reference for c in agent_clips)
    agent_wer = word_error_rate(reference, agent_words)
    caller_wer = word_error_rate(caller_clip.reference, caller_words)
    assert agent_wer <= AGENT_WER_BOUND, (agent_wer, reference, said)
    assert caller_wer <= AGENT_WER_BOUND, (caller_wer, said)
    assert thread.duplicates == 0
    assert [e["end_by"] for e in thread.ended] == ["person"]
    assert thread.crm_id == "+14155550100" and thread.crm["phone"] == "+14155550100"
    assert (thread.crm["disposition"], thread.crm["agent_note"]) == ("resolved",
                                                                      "refund issued")
    # the accepting agent saw live captions of both legs: interim and final
    assert {c["role"] for c in captions if c["final"]} >= {"agent", "caller"}
    assert any(not c["final"] for c in captions)
