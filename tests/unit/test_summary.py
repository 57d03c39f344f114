"""The agent briefing (hitl_sip.hub.summary): the embedded engine's text, what the prompt
carries and never carries, and — with the hub, its router and the /agent namespace
in-process against an OpenAI-compatible stand-in on 127.0.0.1 — that a normal answer is the
briefing, while a slow or failing endpoint falls back to the embedded summary without
delaying ``incoming_call`` past ``summary.budget``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hitl_sip.config import Config, load_config
from hitl_sip.errors import ConfigError
from hitl_sip.hub.agentns import AgentNamespace
from hitl_sip.hub.calls import CallRecord, Handoff
from hitl_sip.hub.core import Hub
from hitl_sip.hub.registry import WorkerRegistry
from hitl_sip.hub.summary import (
    CallFacts,
    EmbeddedSummariser,
    Summaries,
    SummaryError,
    _content,
    build_messages,
    config_secrets,
    safe_details,
    substantive,
)
from hitl_sip.hub.threads import ThreadStore
from hitl_sip.protocol.agent import SummarySource
from hitl_sip.protocol.worker import (
    Caller,
    CallStarted,
    CallState,
    HandoffRequested,
    Hello,
    Role,
    TranscriptLine,
    TurnMsg,
)
from tests.unit.test_protocol_sockets import FakeAuth

log = logging.getLogger(__name__)

API_KEY = "sk-test-summary-0123456789"
ALIVE5_KEY = "a5-live-key-4242-abcd"
CALLER = Caller(number="+14155550100", name="Ann Lee")
TRANSCRIPT = [
    TranscriptLine(role=Role.BOT, text="Hello Ann. How can I help you today?", at="t0"),
    TranscriptLine(role=Role.CALLER, text="hi", at="t1"),
    TranscriptLine(role=Role.BOT, text="Sorry, I didn't get that. How can I help?", at="t2"),
    TranscriptLine(role=Role.CALLER, text="my bill is wrong this month", at="t3"),
    TranscriptLine(role=Role.BOT, text="I can't change bills. Press zero or say agent.",
                   at="t4"),
    TranscriptLine(role=Role.CALLER, text="[pressed 0]", at="t5"),
    TranscriptLine(role=Role.BOT, text="Please hold.", at="t6"),
]
# the SIP-header metadata of a call: one detail worth telling, the rest secrets or plumbing
METADATA: dict[str, Any] = {
    "X-Customer-Tier": "gold",
    "X-Twilio-CallSid": "CA0123deadbeef",
    "twilio_account_sid": "AC0123deadbeef",
    "X-Api-Key": "xk-9f8e7d6c5b4a",
    "Authorization": "Basic dXNlcjpwYXNz",
    "Proxy-Authorization": "Digest username=ops",
    "X-Auth-Token": "tok-5c1d2e3f",
    "stir_identity": "eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIn0.c2lnbmF0dXJl",
    "X-Callback": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJl",
    "X-Partner-Note": f"relay {ALIVE5_KEY}",
    "X-Nested": {"deep": 1},
}
SECRETS = [API_KEY, ALIVE5_KEY, "xk-9f8e7d6c5b4a", "dXNlcjpwYXNz", "username=ops",
           "tok-5c1d2e3f", "eyJ", "CA0123deadbeef", "AC0123deadbeef"]
ANSWER = "Ann Lee is calling about a wrong bill; the bot could not help, so she pressed 0."
MARGIN = 0.15  # seconds beyond the budget an incoming_call may take on a loaded machine


def record(metadata: dict[str, Any] | None = None) -> CallRecord:
    return CallRecord(
        call_id="c1", thread_id="t1", worker_id="w1", caller=CALLER, called="+14155550123",
        metadata={"X-Customer-Tier": "gold"} if metadata is None else metadata,
        bot_transcript=list(TRANSCRIPT), state=CallState.QUEUED,
        handoff=Handoff("support", None, "dtmf '0' at menu", {"account_type": "business"}))


# -- the embedded engine --------------------------------------------------------------------


def test_the_embedded_summary_says_who_why_and_what_the_bot_tried() -> None:
    text = EmbeddedSummariser().write(CallFacts.of(record()))
    assert text == (
        "Ann Lee (+14155550100) is calling about “my bill is wrong this month”. They "
        "answered: account type “business”. The bot replied “I can't change bills. Press "
        "zero or say agent.” and handed the call over after the caller pressed 0 at “menu” "
        "(queue support). Details: customer tier: gold.")
    assert EmbeddedSummariser().write(CallFacts.of(record())) == text  # deterministic


def test_the_embedded_summary_without_a_reason_says_so_and_reads_the_flow_s_match() -> None:
    call = record(metadata={})
    call.caller = Caller(number="+14155550100")
    call.bot_transcript = [TranscriptLine(role=Role.BOT, text="How can I help?", at="t0"),
                           TranscriptLine(role=Role.CALLER, text="Agent, please!", at="t1")]
    call.handoff = Handoff(None, None, "keyword 'agent' at menu")
    assert EmbeddedSummariser().write(CallFacts.of(call)) == (
        "+14155550100 is calling; they gave the bot no reason. The bot handed the call over "
        "after the caller said “agent” at “menu”.")
    call.caller = Caller()
    call.bot_transcript = []
    call.handoff = Handoff(None, None, "engine escalation")
    assert EmbeddedSummariser().write(CallFacts.of(call)) == (
        "An unknown caller is calling; they gave the bot no reason. The bot handed the call "
        "over (“engine escalation”).")


def test_answers_and_details_that_repeat_the_handoff_or_are_plumbing_are_left_out() -> None:
    # the demo flow: a menu that stores its answer, our front's own header
    call = record(metadata={"X-Hitl-Source": "127.0.0.1:5060;transport=udp",
                            "X-Language": "es"})
    call.bot_transcript = [TranscriptLine(role=Role.CALLER, text="[pressed 0]", at="t0")]
    call.handoff = Handoff("default", None, "dtmf '0' at menu", {"last_answer": "0"})
    assert EmbeddedSummariser().write(CallFacts.of(call)) == (
        "Ann Lee (+14155550100) is calling; they gave the bot no reason. The bot handed the "
        "call over after the caller pressed 0 at “menu” (queue default). Details: language: "
        "es.")
    call.handoff = Handoff(None, None, "keyword 'agent' at menu",
                           {"choice": "agent please", "plan": "2"})
    assert "They answered: plan “2”." in EmbeddedSummariser().write(CallFacts.of(call))


def test_a_stored_answer_is_the_reason_when_the_caller_said_nothing_else() -> None:
    call = record(metadata={})
    call.bot_transcript = [TranscriptLine(role=Role.CALLER, text="[pressed 2]", at="t0")]
    call.handoff = Handoff(None, None, "no match at topic", {"topic": "roaming charges"})
    text = EmbeddedSummariser().write(CallFacts.of(call))
    assert "gave the bot no reason. They answered: topic “roaming charges”." in text
    assert "could not match the caller's answers at “topic”" in text


@pytest.mark.parametrize(("line", "says"), [
    ("agent please", False), ("I want to talk to a real person", False), ("yes", False),
    ("[pressed 0]", False), ("billing", True), ("my router is broken", True),
])
def test_a_line_is_substantive_when_it_says_why_someone_calls(line: str, says: bool) -> None:
    assert substantive(line) is says


def test_long_words_are_cut_and_the_summary_is_bounded() -> None:
    call = record(metadata={})
    call.bot_transcript = [TranscriptLine(role=Role.CALLER, text="refund " * 500, at="t0")]
    text = EmbeddedSummariser().write(CallFacts.of(call))
    assert len(text) <= 600
    assert "…”" in text


# -- what the endpoint is sent --------------------------------------------------------------


def test_details_leave_out_credentials_plumbing_and_nested_values() -> None:
    assert safe_details(METADATA) == [("X-Customer-Tier", "gold"),
                                      ("X-Partner-Note", f"relay {ALIVE5_KEY}")]


def test_the_prompt_carries_the_transcript_and_facts_and_no_secret() -> None:
    config = load_config(None, env={"HITL_SIP_ALIVE5_API_KEY": ALIVE5_KEY}, overrides={
        "summary.engine": "openai", "summary.url": "http://127.0.0.1:9/v1",
        "summary.model": "m", "summary.api_key": API_KEY})
    messages = build_messages(CallFacts.of(record(METADATA), config_secrets(config)))
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "2 or 3 short sentences" in messages[0]["content"]
    prompt = messages[1]["content"]
    for line in TRANSCRIPT:
        who = "Caller" if line.role is Role.CALLER else "Bot"
        assert f"{who}: {line.text}" in prompt
    for fact in ("Caller: Ann Lee, +14155550100", "Number called: +14155550123",
                 "Handoff reason: dtmf '0' at menu (queue: support)",
                 "- account_type: business", "- X-Customer-Tier: gold",
                 "- X-Partner-Note: relay [redacted]"):
        assert fact in prompt
    text = json.dumps(messages)
    for secret in SECRETS:
        assert secret not in text


# -- configuration --------------------------------------------------------------------------


def test_the_summary_section_defaults_to_the_embedded_engine_and_reads_the_key_from_env(
) -> None:
    default = load_config(None, env={}).summary
    assert (default.engine, default.budget, default.timeout) == ("embedded", 0.3, 5.0)
    env = {"HITL_SIP_SUMMARY_ENGINE": "openai", "HITL_SIP_SUMMARY_URL": "https://llm.example/v1",
           "HITL_SIP_SUMMARY_MODEL": "m", "HITL_SIP_SUMMARY_API_KEY": API_KEY}
    assert load_config(None, env=env).summary.api_key == API_KEY


@pytest.mark.parametrize(("overrides", "key"), [
    ({"summary.engine": "gpt"}, "summary.engine"),
    ({"summary.engine": "openai", "summary.model": "m"}, "summary.url"),
    ({"summary.engine": "openai", "summary.url": "https://x.example/v1"}, "summary.model"),
    ({"summary.url": "ftp://x.example/v1"}, "summary.url"),
    ({"summary.url": f"https://user:{API_KEY}@x.example/v1"}, "summary.url"),
    ({"summary.url": f"https://x.example/v1?key={API_KEY}"}, "summary.url"),
    ({"summary.budget": "11"}, "summary.budget"),
    ({"summary.timeout": "0"}, "summary.timeout"),
])
def test_a_bad_summary_setting_names_its_key_and_never_quotes_the_key(
        overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, env={}, overrides=overrides)
    assert e.value.key == key
    assert API_KEY not in str(e.value)


# -- in-process: the hub, its router and /agent against a stand-in endpoint -------------------


class StandIn:
    """An OpenAI-compatible chat-completions endpoint: answers at once (``ok``), after 5 s
    unless released (``slow``), or HTTP 500 (``fail``)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        if self.mode == "fail":
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        if self.mode == "slow":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), 5.0)
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "brief-1",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER}}]})


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandIn, str]]:
    endpoint = StandIn()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", endpoint.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield endpoint, f"http://127.0.0.1:{server.port}/v1"
    finally:
        endpoint.release.set()
        await server.close()


