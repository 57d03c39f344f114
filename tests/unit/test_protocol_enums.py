"""Message types are StrEnums that cannot drift from the unions: every model of every
union has its member, every member its model, and on the wire a type is its plain string
(the names of PROTOCOL.md and docs/protocol.md)."""

from __future__ import annotations

import json
import typing
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel

from hitl_sip.hub.events import CallEvent, Notice
from hitl_sip.protocol import agent as a
from hitl_sip.protocol import bot as b
from hitl_sip.protocol import cluster as c
from hitl_sip.protocol import worker as w
from hitl_sip.protocol.wire import SocketJson, WireError
from tests.unit.test_protocol import CLUSTER, COMMANDS, EXAMPLES, union_members
from tests.unit.test_protocol_sockets import EVENTS, REQUESTS


def tag(model: type[BaseModel], field: str) -> Any:
    return model.model_fields[field].default


# a union (its members), the enum of its tags, the field that carries the tag
UNIONS: list[tuple[str, set[type[BaseModel]], type[StrEnum], str]] = [
    ("worker → hub", union_members(w.WorkerMessage), w.WorkerMessageType, "type"),
    ("hub → worker", union_members(w.HubMessage), w.HubMessageType, "type"),
    ("hub events", union_members(c.HubEvent) - union_members(w.WorkerMessage),
     c.HubEventType, "type"),
    ("cluster envelopes", union_members(c.ClusterMessage), c.ClusterMessageKind, "kind"),
]
# the Socket.IO models: their events, and the enum of those
SOCKETS: list[tuple[str, tuple[type[a.SocketModel], ...], type[StrEnum]]] = [
    ("agent → server", a.REQUESTS, a.AgentClientEvent),
    ("server → agent", a.EVENTS, a.AgentServerEvent),
    ("engine → server", b.REQUESTS, b.BotClientEvent),
    ("server → engine", b.EVENTS, b.BotServerEvent),
]


@pytest.mark.parametrize(("name", "models", "enum", "field"), UNIONS, ids=[u[0] for u in UNIONS])
def test_every_model_of_a_union_has_its_enum_member_and_every_member_its_model(
    name: str, models: set[type[BaseModel]], enum: type[StrEnum], field: str,
) -> None:
    tags = [tag(m, field) for m in models]
    assert all(type(t) is enum for t in tags), f"{name}: a tag is not a {enum.__name__}"
    assert sorted(tags) == sorted(enum), f"{name}: models and {enum.__name__} differ"
    for model in models:  # the annotation says the same member as the default
        assert typing.get_args(model.model_fields[field].annotation) == (tag(model, field),)


@pytest.mark.parametrize(("name", "models", "enum"), SOCKETS, ids=[s[0] for s in SOCKETS])
def test_every_socket_model_has_its_event_member_and_every_member_its_model(
    name: str, models: tuple[type[a.SocketModel], ...], enum: type[StrEnum],
) -> None:
    events = [m.event for m in models]
    assert all(type(e) is enum for e in events), f"{name}: an event is not a {enum.__name__}"
    assert sorted(events) == sorted(enum), f"{name}: models and {enum.__name__} differ"


def test_the_derived_sets_are_enum_members() -> None:
    assert w.RELIABLE.issubset(w.WorkerMessageType)
    assert c.REPLICATED.issubset(w.RELIABLE | {w.WorkerMessageType.INTERIM})
    assert c.HUB_EVENTS.issuperset(c.HubEventType) and len(c.HUB_EVENTS) == len(c.HubEventType)


def test_every_call_event_a_listener_gets_is_a_worker_message_accepted_or_a_notice() -> None:
    published = set(typing.get_args(CallEvent)) - {c.Accepted, Notice}
    assert published <= union_members(w.WorkerMessage)
    assert Notice.type is w.WorkerMessageType.TURN  # shown as a turn


@pytest.mark.parametrize("message", [*EXAMPLES, *COMMANDS], ids=lambda m: str(m.type))
def test_a_message_s_type_is_its_plain_string_on_the_wire(message: w.Msg) -> None:
    wire = message.wire()
    assert type(wire["type"]) is str
    assert wire["type"] == message.type.value  # type: ignore[attr-defined]
    text = message.model_dump_json(by_alias=True)
    assert f'"type":"{message.type.value}"' in text  # type: ignore[attr-defined]
    assert json.loads(json.dumps(message.model_dump(by_alias=True))) == json.loads(text)
    parse = (w.parse_hub_message if type(message.type) is w.HubMessageType  # type: ignore[attr-defined]
             else w.parse_worker_message)
    again = parse(text)
    assert again == message and again.type is message.type  # type: ignore[attr-defined]


@pytest.mark.parametrize("envelope", CLUSTER, ids=lambda e: str(e.kind))
def test_a_cluster_envelope_s_kind_and_type_are_plain_strings_on_redis(
    envelope: c.ClusterEvent | c.CommandRequest | c.CommandReply,
) -> None:
    value = json.loads(envelope.dumps())
    assert value["kind"] == envelope.kind.value
    inner = value.get("message") or value.get("command")
    if inner is not None:
        assert type(inner["type"]) is str and inner["type"] in {
            *w.WorkerMessageType, *w.HubMessageType, *c.HubEventType}
    assert c.parse_cluster_message(envelope.dumps()) == envelope


@pytest.mark.parametrize("model", [m for m in [*REQUESTS, *EVENTS] if m.event],
                         ids=lambda m: str(m.event))
def test_a_socket_event_name_is_its_plain_string_in_the_packet(model: a.SocketModel) -> None:
    assert isinstance(model.event, StrEnum)
    packet = SocketJson.dumps([model.event, model.wire()])
    assert packet.startswith('["' + model.event.value + '", ')


def test_a_refused_tag_is_reported_with_plain_strings() -> None:
    with pytest.raises(WireError) as info:
        w.parse_worker_message('{"type": "nope"}')
    assert "'hello'" in str(info.value)
    assert "WorkerMessageType" not in str(info.value)
    with pytest.raises(WireError) as info:
        c.parse_cluster_message('{"kind": "nope"}')
    assert "'event'" in str(info.value) and "ClusterMessageKind" not in str(info.value)
