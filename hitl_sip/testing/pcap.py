"""Classic libpcap files of UDP/IPv4 datagrams, and the RTP packet sequences put in them.

``write_udp_pcap`` writes Ethernet-framed (linktype 1) IPv4/UDP packets with valid IP and
UDP checksums — the form SIPp's ``play_pcap_audio`` reads. ``read_udp_pcap`` reads back
Ethernet (optionally 802.1Q-tagged), Linux cooked (SLL), and raw-IP captures, either byte
order, micro- or nanosecond timestamps, and returns ``(timestamp, udp_payload)`` pairs.
``rtp_stream_packets`` and ``dtmf_event_packets`` build deterministic RTP streams.
"""

from __future__ import annotations

import ipaddress
import math
import os
import struct
from collections.abc import Iterable, Sequence

from hitl_sip.media.rtp import DtmfEvent, RtpPacket, dtmf_event_code

__all__ = [
    "LINKTYPE_ETHERNET",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_RAW",
    "dtmf_event_packets",
    "read_udp_pcap",
    "rtp_stream_packets",
    "write_udp_pcap",
]

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
_LINKTYPE_IPV4 = 228

_MAGIC_MICROS = 0xA1B2C3D4
_MAGIC_NANOS = 0xA1B23C4D
_SNAPLEN = 65535
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = 0x8100
_IPPROTO_UDP = 17
# Locally administered MAC addresses: obviously synthetic in a capture viewer.
_SRC_MAC = bytes.fromhex("020000000001")
_DST_MAC = bytes.fromhex("020000000002")
_MAX_UDP_PAYLOAD = 65535 - 20 - 8

Address = tuple[str, int]
StrPath = str | os.PathLike[str]


def _internet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4_udp_packet(payload: bytes, src: Address, dst: Address, ident: int) -> bytes:
    if len(payload) > _MAX_UDP_PAYLOAD:
        raise ValueError(f"UDP payload of {len(payload)} bytes does not fit in one IPv4 packet")
    src_ip = ipaddress.IPv4Address(src[0]).packed
    dst_ip = ipaddress.IPv4Address(dst[0]).packed
    for port in (src[1], dst[1]):
        if not 0 < port < 65536:
            raise ValueError(f"UDP port {port} is out of range 1-65535")
    udp_length = 8 + len(payload)
    pseudo = src_ip + dst_ip + struct.pack("!BBH", 0, _IPPROTO_UDP, udp_length)
    udp_header = struct.pack("!HHHH", src[1], dst[1], udp_length, 0)
    udp_checksum = _internet_checksum(pseudo + udp_header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", src[1], dst[1], udp_length, udp_checksum) + payload

    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, IHL 5 words
        0,  # DSCP/ECN
        20 + udp_length,
        ident & 0xFFFF,
        0x4000,  # don't fragment
        64,  # TTL
        _IPPROTO_UDP,
        0,
        src_ip,
        dst_ip,
    )
    ip_checksum = _internet_checksum(ip_header)
    return ip_header[:10] + struct.pack("!H", ip_checksum) + ip_header[12:] + udp


def write_udp_pcap(
    path: StrPath,
    packets: Iterable[tuple[float, bytes]],
    src: Address = ("127.0.0.1", 6000),
    dst: Address = ("127.0.0.1", 6002),
) -> None:
    """Write ``(timestamp_seconds, udp_payload)`` pairs as an Ethernet/IPv4/UDP pcap file."""
    records = [struct.pack("<IHHiIII", _MAGIC_MICROS, 2, 4, 0, 0, _SNAPLEN, LINKTYPE_ETHERNET)]
    for index, (timestamp, payload) in enumerate(packets):
        if timestamp < 0 or not math.isfinite(timestamp):
            raise ValueError(f"packet {index} has an invalid timestamp {timestamp!r}")
        micros = round(timestamp * 1_000_000)
        seconds, micros = divmod(micros, 1_000_000)
        frame = (
            _DST_MAC
            + _SRC_MAC
            + struct.pack("!H", _ETHERTYPE_IPV4)
            + _ipv4_udp_packet(payload, src, dst, index)
        )
        records.append(struct.pack("<IIII", seconds, micros, len(frame), len(frame)))
        records.append(frame)
    with open(path, "wb") as f:
        f.write(b"".join(records))


def _udp_payload(packet: bytes, ethertype: int) -> bytes | None:
    """The UDP payload of an IPv4/IPv6 packet, or None when it is not (whole) UDP."""
    if ethertype == _ETHERTYPE_IPV4:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return None
        header_length = (packet[0] & 0x0F) * 4
        total_length, fragment = struct.unpack_from("!H2xH", packet, 2)
        if packet[9] != _IPPROTO_UDP or fragment & 0x3FFF:
            return None  # not UDP, or a fragment we cannot reassemble
        udp = packet[header_length:total_length]
    elif ethertype == _ETHERTYPE_IPV6:
        if len(packet) < 40 or packet[0] >> 4 != 6 or packet[6] != _IPPROTO_UDP:
            return None
        (payload_length,) = struct.unpack_from("!H", packet, 4)
        udp = packet[40 : 40 + payload_length]
    else:
        return None
    if len(udp) < 8:
        raise ValueError(f"truncated UDP header ({len(udp)} bytes)")
    (udp_length,) = struct.unpack_from("!H", udp, 4)
    if not 8 <= udp_length <= len(udp):
        raise ValueError(f"UDP length {udp_length} does not fit the {len(udp)}-byte datagram")
    return bytes(udp[8:udp_length])


