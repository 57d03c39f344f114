"""The ``/bot`` Socket.IO contract (PROTOCOL.md §2): an external logic engine drives calls.

Engine → server: :class:`Say`, :class:`Handoff`, :class:`Hangup`, parsed with
:func:`~hitl_sip.protocol.agent.parse_request` and acknowledged like the agent's requests
(:func:`~hitl_sip.protocol.agent.ok` / :func:`~hitl_sip.protocol.agent.refuse`).
Server → engine: :class:`CallStarted`, :class:`CallerSaid`, :class:`Dtmf`,
:class:`CallEnded`. The base models, wire form and parser are those of
:mod:`hitl_sip.protocol.agent`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, JsonValue, field_validator

from hitl_sip.protocol.agent import CallRequest, Event, Request
from hitl_sip.protocol.worker import Caller

MAX_SAY = 2000
MAX_REASON = 2000  # accepted; the first 200 characters reach the flow


class BotClientEvent(StrEnum):
    """The Socket.IO events an engine sends (each a :data:`REQUESTS` model)."""

    SAY = "say"
    HANDOFF = "handoff"
    HANGUP = "hangup"


class BotServerEvent(StrEnum):
    """The Socket.IO events the server sends the engines (each an :data:`EVENTS` model)."""

    CALL_STARTED = "call_started"
    CALLER_SAID = "caller_said"
    DTMF = "dtmf"
    CALL_ENDED = "call_ended"


class Say(CallRequest):
    """The bot speaks ``text`` (the call must be with the bot)."""

    event: ClassVar[BotClientEvent] = BotClientEvent.SAY
    text: Annotated[str, Field(min_length=1, max_length=MAX_SAY)]

    @field_validator("text")
    @classmethod
    def _not_blank(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("must not be blank")
        return text


class Handoff(CallRequest):
    """The call goes to the agent queue (the call must be with the bot)."""

    event: ClassVar[BotClientEvent] = BotClientEvent.HANDOFF
    reason: Annotated[str, Field(max_length=MAX_REASON)] | None = None
    context: JsonValue = None  # the engine's own; accepted, not used by the hub


class Hangup(CallRequest):
    event: ClassVar[BotClientEvent] = BotClientEvent.HANGUP


class CallStarted(Event):
    event: ClassVar[BotServerEvent] = BotServerEvent.CALL_STARTED
    call_id: str
    thread_id: str
    caller: Caller
    called: str | None
    metadata: dict[str, JsonValue]


class CallerSaid(Event):
    event: ClassVar[BotServerEvent] = BotServerEvent.CALLER_SAID
    call_id: str
    text: str
    final: bool
    at: str


class Dtmf(Event):
    event: ClassVar[BotServerEvent] = BotServerEvent.DTMF
    call_id: str
    digits: str


class CallEnded(Event):
    """``reason`` is the call's outcome as its worker reported it (``completed``, …)."""

    event: ClassVar[BotServerEvent] = BotServerEvent.CALL_ENDED
    call_id: str
    reason: str


REQUESTS: tuple[type[Request], ...] = (Say, Handoff, Hangup)
EVENTS: tuple[type[Event], ...] = (CallStarted, CallerSaid, Dtmf, CallEnded)