class Wire:
    """What the /agent namespace sent, with when (the socket server's ``emit``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], str | None, float]] = []
        self._changed = asyncio.Condition()

    async def emit(self, event: str, data: Any = None, to: str | None = None,
                   **_: Any) -> None:
        self.sent.append((event, json.loads(json.dumps(data)), to, time.monotonic()))
        async with self._changed:
            self._changed.notify_all()

    def got(self, event: str, to: str) -> list[tuple[dict[str, Any], float]]:
        return [(data, at) for e, data, sid, at in self.sent if e == event and sid == to]

    async def first(self, event: str, to: str, nth: int = 1) -> tuple[dict[str, Any], float]:
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: len(self.got(event, to)) >= nth), 10.0)
        return self.got(event, to)[nth - 1]


class Desk:
    """A real Hub with its /agent namespace (router, supervision) and one worker's call."""

    def __init__(self, config: Config, tmp_path: Path) -> None:
        self.registry = WorkerRegistry()
        self.registry.connected("w1", Hello(worker_id="w1"))
        self.store = ThreadStore(tmp_path / "threads.sqlite")
        self.hub = Hub(config, self.registry, self.store)
        self.wire = Wire()
        self.ns = AgentNamespace(self.hub, FakeAuth(),  # type: ignore[arg-type]
                                 origins=(), ring_timeout=20.0, reconnect_grace=1.0,
                                 strategy=config.routing.strategy)
        self.ns.server = self.wire

    @classmethod
    async def open(cls, tmp_path: Path, url: str, *, budget: float, llm_timeout: float = 5.0,
                   strategy: str = "ring_all") -> Desk:
        config = load_config(None, env={"HITL_SIP_ALIVE5_API_KEY": ALIVE5_KEY}, overrides={
            "data_dir": str(tmp_path), "routing.strategy": strategy,
            "summary.engine": "openai", "summary.url": url, "summary.model": "brief-1",
            "summary.api_key": API_KEY, "summary.budget": budget, "summary.timeout": llm_timeout})
        desk = cls(config, tmp_path)
        await desk.hub.on_worker_message("w1", CallStarted(
            call_id="c1", thread_id="t1", caller=CALLER, called="+14155550123",
            received_at="2026-12-05T10:00:00Z", metadata=METADATA))
        return desk

    async def agent(self, name: str) -> str:
        await self.ns.on_connect(f"sid-{name}", {}, {"token": name})
        return f"sid-{name}"

    async def handoff(self) -> float:
        """The worker's handoff_requested, as the link applies it; when it was applied."""
        start = time.monotonic()
        await self.hub.on_worker_message("w1", HandoffRequested(
            call_id="c1", thread_id="t1", caller=CALLER, transcript=TRANSCRIPT,
            queue="support", reason="dtmf '0' at menu", at="2026-12-05T10:01:00Z",
            answers={"account_type": "business"}))
        return start

    async def close(self) -> None:
        await self.hub.close()
        self.store.close()


