"""The ``/agent`` and ``/bot`` contracts (hitl_sip.protocol.agent, .bot): every payload of
PROTOCOL.md §1 and §2 is a model that survives the wire; the request parser answers any
input — random JSON, deep nesting, oversized text — with a request or a typed WireError
naming the field; the namespaces answer every malformed request ``bad_request`` (counted),
never raise, and send exactly the shapes the dashboard and the engines read."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl_sip.config import load_config
from hitl_sip.hub.agentns import AgentNamespace
from hitl_sip.hub.agents import Agent
from hitl_sip.hub.botns import BotNamespace
from hitl_sip.hub.calls import CallRecord
from hitl_sip.hub.events import CallEvent, Listener
from hitl_sip.hub.sessions import Session
from hitl_sip.hub.summary import Summaries
from hitl_sip.hub.tokens import TokenClaims
from hitl_sip.metrics import Registry
from hitl_sip.protocol import agent as a
from hitl_sip.protocol import bot as b
from hitl_sip.protocol import worker as w
from hitl_sip.protocol.agent import MAX_MESSAGE, Request, SocketModel, parse_request
from hitl_sip.protocol.wire import MAX_DEPTH, REFUSED_EVENT, SocketJson, WireError
from hitl_sip.protocol.worker import Caller, CallState, Role, TranscriptLine
from tests.unit.test_protocol import JSON

CALLER = Caller(number="+14155550100", name="Ann")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
REQUESTS: list[Request] = [
    a.SetStatus(status=a.AgentStatus.AWAY),
    a.AcceptCall(call_id="c1"),
    a.DeclineCall(call_id="c1"),
    a.WebrtcOffer(call_id="c1", sdp=SDP),
    a.WebrtcCandidate(call_id="c1", candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host",
                      sdp_mid="0", sdp_m_line_index=0),
    a.Mute(call_id="c1", muted=True),
    a.Hangup(call_id="c1"),
    a.ReturnToBot(call_id="c1"),
    a.BoardSubscribe(),
    a.WrapUp(call_id="c1", disposition="resolved", note="refund issued"),
    a.MonitorCall(call_id="c1", mode=a.MonitorMode.LISTEN),
    a.SetMonitorMode(call_id="c1", mode=a.MonitorMode.BARGE),
    a.MonitorStop(call_id="c1"),
    a.TransferCall(call_id="c1", to=a.TransferTarget(agent_id="bob"), mode=a.TransferMode.WARM,
                   note="billing question"),
    a.DeskOptions(),
    b.Say(call_id="c1", text="One moment."),
    b.Handoff(call_id="c1", reason="engine", context={"intent": ["billing", 2]}),
    b.Hangup(call_id="c1"),
]
EVENTS: list[SocketModel] = [
    a.AgentState(agent_id="alice", name="Alice", status=a.AgentStatus.BUSY,
                 active_call_id="c1"),
    a.IncomingCall(call_id="c1", thread_id="t1", caller=CALLER, called="+14155550123",
                   trunk=None, received_at="2026-12-04T20:00:00Z", ring_timeout_sec=20.0,
                   bot_transcript=[TranscriptLine(role=Role.BOT, text="Hi", at="x")],
                   metadata={"X-Twilio-CallSid": "CA1", "n": [1, {"deep": None}]}),
    a.CallCancelled(call_id="c1", reason=a.CancelReason.ANSWERED_ELSEWHERE),
    a.ServerCandidate(call_id="c1", candidate=None),
    a.CallConnected(call_id="c1", at="2026-12-04T20:00:01Z"),
    a.Transcript(call_id="c1", thread_id="t1", role=Role.CALLER, text="hello", final=False,
                 at="x", seq=4),
    a.CallEnded(call_id="c1", reason="completed", by=a.EndedBy.CALLER),
    a.Board(calls=[a.BoardCall(call_id="c1", thread_id="t1", state="queued", caller=CALLER,
                               called=None, trunk=None, received_at="x", worker_id="w1",
                               agent_id=None, metadata={}, waiting_sec=3.5)],
            agents=[a.BoardAgent(agent_id="alice", name="Alice", status=a.AgentStatus.BUSY,
                                 active_call_id="c1", role=a.AccountRole.AGENT)]),
    a.Monitored(call_id="c1", mode=a.MonitorMode.WHISPER, monitors=1),
    a.TransferFailed(call_id="c1", reason="no_answer"),
    a.TransferJoined(call_id="c1", agent_id="bob", name="Bob", mode=a.TransferMode.WARM),
    a.CallQuality(call_id="c1", mos=3.84, legs=[a.QualityLeg(
        leg="caller", loss_pct=4.8, late_pct=0.0, jitter_ms=16.1, mos=3.84)]),
    a.IncomingCall(call_id="c1", thread_id="t1", caller=CALLER, called=None, trunk=None,
                   received_at="x", ring_timeout_sec=20.0, bot_transcript=[], metadata={},
                   transfer=a.TransferInfo(from_agent_id="alice", from_name="Alice",
                                           mode=a.TransferMode.COLD, note="VIP"),
                   human_transcript=[TranscriptLine(role=Role.AGENT, text="Hi", at="x")],
                   summary=a.Briefing(text="Ann wants a refund.", source=a.SummarySource.LLM)),
    b.CallStarted(call_id="c1", thread_id="t1", caller=CALLER, called=None, metadata={}),
    b.CallerSaid(call_id="c1", text="agent please", final=True, at="x"),
    b.Dtmf(call_id="c1", digits="0"),
    b.CallEnded(call_id="c1", reason="completed"),
    a.Ok(),
    a.OfferAnswer(sdp=SDP),
    a.Refusal(error=a.AckError(code=a.ErrorCode.FORBIDDEN, message="the call is not yours")),
]
INBOUND = a.REQUESTS + b.REQUESTS


def test_every_socket_payload_has_an_example() -> None:
    assert {type(m) for m in REQUESTS} == set(INBOUND)
    assert {type(m) for m in EVENTS} >= set(a.EVENTS + b.EVENTS)


def wire_names(models: tuple[type[SocketModel], ...]) -> list[tuple[str, list[str]]]:
    return [(m.event, [f.alias or n for n, f in m.model_fields.items()]) for m in models]


def test_event_and_field_names_are_those_of_the_protocol() -> None:
    """PROTOCOL.md §1 and §2, verbatim and in the order the hub has always sent them: a
    rename here breaks the dashboard or an engine."""
    assert wire_names(a.REQUESTS) == [
        ("set_status", ["status"]), ("accept_call", ["callId"]), ("decline_call", ["callId"]),
        ("webrtc_offer", ["callId", "sdp"]),
        ("webrtc_candidate", ["callId", "candidate", "sdpMid", "sdpMLineIndex"]),
        ("mute", ["callId", "muted"]), ("hangup", ["callId"]), ("return_to_bot", ["callId"]),
        ("board_subscribe", []), ("wrap_up", ["callId", "disposition", "note"]),
        ("monitor_call", ["callId", "mode"]), ("monitor_mode", ["callId", "mode"]),
        ("monitor_stop", ["callId"]), ("transfer_call", ["callId", "to", "mode", "note"]),
        ("desk_options", [])]  # an extension
    assert wire_names(a.EVENTS) == [
        ("agent_state", ["agentId", "name", "status", "activeCallId", "role"]),  # §6: role
        ("incoming_call", ["callId", "threadId", "caller", "called", "trunk", "receivedAt",
                           "ringTimeoutSec", "botTranscript", "metadata",
                           "transfer", "humanTranscript",  # §6: a transfer's
                           "summary"]),  # an extension: the agent briefing (issue 17)
        ("call_cancelled", ["callId", "reason"]),
        ("webrtc_candidate", ["callId", "candidate", "sdpMid", "sdpMLineIndex"]),
        ("call_connected", ["callId", "at"]),
        ("transcript", ["callId", "threadId", "role", "text", "final", "at", "seq"]),
        ("call_ended", ["callId", "reason", "by"]),
        ("board", ["calls", "agents"]),
        ("call_monitored", ["callId", "mode", "monitors"]),  # an extension
        ("transfer_failed", ["callId", "reason"]),
        ("transfer_joined", ["callId", "agentId", "name", "mode"]),  # an extension
        ("call_quality", ["mos", "legs", "callId"])]  # an extension (issue 17)
    assert [f.alias for f in a.TransferTarget.model_fields.values()] == [
        "agentId", "queue", "number"]
    assert [f.alias for f in a.TransferInfo.model_fields.values()] == [
        "fromAgentId", "fromName", "mode", "note"]
    assert [f.alias for f in a.Briefing.model_fields.values()] == ["text", "source"]
    assert [s.value for s in a.SummarySource] == ["llm", "embedded"]
    assert wire_names(b.REQUESTS) == [("say", ["callId", "text"]),
                                      ("handoff", ["callId", "reason", "context"]),
                                      ("hangup", ["callId"])]
    assert wire_names(b.EVENTS) == [
        ("call_started", ["callId", "threadId", "caller", "called", "metadata"]),
        ("caller_said", ["callId", "text", "final", "at"]), ("dtmf", ["callId", "digits"]),
        ("call_ended", ["callId", "reason"])]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda m: m.event)
def test_a_request_round_trips_through_a_socket_packet(request_: Request) -> None:
    event, payload = SocketJson.loads(json.dumps([request_.event, request_.wire()]))
    assert event == request_.event
    assert parse_request(type(request_), payload) == request_


@pytest.mark.parametrize("message", EVENTS, ids=lambda m: type(m).__name__)
def test_what_the_hub_sends_round_trips_through_the_wire(message: SocketModel) -> None:
    assert type(message).model_validate(json.loads(json.dumps(message.wire()))) == message


def test_the_hub_sends_every_field_even_when_null() -> None:
    assert a.AgentState(agent_id="bob", name="Bob", status=a.AgentStatus.AVAILABLE,
                        active_call_id=None).wire() == {
        "agentId": "bob", "name": "Bob", "status": "available", "activeCallId": None,
        "role": "agent"}
    assert a.ServerCandidate(call_id="c1").wire() == {
        "callId": "c1", "candidate": None, "sdpMid": None, "sdpMLineIndex": None}
    with pytest.raises(ValueError, match="Extra inputs"):
        a.CallCancelled.model_validate({"callId": "c", "reason": "declined", "x": 1})


def test_a_request_ignores_fields_it_does_not_know() -> None:
    offer = parse_request(a.WebrtcOffer, {"callId": "c1", "sdp": SDP, "type": "offer",
                                          "clientVersion": [1, 2]})
    assert offer == a.WebrtcOffer(call_id="c1", sdp=SDP)


@pytest.mark.parametrize(("model", "payload", "message"), [
    (a.AcceptCall, None, "the payload must be a JSON object, not null"),
    (a.AcceptCall, "text", "the payload must be a JSON object, not a string"),
    (a.AcceptCall, [1], "the payload must be a JSON object, not an array"),
    (a.AcceptCall, True, "the payload must be a JSON object, not a boolean"),
    (a.AcceptCall, {}, "callId: Field required"),
    (a.AcceptCall, {"callId": 7}, "callId: Input should be a valid string"),
    (a.AcceptCall, {"callId": ""}, "callId: String should have at least 1 character"),
    (a.AcceptCall, {"callId": "x" * 500}, "callId: String should have at most 128 characters"),
    (a.SetStatus, {"status": "busy"}, 'status: must be "available" or "away"'),
    (a.SetStatus, {"status": "sleeping"}, 'status: must be "available" or "away"'),
    (a.Mute, {"callId": "c1", "muted": "yes"}, "muted: Input should be a valid boolean"),
    (a.Mute, {"callId": "c1"}, "muted: Field required"),
    (a.WebrtcOffer, {"callId": "c1", "sdp": "nonsense"},
     "sdp: must be an SDP offer (starting with v=0)"),
    (a.WebrtcOffer, {"callId": "c1", "sdp": "v=0" + "x" * 70_000},
     "sdp: String should have at most 65536 characters"),
    (a.WebrtcCandidate, {"callId": "c1", "sdpMLineIndex": True},
     "sdpMLineIndex: Input should be a valid integer"),
    (a.WebrtcCandidate, {"callId": "c1", "sdpMLineIndex": "0"},
     "sdpMLineIndex: Input should be a valid integer"),
    (a.WebrtcCandidate, {"callId": "c1", "sdpMLineIndex": 65},
     "sdpMLineIndex: Input should be less than or equal to 64"),
    (a.WebrtcCandidate, {"callId": "c1", "candidate": 5, "sdpMid": 1},
     "candidate: Input should be a valid string (and 1 more)"),
    (b.Say, {"callId": "c1", "text": "   "}, "text: must not be blank"),
    (b.Say, {"callId": "c1", "text": "x" * 2001},
     "text: String should have at most 2000 characters"),
    (b.Handoff, {"callId": "c1", "reason": 5}, "reason: Input should be a valid string"),
])
def test_refusals_name_the_field_and_never_echo_the_value(model: type[Request], payload: Any,
                                                          message: str) -> None:
    with pytest.raises(WireError) as info:
        parse_request(model, payload)
    assert info.value.reason == "bad_message"
    assert str(info.value) == message
    assert "x" * 100 not in str(info.value)


# -- fuzz -------------------------------------------------------------------------------------

ALIASES = sorted({field.alias or name for m in INBOUND for name, field in m.model_fields.items()})


def nested(levels: int) -> Any:
    value: Any = "x"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


FLAT = (
    JSON
    | st.sampled_from(["c1", "available", "away", "busy", SDP, "hello", True, 0, None])
    | st.integers(min_value=0, max_value=400_000).map(lambda n: "x" * n)
)
VALUES = FLAT | st.integers(min_value=20, max_value=3000).map(nested)


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda m: m.event)
def test_deep_nesting_in_any_field_is_a_typed_refusal(request_: Request) -> None:
    """The socket edge bounds nesting at 32 levels already; the parser stands without it
    (only ``handoff.context`` is free-form JSON, and it is bounded too)."""
    for alias in request_.wire():
        with pytest.raises(WireError) as info:
            parse_request(type(request_), {**request_.wire(), alias: nested(5000)})
        assert info.value.reason == "bad_message" and str(info.value).startswith(alias)
    context = parse_request(b.Handoff, {"callId": "c1", "context": nested(MAX_DEPTH - 1)})
    assert context.context == nested(MAX_DEPTH - 1)


@settings(max_examples=400, deadline=None)
@given(model=st.sampled_from(INBOUND), value=JSON,
       fields=st.dictionaries(st.sampled_from(ALIASES), VALUES, max_size=5),
       extra=st.dictionaries(st.text(max_size=12), JSON, max_size=3))
def test_any_payload_gets_a_request_or_a_typed_refusal(model: type[Request], value: Any,
                                                      fields: dict[str, Any],
                                                      extra: dict[str, Any]) -> None:
    for payload in (value, {**extra, **fields}, {**fields, "callId": "c1"}):
        try:
            request = parse_request(model, payload)
        except WireError as e:
            assert e.reason == "bad_message"
            assert len(str(e)) <= MAX_MESSAGE and "x" * 100 not in str(e)
        else:
            assert isinstance(request, model)
            assert parse_request(model, request.wire()) == request


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(INBOUND),
       packet=st.one_of(
           FLAT.map(lambda value: json.dumps(["e", {"callId": value, "text": value}])),
           st.integers(min_value=1, max_value=20_000).map(lambda n: '["e",' + "[" * n
                                                          + "]" * n + "]"),
           st.integers(min_value=200_000, max_value=400_000).map(
               lambda n: json.dumps(["e", {"callId": "c1", "text": "x" * n}])),
           st.text(max_size=30)))
def test_any_socket_packet_is_refused_at_the_edge_or_by_the_model(model: type[Request],
                                                                 packet: str) -> None:
    decoded = SocketJson.loads(packet)
    if isinstance(decoded, list) and decoded and decoded[0] == REFUSED_EVENT:
        assert decoded[1]["reason"] in {"too_large", "too_deep", "bad_json"}
        return
    payload = decoded[1] if isinstance(decoded, list) and len(decoded) > 1 else decoded
    try:
        assert isinstance(parse_request(model, payload), model)
    except WireError as e:
        assert e.reason == "bad_message"


# -- the namespaces -----------------------------------------------------------------------------


class FakeRegistry:
    def __init__(self) -> None:
        self.calls: dict[str, CallRecord] = {}
        self.metrics = Registry()


class FakeHub:
    """What the namespaces and the router use of hitl_sip.hub.core.Hub."""

    cluster = None
    outbox = None
    config = load_config(None, env={})

    def __init__(self) -> None:
        self.wrapups: list[Any] = []
        self.notices: list[Any] = []
        self.registry = FakeRegistry()
        self.commands: list[w.HubCommand] = []
        self.listeners: list[Listener] = []
        self.reply: w.Reply | None = None
        self.before_reply: asyncio.Event | None = None  # set: the worker answers then

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    async def publish(self, event: CallEvent) -> None:
        for listener in self.listeners:
            await listener(event)

    async def offered(self, call_id: str, agent_id: str) -> None:
        self.registry.calls[call_id].offered_to.add(agent_id)

    async def wrap_up(self, wrapup: Any) -> None:
        self.wrapups.append(wrapup)

    async def notice(self, turn: Any) -> None:
        self.notices.append(turn)

    async def command(self, command: w.HubCommand) -> bool:
        self.commands.append(command)
        return command.call_id in self.registry.calls

    async def request(self, command: w.WebrtcOffer | w.WebrtcCandidate | w.Refer,
                      wait: float = 10.0) -> w.Reply | None:
        self.commands.append(command)
        if self.before_reply is not None:
            await self.before_reply.wait()
        return self.reply


class FakeServer:
    """socketio.AsyncServer.emit, recorded (what reached the socket, as its JSON text)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str | None]] = []  # event, JSON, to

    async def emit(self, event: str, data: Any = None, to: str | None = None,
                   **_: Any) -> None:
        self.sent.append((event, json.dumps(data), to))

    def got(self, event: str, to: str | None = "sid-alice") -> list[str]:
        """What ``to`` got (None: what every engine on /bot got)."""
        return [text for e, text, sid in self.sent if e == event and sid == to]


