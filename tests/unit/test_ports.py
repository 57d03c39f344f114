"""The front's own ports (workers' internal SIP ports, rtpengine's ng port, ``sip.port = 0``)
come from outside the kernel's ephemeral range and the media ranges, so no socket that
connects meanwhile can take one before its process binds it."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from hitl_sip.config import Config
from hitl_sip.front.kamailio import worker_ports
from hitl_sip.front.ports import DEFAULT_EPHEMERAL, candidates, ephemeral_range, internal_port
from hitl_sip.front.rtpengine import free_ng_port


def test_the_ephemeral_range_is_read_from_the_kernel_file(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    assert ephemeral_range(f) == range(40000, 50001)


@pytest.mark.parametrize("text", ["", "garbage", "50000 40000", "0 100"])
def test_an_unreadable_range_falls_back_to_linux_default(tmp_path: Path, text: str) -> None:
    f = tmp_path / "range"
    f.write_text(text)
    assert ephemeral_range(f) == DEFAULT_EPHEMERAL
    assert ephemeral_range(tmp_path / "missing") == DEFAULT_EPHEMERAL


def test_candidates_skip_the_ephemeral_and_media_ranges_and_try_above_first() -> None:
    eph = range(32768, 61000)
    media = [range(10000, 20000), range(30000, 31000)]
    ports = candidates(media, eph)
    assert len(ports) == len(set(ports))
    assert not any(p in eph or any(p in r for r in media) for p in ports)
    assert min(ports) == 1024 and max(ports) == 65535
    above = 65536 - 61000
    assert all(p >= 61000 for p in ports[:above])
    assert all(p < 32768 for p in ports[above:])


def test_the_port_found_is_free_for_udp_and_tcp_and_outside_the_ranges() -> None:
    eph = ephemeral_range()
    port = internal_port("127.0.0.1", avoid=[range(30000, 31000)])
    assert port not in eph and port not in range(30000, 31000)
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_or_taken_is_passed_over_and_none_left_is_an_error() -> None:
    # only three ports are allowed: one held by a socket, one already handed out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        others = [internal_port("127.0.0.1", avoid=[range(busy, busy + 1)])]
        others.append(internal_port("127.0.0.1", avoid=[range(busy, busy + 1)], taken=others))
        allowed = sorted({busy, *others})
        assert len(allowed) == 3
        avoid = [range(1024, allowed[0]), range(allowed[0] + 1, allowed[1]),
                 range(allowed[1] + 1, allowed[2]), range(allowed[2] + 1, 65536)]
        eph = range(1, 2)  # nothing left to the kernel's range in this test
        assert internal_port("127.0.0.1", avoid=avoid, taken=[others[0]],
                             ephemeral=eph) == others[1]
        with pytest.raises(OSError, match="no free port"):
            internal_port("127.0.0.1", avoid=avoid, taken=others, ephemeral=eph)


def test_workers_ng_and_front_ports_stay_clear_of_each_other_and_the_media() -> None:
    config = Config()
    config = dataclasses.replace(config, worker=dataclasses.replace(config.worker, count=4))
    media = [range(10000, 21000), range(30000, 31000)]
    ports = worker_ports(config, media)
    ng = free_ng_port(avoid=media, taken=ports)
    eph = ephemeral_range()
    assert len({*ports, ng}) == 5
    assert not any(p in eph or any(p in r for r in media) for p in (*ports, ng))


def test_a_fixed_worker_base_port_is_kept() -> None:
    config = Config()
    config = dataclasses.replace(
        config, worker=dataclasses.replace(config.worker, count=2),
        front=dataclasses.replace(config.front, worker_base_port=7000))
    assert worker_ports(config, [range(7000, 7002)]) == [7000, 7001]