@pytest.fixture
async def desks(tmp_path: Path) -> AsyncIterator[list[Desk]]:
    opened: list[Desk] = []
    yield opened
    for desk in opened:
        await desk.close()


async def test_the_endpoint_s_answer_is_the_briefing_and_its_prompt_has_no_secret(
        stand_in: tuple[StandIn, str], desks: list[Desk], tmp_path: Path) -> None:
    endpoint, url = stand_in
    # a generous budget: this test is about what is sent and used, not about time
    desk = await Desk.open(tmp_path, url, budget=3.0)
    desks.append(desk)
    alice = await desk.agent("alice")
    await desk.handoff()
    ring, _ = await desk.wire.first("incoming_call", alice)
    assert ring["summary"] == {"text": ANSWER, "source": "llm"}
    assert ring["botTranscript"][3]["text"] == "my bill is wrong this month"
    assert len(endpoint.requests) == 1
    headers, body = endpoint.requests[0]
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == "brief-1"
    prompt = body["messages"][1]["content"]
    for line in TRANSCRIPT:
        assert line.text in prompt
    assert "Ann Lee, +14155550100" in prompt
    assert "X-Customer-Tier: gold" in prompt
    sent = json.dumps(body)
    for secret in SECRETS:
        assert secret not in sent
    assert desk.hub.briefings.get(source="llm") == 1


