"""The bot leg's prompt player: what the caller hears while no agent talks.

Prompts (TTS or WAV PCM at the call's rate) play one after another, each paced into the
outbound :class:`~hitl_sip.media.buffers.FrameBuffer` ``lead_frames`` ahead of the media
clock; a loop prompt (hold audio) repeats until it is stopped. Stopping is at a 20 ms frame
boundary: a stopped prompt's ``done`` resolves ``False`` and the frames it had queued are
dropped, so the port sends silence (or the agent) from the next frame. ``done`` resolves
``True`` when a prompt played to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from hitl_sip.media.buffers import BufferClosed, FrameBuffer
from hitl_sip.media.wav import frames


@dataclass
class Prompt:
    pcm: bytes
    barge_in: bool
    loop: bool = False
    done: asyncio.Future[bool] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())

    def stop(self) -> bool:
        """Stop it (if it still plays or waits); whether it did."""
        if self.done.done():
            return False
        self.done.set_result(False)
        return True


class PromptPlayer:
    def __init__(self, outbound: FrameBuffer, *, frame_bytes: int, lead_frames: int,
                 on_source_active: Callable[[bool], None],
                 on_frame: Callable[[], None] = lambda: None) -> None:
        self.outbound = outbound
        self.frame_bytes = frame_bytes
        self.lead_frames = lead_frames
        self.on_source_active = on_source_active
        self.on_frame = on_frame  # every frame queued (the latency benchmark's hook)
        self.current: Prompt | None = None
        self.pending: list[Prompt] = []
        self._queue: asyncio.Queue[Prompt] = asyncio.Queue()

    # -- what plays -----------------------------------------------------------------------

    def queue(self, prompt: Prompt) -> None:
        self.pending.append(prompt)
        self._queue.put_nowait(prompt)

    def all(self) -> list[Prompt]:
        return list(self.pending) + ([self.current] if self.current else [])

    def next_prompt(self) -> Prompt | None:
        """The prompt playing, else the first one queued (hold loops excluded)."""
        for prompt in ([self.current] if self.current else []) + list(self.pending):
            if not prompt.done.done() and not prompt.loop:
                return prompt
        return None

    def looping(self) -> bool:
        return any(p.loop and not p.done.done() for p in self.all())

    async def wait_done(self) -> None:
        """Until every prompt queued now (hold loops excluded) has finished or stopped."""
        waiting = [p.done for p in self.all() if not p.loop]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    # -- stopping -------------------------------------------------------------------------

    def stop_all(self) -> bool:
        """Stop everything at the next frame; whether something was playing or queued."""
        stopped = False
        for prompt in self.all():
            stopped = prompt.stop() or stopped
        if stopped:
            self.outbound.clear()
        return stopped

    def stop_bargeable(self) -> None:
        """Barge-in: stop every prompt that allows it, dropping what is queued."""
        for prompt in self.all():
            if prompt.barge_in:
                prompt.stop()
        self.outbound.clear()

    def stop_loops(self) -> None:
        for prompt in self.all():
            if prompt.loop:
                prompt.stop()
        if self.current is not None and self.current.loop:
            self.outbound.clear()

    def close(self) -> None:
        for prompt in self.all():
            prompt.stop()

    # -- the player task ------------------------------------------------------------------

    async def run(self) -> None:
        """Play queued prompts until the outbound buffer closes."""
        lead = self.lead_frames
        try:
            while True:
                prompt = await self._queue.get()
                if prompt in self.pending:
                    self.pending.remove(prompt)
                if prompt.done.done():
                    continue
                if not prompt.pcm:  # nothing to play (a loop of nothing would never wait)
                    prompt.done.set_result(True)
                    continue
                self.current = prompt
                self.on_source_active(True)
                try:
                    while not prompt.done.done():
                        for frame in frames(prompt.pcm, self.frame_bytes):
                            await self.outbound.wait_level(lead - 1)
                            if prompt.done.done():  # cut while waiting: not one more frame
                                break
                            self.outbound.push_nowait(frame)
                            self.on_frame()
                        if not prompt.loop:
                            break
                    if not prompt.done.done():
                        await self.outbound.wait_level(0)
                        prompt.done.set_result(True)
                finally:
                    self.current = None
                    self.on_source_active(False)
        except BufferClosed:
            return
