"""Messages between hubs over Redis (hitl_sip.hub.cluster): three envelopes.

* :class:`ClusterEvent` on ``hitl:events`` — a call event another hub's worker reported
  (its ``data`` is that worker message's body, validated against its model of
  :mod:`hitl_sip.protocol.worker`, plus ``workerId`` on ``call_started``), or ``accepted``;
* :class:`CommandRequest` on ``hitl:hub:<hubId>`` — a command for a call the addressed hub
  owns (validated as a hub command);
* :class:`CommandReply` on the asker's channel.

:func:`parse_cluster_message` applies the size and nesting limits, then the models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from hitl_sip.protocol.wire import MAX_BYTES, WireError, loads_object
from hitl_sip.protocol.worker import RELIABLE, Id, Short, parse_command, parse_worker_message

#: the worker events other hubs mirror (the ones the link delivers reliably, and interims)
REPLICATED = frozenset({"call_started", "handoff_requested", "session_state", "call_ended",
                        "call_connected", "peer_lost", "turn", "interim", "caller_said",
                        "dtmf"})
HUB_EVENTS = frozenset({"accepted"})  # events a hub itself publishes (routing)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class ClusterEvent(_Envelope):
    hub: Id
    event: Short
    data: dict[Short, JsonValue] = Field(default_factory=dict)


class CommandRequest(_Envelope):
    id: Id
    sender: Id = Field(alias="from")
    call_id: Id = Field(alias="callId")
    message: dict[Short, JsonValue]
    want_reply: bool = Field(default=False, alias="wantReply")


class CommandReply(_Envelope):
    id: Id
    reply: dict[Short, JsonValue] | None = None


ClusterMessage = ClusterEvent | CommandRequest | CommandReply


def parse_cluster_message(data: str | bytes, max_bytes: int = MAX_BYTES) -> ClusterMessage:
    """One message from Redis, validated (WireError otherwise)."""
    value = loads_object(data, max_bytes=max_bytes)
    model: type[_Envelope]
    if "event" in value:
        model = ClusterEvent
    elif "reply" in value:
        model = CommandReply
    else:
        model = CommandRequest
    try:
        message = model.model_validate(value)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError("bad_message", f"{model.__name__}.{where}: {first['msg']}") from e
    if isinstance(message, ClusterEvent):
        _check_event(message)
    elif isinstance(message, CommandRequest):
        parse_command({**message.message, "callId": message.call_id})
    assert isinstance(message, ClusterEvent | CommandRequest | CommandReply)
    return message


def _check_event(event: ClusterEvent) -> None:
    if event.event in HUB_EVENTS:  # accepted: {callId, agentId}
        if not all(isinstance(event.data.get(k), str) for k in ("callId", "agentId")):
            raise WireError("bad_message", f"{event.event}: callId and agentId are strings")
        return
    if event.event not in REPLICATED:
        raise WireError("bad_message", f"unknown cluster event {event.event!r}")
    body: dict[str, Any] = dict(event.data)
    if event.event == "call_started" and not isinstance(body.pop("workerId", None), str):
        raise WireError("bad_message", "call_started: workerId must be a string")
    parse_worker_message({"type": event.event, **body})


assert REPLICATED - {"interim"} <= RELIABLE
