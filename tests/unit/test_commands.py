"""The hub's commands to a call, dispatched once (hitl_sip.worker.commands): what the
worker does with the media and what the session changes, in the order the hub sent them."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, cast

from hitl_sip.protocol.worker import HubCommand, parse_command
from hitl_sip.worker.commands import dispatch
from hitl_sip.worker.service import CallRuntime, WorkerService


class Recorder:
    """A fake worker, session and stack: every call, in the order the tasks ran."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.stack = self

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.append(task)
        return task

    def __getattr__(self, name: str) -> Any:
        async def record(*args: Any) -> None:
            self.done.append(name)
        if name in ("webrtc", "change_leg", "refer", "close_peer", "hangup", "queue_timeout",
                    "say", "hand_off", "hang_up", "agent_left", "resume"):
            return record
        if name in ("agent_joined", "mute"):
            return lambda *args: self.done.append(name)
        raise AttributeError(name)


def command(fields: dict[str, Any]) -> HubCommand:
    return parse_command({"callId": "c1", **fields})


async def run(rec: Recorder, call: CallRuntime, *commands: dict[str, Any]) -> list[str]:
    for fields in commands:
        dispatch(cast(WorkerService, rec), call, command(fields))
    await asyncio.gather(*rec.tasks)
    return rec.done


def new_call(rec: Recorder | None) -> CallRuntime:
    call = CallRuntime("c1", "127.0.0.1:5060", "udp", {}, "now")
    call.session = cast(Any, rec)
    return call


async def test_every_command_reaches_its_handler_once_in_the_hub_s_order() -> None:
    rec = Recorder()
    call = new_call(rec)
    call.peer = cast(Any, object())
    done = await run(rec, call,
                     {"type": "queue_timeout"}, {"type": "say", "text": "hi"},
                     {"type": "handoff", "reason": "engine"},
                     {"type": "agent_joined", "agentId": "a1"},
                     {"type": "mute", "muted": True}, {"type": "agent_left", "agentId": "a1"},
                     {"type": "resume"}, {"type": "refer", "number": "+14155550100"},
                     {"type": "hangup", "by": "agent"})
    assert done == ["queue_timeout", "say", "hand_off", "agent_joined", "mute",
                    "close_peer", "agent_left", "close_peer", "resume", "refer", "hang_up"]
    assert call.hangup_by == "agent"


async def test_without_media_a_hangup_goes_to_the_stack_and_session_commands_are_dropped(
) -> None:
    rec = Recorder()
    call = new_call(None)
    done = await run(rec, call, {"type": "queue_timeout"},
                     {"type": "agent_joined", "agentId": "a1"},
                     {"type": "hangup", "by": "system", "outcome": "transferred"})
    assert done == ["hangup"]
    assert (call.hangup_by, call.end_outcome) == ("system", "transferred")
