"""The hub ⇄ worker contract (hitl_sip.protocol): every model survives the wire, and the
edge parsers answer any input — random JSON, deep nesting, oversized text — with a typed
WireError or a valid message, never anything else."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hitl_sip.protocol import cluster as c
from hitl_sip.protocol import worker as w
from hitl_sip.protocol.seal import Seal, SealedJson
from hitl_sip.protocol.wire import MAX_DEPTH, SocketJson, WireError, depth, loads
from hitl_sip.protocol.worker import (
    HubMessage,
    WorkerMessage,
    parse_hub_message,
    parse_worker_message,
)

CALLER = w.Caller(number="+14155550100", name="Ann")
EXAMPLES: list[w.Msg] = [
    w.Hello(worker_id="w1", epoch="e1", pid=7, sip={"udp": "127.0.0.1:5060"}, profile="local",
            max_calls=3, active_calls=1, draining=False,
            calls=[w.CallSummary(call_id="c1", thread_id="t1", caller=CALLER, called="+1555",
                                 trunk="twilio", received_at="2026-12-04T20:00:00Z",
                                 metadata={"X-Twilio-CallSid": "CA1"}, codec="PCMU")]),
    w.Status(active_calls=2, draining=True, metrics=[{"name": "x", "value": 1234567}]),
    w.CallStarted(call_id="c1", thread_id="t1", caller=CALLER, metadata={"a": "b"},
                  link_seq=4),
    w.CallEndedMsg(call_id="c1", outcome="completed", by="caller", status=200, link_seq=9),
    w.CallRejectedMsg(status=503, outcome="busy"),
    w.RegistrationMsg(account="sip:a@b", active=True, status=200),
    w.SessionStateMsg(call_id="c1", thread_id="t1", state=w.CallState.QUEUED, at="now"),
    w.TurnMsg(call_id="c1", thread_id="t1", role=w.Role.AGENT, text="hello", at="now", seq=3),
    w.Interim(call_id="c1", thread_id="t1", role=w.Role.CALLER, text="hel", at="now", seq=4),
    w.Whispered(call_id="c1", thread_id="t1", role=w.Role.SUPERVISOR, text="ask for the id",
                at="now", seq=4),
    w.LegMedia(call_id="c1", leg="sup-1", flowing=True, primary=False),
    w.Quality(call_id="c1", legs=[w.LegQuality(leg="caller", loss_pct=4.8, late_pct=0.0,
                                               jitter_ms=16.1, mos=3.84)]),
    w.HandoffRequested(call_id="c1", thread_id="t1", caller=CALLER, queue="default",
                       transcript=[w.TranscriptLine(role=w.Role.BOT, text="Hi", at="now")],
                       reason="dtmf '0' at menu", at="now"),
    w.CallerSaid(call_id="c1", text="agent please", at="now"),
    w.DtmfMsg(call_id="c1", digits="0"),
    w.CallConnected(call_id="c1", at="now"),
    w.PeerLost(call_id="c1"),
    w.CallHoldMsg(call_id="c1", held=True),
    w.Reply(request_id="r1", call_id="c1", ok=False,
            error=w.ErrorBody(code="bad_request", message="no media")),
]
COMMANDS: list[w.Msg] = [
    w.Ack(link_seq=12),
    w.QueueTimeout(call_id="c1"),
    w.Say(call_id="c1", text="One moment."),
    w.Handoff(call_id="c1", reason="api"),
    w.Hangup(call_id="c1", by="agent"),
    w.Hangup(call_id="c1", by="agent", outcome="transferred"),
    w.Refer(call_id="c1", number="+15551234567", timeout=30, request_id="r3"),
    w.AgentJoined(call_id="c1", agent_id="alice"),
    w.AgentLeft(call_id="c1", agent_id="alice"),
    w.Resume(call_id="c1"),
    w.Mute(call_id="c1", muted=True),
    w.WebrtcOffer(call_id="c1", sdp="v=0\r\n", request_id="r2"),
    w.Leg(call_id="c1", leg="sup-1", role=w.LegRole.WHISPER),
    w.Leg(call_id="c1", leg="bob", role=None),
    w.WebrtcCandidate(call_id="c1", candidate="candidate:1 1 udp 1 127.0.0.1 9 typ host",
                      sdp_mid="0", sdp_m_line_index=0),
]


def union_members(annotated: Any) -> set[type[BaseModel]]:
    union = typing.get_args(annotated)[0]
    members: set[type[BaseModel]] = set()
    for member in typing.get_args(union):
        members |= union_members(member) if typing.get_origin(member) else {member}
    return members


def test_every_message_type_has_an_example() -> None:
    assert {type(m) for m in EXAMPLES} == union_members(WorkerMessage)
    assert {type(m) for m in COMMANDS} == union_members(HubMessage)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.type)  # type: ignore[attr-defined]
def test_a_worker_message_round_trips_through_the_wire(message: w.Msg) -> None:
    text = json.dumps(message.wire())
    assert parse_worker_message(text) == message
    assert parse_worker_message(message.model_dump_json(by_alias=True)) == message


@pytest.mark.parametrize("message", COMMANDS, ids=lambda m: m.type)  # type: ignore[attr-defined]
def test_a_hub_message_round_trips_through_the_wire(message: w.Msg) -> None:
    assert parse_hub_message(json.dumps(message.wire())) == message


CLUSTER: list[c.ClusterEvent | c.CommandRequest | c.CommandReply] = [
    *[c.ClusterEvent(hub="hub-a", message=m,
                    worker_id="w1" if isinstance(m, w.CallStarted) else None)
      for m in EXAMPLES if c.replicated(m)],
    c.ClusterEvent(hub="hub-a", message=c.Accepted(call_id="c1", agent_id="alice")),
    *[c.CommandRequest(id=f"hub-b:{i}", sender="hub-b", command=typing.cast("w.HubCommand", m),
                       want_reply=i % 2 == 0)
      for i, m in enumerate(COMMANDS) if not isinstance(m, w.Ack)],
    c.CommandReply(id="hub-b:1", sent=True),
    c.CommandReply(id="hub-b:2", sent=True, reply=w.Reply(request_id="r1", call_id="c1",
                                                         ok=True, sdp="v=0\r\n")),
]


def test_every_replicated_event_and_hub_command_crosses_redis_typed() -> None:
    kinds = {e.message.type for e in CLUSTER if isinstance(e, c.ClusterEvent)}
    assert kinds == c.REPLICATED | c.HUB_EVENTS
    for envelope in CLUSTER:
        assert c.parse_cluster_message(envelope.dumps()) == envelope


@pytest.mark.parametrize(("payload", "where"), [
    ('{"kind": "event", "hub": "h", "message": {"type": "call_started", "callId": "c", '
     '"threadId": "t"}}', "call_started names its workerId"),
    ('{"kind": "event", "hub": "h", "message": {"type": "hello", "workerId": "w"}}',
     "does not match any of the expected tags"),
    ('{"kind": "command", "id": "1", "sender": "h", "command": {"type": "hangup"}}',
     "command.hangup.callId: Field required"),
    ('{"kind": "command", "id": "1", "sender": "h", "command": {"type": "hangup", '
     '"callId": "c", "by": "stranger"}}', "command.hangup.by"),
    ('{"hub": "h", "event": "call_ended", "data": {}}', "Unable to extract tag"),
])
def test_a_forged_redis_message_is_refused_precisely(payload: str, where: str) -> None:
    with pytest.raises(WireError) as info:
        c.parse_cluster_message(payload)
    assert info.value.reason == "bad_message"
    assert where in str(info.value)


def test_wire_names_are_camel_case_as_in_the_external_contracts() -> None:
    wire = w.WebrtcCandidate(call_id="c", sdp_mid="0", sdp_m_line_index=1).wire()
    assert set(wire) == {"type", "callId", "candidate", "sdpMid", "sdpMLineIndex", "requestId",
                         "leg"}
    assert "linkSeq" in w.TurnMsg(call_id="c", thread_id="t", role=w.Role.BOT, text="x",
                                  at="a", seq=1).wire()


def test_one_call_state_enum_serves_hub_and_worker() -> None:
    from hitl_sip.hub.core import CALL_STATES  # noqa: PLC0415
    from hitl_sip.worker.session import SessionState  # noqa: PLC0415

    assert SessionState is w.CallState
    assert CALL_STATES == ("bot", "queued", "human", "ended")


@pytest.mark.parametrize(("payload", "reason", "where"), [
    ("[" * 5000 + "]" * 5000, "too_deep", "nested deeper than 32"),
    ('{"a": "' + "x" * (2 << 20) + '"}', "too_large", "more than"),
    ("{not json", "bad_json", "not JSON"),
    (b"\xff\xfe", "bad_json", "not UTF-8"),
    ("[1, 2]", "bad_message", "expected a JSON object"),
    ('{"type": "turn"}', "bad_message", "turn.callId: Field required"),
    ('{"type": "nope"}', "bad_message", "does not match any of the expected tags"),
    ('{"type": "status", "extra": 1}', "bad_message", "status.extra: Extra inputs"),
    ('{"type": "dtmf", "callId": "c", "digits": ""}', "bad_message", "dtmf.digits"),
])
def test_refusals_are_precise(payload: str | bytes, reason: str, where: str) -> None:
    with pytest.raises(WireError) as info:
        parse_worker_message(payload)
    assert info.value.reason == reason
    assert where in str(info.value)
    assert "x" * 100 not in str(info.value), "the payload is not echoed"


def test_depth_skips_brackets_inside_strings() -> None:
    assert depth('{"a": "[[[[{{{{", "b": [1, {"c": "\\"]]]"}]}') == 3
    assert loads('["' + "[" * 100 + '"]') == ["[" * 100]
    with pytest.raises(WireError):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=40,
)
TYPES = st.sampled_from(sorted(
    [m.model_fields["type"].default for m in union_members(WorkerMessage)]
    + [m.model_fields["type"].default for m in union_members(HubMessage)] + ["x"]))
KINDS = st.sampled_from(["event", "command", "reply", "x"])


@settings(max_examples=300, deadline=None)
@given(value=JSON, kind=TYPES, envelope=KINDS,
       extra=st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_random_json_gets_a_typed_answer_from_every_edge(value: Any, kind: str, envelope: str,
                                                         extra: dict[str, Any]) -> None:
    message = {"type": kind, **extra}
    for candidate in (value, message, {"type": kind, "callId": value},
                      {"kind": envelope, "hub": "h", "id": "1", "sender": "h",
                       "message": message, "command": message, "reply": value, **extra}):
        text = json.dumps(candidate)
        for parse in (parse_worker_message, parse_hub_message, c.parse_cluster_message):
            try:
                parse(text)
            except WireError as e:
                assert e.reason in {"bad_json", "bad_message", "too_deep", "too_large"}


@settings(max_examples=100, deadline=None)
@given(levels=st.integers(min_value=1, max_value=20_000), text=st.text(max_size=50))
def test_any_nesting_is_answered_without_recursion(levels: int, text: str) -> None:
    payload = "[" * levels + json.dumps(text) + "]" * levels
    result = SocketJson.loads(payload)
    if levels > MAX_DEPTH:
        assert result[0] == "payload_refused" and result[1]["reason"] == "too_deep"
    else:
        assert result == json.loads(payload)


def test_the_contract_document_is_generated_from_the_models() -> None:
    from hitl_sip.protocol.doc import DOC, generate  # noqa: PLC0415

    assert generate() in DOC.read_text(encoding="utf-8"), (
        "docs/protocol.md is stale: run python -m hitl_sip.protocol.doc --write")


def test_the_server_never_imports_the_test_tooling() -> None:
    from pathlib import Path  # noqa: PLC0415

    package = Path(__file__).parents[2] / "hitl_sip"
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if "testing" not in p.parts and "hitl_sip.testing" in p.read_text()]
    assert offenders == []


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sealed_message_opens_only_with_the_secret_fresh_and_unaltered() -> None:
    clock = Clock()
    seal = Seal(b"s" * 32, clock=clock)
    text = seal.seal('{"kind": "reply", "id": "1"}')
    assert seal.open(text) == '{"kind": "reply", "id": "1"}'
    value = json.loads(text)
    altered = json.dumps({**value, "body": value["body"].replace("1", "2")})
    refusals = {
        "unsigned": ['{"kind": "reply", "id": "1"}', "not json", "[1]", json.dumps(
            {**value, "at": True}), json.dumps({**value, "extra": 1})],
        "bad_signature": [altered, Seal(b"t" * 32, clock=clock).seal(value["body"])],
    }
    for reason, texts in refusals.items():
        for bad in texts:
            with pytest.raises(WireError) as info:
                seal.open(bad)
            assert info.value.reason == reason, bad
    clock.now += 61  # a replay a minute later
    with pytest.raises(WireError) as info:
        seal.open(text)
    assert info.value.reason == "stale"
    with pytest.raises(ValueError, match="32 bytes"):
        Seal(b"short")


@settings(max_examples=200, deadline=None)
@given(value=JSON)
def test_random_input_never_opens_and_never_raises_anything_else(value: Any) -> None:
    seal = Seal(b"s" * 32)
    refused: list[str] = []
    SealedJson.seal, SealedJson.on_refused = seal, refused.append
    try:
        for text in (json.dumps(value), json.dumps({"at": 1, "body": json.dumps(value),
                                                     "mac": "00"})):
            with pytest.raises(WireError):
                seal.open(text)
            assert SealedJson.loads(text) is None
        assert SealedJson.loads(SealedJson.dumps({"v": value})) == {"v": value}
    finally:
        SealedJson.seal = SealedJson.on_refused = None
    assert len(refused) == 2


def test_a_liveness_mark_is_typed_and_a_foreign_shape_is_no_mark() -> None:
    mark = c.AliveMark(at=1_700_000_000_000, calls=frozenset({"c2", "c1"}))
    assert mark.dumps() == '{"at": 1700000000000, "calls": ["c1", "c2"]}'
    assert c.parse_alive_mark(mark.dumps()) == mark
    assert c.parse_alive_mark('{"at": "soon", "calls": []}') is None  # alive, nothing more
    assert c.parse_alive_mark('[1, 2]') is None
    with pytest.raises(WireError) as info:
        c.parse_alive_mark("[" * 5000 + "]" * 5000)
    assert info.value.reason == "too_deep"