class FakeAuth:
    """What the namespace uses of hitl_sip.hub.sessions.Sessions: every token is its own
    agent id (an agent account)."""

    async def check(self, token: str) -> Session:
        claims = TokenClaims(sub=token, name=token.title(), ver=1, exp=1e12, iat=0, jti=token)
        role = a.AccountRole.SUPERVISOR if token == "sue" else a.AccountRole.AGENT
        return Session(claims, Agent(agent_id=token, name=token.title(), created_at="now",
                                     role=role))

    async def watch(self, *_: Any) -> None:
        return None


class Rig:
    def __init__(self) -> None:
        self.hub = FakeHub()
        self.server = FakeServer()
        self.refused: list[str] = []

        self.agents = AgentNamespace(
            self.hub, FakeAuth(),  # type: ignore[arg-type]
            origins=(), ring_timeout=20.0, reconnect_grace=1.0)
        self.bots = BotNamespace(self.hub)  # type: ignore[arg-type]
        for ns in (self.agents, self.bots):
            ns.server = self.server

    async def agent(self, name: str) -> str:
        sid = f"sid-{name}"
        await self.agents.on_connect(sid, {}, {"token": name})
        return sid

    async def queue(self, call_id: str = "c1") -> None:
        self.hub.registry.calls[call_id] = CallRecord(
            call_id=call_id, thread_id="t1", worker_id="w1", caller=Caller(number="+1555"),
            called="+1556", received_at="2026-12-04T20:00:00Z", state=CallState.QUEUED,
            metadata={"X-Twilio-CallSid": "CA1"},
            bot_transcript=[TranscriptLine(role=Role.CALLER, text="agent", at="x")])
        # the hub starts the agent briefing at the handoff (the embedded engine here)
        Summaries(self.hub.config.summary).start(self.hub.registry.calls[call_id])
        await self.hub.publish(w.HandoffRequested(call_id=call_id, thread_id="t1", at="x"))

    async def ask(self, event: str, payload: Any, sid: str = "sid-alice") -> Any:
        """A request as python-socketio dispatches it: ``on_<event>(sid, data)``."""
        ns = self.bots if event in {m.event for m in b.REQUESTS} - {"hangup"} else self.agents
        answer = await getattr(ns, f"on_{event}")(sid, payload)
        json.dumps(answer)  # it can be sent
        return answer


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Rig:
    rig = Rig()
    monkeypatch.setattr(SocketJson, "on_refused", rig.refused.append)
    return rig


