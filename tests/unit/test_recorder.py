"""The two-channel recorder (hitl_sip.worker.recorder): ticks paired left/right in order,
nothing before it is armed, every format readable back with both channels, files 0600."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest

from hitl_sip.worker.recorder import FORMATS, StereoRecorder

RATE = 8000


def frame(value: int) -> bytes:
    return np.full(RATE // 50, value, dtype="<i2").tobytes()


def decoded(path: Path) -> np.ndarray:
    """The file decoded as (samples, 2) float in -1..1."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.channels == 2
        to_s16 = av.AudioResampler(format="s16", layout="stereo", rate=stream.rate)
        pcm = b"".join(bytes(out.planes[0])[: out.samples * 4]
                       for f in container.decode(stream) for out in to_s16.resample(f))
    return np.frombuffer(pcm, dtype="<i2").reshape(-1, 2).astype(np.float64) / 32768


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_each_format_keeps_the_caller_left_and_what_it_heard_right(tmp_path: Path,
                                                                   kind: str) -> None:
    async def run() -> StereoRecorder:
        recorder = StereoRecorder(tmp_path / f"call{FORMATS[kind]}", RATE, kind, armed=False)
        recorder.start()
        recorder.left(frame(9999))  # before consent: not kept
        recorder.right(frame(9999))
        recorder.armed = True
        for _ in range(100):  # 2 s: the caller loud, what it heard quiet
            recorder.left(frame(16000))
            recorder.right(frame(-4000))
        await recorder.close()
        return recorder

    recorder = asyncio.run(run())
    assert recorder.frames == 100
    assert oct(recorder.path.stat().st_mode & 0o777) == "0o600"
    audio = decoded(recorder.path)
    middle = audio[len(audio) // 4: 3 * len(audio) // 4]
    assert abs(len(audio) / (48000 if kind == "opus" else RATE) - 2.0) < 0.1
    if kind == "opus":  # lossy, and a constant is all DC: compare the levels only
        assert abs(middle[:, 0]).mean() > abs(middle[:, 1]).mean()
    else:
        assert np.allclose(middle[:, 0], 16000 / 32768, atol=1e-3)
        assert np.allclose(middle[:, 1], -4000 / 32768, atol=1e-3)


def test_a_side_ahead_waits_for_the_other(tmp_path: Path) -> None:
    async def run() -> StereoRecorder:
        recorder = StereoRecorder(tmp_path / "call.wav", RATE)
        for i in range(5):
            recorder.left(frame(i))
        recorder.right(frame(100))
        recorder.drain()
        assert recorder.frames == 1  # one tick has both sides
        for _ in range(4):
            recorder.right(frame(100))
        await recorder.close()
        return recorder

    assert asyncio.run(run()).frames == 5


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one of wav, flac, opus"):
        StereoRecorder(tmp_path / "x.mp3", RATE, "mp3")
