"""rtpengine before the workers: its ng codec, its generated configuration, the front's media
flags, the workers' media settings behind it, and the process itself answering ``ping``."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from hitl_sip.config import Config, load_config, uses_rtpengine
from hitl_sip.errors import ConfigError
from hitl_sip.front.kamailio import KamailioFront, render_config, write_files
from hitl_sip.front.ng import bdecode, bencode, ng_request
from hitl_sip.front.rtpengine import RtpEngine, check_media_ranges, free_ng_port, media_host
from hitl_sip.front.rtpengine import render_config as render_rtpengine
from hitl_sip.front.rtpengine import write_config as write_rtpengine
from hitl_sip.sip.acl import AllowList
from hitl_sip.sip.profile import parse_profile
from hitl_sip.worker.service import stack_settings


def config(**overrides: str) -> Config:
    return load_config(None, env={}, overrides={"worker.count": "2", "sip.port": "5070",
                                                "sip.host": "127.0.0.1", **overrides})


PROFILE = 'name = "t"\n[nat]\npublic_address = "203.0.113.10"\n' \
          '[rtp]\nport_start = 20000\nport_end = 20999\n'


def test_bencode_round_trips_an_ng_command() -> None:
    command = {"command": "offer", "flags": ["strict-source"], "replace": ["origin"],
               "sdp": "v=0\r\n", "n": 42, "nested": {"b": [], "a": "x"}}
    data = bencode(command)
    assert data.startswith(b"d7:command5:offer")  # keys sorted
    assert bdecode(data) == command
    assert bdecode(b"d6:result4:ponge") == {"result": "pong"}


@pytest.mark.parametrize("data", [b"d6:result4:pon", b"i12", b"x", b"d1:ae", b"4:pong!"])
def test_broken_bencode_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        bdecode(data)


def test_rtpengine_learns_no_endpoint_and_relays_in_userspace_between_two_sides() -> None:
    text = render_rtpengine(config(), port_start=20000, port_end=20999,
                            public_address="203.0.113.10", ng_port=7722, external="10.0.0.5")
    assert "endpoint-learning = off" in text
    assert "table = -1" in text
    assert "interface = internal/127.0.0.1;external/10.0.0.5!203.0.113.10" in text
    assert "listen-ng = 127.0.0.1:7722" in text
    assert "port-min = 20000" in text and "port-max = 20999" in text


def test_the_public_side_binds_sip_host_or_the_configured_media_host() -> None:
    assert media_host(config()) == "127.0.0.1"
    assert media_host(config(**{"front.media_host": "127.0.0.5"})) == "127.0.0.5"
    assert media_host(config(**{"sip.host": "0.0.0.0"})) not in ("0.0.0.0", "")


def test_the_front_offers_every_sdp_to_rtpengine_with_strict_source(tmp_path: Path) -> None:
    c = config()
    text = render_config(c, AllowList(allow_any=True), None, tmp_path / "d", tmp_path / "a",
                         secret="ab" * 16, rtpengine_ng=7722)
    assert 'modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:7722")' in text
    assert 'rtpengine_offer("direction=external direction=internal strict-source' in text
    assert "rtpengine_answer(" in text and "rtpengine_delete();" in text
    # direct media: no trace of rtpengine
    plain = render_config(c, AllowList(allow_any=True), None, tmp_path / "d", tmp_path / "a",
                          secret="ab" * 16)
    assert "rtpengine" not in plain


def test_kamailio_itself_accepts_the_configuration_with_rtpengine(tmp_path: Path) -> None:
    c = config()
    files = write_files(c, tmp_path, AllowList.from_cidrs(["127.0.0.0/8"]), None,
                        [6001, 6002], rtpengine_ng=free_ng_port())
    assert asyncio.run(KamailioFront(c, files, tmp_path / "run").check()) is None


def test_behind_rtpengine_worker_media_listens_on_the_worker_host_in_its_own_range() -> None:
    profile = parse_profile(PROFILE, env={})
    c = config(**{"sip.host": "0.0.0.0"})
    assert uses_rtpengine(c)
    s = stack_settings(c, profile, 1, sip_port=6002)
    assert (s.host, s.public_address) == ("127.0.0.1", "")
    assert 30000 <= s.rtp_port_start < s.rtp_port_end <= 30999
    # no front, or direct media: the profile's range and public address, as before
    for direct in (config(**{"front.mode": "none"}), config(**{"front.media": "direct"})):
        s = stack_settings(direct, profile, 0, sip_port=None if
                           direct.front.mode == "none" else 6001)
        assert s.public_address == "203.0.113.10" and s.rtp_port_start >= 20000


def test_the_workers_range_may_not_overlap_rtpengine_s() -> None:
    overlapping = parse_profile('name = "t"\n[rtp]\nport_start = 30500\nport_end = 31500\n',
                                env={})
    with pytest.raises(ConfigError, match=r"front\.worker_rtp_port_start"):
        check_media_ranges(config(), overlapping)
    check_media_ranges(config(**{"front.media": "direct"}), overlapping)
    with pytest.raises(ConfigError, match=r"front\.media"):
        config(**{"front.media": "kernel"})


def test_rtpengine_starts_answers_ping_and_stops(tmp_path: Path) -> None:
    async def run() -> None:
        c = config()
        ng_port = free_ng_port()
        conf = write_rtpengine(c, tmp_path / "front", port_start=40000, port_end=40099,
                               public_address=None, ng_port=ng_port)
        assert conf.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "front").stat().st_mode & 0o777 == 0o700
        relay = RtpEngine(c, conf, ng_port)
        assert await relay.start() is None
        try:
            assert relay.public()["responding"] is True
            reply = await ng_request("127.0.0.1", ng_port, {"command": "ping"})
            assert reply == {"result": "pong"}
        finally:
            await relay.stop()
        assert relay.process is not None and relay.process.returncode is not None
        assert relay.public()["running"] is False

    asyncio.run(run())


def test_a_relay_that_cannot_start_says_why(tmp_path: Path) -> None:
    async def run() -> None:
        c = config()
        c = dataclasses.replace(c, front=dataclasses.replace(c.front, rtpengine="false"))
        relay = RtpEngine(c, tmp_path / "missing.conf", free_ng_port())
        problem = await relay.start(within=5)
        assert problem is not None and "exited" in problem

    asyncio.run(run())
