"""The hub ⇄ worker contract: every message on the worker link (``/internal/worker``).

A worker connects with the hub's token, sends :class:`Hello` first, then its call events;
the hub sends commands about the calls the worker owns. Every message is a JSON object
whose ``type`` names its model here (a member of :class:`WorkerMessageType` or
:class:`HubMessageType`, a ``StrEnum``: on the wire, its plain string); field names are
camelCase on the wire (the same names the external contracts of PROTOCOL.md use). Unknown
fields are refused: both ends ship together, so an unexpected field is a bug, not a newer
peer.

Delivery (hitl_sip.worker.hublink): the events that matter (:data:`RELIABLE`) carry a
link sequence number ``linkSeq`` and the worker keeps each until the hub acknowledges it
(:class:`Ack`, cumulative); after a reconnect the unacknowledged ones are sent again and
the hub skips those it has applied already (``linkSeq`` at or below the last one it
applied for that worker ``epoch``). :class:`Status` (every second) and :class:`Interim`
(live captions) are best effort: only the latest status is kept while the hub is away.

:func:`parse_worker_message` and :func:`parse_hub_command` are the only ways in: size
and nesting limits first (hitl_sip.protocol.wire), then the model, with a
:class:`~hitl_sip.protocol.wire.WireError` that says which field was wrong.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from hitl_sip.protocol.wire import MAX_BYTES, WireError, loads_object

Id = Annotated[str, Field(min_length=1, max_length=128)]
Text = Annotated[str, Field(max_length=20_000)]
Short = Annotated[str, Field(max_length=256)]
MAX_SDP = 64 * 1024
MAX_CANDIDATE = 2048
E164 = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")]  # a phone number, +E.164


class WorkerMessageType(StrEnum):
    """The ``type`` of each worker → hub message (:data:`WorkerMessage`)."""

    HELLO = "hello"
    STATUS = "status"
    CALL_STARTED = "call_started"
    CALL_ENDED = "call_ended"
    CALL_REJECTED = "call_rejected"
    REGISTRATION = "registration"
    SESSION_STATE = "session_state"
    TURN = "turn"
    INTERIM = "interim"
    WHISPERED = "whispered"
    QUALITY = "quality"
    LEG_MEDIA = "leg_media"
    HANDOFF_REQUESTED = "handoff_requested"
    CALLER_SAID = "caller_said"
    DTMF = "dtmf"
    CALL_CONNECTED = "call_connected"
    PEER_LOST = "peer_lost"
    CALL_HOLD = "call_hold"
    REPLY = "reply"


class HubMessageType(StrEnum):
    """The ``type`` of each hub → worker message (:data:`HubMessage`): the
    acknowledgement and the commands."""

    ACK = "ack"
    QUEUE_TIMEOUT = "queue_timeout"
    SAY = "say"
    HANDOFF = "handoff"
    HANGUP = "hangup"
    REFER = "refer"
    AGENT_JOINED = "agent_joined"
    AGENT_LEFT = "agent_left"
    RESUME = "resume"
    MUTE = "mute"
    LEG = "leg"
    WEBRTC_OFFER = "webrtc_offer"
    WEBRTC_CANDIDATE = "webrtc_candidate"


class CallState(StrEnum):
    """One call's phase, the same on the worker (CallSession) and in the hub."""

    BOT = "bot"
    QUEUED = "queued"
    HUMAN = "human"
    ENDED = "ended"


class Role(StrEnum):
    CALLER = "caller"
    BOT = "bot"
    AGENT = "agent"
    SUPERVISOR = "supervisor"  # a supervisor who barged in (PROTOCOL.md §6)


class LegRole(StrEnum):
    """What one more WebRTC leg of a call does (PROTOCOL.md §6 media rules): ``agent`` — a
    second agent in full conference (a transfer's target); ``listen`` — hears caller and
    agents, heard by nobody; ``whisper`` — heard by the agents only; ``barge`` — by all."""

    AGENT = "agent"
    LISTEN = "listen"
    WHISPER = "whisper"
    BARGE = "barge"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class Msg(BaseModel):
    """Base of every link message: frozen, camelCase aliases, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True,
                              alias_generator=camel)

    def wire(self) -> dict[str, Any]:
        """The JSON object sent on the link."""
        return self.model_dump(mode="json", by_alias=True)

    def body(self) -> dict[str, Any]:
        """The message's own fields in wire form (no ``type``, no ``linkSeq``)."""
        return self.model_dump(mode="json", by_alias=True, exclude={"type", "link_seq"})