async def test_the_agent_gets_exactly_the_shapes_the_dashboard_reads(rig: Rig) -> None:
    await rig.agent("alice")
    await rig.queue()
    assert rig.server.got("agent_state") == [
        '{"agentId": "alice", "name": "Alice", "status": "available", "activeCallId": null, '
        '"role": "agent"}']
    assert rig.server.got("incoming_call") == [
        '{"callId": "c1", "threadId": "t1", "caller": {"number": "+1555", "name": null}, '
        '"called": "+1556", "trunk": null, "receivedAt": "2026-12-04T20:00:00Z", '
        '"ringTimeoutSec": 20.0, "botTranscript": [{"role": "caller", "text": "agent", '
        '"at": "x"}], "metadata": {"X-Twilio-CallSid": "CA1"}, "transfer": null, '
        '"humanTranscript": [], "summary": {"text": "+1555 is calling; they gave the bot no '
        'reason. The bot handed the call over when its flow reached the agent step.", '
        '"source": "embedded"}}']
    assert await rig.ask("accept_call", {"callId": "c1"}) == {"ok": True}
    await rig.hub.publish(w.Interim(call_id="c1", thread_id="t1", role=Role.CALLER,
                                    text="hel", at="x", seq=2))
    await rig.hub.publish(w.CallConnected(call_id="c1", at="y", link_seq=3))
    await rig.hub.publish(w.CallEndedMsg(call_id="c1", outcome="completed", by="engine"))
    assert rig.server.got("transcript") == [
        '{"callId": "c1", "threadId": "t1", "role": "caller", "text": "hel", "final": false, '
        '"at": "x", "seq": 2}']
    assert rig.server.got("call_connected") == ['{"callId": "c1", "at": "y"}']
    assert rig.server.got("call_ended") == [
        '{"callId": "c1", "reason": "completed", "by": "system"}'], "an engine is the system"


