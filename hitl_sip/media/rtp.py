"""RTP packets (RFC 3550) and telephone-event payloads (RFC 4733) as pure wire-format classes.

``RtpPacket.parse`` accepts any version-2 packet: it honours padding, keeps CSRCs, and
keeps a header extension opaque (profile + data) so ``serialize`` round-trips it.
``DtmfEvent`` is the 4-byte named-event payload; ``DTMF_EVENTS[event]`` is the digit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = [
    "DTMF_EVENTS",
    "RTP_HEADER_LENGTH",
    "RTP_VERSION",
    "DtmfEvent",
    "RtpHeaderExtension",
    "RtpPacket",
    "dtmf_digit",
    "dtmf_event_code",
]

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12

#: RFC 4733 §3.2 event codes 0–15, indexed by code.
DTMF_EVENTS = "0123456789*#ABCD"

_HEADER = struct.Struct("!BBHII")
_DTMF = struct.Struct("!BBH")


def dtmf_event_code(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit: one of ``DTMF_EVENTS`` (case-insensitive)."""
    if len(digit) != 1 or digit.upper() not in DTMF_EVENTS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return DTMF_EVENTS.index(digit.upper())


def dtmf_digit(event: int) -> str:
    """The DTMF digit of an RFC 4733 event code 0–15."""
    if not 0 <= event < len(DTMF_EVENTS):
        raise ValueError(f"RTP event {event} is not a DTMF digit (expected 0-15)")
    return DTMF_EVENTS[event]


def _check_range(name: str, value: int, bits: int) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} {value} does not fit in {bits} bits")


@dataclass(frozen=True)
class RtpHeaderExtension:
    """An RTP header extension kept opaque: the 16-bit profile and its 32-bit-word data."""

    profile: int
    data: bytes = b""


def payload_bounds(data: bytes) -> tuple[int, int]:
    """Where an RTP packet's payload lies, ``(start, end)``: after its CSRCs and header
    extension, before its padding — without parsing the rest (the media hot path). A
    packet :meth:`RtpPacket.parse` refuses, or one without payload, gives start >= end."""
    size = len(data)
    if size < RTP_HEADER_LENGTH or data[0] >> 6 != RTP_VERSION:
        return 0, 0
    first = data[0]
    start = RTP_HEADER_LENGTH + 4 * (first & 0x0F)
    if first & 0x10:
        if size < start + 4:
            return 0, 0
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = size
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or padding > size - start:
            return 0, 0
        end -= padding
    return start, end


@dataclass
class RtpPacket:
    """One RTP packet; ``padding_size`` counts the padding bytes including the count byte."""

    payload_type: int = 0
    marker: bool = False
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension: RtpHeaderExtension | None = None
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < RTP_HEADER_LENGTH:
            raise ValueError(
                f"RTP packet length is less than {RTP_HEADER_LENGTH} bytes ({len(data)})"
            )
        first, second, sequence_number, timestamp, ssrc = _HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise ValueError(f"RTP packet has invalid version {version} (expected 2)")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F

        pos = RTP_HEADER_LENGTH
        csrc_end = pos + 4 * csrc_count
        if len(data) < csrc_end:
            raise ValueError(
                f"RTP packet truncated: {csrc_count} CSRCs need {csrc_end} bytes, got {len(data)}"
            )
        csrc = list(struct.unpack_from(f"!{csrc_count}I", data, pos))
        pos = csrc_end

        extension: RtpHeaderExtension | None = None
        if has_extension:
            if len(data) < pos + 4:
                raise ValueError(
                    f"RTP packet truncated: header extension needs {pos + 4} bytes, got {len(data)}"
                )
            profile, words = struct.unpack_from("!HH", data, pos)
            ext_end = pos + 4 + 4 * words
            if len(data) < ext_end:
                raise ValueError(
                    f"RTP packet truncated: header extension of {words} words needs "
                    f"{ext_end} bytes, got {len(data)}"
                )
            extension = RtpHeaderExtension(profile=profile, data=bytes(data[pos + 4 : ext_end]))
            pos = ext_end

        end = len(data)
        padding_size = 0
        if has_padding:
            padding_size = data[-1]
            if padding_size == 0:
                raise ValueError("RTP packet has the padding bit set but a padding length of 0")
            if padding_size > end - pos:
                raise ValueError(
                    f"RTP packet padding length {padding_size} exceeds the "
                    f"{end - pos} bytes after the header"
                )
            end -= padding_size

        return cls(
            payload_type=second & 0x7F,
            marker=bool(second & 0x80),
            sequence_number=sequence_number,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            csrc=csrc,
            extension=extension,
            padding_size=padding_size,
        )

    def serialize(self) -> bytes:
        _check_range("payload_type", self.payload_type, 7)
        _check_range("sequence_number", self.sequence_number, 16)
        _check_range("timestamp", self.timestamp, 32)
        _check_range("ssrc", self.ssrc, 32)
        if len(self.csrc) > 15:
            raise ValueError(f"RTP packet can carry at most 15 CSRCs, got {len(self.csrc)}")
        for value in self.csrc:
            _check_range("csrc", value, 32)
        _check_range("padding_size", self.padding_size, 8)

        first = (RTP_VERSION << 6) | len(self.csrc)
        if self.padding_size:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc),
            struct.pack(f"!{len(self.csrc)}I", *self.csrc),
        ]
        if self.extension is not None:
            _check_range("extension profile", self.extension.profile, 16)
            if len(self.extension.data) % 4:
                raise ValueError(
                    "RTP header extension data must be a multiple of 4 bytes, "
                    f"got {len(self.extension.data)}"
                )
            parts.append(struct.pack("!HH", self.extension.profile, len(self.extension.data) // 4))
            parts.append(self.extension.data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(parts)


@dataclass
class DtmfEvent:
    """An RFC 4733 named telephone event: code, end flag, volume (-dBm0) and duration (ticks)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @property
    def digit(self) -> str:
        return dtmf_digit(self.event)

    @classmethod
    def parse(cls, data: bytes) -> DtmfEvent:
        if len(data) < _DTMF.size:
            raise ValueError(f"telephone-event payload must be at least 4 bytes, got {len(data)}")
        event, flags, duration = _DTMF.unpack_from(data)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        _check_range("event", self.event, 8)
        _check_range("volume", self.volume, 6)
        _check_range("duration", self.duration, 16)
        return _DTMF.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)
