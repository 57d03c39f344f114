"""What the hub tells its listeners (routing, supervision, ``/bot``, the board) about calls.

Every call event is the validated model it arrived as — a worker message of this hub's
workers (hitl_sip.protocol.worker), one mirrored from another hub or that hub's
``accepted`` (hitl_sip.protocol.cluster) — or a :class:`Notice` the hub itself added to a
call's thread. A listener dispatches on the model's class; no wire dict reaches it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar

from hitl_sip.protocol.cluster import Accepted
from hitl_sip.protocol.worker import (
    CallConnected,
    CallEndedMsg,
    CallerSaid,
    CallStarted,
    DtmfMsg,
    HandoffRequested,
    Interim,
    LegMedia,
    PeerLost,
    Quality,
    Role,
    SessionStateMsg,
    TurnMsg,
    Whispered,
    WorkerMessageType,
)


@dataclass(frozen=True, slots=True)
class Notice:
    """A line the hub itself added to a call's thread (a transfer's notice): shown to the
    call's agents like a turn; ``seq`` 0, for it is none of the worker's turns."""

    type: ClassVar[WorkerMessageType] = WorkerMessageType.TURN

    call_id: str
    thread_id: str
    role: Role
    text: str
    at: str
    seq: int = 0


#: every event a listener may get; each names its call (``call_id``)
CallEvent = (CallStarted | CallEndedMsg | SessionStateMsg | HandoffRequested | TurnMsg
             | Interim | Whispered | CallerSaid | DtmfMsg | CallConnected | PeerLost
             | LegMedia | Quality | Accepted | Notice)
Listener = Callable[[CallEvent], Awaitable[None]]