async def test_a_call_declined_by_going_away_is_cancelled_for_that_agent(rig: Rig) -> None:
    await rig.agent("alice")
    await rig.queue()
    assert await rig.ask("set_status", {"status": "away", "since": "now"}) == {"ok": True}
    assert rig.server.got("call_cancelled") == ['{"callId": "c1", "reason": "declined"}']
    assert json.loads(rig.server.got("agent_state")[-1])["status"] == "away"


async def test_malformed_agent_requests_are_refused_counted_and_change_nothing(
    rig: Rig,
) -> None:
    await rig.agent("alice")
    await rig.queue()
    sent = len(rig.server.sent)
    garbage: list[Any] = [None, "text", 42, [], {}, {"callId": ""}, {"callId": 7},
                          {"callId": "x" * 500}, {"status": "sleeping", "sdp": 5, "muted": 1}]
    asked = 0
    for model in a.REQUESTS:
        for payload in garbage:
            if not model.model_fields and isinstance(payload, dict):
                continue  # a request without fields (board_subscribe) takes any object
            answer = await rig.ask(model.event, payload)
            asked += 1
            assert answer["ok"] is False and answer["error"]["code"] == "bad_request", (
                model.event, payload, answer)
    assert rig.refused == ["bad_message"] * asked
    assert rig.hub.commands == [] and len(rig.server.sent) == sent
    assert rig.agents.router.offers["c1"].ringing == {"alice"}


