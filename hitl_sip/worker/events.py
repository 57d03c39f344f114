"""Events the pjsua2 thread hands to the worker's asyncio loop (plain data, no pj objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hitl_sip.media.buffers import FrameBuffer


@dataclass(frozen=True)
class CallOffered:
    call_id: str
    source: str
    transport: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class CallRejected:
    status: int
    outcome: str


@dataclass(frozen=True)
class CallMediaReady:
    call_id: str
    codec: str
    inbound: FrameBuffer = field(repr=False)
    outbound: FrameBuffer = field(repr=False)


@dataclass(frozen=True)
class CallHold:
    call_id: str
    held: bool


@dataclass(frozen=True)
class CallDtmf:
    call_id: str
    digit: str
    method: str


@dataclass(frozen=True)
class CallEnded:
    call_id: str
    outcome: str
    status: int
    reason: str
    by: str
    answered: bool
    duration: float


@dataclass(frozen=True)
class RegistrationChanged:
    account: str
    active: bool
    status: int
    reason: str


WorkerEvent = (
    CallOffered | CallRejected | CallMediaReady | CallHold | CallDtmf | CallEnded
    | RegistrationChanged
)
