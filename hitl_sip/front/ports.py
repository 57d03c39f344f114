"""Ports the front chooses at start for its own plumbing: the workers' internal SIP ports,
rtpengine's ng control port and ``sip.port = 0``.

A port is chosen before the process that listens on it starts, so it must stay free in
between. A port from the kernel's ephemeral range does not: a port found free with
``bind(0)`` goes back to the pool, and the next socket that connects or sends without
binding may get it — Kamailio's rtpengine module opens one such socket per process while
the workers start, and one of them once took a worker's port (the worker could not bind it
three times in a row and the server gave up). So these ports are drawn from outside
``net.ipv4.ip_local_port_range`` and outside the media ranges in use, and probed."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection, Iterable
from pathlib import Path

#: Where Linux keeps the ephemeral range (one line, "low high").
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Linux's default, used when the file cannot be read.
DEFAULT_EPHEMERAL = range(32768, 61000)
#: Below this, ports are privileged or well known.
LOWEST = 1024


def ephemeral_range(source: Path = EPHEMERAL_RANGE_FILE) -> range:
    """The kernel's ephemeral port range (inclusive bounds read from ``source``)."""
    try:
        low, high = (int(v) for v in source.read_text().split()[:2])
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    if not LOWEST <= low <= high <= 65535:
        return DEFAULT_EPHEMERAL
    return range(low, high + 1)


def candidates(avoid: Iterable[range], ephemeral: range) -> list[int]:
    """Ports outside ``ephemeral`` and every range of ``avoid``, in the order they are
    tried: those above the ephemeral range first (nothing allocates there by itself), then
    those below, each group shuffled."""
    blocked = [ephemeral, *avoid]

    def free(port: int) -> bool:
        return not any(port in r for r in blocked)

    above = [p for p in range(max(ephemeral.stop, LOWEST), 65536) if free(p)]
    below = [p for p in range(LOWEST, ephemeral.start) if free(p)]
    random.shuffle(above)
    random.shuffle(below)
    return above + below


def _bindable(host: str, port: int, kinds: tuple[int, ...]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in kinds:
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


def internal_port(host: str, *, avoid: Iterable[range] = (), taken: Collection[int] = (),
                  tcp: bool = True, ephemeral: range | None = None) -> int:
    """A port on ``host`` free for UDP (and TCP with ``tcp``) now, outside the ephemeral
    range, every range of ``avoid`` and the ports of ``taken``. OSError when there is none."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
    eph = ephemeral_range() if ephemeral is None else ephemeral
    for port in candidates(avoid, eph):
        if port not in taken and _bindable(host, port, kinds):
            return port
    raise OSError(f"no free port on {host} outside the ephemeral range {eph.start}-"
                  f"{eph.stop - 1} and the media ranges")
