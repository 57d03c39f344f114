"""pcap files SIPp can play: byte-level framing, round trips, and RFC 4733 event sequences."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from hitl_sip.media.g711 import ulaw_decode
from hitl_sip.media.rtp import DtmfEvent, RtpPacket
from hitl_sip.media.wav import read_wav
from hitl_sip.testing.analysis import best_correlation
from hitl_sip.testing.pcap import (
    dtmf_event_packets,
    read_udp_pcap,
    rtp_stream_packets,
    write_udp_pcap,
)

CORPUS = Path(__file__).resolve().parents[2] / "rtp"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _first_frame(path: Path) -> bytes:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, 24 + 8)
    return data[40 : 40 + length]


def test_round_trip_preserves_payloads_and_microsecond_timestamps(tmp_path: Path) -> None:
    packets = [(0.0, b"first"), (0.020001, b""), (1_700_000_000.5, bytes(range(256)))]
    path = tmp_path / "udp.pcap"
    write_udp_pcap(path, packets)
    read = read_udp_pcap(path)
    assert [payload for _, payload in read] == [payload for _, payload in packets]
    assert [ts for ts, _ in read] == pytest.approx([ts for ts, _ in packets], abs=1e-6)


def test_file_is_classic_pcap_with_ethernet_linktype(tmp_path: Path) -> None:
    path = tmp_path / "udp.pcap"
    write_udp_pcap(path, [(0.0, b"x")])
    magic, major, minor, _zone, _sigfigs, snaplen, linktype = struct.unpack_from(
        "<IHHiIII", path.read_bytes()
    )
    assert (magic, major, minor, snaplen, linktype) == (0xA1B2C3D4, 2, 4, 65535, 1)


def test_ipv4_header_has_valid_checksum_and_lengths(tmp_path: Path) -> None:
    path = tmp_path / "udp.pcap"
    write_udp_pcap(path, [(0.0, b"hello rtp")], src=("10.1.2.3", 4000), dst=("10.9.8.7", 5000))
    frame = _first_frame(path)
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45
    assert _checksum(ip) == 0xFFFF
    total_length, protocol = struct.unpack_from("!H", ip, 2)[0], ip[9]
    assert (total_length, protocol) == (20 + 8 + 9, 17)
    assert ip[12:16] == bytes([10, 1, 2, 3])
    assert ip[16:20] == bytes([10, 9, 8, 7])
    src_port, dst_port, udp_length = struct.unpack_from("!HHH", frame, 34)
    assert (src_port, dst_port, udp_length) == (4000, 5000, 17)


def test_udp_checksum_verifies_over_the_pseudo_header(tmp_path: Path) -> None:
    path = tmp_path / "udp.pcap"
    write_udp_pcap(path, [(0.0, b"odd-length")])
    frame = _first_frame(path)
    ip, udp = frame[14:34], frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    assert struct.unpack_from("!H", udp, 6)[0] != 0
    assert _checksum(pseudo + udp) == 0xFFFF


def test_reader_accepts_linux_cooked_big_endian_nanosecond_captures(tmp_path: Path) -> None:
    ip_udp = _first_frame(_written(tmp_path, b"cooked"))[14:]
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 8, 0x0800)
    frame = sll + ip_udp
    header = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 113)
    record = struct.pack(">IIII", 12, 500_000_000, len(frame), len(frame))
    path = tmp_path / "sll.pcap"
    path.write_bytes(header + record + frame)
    assert read_udp_pcap(path) == [(12.5, b"cooked")]


def test_reader_skips_non_udp_packets(tmp_path: Path) -> None:
    frame = bytearray(_first_frame(_written(tmp_path, b"tcp?")))
    frame[14 + 9] = 6  # protocol: TCP
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    record = struct.pack("<IIII", 0, 0, len(frame), len(frame))
    path = tmp_path / "tcp.pcap"
    path.write_bytes(header + record + bytes(frame))
    assert read_udp_pcap(path) == []


def test_reader_rejects_files_that_are_not_pcap(tmp_path: Path) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(28))  # pcapng section header block
    with pytest.raises(ValueError, match="not a classic pcap file"):
        read_udp_pcap(path)


def test_reader_rejects_truncated_records(tmp_path: Path) -> None:
    path = _written(tmp_path, b"payload")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="claims 49 bytes, only 46 remain"):
        read_udp_pcap(path)


def test_writer_rejects_ports_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="UDP port 70000 is out of range"):
        write_udp_pcap(tmp_path / "x.pcap", [(0.0, b"")], dst=("127.0.0.1", 70000))


def test_rtp_stream_advances_sequence_timestamp_and_time_per_frame() -> None:
    frames = [bytes([i]) * 160 for i in range(3)]
    packets = rtp_stream_packets(
        frames, 8, ssrc=0xABCDEF01, start_seq=65534, start_ts=0xFFFFFF00, start_time=5.0
    )
    parsed = [RtpPacket.parse(data) for _, data in packets]
    assert [time for time, _ in packets] == pytest.approx([5.0, 5.02, 5.04])
    assert [p.sequence_number for p in parsed] == [65534, 65535, 0]
    assert [p.timestamp for p in parsed] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert [p.marker for p in parsed] == [True, False, False]
    assert {p.payload_type for p in parsed} == {8}
    assert {p.ssrc for p in parsed} == {0xABCDEF01}
    assert [p.payload for p in parsed] == frames


def _dtmf(marker: bool) -> list[tuple[float, RtpPacket, DtmfEvent]]:
    packets = dtmf_event_packets(
        "#", 101, marker=marker, start_seq=100, timestamp=8000, ssrc=1, start_time=1.0
    )
    result = []
    for time, data in packets:
        packet = RtpPacket.parse(data)
        result.append((time, packet, DtmfEvent.parse(packet.payload)))
    return result


def test_dtmf_sequence_grows_duration_then_repeats_the_end_packet_three_times() -> None:
    sequence = _dtmf(marker=True)
    events = [event for _, _, event in sequence]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 960, 1120, 1280, 1280, 1280]
    assert [e.end for e in events] == [False] * 7 + [True] * 3
    assert {e.event for e in events} == {11}
    assert {e.volume for e in events} == {10}


def test_dtmf_sequence_shares_one_timestamp_with_consecutive_sequence_numbers() -> None:
    sequence = _dtmf(marker=True)
    assert {packet.timestamp for _, packet, _ in sequence} == {8000}
    assert [packet.sequence_number for _, packet, _ in sequence] == list(range(100, 110))
    assert [time for time, _, _ in sequence] == pytest.approx([1.0 + 0.02 * i for i in range(10)])


def test_dtmf_marker_bit_is_set_only_on_the_first_packet_when_requested() -> None:
    assert [packet.marker for _, packet, _ in _dtmf(marker=True)] == [True] + [False] * 9
    assert not any(packet.marker for _, packet, _ in _dtmf(marker=False))


def test_dtmf_rejects_an_unknown_digit() -> None:
    with pytest.raises(ValueError, match="not a DTMF digit: 'E'"):
        dtmf_event_packets("E", 101, marker=True, start_seq=0, timestamp=0, ssrc=0)


def test_committed_dtmf_captures_carry_the_named_digit() -> None:
    for name, digit, marker in [
        ("5_pt101", "5", True),
        ("hash_pt101", "#", True),
        ("0_pt96_nomarker", "0", False),
    ]:
        packets = [
            RtpPacket.parse(data)
            for _, data in read_udp_pcap(CORPUS / "pcap" / f"dtmf_{name}.pcap")
        ]
        assert {DtmfEvent.parse(p.payload).digit for p in packets} == {digit}
        assert packets[0].marker is marker


def test_committed_pcmu_capture_plays_the_8k_caller_utterance() -> None:
    packets = [
        RtpPacket.parse(data) for _, data in read_udp_pcap(CORPUS / "pcap" / "agent_bill_pcmu.pcap")
    ]
    assert {p.payload_type for p in packets} == {0}
    assert {len(p.payload) for p in packets} == {160}
    audio = ulaw_decode(b"".join(p.payload for p in packets))
    rate, reference = read_wav(CORPUS / "caller" / "agent_bill_8k.wav")
    score, offset = best_correlation(audio, reference, rate)
    assert score > 0.95
    assert offset == pytest.approx(0.0, abs=0.001)
    assert np.frombuffer(audio, dtype="<i2").size >= len(reference) // 2


def _written(tmp_path: Path, payload: bytes) -> Path:
    path = tmp_path / f"written-{len(payload)}.pcap"
    write_udp_pcap(path, [(0.0, payload)])
    return path
