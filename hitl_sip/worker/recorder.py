"""Two-channel call recording: the caller on the left, what the caller hears on the right.

The trunk leg's port (hitl_sip.worker.pjsip.PcmPort) hands the recorder both sides of every
20 ms tick of pjmedia's clock: the frame it received from the caller (:meth:`left`) and the
frame it sent (:meth:`right`: the bot's prompts, hold audio, the agent, a barging
supervisor — whatever the caller heard, mixed). Both come from the same tick of the same
clock thread, so the channels are aligned to the frame across the bot and human phases and
hold, by construction; a tick with nothing to send is recorded as the silence the caller
got. The clock thread only appends to two deques; a loop task pairs them and encodes.

Formats (``worker.record_format``): ``wav`` (PCM, the call's rate), ``flac`` (lossless,
PyAV) or ``opus`` (Ogg Opus at 48 kHz, PyAV: about a tenth of the WAV). Files are 0600 in
``<data_dir>/recordings`` (swept by ``retention_days``). With a flow's ``record: consent``
the recorder starts disarmed and the session arms it when the consent notice has played;
``record: off`` opens none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import wave
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np

from hitl_sip.files import private_file

log = logging.getLogger(__name__)

FORMATS = {"wav": ".wav", "flac": ".flac", "opus": ".ogg"}
BACKLOG = 500  # frames per side waiting for the writer (10 s) before the oldest go


class _Sink(Protocol):
    def write(self, stereo: np.ndarray) -> None: ...  # (samples, 2) int16
    def close(self) -> None: ...


class _WavSink:
    def __init__(self, path: Path, rate: int) -> None:
        self._w = wave.open(str(path), "wb")  # noqa: SIM115 - closed by close()
        self._w.setnchannels(2)
        self._w.setsampwidth(2)
        self._w.setframerate(rate)

    def write(self, stereo: np.ndarray) -> None:
        self._w.writeframesraw(stereo.astype("<i2").tobytes())

    def close(self) -> None:
        self._w.close()


class _AvSink:
    """FLAC or Ogg Opus through PyAV (libav's encoders)."""

    def __init__(self, path: Path, rate: int, kind: str) -> None:
        self._container: Any = av.open(str(path), "w", format="flac" if kind == "flac" else "ogg")
        codec_rate = rate if kind == "flac" else 48000
        self._stream: Any = self._container.add_stream("flac" if kind == "flac" else "libopus",
                                                       rate=codec_rate)
        self._stream.layout = "stereo"
        self._rate = rate
        self._resampler = av.AudioResampler(format=self._stream.format.name
                                            if kind == "flac" else "s16",
                                            layout="stereo", rate=codec_rate)
        self._pts = 0

    def write(self, stereo: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo, dtype=np.int16)
                                           .reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = self._rate
        frame.pts = self._pts
        self._pts += stereo.shape[0]
        for out in self._resampler.resample(frame):
            for packet in self._stream.encode(out):
                self._container.mux(packet)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for out in self._resampler.resample(None):
                for packet in self._stream.encode(out):
                    self._container.mux(packet)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()


class StereoRecorder:
    def __init__(self, path: Path, rate: int, kind: str = "wav", *, armed: bool = True) -> None:
        if kind not in FORMATS:
            raise ValueError(f"record format {kind!r}: one of {', '.join(FORMATS)}")
        self.path = private_file(path)
        self.rate = rate
        self.kind = kind
        self.armed = armed  # set by the loop (consent given); read by the clock thread
        self.frames = 0  # stereo frames written
        self.dropped = 0  # frames the writer fell too far behind for
        self._left: deque[bytes] = deque(maxlen=BACKLOG)
        self._right: deque[bytes] = deque(maxlen=BACKLOG)
        self._sink: _Sink = (_WavSink(self.path, rate) if kind == "wav"
                             else _AvSink(self.path, rate, kind))
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- the clock thread -------------------------------------------------------------------

    def left(self, frame: bytes) -> None:
        """What the caller sent this tick."""
        if self.armed:
            self._left.append(frame)

    def right(self, frame: bytes) -> None:
        """What the caller heard this tick."""
        if self.armed:
            self._right.append(frame)

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            self.drain()

    def drain(self) -> None:
        """Write every tick whose two sides are both in."""
        n = min(len(self._left), len(self._right))
        if not n:
            return
        left = np.frombuffer(b"".join(self._left.popleft() for _ in range(n)), dtype="<i2")
        right = np.frombuffer(b"".join(self._right.popleft() for _ in range(n)), dtype="<i2")
        size = min(len(left), len(right))
        self._sink.write(np.column_stack((left[:size], right[:size])))
        self.frames += n

    async def close(self) -> None:
        """Write what is left and close the file (once)."""
        if self._closed:
            return
        self._closed = True
        self.armed = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            self.drain()
        finally:
            await asyncio.to_thread(self._sink.close)
        log.debug("recording closed: %d frames", self.frames)
