"""The alive5 connector's per-thread link against the stand-in (a real python-socketio
server speaking the voice-agent contract of PROTOCOL.md §4)."""

from __future__ import annotations

import asyncio

import pytest

from hitl_sip.hub.alive5 import Alive5Error, Alive5Profile, ThreadLink
from tests.support.alive5 import API_KEY, Alive5StandIn


def test_a_thread_is_initialised_then_turns_post_in_order_with_the_voice_agent_on_bot_turns(
) -> None:
    with Alive5StandIn() as a5:
        async def run() -> list[str]:
            link = ThreadLink(Alive5Profile(url=a5.url, api_key=API_KEY), "t-1", "crm-9")
            await link.open()
            ids = [await link.post("bot", "Hello, how can I help?", "c1:1"),
                   await link.post("caller", "my bill please", "c1:2"),
                   await link.post("agent", "let me check", "c1:3")]
            await link.save_crm("phone", "+14155550100")
            await link.end("person", "the caller hung up")
            await asyncio.sleep(0.2)
            await link.close()
            return ids

        ids = asyncio.run(run())
        thread = a5.threads["t-1"]
    assert len(set(ids)) == 3 and all(ids)
    assert thread.crm_id == "crm-9"
    assert [m["message_content"] for m in thread.messages] == [
        "Hello, how can I help?", "my bill please", "let me check"]
    assert [("voiceAgentId" in m) for m in thread.messages] == [True, False, True]
    assert [m["sender"] for m in thread.messages] == ["voice_agent", "person", "human_agent"]
    assert all(m["message_type"] == "voice_agent_post_message" for m in thread.messages)
    assert thread.crm == {"phone": "+14155550100"}
    assert thread.ended[0]["end_by"] == "person"


def test_a_wrong_key_or_no_server_is_a_clear_retryable_error() -> None:
    with Alive5StandIn() as a5:
        async def wrong_key() -> None:
            await ThreadLink(Alive5Profile(url=a5.url, api_key="nope"), "t", "c").open()

        with pytest.raises(Alive5Error, match="cannot connect"):
            asyncio.run(wrong_key())
        assert a5.refused
        url = a5.url
    async def down() -> None:
        await ThreadLink(Alive5Profile(url=url, api_key=API_KEY), "t", "c").open()

    with pytest.raises(Alive5Error, match="cannot connect"):
        asyncio.run(down())