async def test_an_agent_not_logged_in_is_refused_before_its_payload_is_read(rig: Rig) -> None:
    answer = await rig.ask("accept_call", "garbage", sid="sid-nobody")
    assert answer == {"ok": False, "error": {"code": "unauthorized", "message": "not logged in"}}
    assert rig.refused == []


async def test_the_holding_agent_s_requests_reach_the_worker_typed(rig: Rig) -> None:
    await rig.agent("alice")
    await rig.agent("bob")
    await rig.queue()
    assert await rig.ask("accept_call", {"callId": "c1"}) == {"ok": True}
    forbidden = await rig.ask("mute", {"callId": "c1", "muted": True}, sid="sid-bob")
    assert forbidden["error"]["code"] == "forbidden"
    assert await rig.ask("mute", {"callId": "c1", "muted": True}) == {"ok": True}
    assert await rig.ask("webrtc_candidate", {"callId": "c1", "candidate": None,
                                              "sdpMid": "0", "sdpMLineIndex": 0}) == {"ok": True}
    rig.hub.reply = w.Reply(request_id="r1", call_id="c1", ok=True, sdp=SDP)
    assert await rig.ask("webrtc_offer", {"callId": "c1", "sdp": SDP}) == {"ok": True,
                                                                           "sdp": SDP}
    rig.hub.reply = w.Reply(request_id="r2", call_id="c1", ok=False,
                            error=w.ErrorBody(code="no_media", message="no audio section"))
    assert await rig.ask("webrtc_offer", {"callId": "c1", "sdp": SDP}) == {
        "ok": False, "error": {"code": "bad_request", "message": "no audio section"}}
    rig.hub.reply = None  # the worker did not answer in time
    refused = await rig.ask("webrtc_offer", {"callId": "c1", "sdp": SDP})
    assert refused["error"]["code"] == "unavailable"
    assert await rig.ask("hangup", {"callId": "c1"}) == {"ok": True}
    offer = w.WebrtcOffer(call_id="c1", sdp=SDP)
    assert [m for m in rig.hub.commands if m.type is not w.HubMessageType.AGENT_JOINED] == [
        w.Mute(call_id="c1", muted=True),
        w.WebrtcCandidate(call_id="c1", candidate=None, sdp_mid="0", sdp_m_line_index=0),
        offer, offer, offer, w.Hangup(call_id="c1", by="agent")]
    assert rig.refused == []


