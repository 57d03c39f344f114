"""Bounded frame buffers crossing the one thread boundary of a media worker.

pjmedia's clock thread calls our ``AudioMediaPort`` callbacks every 20 ms; the asyncio loop
produces and consumes PCM. A :class:`FrameBuffer` is a single-producer/single-consumer FIFO
whose thread side never blocks and never touches an asyncio object directly: it only wakes a
waiting coroutine through ``loop.call_soon_threadsafe``, and only when one is waiting.

Overruns (a full buffer: the consumer is late) drop the *oldest* frame so latency stays
bounded; underruns (empty while a producer is attached) are counted by the caller of
:meth:`FrameBuffer.pop_nowait`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class BufferClosed(Exception):
    """The buffer was closed: the call ended."""


class FrameBuffer:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        capacity: int,
        *,
        on_overrun: Callable[[], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._loop = loop
        self._capacity = capacity
        self._frames: deque[bytes] = deque()
        self._on_overrun = on_overrun
        self._waiter: asyncio.Future[None] | None = None
        self._want_frames = False
        self._want_space_at: int | None = None
        self._closed = False
        self.overruns = 0
        self.empties = 0  # pops that found nothing (the consumer's clock came too early)
        self._wake_at = 1

    @property
    def wake_at(self) -> int:
        """A consumer waiting in :meth:`get` is woken once this many frames are queued
        (then takes them one by one without waiting): a consumer that need not see each
        frame at once is woken once for several."""
        return self._wake_at

    @wake_at.setter
    def wake_at(self, frames: int) -> None:
        self._wake_at = max(1, min(frames, self._capacity))

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    # -- either side, never blocks -------------------------------------------------------

    def push_nowait(self, frame: bytes) -> None:
        """Append a frame; when full, drop the oldest. Safe from any thread."""
        if self._closed:
            return
        if len(self._frames) >= self._capacity:
            try:  # noqa: SIM105 - media hot path: no context manager per frame
                self._frames.popleft()
            except IndexError:
                pass
            self.overruns += 1
            if self._on_overrun is not None:
                self._on_overrun()
        self._frames.append(frame)
        if self._want_frames and len(self._frames) >= self._wake_at:
            self._want_frames = False
            self._wake_threadsafe()

    def pop_nowait(self) -> bytes | None:
        """Take the oldest frame or None when empty. Safe from any thread."""
        try:
            frame = self._frames.popleft()
        except IndexError:
            self.empties += 1
            return None
        want = self._want_space_at
        if want is not None and len(self._frames) <= want:
            self._want_space_at = None
            self._wake_threadsafe()
        return frame

    def clear(self) -> None:
        """Drop every queued frame (barge-in) and wake a producer waiting for space."""
        self._frames.clear()
        if self._want_space_at is not None:
            self._want_space_at = None
            self._wake_threadsafe()

    def close(self) -> None:
        """Mark the buffer closed and wake any waiter (it raises BufferClosed)."""
        self._closed = True
        self._wake_threadsafe()

    def _wake_threadsafe(self) -> None:
        try:  # noqa: SIM105 - media hot path: no context manager per frame
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # loop closed during shutdown: nobody is waiting any more
            pass

    # -- loop side ------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def get(self) -> bytes:
        """Wait for the next frame (loop side consumer)."""
        while True:
            self._want_frames = True
            frame = self.pop_nowait()
            if frame is not None:
                self._want_frames = False
                return frame
            if self._closed:
                raise BufferClosed
            await self._wait()

    async def wait_level(self, level: int) -> None:
        """Wait until at most ``level`` frames are queued (loop side producer pacing);
        BufferClosed once the buffer is closed — a closed buffer takes no frame, so a
        producer told "there is room" would never wait again (a looping prompt spun the
        worker's loop at 100 % that way, call over, for good)."""
        while True:
            if self._closed:
                raise BufferClosed
            self._want_space_at = level
            if len(self._frames) <= level:
                self._want_space_at = None
                return
            await self._wait()

    async def put(self, frame: bytes, *, lead: int = 3) -> None:
        """Queue a frame, keeping at most ``lead`` frames ahead of the consumer."""
        await self.wait_level(max(0, lead - 1))
        if self._closed:
            raise BufferClosed
        self.push_nowait(frame)


class LeadKeeper:
    """How far a live source (the agent's audio) may run ahead of the consumer's clock (the
    trunk's 20 ms ticks), applied before each push into the consumer's :class:`FrameBuffer`.

    * at most ``max_lead`` frames wait: older ones are dropped (the clock is behind);
    * a frame still waiting when the next arrives is 20 ms of latency: when that stays so
      for ``standing`` pushes (500 ms at first: no jitter used the cushion), one frame is
      dropped to win it back;
    * a drop followed within ``check_seconds`` by an empty tick was a mistake (the source
      jitters across the tick): from then on the cushion is kept twice as long, up to
      ``standing_max``; a drop that held relaxes it by a quarter again.

    Without the last rule a source whose frames arrive close to the tick's phase loses a
    frame every ~500 ms and underruns soon after (bench/bridge_capacity.py: 1.1 % of the
    agent's ticks empty, as many frames dropped).
    """

    def __init__(self, max_lead: int, standing: int = 25, standing_max: int = 500,
                 check_seconds: float = 2.0, clock: Callable[[], float] | None = None) -> None:
        self.max_lead = max_lead
        self.base = standing
        self.standing_limit = standing
        self.standing_max = standing_max
        self.check_seconds = check_seconds
        self._clock = clock or time.monotonic
        self._standing = 0
        self._check: tuple[float, int] | None = None  # (when, the buffer's empties then)

    def admit(self, buffer: FrameBuffer) -> int:
        """Make room for one more frame in ``buffer``; returns the frames dropped."""
        dropped = 0
        waiting = len(buffer)
        while waiting >= self.max_lead:
            buffer.pop_nowait()  # the clock is behind: keep the newest audio
            dropped += 1
            waiting -= 1
        self._review(buffer.empties)
        self._standing = self._standing + 1 if waiting else 0
        if self._standing >= self.standing_limit:
            buffer.pop_nowait()
            dropped += 1
            self._standing = 0
            self._check = (self._clock(), buffer.empties)
        return dropped

    def _review(self, empties: int) -> None:
        check = self._check
        if check is None:
            return
        dropped_at, empties_then = check
        if empties > empties_then:  # a tick after the drop found nothing: jitter
            self.standing_limit = min(self.standing_limit * 2, self.standing_max)
            self._check = None
        elif self._clock() - dropped_at > self.check_seconds:
            self.standing_limit = max(self.base, self.standing_limit * 3 // 4)
            self._check = None
