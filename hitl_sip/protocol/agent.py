"""The ``/agent`` Socket.IO contract (PROTOCOL.md §1), and the pieces ``/bot`` shares.

Every payload is a model here: one per agent → server request, one per server → agent
event, and the acknowledgements. Each model's ``event`` is its Socket.IO event name; field
names on the wire are the camelCase ones of PROTOCOL.md. A request tolerates fields it
does not know (clients may add some: "extend freely"); what the hub sends has exactly the
fields of its model, nulls included.

:func:`parse_request` is the only way in: the payload must be a JSON object (its size and
nesting were bounded when the packet was decoded, hitl_sip.protocol.wire.SocketJson), then
the model; anything else is a :class:`~hitl_sip.protocol.wire.WireError` whose message
names the field, which the namespace answers ``bad_request``. What the hub sends is built
from these models and sent as :meth:`SocketModel.wire`; an acknowledgement is
:func:`ok` or :func:`refuse`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from hitl_sip.protocol.wire import WireError
from hitl_sip.protocol.worker import (
    MAX_CANDIDATE,
    MAX_SDP,
    Caller,
    Id,
    LegQuality,
    LegRole,
    Role,
    Short,
    TranscriptLine,
    camel,
)

MAX_MESSAGE = 300  # an error message's length: it may quote the keys of a client's object


class AgentClientEvent(StrEnum):
    """The Socket.IO events an agent's client sends (each a :data:`REQUESTS` model)."""

    SET_STATUS = "set_status"
    ACCEPT_CALL = "accept_call"
    DECLINE_CALL = "decline_call"
    WEBRTC_OFFER = "webrtc_offer"
    WEBRTC_CANDIDATE = "webrtc_candidate"
    MUTE = "mute"
    HANGUP = "hangup"
    RETURN_TO_BOT = "return_to_bot"
    BOARD_SUBSCRIBE = "board_subscribe"
    MONITOR_CALL = "monitor_call"
    MONITOR_MODE = "monitor_mode"
    MONITOR_STOP = "monitor_stop"
    TRANSFER_CALL = "transfer_call"
    DESK_OPTIONS = "desk_options"
    WRAP_UP = "wrap_up"


class AgentServerEvent(StrEnum):
    """The Socket.IO events the server sends an agent (each an :data:`EVENTS` model)."""

    AGENT_STATE = "agent_state"
    INCOMING_CALL = "incoming_call"
    CALL_CANCELLED = "call_cancelled"
    WEBRTC_CANDIDATE = "webrtc_candidate"
    CALL_CONNECTED = "call_connected"
    TRANSCRIPT = "transcript"
    CALL_ENDED = "call_ended"
    CALL_QUALITY = "call_quality"
    BOARD = "board"
    CALL_MONITORED = "call_monitored"
    TRANSFER_JOINED = "transfer_joined"
    TRANSFER_FAILED = "transfer_failed"


class ErrorCode(StrEnum):
    """The ``error.code`` of a refused request (PROTOCOL.md, preamble)."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INVALID_STATE = "invalid_state"
    ALREADY_ANSWERED = "already_answered"
    UNAVAILABLE = "unavailable"


class AgentStatus(StrEnum):
    AVAILABLE = "available"
    AWAY = "away"
    BUSY = "busy"  # set by the hub while the agent holds a call, never by the agent


class AccountRole(StrEnum):
    """PROTOCOL.md §6: what an account may see and do."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"  # also an agent: it takes calls
    ADMIN = "admin"

    @property
    def sees_all(self) -> bool:
        """Supervisors and admins see every call and thread; agents only their own."""
        return self is not AccountRole.AGENT


class CancelReason(StrEnum):
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    CALLER_HANGUP = "caller_hangup"
    RING_TIMEOUT = "ring_timeout"
    DECLINED = "declined"


class EndedBy(StrEnum):
    CALLER = "caller"
    AGENT = "agent"
    SYSTEM = "system"


class SocketModel(BaseModel):
    """Base of every Socket.IO payload: frozen, camelCase on the wire."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, alias_generator=camel)

    event: ClassVar[str] = ""  # the Socket.IO event that carries it ("" for an ack)

    def wire(self) -> dict[str, Any]:
        """The JSON object sent on the socket."""
        return self.model_dump(mode="json", by_alias=True)


class Request(SocketModel):
    """A client → server payload: fields the hub does not know are ignored."""

    model_config = ConfigDict(extra="ignore")


class Event(SocketModel):
    """A server → client payload, built by the hub: exactly its fields."""

    model_config = ConfigDict(extra="forbid")


# -- acknowledgements -----------------------------------------------------------------------


class Ok(Event):
    ok: Literal[True] = True


class OfferAnswer(Ok):
    """The acknowledgement of ``webrtc_offer``: the worker's SDP answer."""

    sdp: str | None


