"""G.711 µ-law (PCMU) and A-law (PCMA) codecs over signed 16-bit little-endian mono PCM.

Bit-compatible with ITU-T G.711 as implemented by the classic Sun reference code (and by
CPython's ``audioop``). The tables are built once at import: a 65536-entry encode table
indexed by the sample's unsigned bit pattern and a 256-entry decode table per law, so a
20 ms frame costs two numpy gathers. The media bridge uses the tables directly on a G.711
agent leg (:mod:`hitl_sip.worker.bridge`); tests and the corpus script use the functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["ALAW", "ALAW_DECODE", "ALAW_ENCODE", "BY_NAME", "BY_PT", "ULAW", "ULAW_DECODE",
           "ULAW_ENCODE", "Law", "alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_PCM_DTYPE = np.dtype("<i2")


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    samples = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    value = samples >> 2  # 14-bit range, arithmetic shift like the reference code
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -value, value), 8159) + 33
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, magnitude, side="left")
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return np.asarray((code ^ mask) & 0xFF, dtype=np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    samples = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)
    value = samples >> 3  # 13-bit range
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -value - 1, value)
    segment_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    segment = np.searchsorted(segment_ends, magnitude, side="left")
    clamped = np.minimum(segment, 7)
    shift = np.where(clamped < 2, 1, clamped)
    code = (clamped << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return np.asarray((code ^ mask) & 0xFF, dtype=np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + 0x84) << ((inverted & 0x70) >> 4)
    linear = np.where(inverted & 0x80, 0x84 - magnitude, magnitude - 0x84)
    return linear.astype(_PCM_DTYPE)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    quant = (code & 0x0F) << 4
    magnitude = np.where(
        segment == 0,
        quant + 8,
        (quant + 0x108) << np.maximum(segment - 1, 0),
    )
    linear = np.where(code & 0x80, magnitude, -magnitude)
    return linear.astype(_PCM_DTYPE)


ULAW_ENCODE = _build_ulaw_encode()
ALAW_ENCODE = _build_alaw_encode()
ULAW_DECODE = _build_ulaw_decode()
ALAW_DECODE = _build_alaw_decode()


@dataclass(frozen=True, eq=False)
class Law:
    """One G.711 law as SDP and RTP name it, with its tables."""

    name: str  # the codec's name in lower case ("pcmu", "pcma")
    payload_type: int  # its static RTP payload type (RFC 3551)
    encode: npt.NDArray[np.uint8]  # indexed by the sample's unsigned bit pattern
    decode: npt.NDArray[np.int16]  # indexed by the byte

    def transcoder(self, to: Law) -> npt.NDArray[np.uint8]:
        """The 256-entry table from this law's bytes to ``to``'s."""
        return to.encode[self.decode.view(np.uint16)]


ULAW = Law("pcmu", 0, ULAW_ENCODE, ULAW_DECODE)
ALAW = Law("pcma", 8, ALAW_ENCODE, ALAW_DECODE)
BY_NAME = {law.name: law for law in (ULAW, ALAW)}
BY_PT = {law.payload_type: law for law in (ULAW, ALAW)}


def _pcm_indices(pcm: bytes) -> npt.NDArray[np.uint16]:
    if len(pcm) % 2:
        raise ValueError(
            f"PCM length must be a whole number of 16-bit samples, got {len(pcm)} bytes"
        )
    return np.frombuffer(pcm, dtype="<u2")


def ulaw_encode(pcm: bytes) -> bytes:
    """Encode s16le PCM to µ-law, one byte per sample."""
    return ULAW_ENCODE[_pcm_indices(pcm)].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """Decode µ-law bytes to s16le PCM."""
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """Encode s16le PCM to A-law, one byte per sample."""
    return ALAW_ENCODE[_pcm_indices(pcm)].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """Decode A-law bytes to s16le PCM."""
    return ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()
