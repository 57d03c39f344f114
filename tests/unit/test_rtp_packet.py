"""RTP and RFC 4733 telephone-event wire formats: exact bytes, round trips, precise errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hitl_sip.media.rtp import (
    DTMF_EVENTS,
    DtmfEvent,
    RtpHeaderExtension,
    RtpPacket,
    dtmf_digit,
    dtmf_event_code,
    payload_bounds,
)

# V=2, M=1, PT=0, seq=0x1234, ts=0xDEADBEEF, ssrc=0x01020304, payload "abc".
SIMPLE = bytes.fromhex("80801234deadbeef01020304") + b"abc"


def test_parse_reads_every_fixed_header_field() -> None:
    packet = RtpPacket.parse(SIMPLE)
    assert packet.payload_type == 0
    assert packet.marker is True
    assert packet.sequence_number == 0x1234
    assert packet.timestamp == 0xDEADBEEF
    assert packet.ssrc == 0x01020304
    assert packet.payload == b"abc"
    assert packet.csrc == []
    assert packet.extension is None
    assert packet.padding_size == 0


def test_serialize_produces_the_exact_wire_bytes() -> None:
    packet = RtpPacket(
        payload_type=0,
        marker=True,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"abc",
    )
    assert packet.serialize() == SIMPLE


def test_round_trip_keeps_csrcs_extension_and_padding() -> None:
    packet = RtpPacket(
        payload_type=101,
        marker=False,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=7,
        payload=b"\x05\x8a\x05\x00",
        csrc=[1, 2, 0xFFFFFFFF],
        extension=RtpHeaderExtension(profile=0xBEDE, data=b"\x10\xaa\x00\x00"),
        padding_size=4,
    )
    data = packet.serialize()
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert data[-1] == 4
    assert RtpPacket.parse(data) == packet


def test_parse_skips_extension_and_strips_padding_from_payload() -> None:
    header = bytes.fromhex("b0080001000000a000000001")  # V=2, P=1, X=1, PT=8
    extension = bytes.fromhex("bede0001") + b"\x01\x02\x03\x04"
    data = header + extension + b"payload" + b"\x00\x00\x03"
    packet = RtpPacket.parse(data)
    assert packet.payload == b"payload"
    assert packet.payload_type == 8
    assert packet.extension == RtpHeaderExtension(0xBEDE, b"\x01\x02\x03\x04")


def test_parse_rejects_a_packet_shorter_than_the_fixed_header() -> None:
    with pytest.raises(ValueError, match=r"less than 12 bytes \(11\)"):
        RtpPacket.parse(SIMPLE[:11])


def test_parse_rejects_a_version_other_than_2() -> None:
    with pytest.raises(ValueError, match="invalid version 1"):
        RtpPacket.parse(bytes([0x40]) + SIMPLE[1:])


def test_parse_rejects_truncated_csrc_list() -> None:
    data = bytes([0x82]) + SIMPLE[1:12] + b"\x00\x00\x00\x01"  # claims 2 CSRCs, has 1
    with pytest.raises(ValueError, match="2 CSRCs need 20 bytes, got 16"):
        RtpPacket.parse(data)


def test_parse_rejects_truncated_header_extension() -> None:
    data = bytes([0x90]) + SIMPLE[1:12] + bytes.fromhex("bede0002") + b"\x00" * 4
    with pytest.raises(ValueError, match="header extension of 2 words needs 24 bytes, got 20"):
        RtpPacket.parse(data)


def test_parse_rejects_zero_padding_length() -> None:
    data = bytes([0xA0]) + SIMPLE[1:12] + b"ab\x00"
    with pytest.raises(ValueError, match="padding length of 0"):
        RtpPacket.parse(data)


def test_parse_rejects_padding_longer_than_the_payload() -> None:
    data = bytes([0xA0]) + SIMPLE[1:12] + b"ab\x09"
    with pytest.raises(ValueError, match="padding length 9 exceeds the 3 bytes"):
        RtpPacket.parse(data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("payload_type", 128, "payload_type 128 does not fit in 7 bits"),
        ("sequence_number", 65536, "sequence_number 65536 does not fit in 16 bits"),
        ("timestamp", -1, "timestamp -1 does not fit in 32 bits"),
        ("ssrc", 1 << 32, "ssrc 4294967296 does not fit in 32 bits"),
    ],
)
def test_serialize_rejects_out_of_range_fields(field: str, value: int, message: str) -> None:
    packet = RtpPacket()
    setattr(packet, field, value)
    with pytest.raises(ValueError, match=message):
        packet.serialize()


def test_serialize_rejects_more_than_15_csrcs() -> None:
    with pytest.raises(ValueError, match="at most 15 CSRCs, got 16"):
        RtpPacket(csrc=list(range(16))).serialize()


def test_serialize_rejects_extension_data_not_in_32_bit_words() -> None:
    packet = RtpPacket(extension=RtpHeaderExtension(profile=1, data=b"\x00\x00\x00"))
    with pytest.raises(ValueError, match="multiple of 4 bytes, got 3"):
        packet.serialize()


def test_dtmf_event_serializes_to_rfc4733_layout() -> None:
    event = DtmfEvent(event=5, end=True, volume=10, duration=1280)
    assert event.serialize() == bytes.fromhex("058a0500")


def test_dtmf_event_parse_reads_end_bit_volume_and_duration() -> None:
    event = DtmfEvent.parse(bytes.fromhex("0b0a00a0"))
    assert event == DtmfEvent(event=11, end=False, volume=10, duration=160)
    assert event.digit == "#"


def test_dtmf_event_parse_ignores_the_reserved_bit() -> None:
    assert DtmfEvent.parse(bytes.fromhex("01ca0140")).volume == 10


def test_dtmf_event_parse_rejects_short_payload() -> None:
    with pytest.raises(ValueError, match="at least 4 bytes, got 3"):
        DtmfEvent.parse(b"\x01\x02\x03")


def test_dtmf_event_serialize_rejects_volume_over_63() -> None:
    with pytest.raises(ValueError, match="volume 64 does not fit in 6 bits"):
        DtmfEvent(event=1, volume=64).serialize()


def test_dtmf_digits_map_to_rfc4733_event_codes() -> None:
    assert DTMF_EVENTS[10] == "*"
    assert DTMF_EVENTS[11] == "#"
    assert dtmf_event_code("0") == 0
    assert dtmf_event_code("*") == 10
    assert dtmf_event_code("d") == 15
    assert [dtmf_digit(code) for code in range(16)] == list(DTMF_EVENTS)


def test_non_dtmf_digits_and_events_are_rejected() -> None:
    with pytest.raises(ValueError, match="not a DTMF digit: 'x'"):
        dtmf_event_code("x")
    with pytest.raises(ValueError, match="not a DTMF digit: '12'"):
        dtmf_event_code("12")
    with pytest.raises(ValueError, match="RTP event 16 is not a DTMF digit"):
        dtmf_digit(16)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_payload_bounds_find_what_the_parser_finds_and_refuse_what_it_refuses(
    data: bytes,
) -> None:
    """The media path's payload finder against the full parser, on any bytes (an RTP
    version's first byte made likely, so CSRCs, extensions and padding are reached)."""
    for packet in (data, bytes([0x80 | (data[0] & 0x3F)]) + data[1:] if data else data):
        start, end = payload_bounds(packet)
        try:
            parsed = RtpPacket.parse(packet).payload
        except ValueError:
            assert start >= end
        else:
            assert (packet[start:end] if start < end else b"") == parsed
