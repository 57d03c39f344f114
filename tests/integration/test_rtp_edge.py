"""Foreign media refused: a running ``hitl-sip serve`` with its default edge (Kamailio and
rtpengine before the workers), with one worker and then with two, and a caller from the trunk.

* RTP audio and RFC 4733 events (digit 0: "agent" in the demo flow) injected from another
  port — before the caller's first packet and during its stream, to the media port and the
  RTCP port of the SDP answer — are ignored: no digit event, no handoff, and nothing at all is
  sent to the injector; the caller's own audio and digits still work;
* the media port a caller is given is rtpengine's (the profile's range), not a worker's,
  and two successive calls do not get consecutive ports;
* ``/healthz`` shows the media relay, and a killed rtpengine is restarted and carries the
  next call.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import socket
import struct
from collections.abc import Iterator

import pytest

from hitl_sip.media.rtp import DtmfEvent, RtpPacket, dtmf_event_code
from tests.support.rtpcaller import FRAME_SAMPLES, TELEPHONE_EVENT, RtpCaller
from tests.support.server import Server, running_server

pytestmark = pytest.mark.sipp

WORKER_RTP = range(30000, 31000)  # front.worker_rtp_port_start..end (defaults)
TONE = bytes([0x00, 0x80] * 80)  # a loud PCMU square wave, 160 samples


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def srv(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
        ) -> Iterator[Server]:
    """One server per worker count for the whole module (the same edge either way)."""
    workers = int(request.param)
    with running_server(tmp_path_factory.mktemp(f"rtp-edge-{workers}"),
                        workers=workers) as server:
        server.wait_for(lambda: bool(media_state(server).get("responding")), 15,
                        what="rtpengine answering ping")
        yield server


def relay_range(srv: Server) -> range:
    """rtpengine's public range: its profile's [rtp] (a block of the server's own in tests)."""
    assert srv.media_ports is not None
    return srv.media_ports


def media_state(srv: Server) -> dict[str, object]:
    media = (srv.health()[1].get("front") or {}).get("media") or {}
    assert isinstance(media, dict)
    return media


class Injector:
    """A UDP socket on another port (and address) that sends RTP and RTCP to a call's media
    ports and keeps whatever comes back."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)

    def _packet(self, pt: int, payload: bytes, marker: bool = False) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        return RtpPacket(pt, marker, self.seq, self.ts, self.ssrc, payload).serialize()

    def attack(self, target: tuple[str, int]) -> None:
        """Audio, the RFC 4733 events of digit 0 (start with marker, updates, end three
        times), then an RTCP sender report to the RTCP port."""
        for _ in range(15):
            self.ts = (self.ts + FRAME_SAMPLES) & 0xFFFFFFFF
            self.sock.sendto(self._packet(0, TONE), target)
        code = dtmf_event_code("0")
        for k in range(1, 6):
            event = DtmfEvent(code, duration=FRAME_SAMPLES * k).serialize()
            self.sock.sendto(self._packet(TELEPHONE_EVENT, event, marker=k == 1), target)
        end = DtmfEvent(code, end=True, duration=FRAME_SAMPLES * 5).serialize()
        for _ in range(3):
            self.sock.sendto(self._packet(TELEPHONE_EVENT, end), target)
        sender_report = struct.pack("!BBHIIIIII", 0x80, 200, 6, self.ssrc, 0, 0, self.ts, 20, 3200)
        self.sock.sendto(sender_report, (target[0], target[1] + 1))

    def received(self) -> int:
        """Datagrams that reached this socket so far (the first ones stay queued: a full
        buffer drops only the newest)."""
        count = 0
        while True:
            try:
                self.sock.recv(2048)
            except BlockingIOError:
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()


def test_media_injected_from_another_port_is_ignored_before_and_during_the_stream(
    srv: Server,
) -> None:
    records = len(srv.call_records())
    digits = srv.metric("hitl_sip_dtmf_events_total")
    injectors = [Injector("127.0.0.1"), Injector("127.0.0.2")]
    try:
        with RtpCaller(srv.sip_port()) as caller:
            caller.call()
            assert caller.remote_rtp is not None
            # before the caller's first packet: pjmedia alone would latch to the injector
            for injector in injectors:
                injector.attack(caller.remote_rtp)
            caller.start_media()
            # the greeting plays, so the flow is at its menu (a digit before the flow's first
            # node is masked like any digit whose node is not known to be a menu)
            srv.wait_for(lambda: any(any(p.pcm) for p in list(caller.received)), 10,
                         what="the greeting")
            # the caller's digit: the injected packets went to the same port before it, so
            # once it is counted they would have been too
            caller.dtmf("1")
            srv.wait_for(lambda: srv.metric("hitl_sip_dtmf_events_total") == digits + 1, 20,
                         what="the caller's digit 1")
            # during the caller's stream
            for injector in injectors:
                injector.attack(caller.remote_rtp)
            caller.dtmf("2")
            srv.wait_for(lambda: srv.metric("hitl_sip_dtmf_events_total") == digits + 2, 20,
                         what="the caller's digit 2")
            srv.wait_for(lambda: len(caller.received) > 50, 10, what="the server's audio")
            caller.hangup()
        assert any(any(packet.pcm) for packet in caller.received), "the caller heard silence"
        srv.wait_for(lambda: len(srv.call_records()) == records + 1, what="the call record")
        record = srv.call_records()[-1]
        assert [e["digit"] for e in record["events"] if e["type"] == "dtmf"] == ["1", "2"]
        states = [e["state"] for e in record["events"] if e["type"] == "state"]
        assert states == ["bot", "ended"], "an injected digit 0 must not hand the call off"
        assert srv.metric("hitl_sip_dtmf_events_total") == digits + 2
        assert [i.received() for i in injectors] == [0, 0], "media was sent to an injector"
    finally:
        for injector in injectors:
            injector.close()


def test_the_caller_gets_rtpengine_ports_and_successive_calls_are_not_consecutive(
    srv: Server,
) -> None:
    ports = []
    for _ in range(3):
        with RtpCaller(srv.sip_port()) as caller:
            caller.call()
            assert caller.remote_rtp is not None
            ports.append(caller.remote_rtp[1])
            caller.hangup()
    assert all(port in relay_range(srv) and port not in WORKER_RTP for port in ports), ports
    steps = [b - a for a, b in itertools.pairwise(ports)]
    assert all(abs(step) > 4 for step in steps), f"predictable media ports: {ports}"


def test_a_killed_rtpengine_is_restarted_and_carries_the_next_call(srv: Server) -> None:
    before = media_state(srv)
    assert before["kind"] == "rtpengine" and before["running"]
    os.kill(int(str(before["pid"])), signal.SIGKILL)
    srv.wait_for(lambda: media_state(srv).get("restarts") == int(str(before["restarts"])) + 1
                 and bool(media_state(srv).get("responding")), 20, what="rtpengine restarted")
    # no call met the dead relay, so Kamailio never marked it disabled: the next call works
    with RtpCaller(srv.sip_port()) as caller:
        caller.call()
        assert caller.remote_rtp is not None and caller.remote_rtp[1] in relay_range(srv)
        caller.start_media()
        srv.wait_for(lambda: len(caller.received) > 10, 10, what="audio after the restart")
        caller.hangup()
