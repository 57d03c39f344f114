"""Audio crosses to the speech process in 80 ms batches, in order, flushed at phase changes."""

from __future__ import annotations

import asyncio
from typing import Any

from hitl_sip.speech.stt.process import BATCH_SECONDS, ProcessStt, _RemoteStream

RATE = 8000
FRAME = 320  # 20 ms at 8 kHz


class Recorder(ProcessStt):
    """The parent side only: what would go down the pipe."""

    def __init__(self) -> None:
        super().__init__(pool_size=1)
        self.sent: list[Any] = []

    def _send(self, message: Any) -> None:
        self.sent.append(message)


def frame(n: int) -> bytes:
    return bytes([n]) * FRAME


async def test_frames_go_four_at_a_time_in_order() -> None:
    engine = Recorder()
    stream = _RemoteStream(engine, 7, RATE, None, asyncio.get_running_loop())  # type: ignore[arg-type]
    per_batch = round(BATCH_SECONDS / 0.02)
    for n in range(per_batch * 2 + 1):
        stream.push_frame(frame(n))
    audio = [m[1] for m in engine.sent if m[0] == "audio"]
    assert len(audio) == 2  # the odd frame waits for its batch
    assert b"".join(pcm for batch in audio for _, pcm in batch) == b"".join(
        frame(n) for n in range(per_batch * 2))
    assert all([sid for sid, _ in batch] == [7] for batch in audio)


async def test_a_full_batch_takes_every_stream_s_pending_audio_along() -> None:
    """Two legs of a call (and other calls): one message for all of them, not one each."""
    engine = Recorder()
    loop = asyncio.get_running_loop()
    caller, agent, idle = (_RemoteStream(engine, n, RATE, None, loop)  # type: ignore[arg-type]
                           for n in (1, 2, 3))
    engine._streams.update({1: caller, 2: agent, 3: idle})
    per_batch = round(BATCH_SECONDS / 0.02)
    for n in range(per_batch):  # the agent's frames come a little after the caller's
        caller.push_frame(frame(n))
        if n < per_batch - 1:
            agent.push_frame(frame(100 + n))
    assert engine.sent == [("audio", [
        (1, b"".join(frame(n) for n in range(per_batch))),
        (2, b"".join(frame(100 + n) for n in range(per_batch - 1)))])]
    agent.push_frame(frame(200))  # starts its next batch: nothing is sent yet
    assert len(engine.sent) == 1


async def test_a_flush_and_the_end_send_what_is_pending_first() -> None:
    engine = Recorder()
    loop = asyncio.get_running_loop()
    stream = _RemoteStream(engine, 1, RATE, None, loop)  # type: ignore[arg-type]
    stream.push_frame(frame(1))
    flushing = loop.create_task(stream.flush())
    await asyncio.sleep(0)
    assert [m[0] for m in engine.sent] == ["audio", "flush"]
    assert engine.sent[0][1] == [(1, frame(1))]
    stream._on_message(("flushed", 1))
    await flushing
    stream.push_frame(frame(2))
    stream.end_input()
    assert [m[0] for m in engine.sent[2:]] == ["audio", "end"]
    assert engine.sent[2][1] == [(1, frame(2))]
    stream.push_frame(frame(3))  # after the end: nothing more goes
    assert len(engine.sent) == 4


async def test_closing_drops_what_is_pending() -> None:
    engine = Recorder()
    stream = _RemoteStream(engine, 1, RATE, None, asyncio.get_running_loop())  # type: ignore[arg-type]
    stream.push_frame(frame(1))
    await stream.aclose()
    assert [m[0] for m in engine.sent] == ["close"]


def test_a_stream_is_served_while_the_child_preloads(monkeypatch: Any) -> None:
    """The child's preload (seconds of decoders and detectors at a worker's start) runs
    beside its message loop: a call that opens, speaks nothing and ends meanwhile gets its
    ``done`` at once, not after the preload (it held the first calls' ends back)."""
    import multiprocessing  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from hitl_sip.speech.stt import process  # noqa: PLC0415
    from hitl_sip.speech.stt.pocketsphinx_engine import PocketsphinxStt  # noqa: PLC0415

    release = threading.Event()
    started = threading.Event()

    def slow_preload(self: PocketsphinxStt, sample_rate: int, count: int = 1) -> None:
        started.set()
        release.wait(30)

    monkeypatch.setattr(PocketsphinxStt, "preload", slow_preload)
    parent, child = multiprocessing.Pipe()
    server = threading.Thread(target=asyncio.run, args=(process._serve(child, 1),),
                              daemon=True)
    server.start()
    try:
        parent.send(("preload", RATE, 1))
        assert started.wait(10)
        parent.send(("open", 1, RATE))
        parent.send(("end", 1))
        assert parent.poll(20)
        assert parent.recv()[:2] == ("done", 1)
        assert not release.is_set()  # the preload is still running
    finally:
        release.set()
        parent.close()
        server.join(20)
    assert not server.is_alive()


def test_close_lets_the_speech_process_exit_by_itself() -> None:
    """close() asks the child to stop and waits for it: before, closing our end of the pipe
    was no EOF for the child while our reader thread sat in recv() on it, and every
    worker's stop waited out the 2 s join and killed the child."""
    engine = ProcessStt(pool_size=1)

    async def one_stream() -> None:
        stream = engine.stream(RATE)
        stream.push_frame(frame(0))
        stream.end_input()
        async for _ in stream:
            pass

    asyncio.run(one_stream())
    proc = engine._proc
    assert proc is not None and proc.is_alive()
    engine.close()
    assert proc.exitcode == 0  # ended on its own, not killed (-9)