async def test_the_engine_gets_exactly_the_shapes_it_reads(rig: Rig) -> None:
    for wire in (
        {"type": "call_started", "callId": "c1", "threadId": "t1",
         "caller": {"number": "+1555", "name": None}, "called": "+1556", "trunk": None,
         "receivedAt": "x", "metadata": {"X-Twilio-CallSid": "CA1"}, "codec": "PCMU",
         "linkSeq": 1},
        {"type": "caller_said", "callId": "c1", "text": "hi", "final": True, "at": "x",
         "linkSeq": 2},
        {"type": "dtmf", "callId": "c1", "digits": "5"},
        {"type": "call_ended", "callId": "c1", "outcome": "completed", "by": "caller",
         "status": None},
    ):
        event = w.parse_worker_message(json.dumps(wire))  # as the worker link's edge does
        assert isinstance(event, w.CallStarted | w.CallerSaid | w.DtmfMsg | w.CallEndedMsg)
        await rig.hub.publish(event)
    assert [(e, text) for e, text, to in rig.server.sent if to is None] == [
        ("call_started", '{"callId": "c1", "threadId": "t1", "caller": {"number": "+1555", '
                         '"name": null}, "called": "+1556", "metadata": '
                         '{"X-Twilio-CallSid": "CA1"}}'),
        ("caller_said", '{"callId": "c1", "text": "hi", "final": true, "at": "x"}'),
        ("dtmf", '{"callId": "c1", "digits": "5"}'),
        ("call_ended", '{"callId": "c1", "reason": "completed"}'),
    ]


