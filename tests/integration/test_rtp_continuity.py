"""The server's audio reaches the caller without a break until hang-up, with two servers and
their rtpengines on one host at once.

rtpengine binds its media ports with ``SO_REUSEADDR``. Two relays given the same range on
one address (every test server on 127.0.0.1 with sip_profiles/local.toml's 20000-20999, as
the tests had them) both bind the same ports: a fresh relay puts its first call's worker
side on the range's first pair, and once the second one had bound it Linux handed the
first one's packets from the worker to it, which dropped them — the first call's audio
stopped mid-call, its dialog still up. The tests now give each server a range of its own
(tests.support.net.media_ports) and hitl-sip refuses to start a relay whose range overlaps
a live one's on the same address (hitl_sip.front.rtpengine.claim_relay_ports).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_sip.config import load_config
from hitl_sip.front.rtpengine import RtpEngine, free_ng_port, write_config
from tests.support.net import media_ports
from tests.support.rtpcaller import RtpCaller
from tests.support.server import Server, running_server

pytestmark = pytest.mark.sipp

MAX_GAP = 0.2  # seconds without a packet from the server, hang-up included
FIRST_PACKET = 2.0  # seconds from the answer to the server's first packet


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    with (
        running_server(tmp_path_factory.mktemp("first")) as first,
        running_server(tmp_path_factory.mktemp("second")) as second,
    ):
        yield first, second


def gaps(caller: RtpCaller, answered: float, hung_up: float) -> list[float]:
    """The silences the caller met: answer → first packet, between packets, last packet →
    hang-up."""
    arrivals = [answered, *(p.arrival for p in caller.received), hung_up]
    return [b - a for a, b in itertools.pairwise(arrivals)]


def check_stream(caller: RtpCaller, answered: float, hung_up: float, what: str) -> None:
    assert caller.received, f"{what}: no audio at all"
    silences = gaps(caller, answered, hung_up)
    assert silences[0] < FIRST_PACKET, f"{what}: first packet after {silences[0]:.2f} s"
    worst = max(silences[1:])
    at = caller.received[0].arrival + sum(silences[1:silences.index(worst, 1)]) - answered
    assert worst <= MAX_GAP, (
        f"{what}: {worst:.2f} s without audio from {at:.2f} s into the call "
        f"({len(caller.received)} packets over {hung_up - answered:.2f} s)")


def test_calls_on_two_servers_at_once_hear_the_server_until_hang_up(
    pair: tuple[Server, Server],
) -> None:
    first, second = pair
    assert first.media_ports is not None and second.media_ports is not None
    assert set(first.media_ports).isdisjoint(second.media_ports)
    long_call = RtpCaller(first.sip_port())
    try:
        long_call.call(10)
        answered = time.monotonic()
        long_call.start_media()
        time.sleep(1.0)
        # each new relay call takes ports while the first server's call goes on: with one
        # range for both, the first of them took its worker side's packets
        for n in range(3):
            with RtpCaller(second.sip_port()) as short:
                short.call(10)
                short_answered = time.monotonic()
                short.start_media()
                time.sleep(1.2)
                short_hung_up = time.monotonic()
                short.hangup()
            check_stream(short, short_answered, short_hung_up, f"call {n + 1} on the second")
        time.sleep(1.0)
        hung_up = time.monotonic()
        long_call.hangup()
    finally:
        long_call.close()
    check_stream(long_call, answered, hung_up, "the call on the first server")


def test_a_relay_on_the_ports_of_a_live_one_does_not_start(
    pair: tuple[Server, Server], tmp_path: Path,
) -> None:
    first, _ = pair
    assert first.media_ports is not None
    config = load_config(None, env={}, overrides={"sip.host": "127.0.0.1", "sip.port": "5070"})

    async def start(ports: range, directory: Path) -> str | None:
        ng_port = free_ng_port()
        conf = write_config(config, directory, port_start=ports.start,
                            port_end=ports.stop - 1, public_address=None, ng_port=ng_port)
        relay = RtpEngine(config, conf, ng_port)
        try:
            return await relay.start()
        finally:
            await relay.stop()

    overlapping = range(first.media_ports.start + 200, first.media_ports.stop - 200)
    problem = asyncio.run(start(overlapping, tmp_path / "same"))
    assert problem is not None, "a second relay started on the first one's ports"
    assert f"pid {first.process.pid}" in problem and "SO_REUSEADDR" in problem, problem
    with media_ports() as free:  # a range of its own: it starts
        assert asyncio.run(start(free, tmp_path / "other")) is None