class AckError(Event):
    code: ErrorCode
    message: str


class Refusal(Event):
    ok: Literal[False] = False
    error: AckError


def ok() -> dict[str, Any]:
    return Ok().wire()


def refuse(code: ErrorCode, message: str) -> dict[str, Any]:
    return Refusal(error=AckError(code=code, message=message)).wire()


# -- agent → server -------------------------------------------------------------------------


class CallRequest(Request):
    """A request about one call."""

    call_id: Id


class SetStatus(Request):
    event: ClassVar[AgentClientEvent] = AgentClientEvent.SET_STATUS
    status: AgentStatus

    @field_validator("status", mode="before")
    @classmethod
    def _settable(cls, status: Any) -> Any:
        if status not in (AgentStatus.AVAILABLE, AgentStatus.AWAY):  # busy is the hub's
            raise ValueError('must be "available" or "away"')
        return status


class AcceptCall(CallRequest):
    """First accept wins; the others get ``call_cancelled`` / ``already_answered``."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.ACCEPT_CALL


class DeclineCall(CallRequest):
    event: ClassVar[AgentClientEvent] = AgentClientEvent.DECLINE_CALL


class WebrtcOffer(CallRequest):
    """The browser's offer; the acknowledgement (OfferAnswer) carries the SDP answer."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.WEBRTC_OFFER
    sdp: Annotated[str, Field(min_length=1, max_length=MAX_SDP)]

    @field_validator("sdp")
    @classmethod
    def _is_sdp(cls, sdp: str) -> str:
        if not sdp.startswith("v=0"):
            raise ValueError("must be an SDP offer (starting with v=0)")
        return sdp


class _Candidate(SocketModel):
    call_id: Id
    candidate: Annotated[str, Field(max_length=MAX_CANDIDATE)] | None = None
    sdp_mid: Short | None = None
    sdp_m_line_index: Annotated[int, Strict(), Field(ge=0, le=64)] | None = None


class WebrtcCandidate(_Candidate, Request):
    """The browser's trickle; ``candidate: null`` ends it."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.WEBRTC_CANDIDATE


class Mute(CallRequest):
    event: ClassVar[AgentClientEvent] = AgentClientEvent.MUTE
    muted: StrictBool


class Hangup(CallRequest):
    event: ClassVar[AgentClientEvent] = AgentClientEvent.HANGUP


class ReturnToBot(CallRequest):
    """The agent leaves, the bot flow resumes."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.RETURN_TO_BOT


# -- server → agent -------------------------------------------------------------------------


class AgentState(Event):
    """On connect and on every change."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.AGENT_STATE
    agent_id: str
    name: str
    status: AgentStatus
    active_call_id: str | None
    role: AccountRole = AccountRole.AGENT


class TransferMode(StrEnum):
    COLD = "cold"
    WARM = "warm"


class TransferInfo(Event):
    """On a transferred call's ``incoming_call``: who hands it over, how, and why."""

    from_agent_id: str
    from_name: str  # extension: the transferring agent's display name
    mode: TransferMode
    note: str


class SummarySource(StrEnum):
    """Who wrote an agent briefing: the configured chat-completions endpoint, or the
    embedded extractive engine (offline, and the fallback when the endpoint is slow or
    fails)."""

    LLM = "llm"
    EMBEDDED = "embedded"


class Briefing(Event):
    """The agent briefing on ``incoming_call`` (issue 17): a few sentences on who is
    calling, what they want and what the bot already tried."""

    text: str
    source: SummarySource


class IncomingCall(Event):
    event: ClassVar[AgentServerEvent] = AgentServerEvent.INCOMING_CALL
    call_id: str
    thread_id: str
    caller: Caller
    called: str | None
    trunk: str | None
    received_at: str
    ring_timeout_sec: float
    bot_transcript: list[TranscriptLine]
    metadata: dict[str, JsonValue]
    # §6: a transfer's target also gets what the agents said so far (null / [] otherwise)
    transfer: TransferInfo | None = None
    human_transcript: list[TranscriptLine] = Field(default_factory=list)
    # extension: the agent briefing (hitl_sip.hub.summary); null when none was made
    summary: Briefing | None = None


