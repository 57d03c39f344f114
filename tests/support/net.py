"""Loopback helpers: free ports chosen at run time, a block of media ports per test server
and a root-only RTP sniffer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hitl_sip.front.rtpengine import live_claims


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP at the time of the call."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s2:
            try:
                s2.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


def free_port_pair() -> int:
    """An even port whose successor is free too (RTP + RTCP, or SIPp's media + video)."""
    for _ in range(100):
        port = free_port()
        if port % 2 == 0 and port < 65530:
            with contextlib.ExitStack() as stack:
                try:
                    for p in (port, port + 1, port + 2, port + 3):
                        s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                        s.bind(("127.0.0.1", p))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair found")


#: The blocks a test server's media relay may get (:func:`media_ports`): below the ephemeral
#: range (callers' free ports), clear of sip_profiles/local.toml's 20000-20999 (servers
#: started by hand) and of the workers' default 30000-30999 behind rtpengine.
MEDIA_BLOCK = 1000
MEDIA_BLOCKS = (*range(10000, 20000, MEDIA_BLOCK), *range(21000, 30000, MEDIA_BLOCK))
MEDIA_LOCKS = Path(tempfile.gettempdir()) / "hitl-sip-test-media-ports"


@contextlib.contextmanager
def media_ports(timeout: float = 120.0) -> Iterator[range]:
    """A block of :data:`MEDIA_BLOCK` ports that no other test server on this host has while
    the ``with`` lasts: an ``flock`` on ``MEDIA_LOCKS/<start>.lock`` (released with the
    process), skipping blocks a live media relay outside the tests claims.

    rtpengine binds its ports with ``SO_REUSEADDR``: two servers whose relays share a range
    on 127.0.0.1 bind the same ports, and one takes the other's calls' packets (their audio
    stops mid-call). Every test server runs on 127.0.0.1, so each needs a range of its own;
    waits up to ``timeout`` seconds for one."""
    MEDIA_LOCKS.mkdir(exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        claimed = live_claims()
        for start in MEDIA_BLOCKS:
            block = range(start, start + MEDIA_BLOCK)
            if any(c.start < block.stop and block.start <= c.end for c in claimed):
                continue
            fd = os.open(MEDIA_LOCKS / f"{start}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield block
            finally:
                os.close(fd)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"every block of media ports in {MEDIA_LOCKS} is taken")
        time.sleep(0.5)


ETH_P_ALL = 0x0003


@dataclass
class UdpSniffer:
    """Captures UDP payloads sent to ``port`` on the loopback interface (needs root).

    Used to hear what the server sends to SIPp's media port, which SIPp itself cannot record.
    """

    port: int
    packets: list[bytes] = field(default_factory=list)
    #: each packet's source (address, port), in the order of ``packets``
    sources: list[tuple[str, int]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> UdpSniffer:
        if os.geteuid() != 0:
            raise PermissionError("the RTP sniffer needs root (AF_PACKET on lo)")
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == socket.PACKET_OUTGOING:
                continue  # loopback shows each packet twice; keep the incoming copy
            got = self._udp_payload(frame)
            if got is not None:
                self.sources.append(got[1])
                self.packets.append(got[0])

    def _udp_payload(self, frame: bytes) -> tuple[bytes, tuple[str, int]] | None:
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            return None
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17:
            return None
        udp = ip[ihl:]
        dport = struct.unpack("!H", udp[2:4])[0]
        if dport != self.port:
            return None
        length = struct.unpack("!H", udp[4:6])[0]
        source = (socket.inet_ntoa(ip[12:16]), struct.unpack("!H", udp[0:2])[0])
        return bytes(udp[8:length]), source
