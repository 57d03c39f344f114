"""The lean G.711 path of a WebRTC leg (hitl_sip/worker/lean.py) with real SRTP sessions
(pylibsrtp, one key each way as a DTLS handshake would export): what it sends, what it
takes from aioice's datagrams and what it leaves to aiortc."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import socket
import struct
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
from pylibsrtp import Policy, Session

from hitl_sip.media._rtpcore import TrunkOut
from hitl_sip.media.g711 import ALAW, ALAW_DECODE, ALAW_ENCODE, ULAW, ULAW_DECODE, ULAW_ENCODE
from hitl_sip.worker.lean import LeanG711, c_sender, follow_pair

KEY_OUT, KEY_IN = os.urandom(30), os.urandom(30)  # AES128_CM_SHA1_80: key 16 + salt 14


def session(key: bytes, kind: int) -> Session:
    policy = Policy(key=key, ssrc_type=kind, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
    policy.allow_repeat_tx = True  # the test's browser sends a duplicate
    return Session(policy)


def tone(freq: float = 1000.0) -> bytes:
    t = np.arange(160) / 8000
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class Leg:
    """A PCMU leg whose C sender sends on a socket of ours to the browser's: what reaches
    the browser is read on a thread of its own as it comes (``wire``)."""

    def __init__(self) -> None:
        self.heard: list[tuple[npt.NDArray[np.int16], int]] = []
        self.streams: dict[int, Any] = {}
        header = struct.pack("!BBHII", 0x80, 0, 65534, 0xFFFFFF00, 0x5EED)
        self.ours, self.browser = udp(), udp()
        sender = c_sender(session(KEY_OUT, Policy.SSRC_ANY_OUTBOUND), header, "pcmu")
        sender.set_dest(self.ours.fileno(), self.browser.getsockname())
        self.lean = LeanG711(codec="pcmu", payload_type=0, sender=sender,
                             rx=session(KEY_IN, Policy.SSRC_ANY_INBOUND),
                             on_pcm=lambda pcm, rate: self.heard.append((pcm, rate)),
                             streams=self.streams)
        # the browser's ends of the two keys
        self.browser_rx = session(KEY_OUT, Policy.SSRC_ANY_INBOUND)
        self.browser_tx = session(KEY_IN, Policy.SSRC_ANY_OUTBOUND)
        self._wire: list[bytes] = []
        self._arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.browser.recv(2048)
            except OSError:
                return
            with self._arrived:
                self._wire.append(data)
                self._arrived.notify_all()

    def wire(self, count: int) -> list[bytes]:
        """What reached the browser once ``count`` packets have (2 s at most)."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self._wire) >= count, 2)
            return list(self._wire)

    def flushed(self) -> list[bytes]:
        """Everything sent so far: a marker from elsewhere arrives after it (loopback
        delivers each datagram within its sendto)."""
        with udp() as other:
            other.sendto(b"marker", self.browser.getsockname())
        with self._arrived:
            self._arrived.wait_for(lambda: b"marker" in self._wire, 2)
            return [d for d in self._wire if d != b"marker"]

    def from_browser(self, seq: int, payload: bytes, *, pt: int = 0, ts: int = 0) -> bytes:
        return self.browser_tx.protect(struct.pack("!BBHII", 0x80, pt, seq, ts or seq * 160,
                                                   0xB0B) + payload)


def test_frames_go_out_as_one_srtp_stream_with_the_time_that_passed() -> None:
    leg = Leg()
    for _ in range(3):
        leg.lean.send_pcm(tone())
    time.sleep(0.1)  # the caller's packets pause for 100 ms (five frames)
    leg.lean.send_pcm(tone())
    plain = [leg.browser_rx.unprotect(data) for data in leg.wire(4)]  # authenticates each
    heads = [struct.unpack_from("!BBHII", p) for p in plain]
    assert [h[2] for h in heads] == [65535, 0, 1, 2]  # the template's sequence, wrapping
    assert [h[3] for h in heads[:3]] == [0xFFFFFFA0, 0x40, 0xE0]  # +160 each, wrapping
    assert 4 * 160 <= (heads[3][3] - heads[2][3]) & 0xFFFFFFFF <= 7 * 160
    assert {(h[0], h[1], h[4]) for h in heads} == {(0x80, 0, 0x5EED)}
    expected = ULAW_ENCODE[np.frombuffer(tone(), "<i2").view("<u2")].tobytes()
    assert all(p[12:] == expected for p in plain) and leg.lean.sent == 4