class CallCancelled(Event):
    event: ClassVar[AgentServerEvent] = AgentServerEvent.CALL_CANCELLED
    call_id: str
    reason: CancelReason


class ServerCandidate(_Candidate, Event):
    """Optional server trickle (the hub sends none today: its answer carries them)."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.WEBRTC_CANDIDATE


class CallConnected(Event):
    """Media is flowing both ways."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.CALL_CONNECTED
    call_id: str
    at: str


class Transcript(Event):
    event: ClassVar[AgentServerEvent] = AgentServerEvent.TRANSCRIPT
    call_id: str
    thread_id: str
    role: Role
    text: str
    final: bool
    at: str
    seq: int


class CallEnded(Event):
    event: ClassVar[AgentServerEvent] = AgentServerEvent.CALL_ENDED
    call_id: str
    reason: str
    by: EndedBy


# -- supervisors (PROTOCOL.md §6) ----------------------------------------------------------


class BoardSubscribe(Request):
    """A supervisor's (or admin's) request for the board; ``forbidden`` for an agent."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.BOARD_SUBSCRIBE


class QualityLeg(Event):
    leg: str  # caller | agent | a supervisor's or transfer target's leg
    loss_pct: float
    late_pct: float
    jitter_ms: float
    mos: float


class CallQualityNow(Event):
    """A live call's quality; ``mos`` is its worst leg's (1.0 … 4.5)."""

    mos: float
    legs: list[QualityLeg]


def call_quality_now(legs: list[LegQuality]) -> CallQualityNow | None:
    """A worker's quality figures as the dashboard reads them (None before the first)."""
    if not legs:
        return None
    return CallQualityNow(mos=min(leg.mos for leg in legs), legs=[
        QualityLeg(leg=leg.leg, loss_pct=leg.loss_pct, late_pct=leg.late_pct,
                   jitter_ms=leg.jitter_ms, mos=leg.mos) for leg in legs])


class CallQuality(CallQualityNow):
    """Extension (issue 17): about every 2 s of a call, to the agent holding it and the
    supervisors on it."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.CALL_QUALITY
    call_id: str


class BoardMonitor(Event):
    agent_id: str
    mode: str  # listen | whisper | barge


class BoardCall(Event):
    """A live call as ``GET /api/calls`` shows it, with how long it has waited in a queue."""

    call_id: str
    thread_id: str
    state: str
    caller: Caller
    called: str | None
    trunk: str | None
    received_at: str
    worker_id: str
    agent_id: str | None
    metadata: dict[str, JsonValue]
    waiting_sec: float | None  # queued: seconds since the handoff; else null
    queue: str | None = None  # extension: the queue the flow's agent node named
    # extension: the supervisors on the call and their modes
    monitors: list[BoardMonitor] = Field(default_factory=list)
    quality: CallQualityNow | None = None  # extension: its latest call_quality


class BoardAgent(Event):
    agent_id: str
    name: str
    status: AgentStatus
    active_call_id: str | None
    role: AccountRole


class Board(Event):
    """The whole board, sent to subscribers on every change (coalesced)."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.BOARD
    calls: list[BoardCall]
    agents: list[BoardAgent]


class BoardAck(Ok):
    """The acknowledgement of ``board_subscribe``: the board now."""

    calls: list[BoardCall]
    agents: list[BoardAgent]


class MonitorMode(StrEnum):
    """§6 media rules: who hears the supervisor."""

    LISTEN = "listen"  # nobody
    WHISPER = "whisper"  # the agent
    BARGE = "barge"  # caller and agent

    @property
    def leg(self) -> LegRole:
        return LegRole(self.value)


def _a_string(value: Any) -> Any:
    """Before an enum's check: pydantic's enum validator recurses into a deeply nested
    value (a RecursionError, not a ValidationError); anything but a string is refused."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


Mode = Annotated[MonitorMode, BeforeValidator(_a_string)]


class MonitorCall(CallRequest):
    """A supervisor joins a live call; its ``webrtc_offer`` for the call follows."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.MONITOR_CALL
    mode: Mode


