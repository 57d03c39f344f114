"""The hub's view of one live call: a typed record, built from what its worker (or the
owning hub) reported and changed only through the hub's handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from hitl_sip.protocol.worker import Caller, CallState, CallSummary, LegQuality, TranscriptLine

if TYPE_CHECKING:
    from hitl_sip.hub.summary import BriefingSlot


@dataclass
class Handoff:
    queue: str | None = None
    skill: str | None = None
    reason: str = ""
    answers: dict[str, str] = field(default_factory=dict)  # the flow's store_as answers


@dataclass
class CallRecord:
    call_id: str
    thread_id: str
    worker_id: str
    caller: Caller = field(default_factory=Caller)
    called: str | None = None
    trunk: str | None = None
    received_at: str = ""
    metadata: dict[str, JsonValue] = field(default_factory=dict)
    codec: str | None = None
    state: CallState = CallState.BOT
    hub: str | None = None  # the owning hub, when it is another one (cluster)
    agent_id: str | None = None
    offered_to: set[str] = field(default_factory=set)  # agents it rang (they may read it)
    queued_at: float | None = None  # time.monotonic() of the handoff while queued
    bot_transcript: list[TranscriptLine] = field(default_factory=list)
    # what was said while agents held it (a transfer's target gets it with the call)
    human_transcript: list[TranscriptLine] = field(default_factory=list)
    quality: list[LegQuality] = field(default_factory=list)  # its worker's latest figures
    handoff: Handoff | None = None
    # the agent briefing, from the handoff on (hitl_sip.hub.summary)
    summary: BriefingSlot | None = field(default=None, repr=False)

    @classmethod
    def from_summary(cls, summary: CallSummary, worker_id: str, *,
                     hub: str | None = None) -> CallRecord:
        record = cls(call_id=summary.call_id, thread_id=summary.thread_id, worker_id=worker_id,
                     hub=hub)
        record.update(summary)
        return record

    def update(self, summary: CallSummary) -> None:
        """What the worker says of the call now (a hello after a reconnect)."""
        self.thread_id = summary.thread_id
        self.caller = summary.caller
        self.called = summary.called
        self.trunk = summary.trunk
        self.received_at = summary.received_at
        self.metadata = dict(summary.metadata)
        self.codec = summary.codec

    def public(self) -> dict[str, Any]:
        """The call as ``GET /api/calls`` shows it (PROTOCOL.md §3)."""
        return {
            "callId": self.call_id,
            "threadId": self.thread_id,
            "state": self.state.value,
            "caller": self.caller.wire(),
            "called": self.called,
            "workerId": self.worker_id,
            "agentId": self.agent_id,
            "metadata": self.metadata,
            "trunk": self.trunk,
            "receivedAt": self.received_at,
        }