def _link_payload(frame: bytes, linktype: int) -> tuple[int, bytes]:
    """Split a link-layer frame into (ethertype, network-layer packet)."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return 0, b""
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        offset = 14
        while ethertype == _ETHERTYPE_VLAN and len(frame) >= offset + 4:
            (ethertype,) = struct.unpack_from("!H", frame, offset + 2)
            offset += 4
        return ethertype, frame[offset:]
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            return 0, b""
        (ethertype,) = struct.unpack_from("!H", frame, 14)
        return ethertype, frame[16:]
    # Raw IP: the version nibble says which.
    if not frame:
        return 0, b""
    return (_ETHERTYPE_IPV6 if frame[0] >> 4 == 6 else _ETHERTYPE_IPV4), frame


def read_udp_pcap(path: StrPath) -> list[tuple[float, bytes]]:
    """Read the UDP payloads of a classic pcap file as ``(timestamp_seconds, payload)`` pairs.

    Non-UDP packets and IP fragments are skipped; a damaged file raises ``ValueError``.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError(f"pcap file too short for a global header ({len(data)} bytes)")
    for endian in ("<", ">"):
        (magic,) = struct.unpack_from(f"{endian}I", data)
        if magic in (_MAGIC_MICROS, _MAGIC_NANOS):
            break
    else:
        raise ValueError(f"not a classic pcap file (magic 0x{data[:4].hex()})")
    divisor = 1_000_000 if magic == _MAGIC_MICROS else 1_000_000_000
    (linktype,) = struct.unpack_from(f"{endian}I", data, 20)
    linktype &= 0x0FFFFFFF  # the top bits may carry FCS information
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW, _LINKTYPE_IPV4):
        raise ValueError(f"unsupported pcap linktype {linktype}")

    record = struct.Struct(f"{endian}IIII")
    result: list[tuple[float, bytes]] = []
    pos = 24
    while pos < len(data):
        if len(data) - pos < record.size:
            raise ValueError(f"pcap record header truncated at offset {pos}")
        seconds, fraction, captured, _original = record.unpack_from(data, pos)
        pos += record.size
        if len(data) - pos < captured:
            raise ValueError(
                f"pcap record at offset {pos - record.size} claims {captured} bytes, "
                f"only {len(data) - pos} remain"
            )
        frame = data[pos : pos + captured]
        pos += captured
        ethertype, packet = _link_payload(frame, linktype)
        payload = _udp_payload(packet, ethertype)
        if payload is not None:
            result.append((seconds + fraction / divisor, payload))
    return result


def rtp_stream_packets(
    payload_frames: Sequence[bytes],
    payload_type: int,
    samples_per_frame: int = 160,
    *,
    ssrc: int = 0x5EED0001,
    start_seq: int = 1000,
    start_ts: int = 160_000,
    ptime: float = 0.02,
    start_time: float = 0.0,
    marker_first: bool = True,
) -> list[tuple[float, bytes]]:
    """One RTP packet per frame, paced every ``ptime`` seconds from ``start_time``.

    Sequence numbers and timestamps wrap modulo 2**16 and 2**32. The first packet carries
    the marker bit (start of a talkspurt) unless ``marker_first`` is False.
    """
    packets: list[tuple[float, bytes]] = []
    for index, frame in enumerate(payload_frames):
        packet = RtpPacket(
            payload_type=payload_type,
            marker=marker_first and index == 0,
            sequence_number=(start_seq + index) & 0xFFFF,
            timestamp=(start_ts + index * samples_per_frame) & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=frame,
        )
        packets.append((start_time + index * ptime, packet.serialize()))
    return packets


def dtmf_event_packets(
    digit: str,
    payload_type: int,
    *,
    marker: bool,
    start_seq: int,
    timestamp: int,
    ssrc: int,
    duration_ms: int = 160,
    volume: int = 10,
    start_time: float = 0.0,
    clock_rate: int = 8000,
    interval: float = 0.02,
    end_repeats: int = 3,
) -> list[tuple[float, bytes]]:
    """An RFC 4733 event as a sender emits it: updates every ``interval`` then end packets.

    Every packet carries the event's start ``timestamp``; the duration grows by one
    interval per update until the final duration, which the ``end_repeats`` end packets
    all repeat. Only the first packet has the marker bit, and only if ``marker`` is True
    (some carriers never set it). Sequence numbers increase by one per packet.
    """
    event = dtmf_event_code(digit)
    if duration_ms <= 0:
        raise ValueError(f"DTMF duration must be positive, got {duration_ms} ms")
    if end_repeats < 1:
        raise ValueError(f"at least one end packet is required, got {end_repeats}")
    total = round(duration_ms * clock_rate / 1000)
    step = round(interval * clock_rate)
    if total > 0xFFFF:
        raise ValueError(f"DTMF duration {total} ticks exceeds the 16-bit duration field")
    updates = max(math.ceil(total / step) - 1, 0)
    events = [
        DtmfEvent(event, end=False, volume=volume, duration=(i + 1) * step) for i in range(updates)
    ]
    events += [DtmfEvent(event, end=True, volume=volume, duration=total)] * end_repeats

    packets: list[tuple[float, bytes]] = []
    for index, dtmf in enumerate(events):
        packet = RtpPacket(
            payload_type=payload_type,
            marker=marker and index == 0,
            sequence_number=(start_seq + index) & 0xFFFF,
            timestamp=timestamp & 0xFFFFFFFF,
            ssrc=ssrc,
            payload=dtmf.serialize(),
        )
        packets.append((start_time + index * interval, packet.serialize()))
    return packets