class SetMonitorMode(CallRequest):
    """Switch listen/whisper/barge without renegotiating."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.MONITOR_MODE
    mode: Mode


class MonitorStop(CallRequest):
    event: ClassVar[AgentClientEvent] = AgentClientEvent.MONITOR_STOP


class Monitored(Event):
    """Extension (§6 "the agent sees a discreet indicator"): to the agent holding a call,
    whenever a supervisor starts, switches or stops monitoring it; ``mode`` null when no
    supervisor is on the call any more. ``monitors`` counts supervisors on it."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.CALL_MONITORED
    call_id: str
    mode: MonitorMode | None
    monitors: int


E164 = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{6,14}$")]


class TransferTarget(Request):
    """Exactly one of ``agentId``, ``queue``, ``number`` (E.164, cold only)."""

    agent_id: Id | None = None
    queue: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    number: E164 | None = None

    @model_validator(mode="after")
    def _one(self) -> TransferTarget:
        given = [n for n in ("agent_id", "queue", "number") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of agentId, queue, number")
        return self


class TransferCall(CallRequest):
    """The agent holding the call hands it to another agent or queue (§6)."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.TRANSFER_CALL
    to: TransferTarget
    mode: Annotated[TransferMode, BeforeValidator(_a_string)]
    note: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _number_cold(self) -> TransferCall:
        if self.to.number is not None and self.mode is not TransferMode.COLD:
            raise ValueError("a transfer to a number is cold only")
        return self


class TransferJoined(Event):
    """Extension: to the agent who transferred, when a target accepted. In a warm transfer
    its ``hangup`` now ends only its own leg; in a cold one its leg ends once the target's
    audio flows (``call_ended`` reason ``transferred``)."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.TRANSFER_JOINED
    call_id: str
    agent_id: str
    name: str
    mode: TransferMode


class TransferFailed(Event):
    """To the agent who transferred: nobody took the call; it keeps it."""

    event: ClassVar[AgentServerEvent] = AgentServerEvent.TRANSFER_FAILED
    call_id: str
    reason: str


class DeskOptions(Request):
    """Extension: what the Transfer dialog and the wrap-up form offer."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.DESK_OPTIONS


class DeskAgent(Event):
    agent_id: str
    name: str
    status: AgentStatus


class DeskOptionsAck(Ok):
    """``routing.dispositions``, ``routing.queues`` and the other agents connected now."""

    dispositions: list[str]
    queues: list[str]
    agents: list[DeskAgent]


class WrapUp(CallRequest):
    """After (or during) a call it took, the agent's disposition and note (§6): stored with
    the call and sent to alive5 as CRM data (``disposition``, ``agent_note``)."""

    event: ClassVar[AgentClientEvent] = AgentClientEvent.WRAP_UP
    disposition: Annotated[str, Field(min_length=1, max_length=64)]
    note: Annotated[str, Field(max_length=2000)] = ""


REQUESTS: tuple[type[Request], ...] = (SetStatus, AcceptCall, DeclineCall, WebrtcOffer,
                                       WebrtcCandidate, Mute, Hangup, ReturnToBot,
                                       BoardSubscribe, WrapUp, MonitorCall, SetMonitorMode,
                                       MonitorStop, TransferCall, DeskOptions)
EVENTS: tuple[type[Event], ...] = (AgentState, IncomingCall, CallCancelled, ServerCandidate,
                                   CallConnected, Transcript, CallEnded, Board, Monitored,
                                   TransferFailed, TransferJoined, CallQuality)


# -- the edge -------------------------------------------------------------------------------

R = TypeVar("R", bound=Request)


def parse_request(model: type[R], data: Any) -> R:
    """One decoded client → server payload as ``model``, or :class:`WireError`
    (``bad_message``) saying which field is wrong, without echoing the value."""
    if not isinstance(data, dict):
        raise WireError("bad_message", f"the payload must be a JSON object, not {_kind(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise WireError("bad_message", explain(e)) from e
    except RecursionError as e:  # pragma: no cover - pydantic bounds it (a ValidationError)
        raise WireError("too_deep", "nested too deeply") from e


def explain(e: ValidationError) -> str:
    """The first error of ``e`` as ``field: what is wrong`` (and how many others)."""
    errors = e.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0]
    where = ".".join(str(part)[:40] for part in first["loc"]) or "payload"
    text = f"{where}: {first['msg'].removeprefix('Value error, ')}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return text[:MAX_MESSAGE]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__
