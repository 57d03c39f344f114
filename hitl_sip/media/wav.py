"""WAV files in and out as mono s16le PCM, sample-rate conversion, and fixed-size framing.

``read_wav`` parses RIFF/WAVE itself so that unsupported files fail with a precise
``ValueError`` (float or compressed formats, odd sample widths, missing chunks); PCM of
8/16/24/32 bits with any channel count is converted to mono 16-bit. ``resample`` is a
polyphase windowed-sinc (Kaiser) converter for any pair of integer rates.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["frames", "read_wav", "resample", "write_wav"]

StrPath = str | os.PathLike[str]

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_FORMAT_NAMES = {0x0002: "MS ADPCM", 0x0003: "IEEE float", 0x0006: "A-law", 0x0007: "µ-law"}
# The first two bytes of the KSDATAFORMAT_SUBTYPE_PCM GUID are the format tag.
_PCM_SUBFORMAT_TAIL = bytes.fromhex("000000001000800000aa00389b71")

# Resampler design: zero crossings of the sinc on each side, Kaiser beta, and the
# passband edge as a fraction of the lower Nyquist frequency.
_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
_ROLLOFF = 0.94


def _to_int32(raw: bytes, width: int) -> npt.NDArray[np.int32]:
    """Decode little-endian PCM samples of ``width`` bytes, scaled to the 16-bit range."""
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.int32)
    if width == 3:
        triplets = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = triplets[:, 0] | (triplets[:, 1] << 8) | (triplets[:, 2] << 16)
        value = np.where(value & 0x800000, value - 0x1000000, value)
        return np.asarray(value >> 8, dtype=np.int32)
    return np.asarray(np.frombuffer(raw, dtype="<i4") >> 16, dtype=np.int32)


def read_wav(path: StrPath) -> tuple[int, bytes]:
    """Read a PCM WAV file as ``(sample_rate, mono s16le PCM)``, averaging the channels."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{os.fspath(path)}: not a RIFF/WAVE file")

    fmt: bytes | None = None
    samples: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            samples = body  # a truncated final chunk is tolerated, as most readers do
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise ValueError(f"{os.fspath(path)}: WAV file has no 'fmt ' chunk before its data")
    if samples is None:
        raise ValueError(f"{os.fspath(path)}: WAV file has no 'data' chunk")
    if len(fmt) < 16:
        raise ValueError(f"{os.fspath(path)}: WAV 'fmt ' chunk is {len(fmt)} bytes, need 16")

    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        if len(fmt) < 40:
            raise ValueError(f"{os.fspath(path)}: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk too short")
        (tag,) = struct.unpack_from("<H", fmt, 24)
        if fmt[26:40] != _PCM_SUBFORMAT_TAIL:
            tag = -1
    if tag != _WAVE_FORMAT_PCM:
        name = _FORMAT_NAMES.get(tag, "unknown")
        raise ValueError(
            f"{os.fspath(path)}: WAV format {tag} ({name}) is not supported; only integer PCM is"
        )
    if bits not in (8, 16, 24, 32):
        raise ValueError(f"{os.fspath(path)}: {bits}-bit PCM is not supported (8/16/24/32 are)")
    if channels < 1:
        raise ValueError(f"{os.fspath(path)}: WAV file declares {channels} channels")
    if rate < 1:
        raise ValueError(f"{os.fspath(path)}: WAV file declares a sample rate of {rate}")
    width = bits // 8
    if block_align != width * channels:
        raise ValueError(
            f"{os.fspath(path)}: block align {block_align} does not match "
            f"{channels} channel(s) of {bits}-bit samples"
        )

    usable = len(samples) - len(samples) % block_align
    pcm = _to_int32(samples[:usable], width).reshape(-1, channels)
    mono = np.round(pcm.mean(axis=1)).astype(np.int32) if channels > 1 else pcm[:, 0]
    return rate, np.clip(mono, -32768, 32767).astype("<i2").tobytes()


