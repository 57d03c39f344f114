"""The call's PCM port on pjmedia's clock thread (hitl_sip/worker/pjsip.py, PcmPort): what
the caller hears and what the recording's right channel gets, with pjmedia's stream fed
by the port and while the call's relay carries the agent's frames itself (the port's
transmit cut: the caller's tick takes those frames instead)."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pjsua2 as pj

from hitl_sip.media.buffers import FrameBuffer
from hitl_sip.worker.metrics import WorkerMetrics
from hitl_sip.worker.pjsip import PcmPort, select_vector_reader
from hitl_sip.worker.recorder import StereoRecorder

SIZE = 320  # 20 ms at 8 kHz, s16le


def frame_of(data: bytes) -> pj.MediaFrame:
    frame = pj.MediaFrame()
    frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
    frame.buf = pj.ByteVector(data)
    frame.size = len(data)
    return frame


def test_the_caller_s_tick_takes_what_the_caller_hears_while_the_relay_carries_it(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        port = PcmPort(SIZE, select_vector_reader(), WorkerMetrics(), None)
        inbound, outbound = FrameBuffer(loop, 10), FrameBuffer(loop, 10)
        port.bind(inbound, outbound)
        recorder = StereoRecorder(tmp_path / "call.wav", 8000)
        port.recorder = recorder
        caller = [bytes([i]) * SIZE for i in range(1, 5)]
        agent = [bytes([0x40 + i]) * SIZE for i in range(1, 5)]
        # pjmedia's stream fed by the port: each tick, the caller's frame in, the agent's out
        outbound.push_nowait(agent[0])
        port.onFrameReceived(frame_of(caller[0]))
        asked = pj.MediaFrame()
        port.onFrameRequested(asked)
        assert bytes(asked.buf) == agent[0] and asked.size == SIZE
        # the relay carries the agent's frames: the port sends pjmedia silence (a tick
        # before the cut lands) and the caller's tick takes the frame the caller hears
        port.tx_via_relay = True
        outbound.push_nowait(agent[1])
        port.onFrameRequested(asked)
        assert bytes(asked.buf) == bytes(SIZE)
        port.onFrameReceived(frame_of(caller[1]))
        assert outbound.pop_nowait() is None  # taken by the caller's tick
        port.onFrameReceived(frame_of(caller[2]))  # nothing came: silence, recorded
        # handed back: the stream is fed by the port again
        port.tx_via_relay = False
        outbound.push_nowait(agent[3])
        port.onFrameReceived(frame_of(caller[3]))
        port.onFrameRequested(asked)
        assert bytes(asked.buf) == agent[3]
        assert [inbound.pop_nowait() for _ in range(4)] == caller
        port.unbind()
        assert not port.tx_via_relay
        await recorder.close()
        assert recorder.frames == 4
        with wave.open(str(tmp_path / "call.wav")) as wav:
            stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
        def side(frames: list[bytes]) -> np.ndarray:
            return np.frombuffer(b"".join(frames), "<i2")
        assert np.array_equal(stereo[:, 0], side(caller))
        assert np.array_equal(stereo[:, 1], side([agent[0], agent[1], bytes(SIZE), agent[3]]))

    asyncio.run(scenario())
