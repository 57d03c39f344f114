"""FrameBuffer: bounded, never blocks the clock thread, wakes the loop only when waited on."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hitl_sip.media.buffers import BufferClosed, FrameBuffer, LeadKeeper


async def test_frames_pushed_from_another_thread_reach_a_waiting_consumer() -> None:
    buf = FrameBuffer(asyncio.get_running_loop(), capacity=100)
    frames = [bytes([i]) * 4 for i in range(50)]

    def producer() -> None:
        for f in frames:
            buf.push_nowait(f)

    getter = asyncio.create_task(asyncio.wait_for(_collect(buf, len(frames)), 5))
    await asyncio.sleep(0)
    thread = threading.Thread(target=producer)
    thread.start()
    got = await getter
    thread.join()
    assert got == frames


async def _collect(buf: FrameBuffer, n: int) -> list[bytes]:
    return [await buf.get() for _ in range(n)]


async def test_overrun_drops_the_oldest_frame_and_counts_it() -> None:
    overruns: list[int] = []
    buf = FrameBuffer(asyncio.get_running_loop(), capacity=3, on_overrun=lambda: overruns.append(1))
    for i in range(5):
        buf.push_nowait(bytes([i]))
    assert len(buf) == 3
    assert buf.overruns == 2
    assert len(overruns) == 2
    assert [buf.pop_nowait() for _ in range(3)] == [b"\x02", b"\x03", b"\x04"]
    assert buf.pop_nowait() is None


async def test_put_waits_for_the_consumer_to_drain_below_the_lead() -> None:
    buf = FrameBuffer(asyncio.get_running_loop(), capacity=50)
    for i in range(3):
        await buf.put(bytes([i]), lead=3)
    blocked = asyncio.create_task(buf.put(b"x", lead=3))
    await asyncio.sleep(0.01)
    assert not blocked.done(), "put() must wait while the consumer is 3 frames behind"
    threading.Thread(target=buf.pop_nowait).start()
    await asyncio.wait_for(blocked, 2)
    assert len(buf) == 3


async def test_close_wakes_waiters_with_buffer_closed() -> None:
    buf = FrameBuffer(asyncio.get_running_loop(), capacity=5)
    waiter = asyncio.create_task(buf.get())
    await asyncio.sleep(0)
    threading.Thread(target=buf.close).start()
    with pytest.raises(BufferClosed):
        await asyncio.wait_for(waiter, 2)
    buf.push_nowait(b"late")
    assert len(buf) == 0, "a closed buffer accepts nothing"


async def test_frames_queued_before_close_are_still_delivered() -> None:
    buf = FrameBuffer(asyncio.get_running_loop(), capacity=5)
    buf.push_nowait(b"a")
    buf.close()
    assert await buf.get() == b"a"
    with pytest.raises(BufferClosed):
        await buf.get()


def test_capacity_must_be_positive() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="capacity"):
            FrameBuffer(loop, capacity=0)
    finally:
        loop.close()


# -- LeadKeeper: the agent's audio ahead of the trunk clock ----------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keeper_rig() -> tuple[FrameBuffer, LeadKeeper, FakeClock, list[int]]:
    buffer = FrameBuffer(asyncio.get_running_loop(), 50)
    clock = FakeClock()
    return buffer, LeadKeeper(3, clock=clock), clock, [0]


def push(buffer: FrameBuffer, keeper: LeadKeeper, dropped: list[int]) -> None:
    dropped[0] += keeper.admit(buffer)
    buffer.push_nowait(b"f")


async def test_a_frame_that_stands_for_half_a_second_is_dropped() -> None:
    buffer, keeper, clock, dropped = keeper_rig()
    push(buffer, keeper, dropped)
    push(buffer, keeper, dropped)  # one extra frame: 20 ms of latency from now on
    for _ in range(30):  # then one frame per tick, the extra one never used
        clock.now += 0.02
        assert buffer.pop_nowait() is not None
        push(buffer, keeper, dropped)
    assert dropped[0] == 1 and len(buffer) == 1 and buffer.empties == 0


async def test_a_drop_proved_wrong_doubles_the_cushion_and_a_good_one_relaxes_it() -> None:
    buffer, keeper, clock, dropped = keeper_rig()
    push(buffer, keeper, dropped)
    for _ in range(25):  # a standing frame for 25 pushes: dropped
        push(buffer, keeper, dropped)
        clock.now += 0.02
        buffer.pop_nowait()
    assert dropped[0] == 1 and keeper.standing_limit == 25
    while len(buffer):
        buffer.pop_nowait()
    buffer.pop_nowait()  # the next tick finds nothing: the frame was needed
    clock.now += 0.02
    push(buffer, keeper, dropped)
    assert keeper.standing_limit == 50 and buffer.empties == 1
    for _ in range(60):  # standing again: dropped after 50 this time
        push(buffer, keeper, dropped)
        clock.now += 0.02
        buffer.pop_nowait()
    assert dropped[0] == 2
    clock.now += 2.5  # that drop held for more than 2 s
    push(buffer, keeper, dropped)
    assert keeper.standing_limit == 37


async def test_the_lead_is_bounded_the_newest_kept() -> None:
    buffer, keeper, _, dropped = keeper_rig()
    for i in range(10):
        dropped[0] += keeper.admit(buffer)
        buffer.push_nowait(bytes([i]))
    assert len(buffer) == 3 and dropped[0] == 7
    assert [buffer.pop_nowait() for _ in range(3)] == [b"\x07", b"\x08", b"\x09"]


async def test_a_batched_consumer_is_woken_once_for_wake_at_frames() -> None:
    buf = FrameBuffer(asyncio.get_running_loop(), capacity=50)
    buf.wake_at = 3
    wakes: list[int] = []
    real = buf._wake_threadsafe

    def counted() -> None:
        wakes.append(len(buf))
        real()
    buf._wake_threadsafe = counted  # type: ignore[method-assign]
    for round_ in range(2):
        getter = asyncio.create_task(_collect(buf, 3))
        await asyncio.sleep(0)  # the consumer waits on an empty buffer
        buf.push_nowait(b"a")
        buf.push_nowait(b"b")
        assert len(wakes) == round_, "woken before three frames were there"
        buf.push_nowait(b"c")
        assert await asyncio.wait_for(getter, 2) == [b"a", b"b", b"c"]
        assert wakes == [3] * (round_ + 1), "one wake-up for the three"
    buf.wake_at = 99  # never more than the buffer holds: a full buffer still wakes
    assert buf.wake_at == 50
    buf.wake_at = 0
    assert buf.wake_at == 1