class Caller(Msg):
    number: Short | None = None
    name: Short | None = None


class TranscriptLine(Msg):
    role: Role
    text: Text
    at: Short


class CallSummary(Msg):
    """What the hub knows of a call from its worker (``call_started``, ``hello.calls``)."""

    call_id: Id
    thread_id: Id
    caller: Caller = Caller()
    called: Short | None = None
    trunk: Short | None = None
    received_at: Short = ""
    metadata: dict[Short, JsonValue] = Field(default_factory=dict, max_length=200)
    codec: Short | None = None


# -- worker → hub -------------------------------------------------------------------------


class Reliable(Msg):
    """An event the worker keeps until acknowledged; ``link_seq`` is set by the link."""

    link_seq: int = 0


class Hello(Msg):
    type: Literal[WorkerMessageType.HELLO] = WorkerMessageType.HELLO
    worker_id: Id
    epoch: Short = ""  # one per worker process: a new process restarts linkSeq at 1
    pid: int = 0
    sip: dict[Short, Short] = Field(default_factory=dict, max_length=16)
    profile: Short = ""
    max_calls: int = 0
    active_calls: int = 0
    draining: bool = False
    calls: list[CallSummary] = Field(default_factory=list, max_length=64)


class Status(Msg):
    type: Literal[WorkerMessageType.STATUS] = WorkerMessageType.STATUS
    active_calls: int = 0
    draining: bool = False
    metrics: list[JsonValue] = Field(default_factory=list, max_length=10_000)


class CallStarted(Reliable, CallSummary):
    type: Literal[WorkerMessageType.CALL_STARTED] = WorkerMessageType.CALL_STARTED


class CallEndedMsg(Reliable):
    type: Literal[WorkerMessageType.CALL_ENDED] = WorkerMessageType.CALL_ENDED
    call_id: Id
    outcome: Short = ""
    by: Short = ""
    status: int | None = None
    # the call's thread, so that a hub that restarted (and no longer knows the call) can
    # still end it
    thread_id: Short | None = None


class CallRejectedMsg(Msg):
    type: Literal[WorkerMessageType.CALL_REJECTED] = WorkerMessageType.CALL_REJECTED
    status: int
    outcome: Short


class RegistrationMsg(Msg):
    type: Literal[WorkerMessageType.REGISTRATION] = WorkerMessageType.REGISTRATION
    account: Short
    active: bool
    status: int


class SessionStateMsg(Reliable):
    type: Literal[WorkerMessageType.SESSION_STATE] = WorkerMessageType.SESSION_STATE
    call_id: Id
    thread_id: Id
    state: CallState
    at: Short


class Words(Msg):
    """Who said what in a call's thread; ``seq`` numbers the call's turns."""

    call_id: Id
    thread_id: Id
    role: Role
    text: Text
    at: Short
    seq: int = Field(ge=1)


class TurnMsg(Reliable, Words):
    type: Literal[WorkerMessageType.TURN] = WorkerMessageType.TURN


class Interim(Words):
    """A partial result (live captions): the ``seq`` its final turn will have."""

    type: Literal[WorkerMessageType.INTERIM] = WorkerMessageType.INTERIM


class Whispered(Words):
    """What a whispering supervisor said: for the agents' live transcript only (never a
    thread turn, never alive5); ``seq`` is the call's last turn's."""

    type: Literal[WorkerMessageType.WHISPERED] = WorkerMessageType.WHISPERED


class LegQuality(Msg):
    """One leg's audio as the server received it over the last interval."""

    leg: Short  # "caller", "agent", or an extra leg's name
    loss_pct: float = Field(ge=0, le=100)
    late_pct: float = Field(ge=0, le=100)
    jitter_ms: float = Field(ge=0, le=60_000)
    mos: float = Field(ge=1, le=5)


class Quality(Msg):
    """Every few seconds of a live call: each leg's quality (hitl_sip.media.quality); not
    kept for a lost hub link — the next one replaces it."""

    type: Literal[WorkerMessageType.QUALITY] = WorkerMessageType.QUALITY
    call_id: Id
    legs: list[LegQuality] = Field(max_length=16)