async def test_a_slow_endpoint_rings_the_embedded_summary_within_the_budget(
        stand_in: tuple[StandIn, str], desks: list[Desk], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    endpoint, url = stand_in
    endpoint.mode = "slow"
    budget = 0.3
    desk = await Desk.open(tmp_path, url, budget=budget, strategy="round_robin")
    desks.append(desk)
    alice, bob = await desk.agent("alice"), await desk.agent("bob")
    caplog.set_level(logging.INFO, logger="hitl_sip")
    handed = await desk.handoff()
    # the worker link is not held up by the wait: the handoff is applied, nobody rang yet
    assert desk.registry.calls["c1"].state is CallState.QUEUED
    assert not desk.wire.got("incoming_call", alice) + desk.wire.got("incoming_call", bob)
    ring, at = await desk.wire.first("incoming_call", alice)
    waited = at - handed
    log.info("slow endpoint: incoming_call %.3f s after the handoff (budget %.1f s)", waited,
             budget)
    assert budget - 0.01 <= waited <= budget + MARGIN
    assert ring["summary"] == {
        "text": EmbeddedSummariser().write(CallFacts.of(desk.registry.calls["c1"],
                                                        config_secrets(desk.hub.config))),
        "source": "embedded"}
    assert "no answer from the endpoint within the 0.30 s budget" in caplog.text
    # the late answer serves the later rings: the next agent, a transfer's target
    endpoint.release.set()
    slot = desk.registry.calls["c1"].summary
    assert slot is not None and slot.task is not None
    await slot.task
    assert await desk.ns.on_decline_call(alice, {"callId": "c1"}) == {"ok": True}
    ring, _ = await desk.wire.first("incoming_call", bob)
    assert ring["summary"] == {"text": ANSWER, "source": "llm"}
    assert await desk.ns.on_accept_call(bob, {"callId": "c1"}) == {"ok": True}
    desk.registry.calls["c1"].state = CallState.HUMAN
    carol = await desk.agent("carol")
    assert await desk.ns.on_transfer_call(bob, {"callId": "c1", "to": {"agentId": "carol"},
                                                "mode": "cold"}) == {"ok": True}
    ring, _ = await desk.wire.first("incoming_call", carol)
    assert ring["transfer"]["fromAgentId"] == "bob"
    assert ring["summary"] == {"text": ANSWER, "source": "llm"}
    assert desk.hub.briefings.get(source="embedded") == 1
    for caller_data in ("+14155550100", "Ann Lee", "my bill", API_KEY):
        assert caller_data not in caplog.text


async def test_a_failing_endpoint_falls_back_at_once_and_says_why(
        stand_in: tuple[StandIn, str], desks: list[Desk], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    endpoint, url = stand_in
    endpoint.mode = "fail"
    budget = 0.3
    desk = await Desk.open(tmp_path, url, budget=budget)
    desks.append(desk)
    alice = await desk.agent("alice")
    caplog.set_level(logging.INFO, logger="hitl_sip")
    handed = await desk.handoff()
    ring, at = await desk.wire.first("incoming_call", alice)
    waited = at - handed
    log.info("failing endpoint: incoming_call %.3f s after the handoff (budget %.1f s)",
             waited, budget)
    assert waited <= budget + MARGIN
    assert ring["summary"]["source"] == SummarySource.EMBEDDED
    assert ring["summary"]["text"].startswith("Ann Lee (+14155550100) is calling about")
    assert len(endpoint.requests) == 1
    assert desk.hub.briefing_failures.get(reason="http") == 1
    assert "the endpoint answered HTTP 500: the embedded summary stands" in caplog.text
    for caller_data in ("+14155550100", "Ann Lee", "my bill", API_KEY):
        assert caller_data not in caplog.text


async def test_an_endpoint_slower_than_the_timeout_is_given_up(
        stand_in: tuple[StandIn, str], desks: list[Desk], tmp_path: Path) -> None:
    endpoint, url = stand_in
    endpoint.mode = "slow"
    desk = await Desk.open(tmp_path, url, budget=0.1, llm_timeout=0.5)
    desks.append(desk)
    alice = await desk.agent("alice")
    await desk.handoff()
    ring, _ = await desk.wire.first("incoming_call", alice)
    assert ring["summary"]["source"] == "embedded"
    slot = desk.registry.calls["c1"].summary
    assert slot is not None and slot.task is not None
    await slot.task  # summary.timeout ends it; the endpoint never answered
    assert desk.hub.briefing_failures.get(reason="timeout") == 1
    assert slot.best.source is SummarySource.EMBEDDED


async def test_without_an_endpoint_the_ring_carries_the_embedded_summary_at_once(
        tmp_path: Path) -> None:
    call = record()
    summaries = Summaries(load_config(None, env={}).summary)
    slot = summaries.start(call)
    assert not slot.pending
    assert await slot.settle("c1") is False  # nothing to wait for
    assert slot.best.source is SummarySource.EMBEDDED
    assert slot.best.text.startswith("Ann Lee (+14155550100) is calling about")
    await summaries.aclose()


@pytest.mark.parametrize("answer", [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser's recursion
    b'{"choices": [{"message": {"content": {"a": {"b": {"c": ' + b"[" * 40 + b"]" * 40
    + b"}}}}}]}",
    b"\xff\xfe not json",
    b'{"choices": []}',
])
def test_an_endpoint_answer_nested_or_shaped_as_it_likes_is_refused_as_malformed(
    answer: bytes,
) -> None:
    with pytest.raises(SummaryError) as refused:
        _content(answer)
    assert refused.value.reason == "malformed"


async def test_what_the_bot_says_after_the_handoff_joins_the_conversation_agents_are_shown(
        stand_in: tuple[StandIn, str], desks: list[Desk], tmp_path: Path) -> None:
    _, url = stand_in
    desk = await Desk.open(tmp_path, url, budget=0.05)
    desks.append(desk)
    await desk.handoff()
    said = TurnMsg(call_id="c1", thread_id="t1", role=Role.BOT, text="Please hold.",
                   at="2026-12-05T10:01:01Z", seq=len(TRANSCRIPT) + 1)
    await desk.hub.on_worker_message("w1", said)
    call = desk.registry.calls["c1"]
    assert [t.text for t in call.bot_transcript] == [
        *(t.text for t in TRANSCRIPT), "Please hold."]
    call.state = CallState.HUMAN  # once an agent has it, the agents' lines go elsewhere
    await desk.hub.on_worker_message("w1", TurnMsg(
        call_id="c1", thread_id="t1", role=Role.AGENT, text="Hello, Ann here.",
        at="2026-12-05T10:02:00Z", seq=len(TRANSCRIPT) + 2))
    assert call.bot_transcript[-1].text == "Please hold."
    assert [t.text for t in call.human_transcript] == ["Hello, Ann here."]