def test_the_agent_s_g711_is_taken_decoded_and_counted_the_rest_left_to_aiortc() -> None:
    leg = Leg()
    payload = ULAW_ENCODE[np.frombuffer(tone(), "<i2").view("<u2")].tobytes()
    assert leg.lean.receive(leg.from_browser(10, payload))
    assert leg.lean.receive(leg.from_browser(12, payload))  # 11 lost
    pcm, rate = leg.heard[0]
    assert rate == 8000 and np.array_equal(pcm, ULAW_DECODE[np.frombuffer(payload, np.uint8)])
    stats = leg.streams[0xB0B]  # aiortc's StreamStatistics: getStats and its reports
    assert (stats.packets_received, stats.packets_expected) == (2, 3)
    # late, duplicate, forged: taken off aiortc's path and refused, nothing played
    late, again = leg.from_browser(11, payload), leg.from_browser(12, payload)
    forged = bytearray(leg.from_browser(13, payload))
    forged[20] ^= 1
    for data in (late, again, bytes(forged)):
        assert leg.lean.receive(data)
    assert leg.lean.refused == 3 and len(leg.heard) == 2 and leg.lean.received == 2
    # not ours: DTLS, RTCP, another payload type (an RFC 4733 event), runts
    dtls = b"\x16\xfe\xfd" + bytes(20)
    rtcp = struct.pack("!BBHI", 0x80, 200, 6, 0xB0B) + bytes(20)
    event = leg.from_browser(14, b"\x01\x0a\x00\xa0", pt=101)
    for data in (dtls, rtcp, event, b"\x80\x00", b""):
        assert not leg.lean.receive(data)
    assert leg.lean.refused == 3 and len(leg.heard) == 2


def test_a_header_extension_and_padding_are_skipped() -> None:
    leg = Leg()
    payload = bytes(range(160))
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x10\x01\x00\x00"  # one-byte: mid "\x01"
    body = ext + payload + b"\x00\x00\x03"  # three bytes of padding
    header = struct.pack("!BBHII", 0x80 | 0x10 | 0x20, 0, 5, 800, 0xB0B)
    assert leg.lean.receive(leg.browser_tx.protect(header + body))
    pcm, _ = leg.heard[0]
    assert np.array_equal(pcm, ULAW_DECODE[np.frombuffer(payload, np.uint8)])


def test_the_trunk_s_payload_goes_out_as_it_is_or_in_the_leg_s_law() -> None:
    leg = Leg()  # a PCMU leg
    ulaw = ULAW_ENCODE[np.frombuffer(tone(), "<i2").view("<u2")].tobytes()
    leg.lean.send_payload(0, ulaw)
    assert leg.browser_rx.unprotect(leg.wire(1)[-1])[12:] == ulaw  # no PCM in between
    alaw = ALAW_ENCODE[np.frombuffer(tone(), "<i2").view("<u2")].tobytes()
    leg.lean.send_payload(8, alaw)  # a PCMA trunk: the same sound in µ-law
    sent = leg.browser_rx.unprotect(leg.wire(2)[-1])[12:]
    back = ULAW_DECODE[np.frombuffer(sent, np.uint8)].astype(np.int32)
    want = ALAW_DECODE[np.frombuffer(alaw, np.uint8)].astype(np.int32)
    assert np.abs(back - want).max() <= np.abs(want).max() // 16  # within a step of each law


def test_the_loop_and_the_relay_thread_send_one_sequence_and_close_stops_both() -> None:
    leg = Leg()
    payload = bytes(160)  # (as many as a socket buffer holds: the reader may lag)

    def relay() -> None:
        for _ in range(100):
            leg.lean.send_payload(0, payload)
    thread = threading.Thread(target=relay)
    thread.start()
    for _ in range(100):
        leg.lean.send_pcm(tone())
    thread.join()
    seqs = [struct.unpack_from("!H", leg.browser_rx.unprotect(d), 2)[0] for d in leg.wire(200)]
    assert len(seqs) == 200 == leg.lean.sent
    assert [(b - a) & 0xFFFF for a, b in itertools.pairwise(seqs)] == [1] * 199
    closed = []
    leg.lean.on_close = lambda: closed.append(True)
    leg.lean.close()
    leg.lean.send_pcm(tone())
    leg.lean.send_payload(0, payload)
    assert len(leg.flushed()) == 200 and closed == [True] and leg.lean.sender.closed