class LegMedia(Reliable):
    """An extra leg's audio started or stopped flowing; ``primary`` when the leg has just
    become the call's agent (a transfer completed: the previous agent's leg is closed)."""

    type: Literal[WorkerMessageType.LEG_MEDIA] = WorkerMessageType.LEG_MEDIA
    call_id: Id
    leg: Id
    flowing: bool
    primary: bool = False


class HandoffRequested(Reliable):
    type: Literal[WorkerMessageType.HANDOFF_REQUESTED] = WorkerMessageType.HANDOFF_REQUESTED
    call_id: Id
    thread_id: Id
    caller: Caller = Caller()
    transcript: list[TranscriptLine] = Field(default_factory=list, max_length=2000)
    queue: Short | None = None
    skill: Short | None = None
    reason: Short = ""
    at: Short
    # the flow's ``store_as`` answers so far (the agent briefing); digits typed at a node
    # that does not say ``safe_digits`` are never among them
    answers: dict[Short, Short] = Field(default_factory=dict, max_length=64)


class CallerSaid(Reliable):
    type: Literal[WorkerMessageType.CALLER_SAID] = WorkerMessageType.CALLER_SAID
    call_id: Id
    text: Text
    final: bool = True
    at: Short


class DtmfMsg(Reliable):
    type: Literal[WorkerMessageType.DTMF] = WorkerMessageType.DTMF
    call_id: Id
    digits: Annotated[str, Field(min_length=1, max_length=32)]


class CallConnected(Reliable):
    type: Literal[WorkerMessageType.CALL_CONNECTED] = WorkerMessageType.CALL_CONNECTED
    call_id: Id
    at: Short


class PeerLost(Reliable):
    type: Literal[WorkerMessageType.PEER_LOST] = WorkerMessageType.PEER_LOST
    call_id: Id


class CallHoldMsg(Reliable):
    type: Literal[WorkerMessageType.CALL_HOLD] = WorkerMessageType.CALL_HOLD
    call_id: Id
    held: bool


class ErrorBody(Msg):
    code: Short
    message: Short


class Reply(Reliable):
    """The worker's answer to a command that carried a ``requestId``."""

    type: Literal[WorkerMessageType.REPLY] = WorkerMessageType.REPLY
    request_id: Id
    call_id: Id
    ok: bool
    sdp: Annotated[str, Field(max_length=MAX_SDP)] | None = None
    error: ErrorBody | None = None


WorkerMessage = Annotated[
    Hello | Status | CallStarted | CallEndedMsg | CallRejectedMsg | RegistrationMsg
    | SessionStateMsg | TurnMsg | Interim | HandoffRequested | CallerSaid | DtmfMsg
    | CallConnected | PeerLost | CallHoldMsg | Reply | Whispered | LegMedia | Quality,
    Field(discriminator="type"),
]

# -- hub → worker ---------------------------------------------------------------------------


class Ack(Msg):
    """Every reliable message up to ``link_seq`` of this worker process is applied."""

    type: Literal[HubMessageType.ACK] = HubMessageType.ACK
    link_seq: int = Field(ge=0)


class Command(Msg):
    call_id: Id


class QueueTimeout(Command):
    type: Literal[HubMessageType.QUEUE_TIMEOUT] = HubMessageType.QUEUE_TIMEOUT


class Say(Command):
    type: Literal[HubMessageType.SAY] = HubMessageType.SAY
    text: Text


class Handoff(Command):
    type: Literal[HubMessageType.HANDOFF] = HubMessageType.HANDOFF
    reason: Short = "api"


class Hangup(Command):
    type: Literal[HubMessageType.HANGUP] = HubMessageType.HANGUP
    by: Literal["agent", "system", "engine"] | None = None
    # what the call's end reports instead of the SIP stack's outcome (``transferred``: the
    # carrier keeps the caller, our leg leaves)
    outcome: Literal["transferred"] | None = None


