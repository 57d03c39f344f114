"""The per-call relay in front of pjmedia (hitl_sip/worker/relay.py), on loopback sockets:
forwarding both ways, strict source, the caller's audio tapped as it arrives, and one
continuous RTP stream to the trunk across the agent's frames and pjmedia's."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import threading
import time

import numpy as np
import pytest
from pylibsrtp import Policy, Session

from hitl_sip.media._rtpcore import Sender
from hitl_sip.media.g711 import ALAW_DECODE, ALAW_ENCODE, ULAW_DECODE, ULAW_ENCODE
from hitl_sip.media.rtp import RtpPacket
from hitl_sip.worker.lean import c_sender
from hitl_sip.worker.relay import (
    PRIME_PACKETS,
    SILENCE,
    InboundStream,
    TrunkRelay,
    bind_pair,
    rewrite,
    sdp_media,
)

OFFER = ("v=0\r\no=- 1 2 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
         "m=audio 4000 RTP/AVP 0 101\r\na=rtcp:4001 IN IP4 10.0.0.9\r\na=sendrecv\r\n")


def test_sdp_media_and_rewrite() -> None:
    assert sdp_media(OFFER) == ("10.0.0.9", 4000, 4001, "RTP/AVP")
    out = rewrite(OFFER, "192.0.2.7", 31000)
    assert sdp_media(out) == ("192.0.2.7", 31000, 31001, "RTP/AVP")
    assert "a=rtcp:31001 IN IP4 192.0.2.7\r\n" in out and "m=audio 31000 RTP/AVP 0 101\r\n" in out
    assert sdp_media("v=0\r\nm=video 5 RTP/AVP 96\r\n") is None


def rtp_payload(data: bytes) -> bytes:
    """What the relay taps of a trunk packet: the project's RTP parser's payload."""
    return RtpPacket.parse(data).payload


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, *, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc) + payload


def test_rtp_payload_skips_csrcs_extension_and_padding() -> None:
    body = bytes(range(10))
    assert rtp_payload(rtp(1, 2, 3, body)) == body
    with_csrc = struct.pack("!BBHII", 0x81, 0, 1, 2, 3) + b"CSRC" + body
    assert rtp_payload(with_csrc) == body
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x10abc"
    assert rtp_payload(struct.pack("!BBHII", 0x90, 0, 1, 2, 3) + ext + body) == body
    padded = struct.pack("!BBHII", 0xA0, 0, 1, 2, 3) + body + b"\x00\x00\x03"
    assert rtp_payload(padded) == body


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    return s


def tone_frame() -> bytes:
    t = np.arange(160) / 8000
    return (np.sin(2 * np.pi * 1000 * t) * 8000).astype("<i2").tobytes()


def test_the_relay_forwards_refuses_strangers_taps_the_caller_and_keeps_one_stream() -> None:
    async def scenario() -> None:
        trunk, trunk_rtcp, pj, pj_rtcp, stranger = (udp() for _ in range(5))
        # pjmedia's RTCP is its RTP port + 1: take that pair for the stand-in
        pj.close()
        pj, pj_rtcp = _pair()
        relay = TrunkRelay("127.0.0.1", pj.getsockname(), trunk.getsockname(),
                           trunk_rtcp.getsockname())
        here = ("127.0.0.1", relay.port)  # the trunk's side
        inner = relay.inner_rtp.getsockname()  # pjmedia's side
        tapped: list[bytes] = []
        try:
            relay.start()

            async def recv(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
                return await asyncio.to_thread(sock.recvfrom, 2048)

            # bot phase: pjmedia's packets reach the trunk as they are
            first = rtp(100, 16000, 0xABC, bytes(160))
            assert not relay.pjmedia_latched.is_set()
            pj.sendto(first, inner)
            data, src = await recv(trunk)
            assert data == first and src == here
            assert relay.pjmedia_latched.is_set()  # pjmedia sends through the relay now
            # the trunk's reach pjmedia, from the relay (pjmedia latches onto it)
            caller = ULAW_ENCODE[np.frombuffer(tone_frame(), "<i2").view("<u2")].tobytes()
            trunk.sendto(rtp(7, 320, 0x1, caller), here)
            data, src = await recv(pj)
            assert rtp_payload(data) == caller and src == inner
            # a stranger's packet goes nowhere and is counted
            stranger.sendto(rtp(1, 1, 0x666, bytes(160)), here)
            trunk_rtcp.sendto(b"\x81\xc9rtcp", ("127.0.0.1", relay.port + 1))
            data, src = await recv(pj_rtcp)
            assert data == b"\x81\xc9rtcp" and src == relay.inner_rtcp.getsockname()
            pj_rtcp.sendto(b"\x81\xc8rtcp", src)  # pjmedia's report, to the trunk
            data, src = await recv(trunk_rtcp)
            assert data == b"\x81\xc8rtcp" and src == ("127.0.0.1", relay.port + 1)
            # bridged: the caller's audio is tapped, decoded, as each packet arrives
            relay.to_agent = tapped.append
            trunk.sendto(rtp(8, 480, 0x1, caller), here)
            await recv(pj)
            assert tapped == [ULAW_DECODE[np.frombuffer(caller, np.uint8)].tobytes()]
            # the agent's frames go out at once, continuing pjmedia's stream
            relay.send_pcm(tone_frame())
            data, _ = await recv(trunk)
            seq, ts, ssrc = struct.unpack_from("!HII", data, 2)
            assert (seq, ts, ssrc, data[1]) == (101, 16160, 0xABC, 0)
            # ... and pjmedia's own copy is dropped meanwhile
            pj.sendto(rtp(101, 16160, 0xABC, bytes(160)), inner)
            relay.send_pcm(tone_frame())
            data, _ = await recv(trunk)
            assert struct.unpack_from("!HI", data, 2) == (102, 16320)
            # once the agent's frames stop (HANDBACK, 60 ms), pjmedia's packets flow again,
            # renumbered: our sequence, its clock's steps
            await asyncio.sleep(0.08)
            pj.sendto(rtp(102, 16320, 0xABC, b"\xff" * 160), inner)
            data, _ = await recv(trunk)
            assert struct.unpack_from("!HII", data, 2) == (103, 16480, 0xABC)
            assert data[12:] == b"\xff" * 160
            assert relay.refused == 1 and relay.from_agent == 2
        finally:
            relay.close()
            for s in (trunk, trunk_rtcp, pj, pj_rtcp, stranger):
                s.close()

    asyncio.run(scenario())


def test_pjmedia_s_copy_is_cut_while_the_agent_talks_and_dropped_at_the_hand_back() -> None:
    """With ``on_carry`` the stack stops pjmedia's copy of the agent's frames; what pjmedia's
    stream queued meanwhile (silence) is read and dropped at the hand-back — not sent to the
    trunk as a burst — and its next packet continues our stream: the next sequence number,
    one frame later, no marker on audio (an RFC 4733 event keeps its marker)."""
    async def scenario() -> None:
        trunk, pj = udp(), udp()
        relay = TrunkRelay("127.0.0.1", pj.getsockname(), trunk.getsockname(),
                           ("127.0.0.1", 9))
        inner = relay.inner_rtp.getsockname()
        carries: list[bool] = []
        relay.on_carry = carries.append
        try:
            relay.start()

            async def recv() -> bytes:
                return (await asyncio.to_thread(trunk.recvfrom, 2048))[0]

            pj.sendto(rtp(100, 16000, 0xABC, bytes(160)), inner)
            await recv()
            relay.send_pcm(tone_frame())
            assert carries == [True]  # the stack is told at the first agent frame
            assert struct.unpack_from("!HI", await recv(), 2) == (101, 16160)
            for i in range(300):  # pjmedia's silence through the cut: more than a buffer holds
                pj.sendto(rtp(101 + i, 16160 + 160 * i, 0xABC, b"\xff" * 160), inner)
            relay.send_pcm(tone_frame())
            assert carries == [True]
            assert struct.unpack_from("!HI", await recv(), 2) == (102, 16320)
            deadline = time.monotonic() + 2
            while carries != [True, False]:  # the hand-back: HANDBACK after the last frame
                assert time.monotonic() < deadline, carries
                await asyncio.sleep(0.005)
            marked = bytes((0x80, 0x80)) + rtp(9000, 99999, 0xABC, b"\x7f" * 160)[2:]
            pj.sendto(marked, inner)
            data = await recv()  # the first packet after the hand-back is this one
            assert struct.unpack_from("!BBHII", data) == (0x80, 0, 103, 16480, 0xABC)
            assert data[12:] == b"\x7f" * 160
            event = rtp(9001, 100159, 0xABC, bytes((1, 0, 0, 160)), pt=101)
            pj.sendto(event[:1] + bytes((0x80 | 101,)) + event[2:], inner)
            data = await recv()
            assert (data[1], struct.unpack_from("!H", data, 2)[0]) == (0x80 | 101, 104)
            assert relay.from_agent == 2
        finally:
            relay.close()
            trunk.close()
            pj.close()

    asyncio.run(scenario())


def _pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(50):
        a = udp()
        port = a.getsockname()[1]
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            b.bind(("127.0.0.1", port + 1))
        except OSError:
            a.close()
            b.close()
            continue
        b.settimeout(2)
        return a, b
    pytest.fail("no consecutive port pair")


def test_relay_ports_are_drawn_from_the_range_and_skip_taken_pairs() -> None:
    a, _ = _pair()
    first = a.getsockname()[1] & ~1
    a.close()
    _.close()
    # a range of three pairs, the middle one taken (as pjmedia's would be)
    taken, taken_rtcp = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    held: list[socket.socket] = []
    try:
        taken.bind(("127.0.0.1", first + 2))
        taken_rtcp.bind(("127.0.0.1", first + 3))
        seen = set()
        for _ in range(2):
            rtp_sock, rtcp_sock = bind_pair("127.0.0.1", first, first + 5)
            held += [rtp_sock, rtcp_sock]
            port = rtp_sock.getsockname()[1]
            assert port in (first, first + 4) and rtcp_sock.getsockname()[1] == port + 1
            seen.add(port)
        assert seen == {first, first + 4}
        with pytest.raises(OSError, match=f"{first}-{first + 5}"):
            bind_pair("127.0.0.1", first, first + 5)  # every pair taken
    finally:
        for s in (taken, taken_rtcp, *held):
            s.close()


def test_prime_sends_pjmedia_a_probation_of_silence_then_a_sequence_restart() -> None:
    pj, pj_rtcp = _pair()
    trunk = udp()
    relay = TrunkRelay("127.0.0.1", pj.getsockname(), trunk.getsockname(), trunk.getsockname())
    try:
        relay.prime(8)
        packets = [pj.recvfrom(2048) for _ in range(PRIME_PACKETS + 2)]
        assert {src for _, src in packets} == {relay.inner_rtp.getsockname()}
        parsed = [RtpPacket.parse(data) for data, _ in packets]
        assert {(p.payload_type, p.payload, p.ssrc) for p in parsed} == {
            (8, SILENCE[8], parsed[0].ssrc)}
        # in sequence for pjmedia's latch (PJMEDIA_RTP_NAT_PROBATION_CNT) ...
        steps = [(b.sequence_number - a.sequence_number) & 0xFFFF
                 for a, b in itertools.pairwise(parsed)]
        assert steps == [1] * (PRIME_PACKETS - 1) + [0x8000, 1]
        # ... then a jump beyond MAX_DROPOUT and the next one: pjmedia's restart
        assert [(p.timestamp - parsed[0].timestamp) & 0xFFFFFFFF for p in parsed] == [
            160 * i for i in range(PRIME_PACKETS + 2)]
        relay.prime(96)  # not a G.711 law: nothing is sent
        pj.settimeout(0.05)
        with pytest.raises(TimeoutError):
            pj.recvfrom(2048)
    finally:
        relay.close()
        for s in (pj, pj_rtcp, trunk):
            s.close()


def loopback_relay() -> tuple[TrunkRelay, socket.socket, socket.socket, socket.socket,
                              socket.socket]:
    """A relay between a stand-in trunk and a stand-in pjmedia (RTP and RTCP each)."""
    trunk, trunk_rtcp = udp(), udp()
    pj, pj_rtcp = _pair()
    relay = TrunkRelay("127.0.0.1", pj.getsockname(), trunk.getsockname(),
                       trunk_rtcp.getsockname())
    return relay, trunk, trunk_rtcp, pj, pj_rtcp


def test_a_stalled_loop_does_not_hold_the_trunk_s_packets() -> None:
    """The relay's sockets are read on its own thread: while the event loop is busy for
    0.2 s (a long callback), the trunk's packets still reach pjmedia as they come, 20 ms
    apart — not as one burst when the loop is back — and the caller's frames for the
    agent are handed to the loop, in order, once it is."""
    async def scenario() -> None:
        relay, trunk, trunk_rtcp, pj, pj_rtcp = loopback_relay()
        here = ("127.0.0.1", relay.port)
        tapped: list[bytes] = []
        arrivals: list[float] = []
        frames = [ULAW_ENCODE[np.frombuffer(tone_frame(), "<i2").view("<u2") + i].tobytes()
                  for i in range(10)]

        def trunk_side() -> None:
            for i, payload in enumerate(frames):
                trunk.sendto(rtp(i, 160 * i, 0x1, payload), here)
                pj.recvfrom(2048)
                arrivals.append(time.monotonic())
                time.sleep(0.02)  # the trunk's 20 ms clock

        try:
            relay.start()
            all_in = asyncio.Event()

            def tap(frame: bytes) -> None:
                tapped.append(frame)
                if len(tapped) == len(frames):
                    all_in.set()
            relay.to_agent = tap
            sender = threading.Thread(target=trunk_side)
            sender.start()
            sender.join(5)  # the loop's thread is held ~0.2 s: nothing on the loop runs
            assert len(arrivals) == len(frames)
            gaps = np.diff(arrivals)
            assert gaps.min() > 0.015, f"forwarded in a burst: gaps {gaps}"
            assert not tapped  # the loop has not run yet ...
            await asyncio.wait_for(all_in.wait(), 2)  # ... and now it does: each, in order
            assert tapped == [ULAW_DECODE[np.frombuffer(f, np.uint8)].tobytes() for f in frames]
        finally:
            relay.close()
            for s in (trunk, trunk_rtcp, pj, pj_rtcp):
                s.close()

    asyncio.run(scenario())


def header(data: bytes) -> tuple[int, int, int]:
    return struct.unpack_from("!HII", data, 2)


def test_pjmedia_hears_one_stream_from_the_primer_through_the_trunk_s_ssrcs() -> None:
    """Each piece numbered on its own, the trunk's first packet after the primer was, one
    call in twenty, a jump pjmedia counted as thousands of lost packets."""
    stream = InboundStream()
    primer = [header(h) for h in stream.primer(0)]
    assert {ssrc for *_, ssrc in primer} == {stream.ssrc}
    seq0, ts0, _ = primer[-1]
    time.sleep(0.1)  # the caller's first packet comes 100 ms (five frames) later
    first = header(stream.renumber(rtp(40000, 7, 0x1, b"\xff" * 160)))
    assert first[0] == (seq0 + 1) & 0xFFFF and first[2] == stream.ssrc
    assert 4 * 160 <= (first[1] - ts0) & 0xFFFFFFFF <= 7 * 160
    # the trunk's gaps (a lost packet) and a digit's shared timestamp are kept
    lost = header(stream.renumber(rtp(40002, 7 + 320, 0x1, b"\xff" * 160)))
    assert (lost[0] - first[0]) & 0xFFFF == 2 and (lost[1] - first[1]) & 0xFFFFFFFF == 320
    event = [header(stream.renumber(rtp(40003 + i, 1000, 0x1, bytes(4)))) for i in range(3)]
    assert len({ts for _, ts, _ in event}) == 1
    # a late packet is numbered in place and moves nothing
    late = header(stream.renumber(rtp(40001, 7 + 160, 0x1, b"\xff" * 160)))
    assert (late[0] - first[0]) & 0xFFFF == 1
    # the trunk changes SSRC (a re-INVITE, another media server): still the same stream
    switched = header(stream.renumber(rtp(3, 99, 0x2, b"\xff" * 160)))
    assert switched[0] == (event[-1][0] + 1) & 0xFFFF and switched[2] == stream.ssrc
    assert 0 < (switched[1] - event[-1][1]) & 0xFFFFFFFF <= 3 * 160


def test_pjmedia_s_receiver_reports_name_the_trunk_s_stream() -> None:
    stream = InboundStream()
    stream.primer(0)
    out = header(stream.renumber(rtp(500, 7, 0xCAFE, b"\xff" * 160)))
    block = struct.pack("!IIIIII", stream.ssrc, 0, 0x00010000 | out[0], 5, 0, 0)
    other = struct.pack("!IIIIII", 0x1234, 0, 77, 0, 0, 0)
    rr = struct.pack("!BBHI", 0x82, 201, 12, 0x5151) + block + other
    sdes = struct.pack("!BBHI", 0x81, 202, 1, 0x5151)
    report = stream.report_to_trunk(rr + sdes)
    assert len(report) == len(rr + sdes) and report[len(rr):] == sdes
    assert struct.unpack_from("!II", report, 8) == (0xCAFE, 0x00010000 | 500)
    assert report[8 + 8:8 + 24] == block[8:] and report[32:56] == other
    sr = struct.pack("!BBHI", 0x81, 200, 12, 0x5151) + bytes(20) + block
    assert struct.unpack_from("!II", stream.report_to_trunk(sr), 28) == (0xCAFE, 0x10000 | 500)
    for junk in (b"", b"\x80", rr[:20], b"\x00" * 40):  # nothing to rewrite: as it came
        assert stream.report_to_trunk(junk) == junk


def test_a_packet_taken_on_the_relay_thread_never_wakes_the_loop() -> None:
    """``direct`` decides about the trunk's G.711 packets on the relay's thread, and its
    verdict arms the C core: wanted by nobody (True) — the next ones are only forwarded
    to pjmedia; sent to a lean agent leg (its Sender) — the core sends the next ones
    there itself, in either law; left to the loop (False) — decoded and handed on, and
    asked again. ``disarm`` (the session's state, agent or taps changed) and a closed
    sender make it ask again. pjmedia gets every packet; other payload types are never
    asked about."""
    async def scenario() -> None:
        relay, trunk, trunk_rtcp, pj, pj_rtcp = loopback_relay()
        here = ("127.0.0.1", relay.port)
        seen: list[tuple[int, bytes, str]] = []
        tapped: list[bytes] = []
        got = asyncio.Event()
        browser, ours = udp(), udp()
        browser.settimeout(2)
        key = os.urandom(30)
        profile = Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        sender = c_sender(Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                         srtp_profile=profile)),
                          struct.pack("!BBHII", 0x80, 0, 9, 0, 0x5EED), "pcmu")
        sender.set_dest(ours.fileno(), browser.getsockname())
        browser_rx = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND,
                                    srtp_profile=profile))
        verdict: Sender | bool = True
        seq = itertools.count()

        def direct(pt: int, packet: bytes) -> Sender | bool:
            seen.append((pt, RtpPacket.parse(packet).payload, threading.current_thread().name))
            return verdict

        def tap(frame: bytes) -> None:
            tapped.append(frame)
            got.set()

        async def send(payload: bytes, pt: int = 0) -> None:
            n = next(seq)
            trunk.sendto(rtp(n, 160 * n, 0x1, payload, pt=pt), here)
            data, _ = await asyncio.to_thread(pj.recvfrom, 2048)  # pjmedia has it always
            assert rtp_payload(data) == payload
        try:
            relay.start()
            relay.to_agent, relay.direct = tap, direct
            # nobody wants the caller's audio (the bot phase): asked once
            for law_pt in (0, 8, 0):
                await send(bytes([law_pt]) * 160, law_pt)
            assert [(pt, p[:1], name) for pt, p, name in seen] == [(0, b"\x00", "relay-io")]
            relay.disarm()  # e.g. the call is bridged now
            verdict = sender
            await send(b"\x01" * 160)  # asked: direct sends it itself (here: not)
            await send(b"\x02" * 160)  # the core sends it
            alaw = ALAW_ENCODE[np.full(160, 1000, np.uint16)].tobytes()
            await send(alaw, 8)  # ... in µ-law, the leg's
            assert len(seen) == 2 and sender.relayed == 2
            plain = [browser_rx.unprotect(browser.recv(2048)) for _ in range(2)]
            assert plain[0][12:] == b"\x02" * 160
            assert plain[1][12:] == ULAW_ENCODE[
                ALAW_DECODE[np.frombuffer(alaw, np.uint8)].view(np.uint16)].tobytes()
            assert [struct.unpack_from("!H", p, 2)[0] for p in plain] == [10, 11]
            await send(b"\x03\x04", pt=101)  # not G.711: pjmedia's only
            assert len(seen) == 2
            sender.close()  # the agent's leg closed: asked again
            verdict = False  # e.g. a supervisor whispers: the loop mixes
            await send(b"\xff" * 160)
            await asyncio.wait_for(got.wait(), 2)
            assert tapped == [ULAW_DECODE[np.frombuffer(b"\xff" * 160, np.uint8)].tobytes()]
            await send(b"\xfe" * 160)  # ... and asked each time
            assert len(seen) == 4 and sender.relayed == 2
        finally:
            relay.close()
            for s in (trunk, trunk_rtcp, pj, pj_rtcp, browser, ours):
                s.close()

    asyncio.run(scenario())