async def test_engine_requests_are_parsed_then_checked_against_the_call(rig: Rig) -> None:
    assert (await rig.bots.on_say("sid-e", "not an object"))["error"] == {
        "code": "bad_request", "message": "the payload must be a JSON object, not a string"}
    assert (await rig.bots.on_hangup("sid-e", {"callId": "nope"}))["error"]["code"] == (
        "not_found")
    await rig.queue()
    assert (await rig.bots.on_say("sid-e", {"callId": "c1", "text": "hi"}))["error"][
        "code"] == "invalid_state"
    rig.hub.registry.calls["c1"].state = CallState.BOT
    assert await rig.bots.on_say("sid-e", {"callId": "c1", "text": "hi"}) == {"ok": True}
    assert await rig.bots.on_handoff("sid-e", {"callId": "c1", "context": {"a": 1}}) == {
        "ok": True}
    assert await rig.bots.on_handoff("sid-e", {"callId": "c1", "reason": "r" * 500}) == {
        "ok": True}
    assert await rig.bots.on_hangup("sid-e", {"callId": "c1"}, "a second argument") == {
        "ok": True}
    assert rig.hub.commands == [
        w.Say(call_id="c1", text="hi"), w.Handoff(call_id="c1", reason="external"),
        w.Handoff(call_id="c1", reason="r" * 200), w.Hangup(call_id="c1")]
    assert rig.refused == ["bad_message"]


