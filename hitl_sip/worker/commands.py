"""The hub's commands to a call, each matched here once (PROTOCOL.md).

Per command, everything that happens: what the worker does with the call's media (an
agent's WebRTC offer or candidate, an extra leg, a REFER, the agent's peer closed when the
agent leaves or hands the call back) and what the call's session changes
(:class:`~hitl_sip.worker.session.CallSession`: queue timeout, the external engine's words
or handoff, hang-up, the agent joining, leaving, handing back, muting).

Every command becomes tasks spawned in the order the hub sent them, so a command's guard
(``agent_joined`` only while QUEUED, ...) is checked when its turn comes, after the ones
before it have run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hitl_sip.protocol.worker import (
    AgentJoined,
    AgentLeft,
    Handoff,
    Hangup,
    HubCommand,
    Leg,
    Mute,
    QueueTimeout,
    Refer,
    Resume,
    Say,
    WebrtcCandidate,
    WebrtcOffer,
)

if TYPE_CHECKING:
    from hitl_sip.worker.service import CallRuntime, WorkerService


async def _in_turn(change: Callable[[], None]) -> None:
    """A change made at once, run as a task like the others so commands keep their order."""
    change()


def dispatch(worker: WorkerService, call: CallRuntime, command: HubCommand) -> None:
    """Carry out ``command`` for ``call`` (a call the worker has)."""
    spawn, session = worker.spawn, call.session
    match command:
        case WebrtcOffer() | WebrtcCandidate():
            spawn(worker.webrtc(call, command))
        case Leg():
            spawn(worker.change_leg(call, command))
        case Refer():
            spawn(worker.refer(call, command))
        case Hangup():
            if command.by in ("agent", "system"):
                call.hangup_by = command.by
            if command.outcome is not None:
                call.end_outcome = command.outcome
            if session is not None:
                spawn(session.hang_up())  # after the prompts queued
            elif worker.stack is not None:  # no media yet: no session to ask
                spawn(worker.stack.hangup(call.call_id))
        case AgentLeft():
            if call.peer is not None:
                spawn(worker.close_peer(call))
            if session is not None:
                spawn(session.agent_left())
        case Resume():
            if call.peer is not None:
                spawn(worker.close_peer(call))
            if session is not None:
                spawn(session.resume())
        # the rest only with a session (the call's media is up)
        case QueueTimeout() if session is not None:
            spawn(session.queue_timeout())
        case Say() if session is not None:
            spawn(session.say(command.text))
        case Handoff() if session is not None:
            spawn(session.hand_off(command.reason))
        case AgentJoined() if session is not None:
            spawn(_in_turn(session.agent_joined))
        case Mute() if session is not None:
            muted = command.muted
            spawn(_in_turn(lambda: session.mute(muted)))