class Refer(Command):
    """A blind transfer of the caller to ``number`` by SIP REFER on the trunk leg
    (``Refer-To: <sip:number@host>``, the host per the trunk profile's ``[transfer]``). The
    worker answers with a :class:`Reply` once the carrier's NOTIFY gives a final status
    (``ok``: a 2xx; otherwise ``error.code`` ``refer_failed`` with the status) or after
    ``timeout`` seconds; it does not hang up (the hub does, with ``Hangup.outcome``)."""

    type: Literal[HubMessageType.REFER] = HubMessageType.REFER
    number: E164
    timeout: float = Field(60.0, ge=1, le=600)
    request_id: Id | None = None


class AgentJoined(Command):
    type: Literal[HubMessageType.AGENT_JOINED] = HubMessageType.AGENT_JOINED
    agent_id: Id


class AgentLeft(Command):
    type: Literal[HubMessageType.AGENT_LEFT] = HubMessageType.AGENT_LEFT
    agent_id: Id | None = None


class Resume(Command):
    type: Literal[HubMessageType.RESUME] = HubMessageType.RESUME


class Mute(Command):
    type: Literal[HubMessageType.MUTE] = HubMessageType.MUTE
    muted: bool


class Leg(Command):
    """Set one extra WebRTC leg's role (``None``: close the leg). With ``primary`` the leg
    takes over as the call's agent once its audio flows, and the current agent's leg is
    closed then (make before break: the caller never hears a gap)."""

    type: Literal[HubMessageType.LEG] = HubMessageType.LEG
    leg: Id
    role: LegRole | None
    primary: bool = False


class WebrtcOffer(Command):
    type: Literal[HubMessageType.WEBRTC_OFFER] = HubMessageType.WEBRTC_OFFER
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP)]
    request_id: Id | None = None
    leg: Id | None = None  # an extra leg (see Leg); None: the agent who holds the call


class WebrtcCandidate(Command):
    type: Literal[HubMessageType.WEBRTC_CANDIDATE] = HubMessageType.WEBRTC_CANDIDATE
    candidate: Annotated[str, Field(max_length=MAX_CANDIDATE)] | None = None
    sdp_mid: Short | None = None
    sdp_m_line_index: Annotated[int, Field(ge=0, le=64)] | None = None
    request_id: Id | None = None
    leg: Id | None = None


HubCommand = Annotated[
    QueueTimeout | Say | Handoff | Hangup | AgentJoined | AgentLeft | Resume | Mute
    | WebrtcOffer | WebrtcCandidate | Leg | Refer,
    Field(discriminator="type"),
]
HubMessage = Annotated[Ack | HubCommand, Field(discriminator="type")]

_WORKER: TypeAdapter[WorkerMessage] = TypeAdapter(WorkerMessage)
_COMMAND: TypeAdapter[HubCommand] = TypeAdapter(HubCommand)
_HUB: TypeAdapter[HubMessage] = TypeAdapter(HubMessage)

RELIABLE: frozenset[WorkerMessageType] = frozenset(
    m.model_fields["type"].default for m in Reliable.__subclasses__()
) | {WorkerMessageType.CALL_STARTED}

_ENUM_REPR = re.compile(r"<\w+\.\w+: ('[^']*')>")


def plain_tags(message: str) -> str:
    """A validation message with enum tags as their wire strings (pydantic lists the
    expected tags as ``<WorkerMessageType.HELLO: 'hello'>``; the log says ``'hello'``)."""
    return _ENUM_REPR.sub(r"\1", message)


def _validate(adapter: TypeAdapter[Any], value: Any) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError("bad_message", f"{where}: {plain_tags(first['msg'])} "
                                       f"({e.error_count()} error(s))") from e


def parse_worker_message(data: str | bytes | dict[str, Any],
                         max_bytes: int = MAX_BYTES) -> WorkerMessage:
    """A message from a worker, validated; :class:`WireError` otherwise."""
    value = data if isinstance(data, dict) else loads_object(data, max_bytes=max_bytes)
    result: WorkerMessage = _validate(_WORKER, value)
    return result


def parse_hub_message(data: str | bytes | dict[str, Any],
                      max_bytes: int = MAX_BYTES) -> HubMessage:
    """A message from the hub (an ack or a command), validated."""
    value = data if isinstance(data, dict) else loads_object(data, max_bytes=max_bytes)
    result: HubMessage = _validate(_HUB, value)
    return result


def parse_command(data: dict[str, Any]) -> HubCommand:
    """A command built inside the hub (from the namespaces, REST, another hub)."""
    result: HubCommand = _validate(_COMMAND, data)
    return result
