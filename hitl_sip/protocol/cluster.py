"""Messages between hubs over Redis (hitl_sip.hub.cluster): three typed envelopes.

* :class:`ClusterEvent` on ``hitl:events`` — a call event another hub's worker reported
  (the worker message itself, one of :data:`Replicated`, with the owner's ``workerId`` on
  ``call_started``), or :class:`Accepted` (an agent on that hub took a call);
* :class:`CommandRequest` on ``hitl:hub:<hubId>`` — a hub command
  (:data:`~hitl_sip.protocol.worker.HubCommand`) for a call the addressed hub owns;
* :class:`CommandReply` on the asker's channel: whether the command reached the worker
  and, for a request, the worker's :class:`~hitl_sip.protocol.worker.Reply`.

Each envelope names itself in ``kind`` (:class:`ClusterMessageKind`); an event a hub
publishes itself has a :class:`HubEventType`. :func:`parse_cluster_message` applies the size
and nesting limits, then the models: nothing read from Redis reaches a hub as a raw dict.
Each hub's liveness mark (``hitl:alive:<hubId>``) is an :class:`AliveMark`, read with
:func:`parse_alive_mark`.
"""

from __future__ import annotations

import json
import typing
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeGuard

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from hitl_sip.protocol.wire import MAX_BYTES, WireError, loads, loads_object
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
    WorkerMessageType,
    camel,
    plain_tags,
)


class HubEventType(StrEnum):
    """The ``type`` of an event a hub itself publishes (not a worker's)."""

    ACCEPTED = "accepted"


class ClusterMessageKind(StrEnum):
    """The ``kind`` of each envelope on Redis (:data:`ClusterMessage`)."""

    EVENT = "event"
    COMMAND = "command"
    REPLY = "reply"


class Accepted(Msg):
    """An agent connected to the publishing hub won the call (the others stop ringing)."""

    type: Literal[HubEventType.ACCEPTED] = HubEventType.ACCEPTED
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
REPLICATED: frozenset[WorkerMessageType] = frozenset(
    m.model_fields["type"].default for m in REPLICATED_MODELS)


def replicated(message: Msg) -> TypeGuard[Replicated]:
    """Whether other hubs mirror ``message`` (a worker message)."""
    return isinstance(message, REPLICATED_MODELS)


HUB_EVENTS: frozenset[HubEventType] = frozenset(HubEventType)  # published by a hub (routing)


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              alias_generator=camel)

    def dumps(self) -> str:
        return self.model_dump_json(by_alias=True)


class ClusterEvent(_Envelope):
    kind: Literal[ClusterMessageKind.EVENT] = ClusterMessageKind.EVENT
    hub: Id
    worker_id: Id | None = None
    message: HubEvent

    @model_validator(mode="after")
    def _owner_named(self) -> ClusterEvent:
        if isinstance(self.message, CallStarted) and self.worker_id is None:
            raise ValueError("call_started names its workerId")
        return self


class CommandRequest(_Envelope):
    kind: Literal[ClusterMessageKind.COMMAND] = ClusterMessageKind.COMMAND
    id: Id
    sender: Id
    command: HubCommand
    want_reply: bool = False


class CommandReply(_Envelope):
    kind: Literal[ClusterMessageKind.REPLY] = ClusterMessageKind.REPLY
    id: Id
    sent: bool = False  # the command reached the call's worker
    reply: Reply | None = None  # the worker's answer to a request (wantReply)


class AliveMark(BaseModel):
    """A hub's liveness mark (``hitl:alive:<hubId>``): when it was written (that hub's
    clock, ms) and the calls it owns. Read with :func:`parse_alive_mark`."""

    model_config = ConfigDict(frozen=True)

    at: StrictInt
    calls: frozenset[str]

    def dumps(self) -> str:
        return json.dumps({"at": self.at, "calls": sorted(self.calls)})


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
        raise WireError("bad_message", f"{where}: {plain_tags(first['msg'])}") from e
    return message


def parse_alive_mark(data: str | bytes, max_bytes: int = MAX_BYTES) -> AliveMark | None:
    """A liveness mark; None when it is JSON but not a mark (the hub is alive, nothing
    more); :class:`WireError` when it is not JSON within the limits."""
    value = loads(data, max_bytes=max_bytes)
    try:
        return AliveMark.model_validate(value)
    except ValidationError:
        return None
