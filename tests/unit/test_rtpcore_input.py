"""The C core (hitl_sip/media/_rtpcore.c) parses what strangers send: any datagram at its
entry points is refused or handled within its bounds, never read past, and the outcome
matches the Python reference where there is one (payload_bounds)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import numpy as np
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session

from hitl_sip.media._rtpcore import TrunkOut
from hitl_sip.media.g711 import ULAW_DECODE
from hitl_sip.media.rtp import payload_bounds
from hitl_sip.worker.lean import c_receiver
from hitl_sip.worker.relay import InboundStream
from tests.unit.test_relay import loopback_relay, rtp

KEY = os.urandom(30)
PROFILE = Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def session(kind: int) -> Session:
    return Session(Policy(key=KEY, ssrc_type=kind, srtp_profile=PROFILE))


#: RTP-looking datagrams: a version-2 first byte with any flags, our payload type, any
#: header fields, CSRC counts, extension lengths and padding counts the body may not hold
rtp_like = st.builds(
    lambda first, rest, body: bytes([0x80 | (first & 0x3F), 0]) + rest + body,
    st.integers(0, 255), st.binary(min_size=10, max_size=10), st.binary(max_size=300))
datagrams = st.one_of(st.binary(max_size=2100), rtp_like)


@st.composite
def well_formed(draw: st.DrawFn) -> bytes:
    """RTP a sender could protect: CSRCs, a header extension and padding as declared
    (the padding may still claim more than the payload holds)."""
    cc, words, pad = draw(st.integers(0, 15)), draw(st.integers(0, 4)), draw(st.integers(0, 8))
    extension = draw(st.booleans())
    first = 0x80 | cc | (0x10 if extension else 0) | (0x20 if pad else 0)
    head = bytes([first, 0]) + draw(st.binary(min_size=10 + 4 * cc, max_size=10 + 4 * cc))
    ext = struct.pack("!HH", 0xBEDE, words) + bytes(4 * words) if extension else b""
    padding = bytes(pad - 1) + bytes([pad]) if pad else b""
    return head + ext + draw(st.binary(max_size=200)) + padding


@settings(max_examples=400, deadline=None)
@given(datagrams)
def test_the_agent_s_receiver_refuses_what_it_cannot_authenticate(data: bytes) -> None:
    receiver = c_receiver(session(Policy.SSRC_ANY_INBOUND), 0, "pcmu")
    got = receiver.receive(data, None)
    looks_ours = (12 <= len(data) <= 2048 and 127 < data[0] < 192 and data[1] & 0x7F == 0
                  and not 192 <= data[1] <= 223)
    assert got == (() if looks_ours else None)  # nobody forges our SRTP key
    assert receiver.refused == int(looks_ours) and receiver.received == 0


@settings(max_examples=400, deadline=None)
@given(well_formed())
def test_authenticated_packets_of_any_shape_decode_exactly_their_payload(plain: bytes) -> None:
    """The sender's SRTP authenticates whatever header it is given: the receiver still
    finds the payload where payload_bounds does (CSRCs, extension, padding) or none."""
    tx = session(Policy.SSRC_ANY_OUTBOUND)
    receiver = c_receiver(session(Policy.SSRC_ANY_INBOUND), 0, "pcmu")
    try:
        packet = tx.protect(plain)
    except SrtpError:  # a header libsrtp will not protect (its CSRCs or extension overrun)
        reject()
    got = receiver.receive(packet, None)
    assert got is not None and len(got) == 5
    seq, ts, ssrc, pcm, sent = got
    assert (seq, ts, ssrc) == struct.unpack_from("!HII", plain, 2) and not sent
    start, end = payload_bounds(plain)
    want = ULAW_DECODE[np.frombuffer(plain[max(start, 0):max(end, start)], np.uint8)]
    assert pcm == want.astype(np.int16).tobytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=2100), max_size=5))
def test_the_trunk_s_stream_takes_any_bytes_from_pjmedia_s_side(packets: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ours, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
        trunk.bind(("127.0.0.1", 0))
        out = TrunkOut(ours.fileno(), trunk.getsockname(), 0.06)
        for packet in packets:
            assert out.pjmedia(packet) == (12 <= len(packet) <= 2048)
            out.follow_pjmedia(packet)
        assert out.send(b"\xff" * 160) == (out.law in (0, 8) and out.ssrc != 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2100))
def test_the_inbound_stream_renumbers_only_whole_headers(data: bytes) -> None:
    stream = InboundStream()
    if 12 <= len(data) <= 2048:
        out = stream.renumber(data)
        assert len(out) == len(data) and out[12:] == data[12:] and out[:2] == data[:2]
        assert struct.unpack_from("!I", out, 8)[0] == stream.ssrc
    else:
        try:
            stream.renumber(data)
        except ValueError:
            pass
        else:
            raise AssertionError("a runt or an oversized packet was renumbered")
    assert len(stream.report_to_trunk(data)) == len(data)


def test_junk_on_the_trunk_s_port_is_dropped_and_the_relay_thread_carries_on() -> None:
    """Runts, other versions and oversized datagrams from the trunk's own address reach
    nobody; a stranger's are counted; the next good packet is forwarded as ever."""
    async def scenario() -> None:
        relay, trunk, trunk_rtcp, pj, pj_rtcp = loopback_relay()
        here = ("127.0.0.1", relay.port)
        pj.settimeout(2)
        try:
            relay.start()
            for junk in (b"", b"\x80", bytes(11), b"\x40" + bytes(171), b"\xc0" * 3000):
                trunk.sendto(junk, here)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.sendto(rtp(1, 1, 0x666, bytes(160)), here)
            good = rtp(7, 320, 0x1, b"\x55" * 160)
            trunk.sendto(good, here)
            data = await asyncio.to_thread(pj.recv, 4096)
            assert data[12:] == good[12:]  # the first thing pjmedia gets: junk went nowhere
            assert relay.refused == 1
        finally:
            relay.close()
            for s in (trunk, trunk_rtcp, pj, pj_rtcp):
                s.close()

    asyncio.run(scenario())