def test_the_sender_follows_the_pair_aioice_nominates() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        got: list[tuple[int, bytes]] = []
        both = asyncio.Event()

        class Sink(asyncio.DatagramProtocol):
            def __init__(self, n: int) -> None:
                self.n = n

            def datagram_received(self, data: bytes, addr: Any) -> None:
                got.append((self.n, data))
                if len(got) == 2:
                    both.set()
        ours, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                      local_addr=("127.0.0.1", 0))
        remotes = [await loop.create_datagram_endpoint(functools.partial(Sink, n),
                                                       local_addr=("127.0.0.1", 0))
                   for n in range(2)]
        pairs = [SimpleNamespace(protocol=SimpleNamespace(transport=ours),
                                 remote_addr=t.get_extra_info("sockname")) for t, _ in remotes]
        connection = SimpleNamespace(_nominated={})
        browser_rx = session(KEY_OUT, Policy.SSRC_ANY_INBOUND)
        sender = c_sender(session(KEY_OUT, Policy.SSRC_ANY_OUTBOUND),
                          struct.pack("!BBHII", 0x80, 0, 1, 0, 0x5EED), "pcmu")
        follow_pair(connection, sender)
        sender.send(b"nothing nominated yet")
        connection._nominated[1] = pairs[0]  # as aioice's Connection does
        await asyncio.to_thread(sender.send, b"one")  # from another thread, as the relay's
        connection._nominated[1] = pairs[1]  # the browser switched pairs
        sender.send(b"two")
        await asyncio.wait_for(both.wait(), 2)
        assert [(n, browser_rx.unprotect(data)[12:]) for n, data in got] == [
            (0, b"one"), (1, b"two")]
        assert sender.sent == 2
        sender.close()
        for t, _ in [(ours, None), *remotes]:
            t.close()

    asyncio.run(scenario())


def test_the_agent_s_payload_goes_to_the_trunk_as_it_came_when_the_session_allows() -> None:
    """With ``to_trunk`` naming the relay's stream (the agent heard alone), the C
    receiver sends the agent's payload there itself — in the trunk's law, continuing the
    stream pjmedia's packets started — and the frame goes to ``on_sent`` (recogniser,
    recording) instead of ``on_pcm``; without it, ``on_pcm`` as before."""
    leg = Leg()
    ours, trunk = udp(), udp()
    trunk.settimeout(2)
    out = TrunkOut(ours.fileno(), trunk.getsockname(), 0.06)
    sent: list[bytes] = []
    route: list[TrunkOut | None] = [out]
    leg.lean = LeanG711(codec="pcmu", payload_type=0, sender=leg.lean.sender,
                        rx=session(KEY_IN, Policy.SSRC_ANY_INBOUND),
                        on_pcm=lambda pcm, rate: leg.heard.append((pcm, rate)),
                        streams=leg.streams, to_trunk=lambda: route[0], on_sent=sent.append)
    payload = ULAW_ENCODE[np.frombuffer(tone(), "<i2").view("<u2")].tobytes()
    pcm = ULAW_DECODE[np.frombuffer(payload, np.uint8)].tobytes()
    # nothing from pjmedia yet: the trunk's law and SSRC are unknown, the frame takes
    # the Python path (relay.send_pcm would not send either)
    assert leg.lean.receive(leg.from_browser(1, payload))
    assert not sent and len(leg.heard) == 1
    # pjmedia's packet sets the stream: a PCMA trunk, its SSRC and numbering
    pjmedia = struct.pack("!BBHII", 0x80, 8, 500, 80000, 0xCAFE) + b"\xd5" * 160
    assert out.pjmedia(pjmedia)
    assert trunk.recv(2048) == pjmedia
    for seq in (2, 3):
        assert leg.lean.receive(leg.from_browser(seq, payload))
    assert sent == [pcm, pcm] and len(leg.heard) == 1
    packets = [trunk.recv(2048) for _ in range(2)]
    assert [struct.unpack_from("!BBHII", p) for p in packets] == [
        (0x80, 8, 501, 80160, 0xCAFE), (0x80, 8, 502, 80320, 0xCAFE)]
    want = ULAW.transcoder(ALAW)[np.frombuffer(payload, np.uint8)].tobytes()
    assert all(p[12:] == want for p in packets) and out.from_agent == 2
    # while the agent's frames go out, pjmedia's copy is dropped; the clock follows it
    assert not out.pjmedia(struct.pack("!BBHII", 0x80, 8, 501, 80160, 0xCAFE) + bytes(160))
    route[0] = None  # e.g. the agent muted, a supervisor barged: Python's path again
    assert leg.lean.receive(leg.from_browser(4, payload))
    assert len(sent) == 2 and len(leg.heard) == 2 and out.from_agent == 2
    for s in (ours, trunk):
        s.close()
