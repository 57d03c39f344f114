"""Messages between hubs over Redis (hitl_sip.hub.cluster): three typed envelopes.

* :class:`ClusterEvent` on ``hitl:events`` — a call event another hub's worker reported
  (the worker message itself, one of :data:`Replicated`, with the owner's ``workerId`` on
  ``call_started``), or :class:`Accepted` (an agent on that hub took a call);
* :class:`CommandRequest` on ``hitl:hub:<hubId>`` — a hub command
  (:data:`~hitl_sip.protocol.worker.HubCommand`) for a call the addressed hub owns;
* :class:`CommandReply` on the asker's channel: whether the command reached the worker
  and, for a request, the worker's :class:`~hitl_sip.protocol.worker.Reply`.

Each envelope names itself in ``kind``. :func:`parse_cluster_message` applies the size and
nesting limits, then the models: nothing read from Redis reaches a hub as a raw dict.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from hitl_sip.protocol.wire import MAX_BYTES, WireError, loads_object
from hitl_sip.protocol.worker import (
    CallConnected,
    CallEndedMsg,
    CallerSaid,
    CallStarted,
    DtmfMsg,
    HandoffRequested,
    HubCommand,
    Id,
    Interim,
    Msg,
    PeerLost,
    Reply,
    SessionStateMsg,
    TurnMsg,
    camel,
)


class Accepted(Msg):
    """An agent connected to the publishing hub won the call (the others stop ringing)."""

    type: Literal["accepted"] = "accepted"
    call_id: Id
    agent_id: Id


#: the worker events other hubs mirror (the ones the link delivers reliably, and interims)
Replicated = Annotated[
    CallStarted | HandoffRequested | SessionStateMsg | CallEndedMsg | CallConnected
    | PeerLost | TurnMsg | Interim | CallerSaid | DtmfMsg,
    Field(discriminator="type"),
]
HubEvent = Annotated[Replicated | Accepted, Field(discriminator="type")]

REPLICATED_MODELS: tuple[type[Msg], ...] = typing.get_args(typing.get_args(Replicated)[0])
REPLICATED = frozenset(m.model_fields["type"].default for m in REPLICATED_MODELS)


def replicated(message: Msg) -> TypeGuard[Replicated]:
    """Whether other hubs mirror ``message`` (a worker message)."""
    return isinstance(message, REPLICATED_MODELS)
HUB_EVENTS = frozenset({"accepted"})  # events a hub itself publishes (routing)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              alias_generator=camel)

    def dumps(self) -> str:
        return self.model_dump_json(by_alias=True)


class ClusterEvent(_Envelope):
    kind: Literal["event"] = "event"
    hub: Id
    worker_id: Id | None = None
    message: HubEvent

    @model_validator(mode="after")
    def _owner_named(self) -> ClusterEvent:
        if isinstance(self.message, CallStarted) and self.worker_id is None:
            raise ValueError("call_started names its workerId")
        return self


class CommandRequest(_Envelope):
    kind: Literal["command"] = "command"
    id: Id
    sender: Id
    command: HubCommand
    want_reply: bool = False


class CommandReply(_Envelope):
    kind: Literal["reply"] = "reply"
    id: Id
    sent: bool = False  # the command reached the call's worker
    reply: Reply | None = None  # the worker's answer to a request (wantReply)


ClusterMessage = Annotated[ClusterEvent | CommandRequest | CommandReply,
                           Field(discriminator="kind")]
_CLUSTER: TypeAdapter[ClusterMessage] = TypeAdapter(ClusterMessage)


def parse_cluster_message(data: str | bytes, max_bytes: int = MAX_BYTES) -> ClusterMessage:
    """One message from Redis, validated (WireError otherwise)."""
    value: dict[str, Any] = loads_object(data, max_bytes=max_bytes)
    try:
        message: ClusterMessage = _CLUSTER.validate_python(value)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError("bad_message", f"{where}: {first['msg']}") from e
    return message
