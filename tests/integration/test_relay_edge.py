"""The worker's own relay on the media edge (``worker.trunk_relay = true``), with the
trunk's RTP straight to the worker (``front.media = direct``) on a media host that is not
127.0.0.1:

* pjmedia's sockets listen on 127.0.0.1 only: the one media port a stranger can reach is
  the relay's, which refuses every source but the trunk's SDP address;
* every packet the caller gets comes from the port our SDP names — the greeting's first
  frames included, sent before the caller's first packet (the relay primes pjmedia) —
  but for a frame or two of silence pjmedia's stream may send from 127.0.0.1 as it
  starts, which a trunk off the host never gets;
* the caller hears the greeting from its start.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hitl_sip.media.g711 import ulaw_decode
from hitl_sip.media.rtp import RtpPacket
from hitl_sip.media.wav import read_wav, resample
from tests.support.audio import assert_contains
from tests.support.net import UdpSniffer, free_port_pair
from tests.support.server import ROOT, Server, running_server
from tests.support.sipp import SippResult, finish, run_sipp

pytestmark = pytest.mark.sipp

MEDIA_HOST = "127.0.0.2"  # the server's address: not pjmedia's 127.0.0.1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("relay-edge"), sip={"host": MEDIA_HOST},
                        worker={"trunk_relay": True},
                        extra={"front": {"media": "direct"}}) as srv:
        yield srv


def udp_ports(pid: int) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.Process(pid).net_connections("udp")}


def test_pjmedia_listens_on_loopback_and_the_caller_hears_only_the_relay(
    server: Server, tmp_path: Path
) -> None:
    worker = server.health()[1]["workers"][0]["pid"]
    before = udp_ports(worker)
    media_port = free_port_pair()
    with UdpSniffer(media_port) as sniffer:
        sipp = run_sipp("basic_call", server.sip_port(), tmp_path, target_ip=MEDIA_HOST,
                        media_port=media_port, background=True)
        assert not isinstance(sipp, SippResult)
        server.wait_for(lambda: len(sniffer.packets) > 50, 15, what="the greeting's packets")
        during = udp_ports(worker) - before
        result = finish(sipp, tmp_path)
    assert result.ok, result.explain() + server.log()

    # the call's sockets: the relay's pair on the media host, pjmedia's on 127.0.0.1
    relay = sniffer.sources[-1]
    assert relay[0] == MEDIA_HOST
    # pjmedia's stream starts before the relay has primed it and may send a frame or two
    # of its own silence meanwhile — from 127.0.0.1, which reaches this caller only
    # because it is on loopback too (see the test below) — and nothing else, ever
    direct = [i for i, source in enumerate(sniffer.sources) if source != relay]
    assert len(direct) <= 3, f"the caller got {len(direct)} packets not from the relay"
    for i in direct:
        assert sniffer.sources[i][0] == "127.0.0.1", sniffer.sources[i]
        assert i < sniffer.sources.index(relay), "pjmedia sent directly after the relay"
        assert set(RtpPacket.parse(sniffer.packets[i]).payload) <= {0xFF, 0x7F}, "not silence"
    assert {relay, (MEDIA_HOST, relay[1] + 1)} <= during
    assert {ip for ip, _ in during - {relay, (MEDIA_HOST, relay[1] + 1)}} == {"127.0.0.1"}

    # and the caller heard the greeting from its first frame
    server.wait_for(lambda: len(server.call_records()) == 1, what="the call record")
    packets = sorted((RtpPacket.parse(p) for p, source
                      in zip(sniffer.packets, sniffer.sources, strict=True) if source == relay),
                     key=lambda p: p.sequence_number)
    heard = ulaw_decode(b"".join(p.payload for p in packets if p.payload_type == 0))
    g_rate, greeting = read_wav(ROOT / "rtp/prompts/greeting.wav")
    assert_contains(heard, resample(greeting, g_rate, 8000), 8000, starts_within=(0.0, 0.5),
                    what="greeting heard by the caller")


def test_a_socket_on_127_0_0_1_cannot_send_off_the_host() -> None:
    """Why pjmedia on 127.0.0.1 is safe on a public edge: what it sends before its relay
    primes it never reaches a trunk that is not on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(OSError) as refused:
            sock.sendto(b"\x80" * 12, ("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737)
        # EINVAL: a loopback source off the loopback device; ENETUNREACH: no route at all
        assert refused.value.errno in (errno.EINVAL, errno.ENETUNREACH)