@settings(max_examples=150, deadline=None)
@given(event=st.sampled_from(sorted({m.event for m in INBOUND})), payload=VALUES,
       fields=st.dictionaries(st.sampled_from(ALIASES), VALUES, max_size=4))
def test_no_payload_makes_a_handler_raise(event: str, payload: Any,
                                          fields: dict[str, Any]) -> None:
    async def run() -> list[Any]:
        rig = Rig()
        await rig.agent("alice")
        await rig.queue()
        answers = [await rig.ask(event, payload), await rig.ask(event, fields)]
        if event in {m.event for m in b.REQUESTS}:
            answers.append(await getattr(rig.bots, f"on_{event}")("sid-e", fields))
        return answers

    for answer in asyncio.run(run()):
        assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool), answer
        if answer["ok"] is False:
            assert set(answer["error"]) == {"code", "message"}
            assert answer["error"]["code"] in {c.value for c in a.ErrorCode}


async def test_a_payload_refused_by_the_json_edge_is_answered_bad_request(rig: Rig) -> None:
    refused = SocketJson.loads("[" * 100 + "]" * 100)
    for ns in (rig.agents, rig.bots):
        answer = await ns.on_payload_refused("sid-alice", refused[1])
        assert answer == {"ok": False, "error": {
            "code": "bad_request", "message": "payload refused: nested deeper than 32 levels"}}
    assert rig.refused == ["too_deep"], "counted once, when the packet was decoded"


async def test_the_board_is_for_supervisors_and_follows_every_change(rig: Rig) -> None:
    await rig.agent("alice")
    sue = await rig.agent("sue")
    refused = await rig.ask("board_subscribe", {})
    assert refused["error"]["code"] == "forbidden"
    await rig.queue()
    ack = await rig.ask("board_subscribe", {}, sid=sue)
    assert ack["ok"] is True
    assert [(c["callId"], c["state"], c["agentId"]) for c in ack["calls"]] == [
        ("c1", "queued", None)]
    assert set(ack["calls"][0]) == {
        "callId", "threadId", "state", "caller", "called", "trunk", "receivedAt", "workerId",
        "agentId", "metadata", "waitingSec", "queue", "monitors", "quality"}
    assert sorted((g["agentId"], g["role"], g["status"]) for g in ack["agents"]) == [
        ("alice", "agent", "available"), ("sue", "supervisor", "available")]
    assert await rig.ask("accept_call", {"callId": "c1"}) == {"ok": True}
    pending = rig.agents.board._pending
    assert pending is not None
    await pending  # the changes of the accept, coalesced into one board
    boards = [json.loads(text) for event, text, to in rig.server.sent
              if event == "board" and to == sue]
    assert len(boards) == 1
    assert [(c["state"], c["agentId"]) for c in boards[0]["calls"]] == [("queued", "alice")]
    assert ("alice", "busy") in {(g["agentId"], g["status"]) for g in boards[0]["agents"]}
    assert not [1 for event, _, to in rig.server.sent if event == "board" and to != sue]


async def test_only_the_agent_who_took_a_call_wraps_it_up(rig: Rig) -> None:
    await rig.agent("alice")
    await rig.agent("bob")
    await rig.queue()
    early = await rig.ask("wrap_up", {"callId": "c1", "disposition": "resolved"})
    assert early["error"]["code"] == "forbidden"  # not taken yet
    assert await rig.ask("accept_call", {"callId": "c1"}) == {"ok": True}
    await rig.hub.publish(w.CallEndedMsg(call_id="c1", outcome="completed", by="caller"))
    bob = await rig.ask("wrap_up", {"callId": "c1", "disposition": "resolved"}, sid="sid-bob")
    assert bob["error"]["code"] == "forbidden"
    unknown = await rig.ask("wrap_up", {"callId": "c1", "disposition": "dancing"})
    assert unknown["error"] == {"code": "bad_request", "message": (
        "disposition: one of resolved, follow_up, escalated, no_action, other")}
    assert await rig.ask("wrap_up", {"callId": "c1", "disposition": "follow_up",
                                     "note": "call back"}) == {"ok": True}
    assert [(w.call_id, w.thread_id, w.agent_id, w.disposition, w.note)
            for w in rig.hub.wrapups] == [("c1", "t1", "alice", "follow_up", "call back")]
