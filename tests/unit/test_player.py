"""The prompt player on its own: prompts play in order and report how they ended, a loop
repeats until stopped, and stopping drops what was queued at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hitl_sip.media.buffers import FrameBuffer
from hitl_sip.worker.player import Prompt, PromptPlayer

FRAME = 320


class Rig:
    def __init__(self) -> None:
        self.outbound = FrameBuffer(asyncio.get_running_loop(), 50)
        self.active: list[bool] = []
        self.sent: list[bytes] = []
        self.player = PromptPlayer(self.outbound, frame_bytes=FRAME, lead_frames=3,
                                   on_source_active=self.active.append)

    async def clock(self) -> None:
        """The media clock: one frame every 5 ms (faster than real time)."""
        while True:
            await asyncio.sleep(0.005)
            frame = self.outbound.pop_nowait()
            if frame is not None:
                self.sent.append(frame)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    tasks = [asyncio.create_task(r.player.run()), asyncio.create_task(r.clock())]
    yield r
    r.outbound.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_prompts_play_in_order_to_the_end(rig: Rig) -> None:
    first, second = Prompt(b"\x01" * FRAME * 4, True), Prompt(b"\x02" * FRAME * 2, False)
    rig.player.queue(first)
    rig.player.queue(second)
    async with asyncio.timeout(5):
        assert await first.done is True
        assert await second.done is True
    assert rig.sent == [b"\x01" * FRAME] * 4 + [b"\x02" * FRAME] * 2
    assert rig.active == [True, False, True, False]
    assert rig.player.current is None and rig.player.next_prompt() is None


async def test_stopping_drops_the_queued_frames_and_reports_the_cut(rig: Rig) -> None:
    long = Prompt(b"\x03" * FRAME * 200, True)
    rig.player.queue(long)
    async with asyncio.timeout(5):
        while len(rig.sent) < 2:  # noqa: ASYNC110 - waiting on the fake clock's progress
            await asyncio.sleep(0.005)
    assert rig.player.stop_all() is True
    assert len(rig.outbound) == 0, "nothing left to send after the stop"
    assert await long.done is False
    assert rig.player.stop_all() is False, "nothing left to stop"


async def test_a_loop_repeats_until_stopped_and_bargeable_stops_spare_it(rig: Rig) -> None:
    hold = Prompt(b"\x04" * FRAME, False, loop=True)
    rig.player.queue(hold)
    async with asyncio.timeout(5):
        while len(rig.sent) < 5:  # noqa: ASYNC110 - waiting on the fake clock's progress
            await asyncio.sleep(0.005)
    assert rig.player.looping() and rig.player.next_prompt() is None  # loops excluded
    rig.player.stop_bargeable()
    assert not hold.done.done(), "hold audio does not allow barge-in"
    rig.player.stop_loops()
    assert await hold.done is False
    assert not rig.player.looping()


async def test_a_loop_ends_with_the_call_when_the_buffer_closes() -> None:
    """The call ends (its outbound buffer closes) while hold audio loops: the player
    returns instead of being told forever that a closed buffer has room — which spun the
    worker's event loop at 100 % and left it deaf to everything, its hub gone included."""
    rig = Rig()
    twice = asyncio.Event()
    played = rig.outbound.pop_nowait

    def pop() -> bytes | None:
        frame = played()
        if len(rig.sent) >= 5:
            twice.set()
        return frame
    rig.outbound.pop_nowait = pop  # type: ignore[method-assign]
    player = asyncio.create_task(rig.player.run())
    clock = asyncio.create_task(rig.clock())
    rig.player.queue(Prompt(b"\x04" * FRAME * 3, False, loop=True))
    try:
        async with asyncio.timeout(5):
            await twice.wait()  # the loop has gone round twice
            rig.outbound.close()
            await player  # returns (BufferClosed), the loop free
        assert rig.sent[:6] == [b"\x04" * FRAME] * 6
    finally:
        clock.cancel()
        player.cancel()
        await asyncio.gather(player, clock, return_exceptions=True)


async def test_a_loop_of_nothing_ends_at_once(rig: Rig) -> None:
    empty = Prompt(b"", False, loop=True)
    rig.player.queue(empty)
    async with asyncio.timeout(5):
        assert await empty.done is True
    assert rig.player.current is None