def write_wav(path: StrPath, rate: int, pcm: bytes) -> None:
    """Write mono s16le PCM as a canonical 44-byte-header PCM WAV file."""
    if rate < 1:
        raise ValueError(f"sample rate must be positive, got {rate}")
    if len(pcm) % 2:
        raise ValueError(f"PCM length must be a whole number of 16-bit samples, got {len(pcm)}")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    with open(path, "wb") as f:
        f.write(header + pcm)


@lru_cache(maxsize=16)
def _filter_bank(up: int, down: int) -> tuple[npt.NDArray[np.float64], int]:
    """Per-output-phase FIR taps for a ``up/down`` rate change, and the half width."""
    cutoff = _ROLLOFF * min(1.0, up / down)  # relative to the input Nyquist frequency
    half = math.ceil(_ZERO_CROSSINGS / cutoff)
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    # Output phase p sits (p * down / up) mod 1 input samples after its base input sample.
    fraction = (np.arange(up, dtype=np.int64) * down % up) / up
    distance = fraction[:, None] - offsets[None, :]
    support = half + 1  # |distance| < support for every tap
    ratio = np.clip(distance / support, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    taps = cutoff * np.sinc(cutoff * distance) * window
    taps /= taps.sum(axis=1, keepdims=True)  # unity gain at DC for every phase
    return taps, half


#: output samples per numpy call in :func:`resample`
_BLOCK = 2048


def load_pcm(path: StrPath, rate: int) -> bytes:
    """A WAV file's audio as mono s16le PCM at ``rate``, read and resampled once per file
    version (path, size and modification time) and then served from memory.

    A prompt file is played on every call, and reading and resampling it takes ~0.1 s of
    CPU: done on a worker's event loop for each call, that stalled every other call's media
    for as long."""
    st = os.stat(path)
    return _load_pcm(os.fspath(path), st.st_size, st.st_mtime_ns, rate)


@lru_cache(maxsize=64)
def _load_pcm(path: str, _size: int, _mtime_ns: int, rate: int) -> bytes:
    source_rate, pcm = read_wav(path)
    return pcm if source_rate == rate else resample(pcm, source_rate, rate)


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Convert mono s16le PCM between integer sample rates with a windowed-sinc filter.

    Downsampling low-passes below the new Nyquist frequency, so nothing aliases; the
    output has ``ceil(n * dst_rate / src_rate)`` samples and the same time origin.
    """
    if src_rate < 1 or dst_rate < 1:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if len(pcm) % 2:
        raise ValueError(f"PCM length must be a whole number of 16-bit samples, got {len(pcm)}")
    if src_rate == dst_rate or not pcm:
        return bytes(pcm)
    gcd = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // gcd, src_rate // gcd
    taps, half = _filter_bank(up, down)

    source = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    count = len(source)
    out_count = -(-count * up // down)
    padded = np.concatenate([np.zeros(half), source, np.zeros(half + 1)])
    out = np.empty(out_count, dtype=np.float64)
    window = np.arange(2 * half + 1)
    for phase in range(min(up, out_count)):
        # in blocks: numpy keeps the interpreter lock through one call, and a whole prompt
        # in one gather (16 -> 8 kHz: 0.15 s for 7 s of audio) stalls every other thread
        for first in range(phase, out_count, up * _BLOCK):
            indices = np.arange(first, min(out_count, first + up * _BLOCK), up)
            base = indices * down // up  # input sample at or before each output instant
            gathered = padded[base[:, None] + window[None, :]]
            out[indices] = gathered @ taps[phase]
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


def frames(pcm: bytes, frame_bytes: int) -> Iterator[bytes]:
    """Split PCM into ``frame_bytes`` chunks, padding the last one with silence (zeros)."""
    if frame_bytes < 1:
        raise ValueError(f"frame size must be positive, got {frame_bytes}")
    for start in range(0, len(pcm), frame_bytes):
        chunk = pcm[start : start + frame_bytes]
        if len(chunk) < frame_bytes:
            chunk += bytes(frame_bytes - len(chunk))
        yield bytes(chunk)
