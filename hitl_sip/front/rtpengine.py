"""rtpengine on the media path before the workers (``front.media = "rtpengine"``): the
standard Kamailio + rtpengine pair, so that the trunk's RTP reaches the workers only through
a relay that knows which address each call's media must come from.

pjmedia delivers RTP from any source to a call's stream and, before the caller's first
packet, latches its outgoing audio to whoever sends first (DESIGN.md §3, §6). rtpengine is
started with

* ``endpoint-learning = off``: the peer of a stream is the address its SDP names, never
  the first (or any later) source heard;
* per call, from the front's ``rtpengine_offer`` (hitl_sip/front/kamailio.py),
  ``strict-source``: a packet whose source is not that address is dropped, RTP and RTCP,
  before and after the caller's first packet, on the trunk's side and on the workers';
* two logical interfaces, ``external`` (``front.media_host``, advertising the profile's
  ``[nat] public_address``) toward the trunks and ``internal`` (``front.worker_host``)
  toward the workers, whose media listens there only (hitl_sip/worker/service.py);
* the profile's ``[rtp] port_start..port_end`` as its range (the workers' own is
  ``front.worker_rtp_port_*``); userspace forwarding only (``table = -1``: no kernel
  module), the ng control protocol on a loopback port chosen at start.

rtpengine opens every media socket with ``SO_REUSEADDR``: a second rtpengine on the same
address with an overlapping range binds the very ports of the first one's live calls without
an error, and from then on Linux hands their packets to the later socket, so a call's audio
stops mid-call while its dialog stays up. Both sides count: the ``internal`` one is on
``front.worker_host`` with the same range, so two servers on one host whose public
addresses differ still collide there. Before it starts rtpengine, :class:`RtpEngine` claims
its addresses and range host-wide (:class:`PortClaim`: an abstract Unix socket per address,
named after it, which the kernel removes with the process) and refuses to start when another
live claim overlaps: two servers on one host need disjoint ``[rtp]`` ranges.

:class:`RtpEngine` runs it like :class:`~hitl_sip.front.kamailio.KamailioFront` runs
Kamailio: a child of the hub in its own session, SIGTERM'd when the hub dies, restarted with
a backoff when it exits or stops answering the ng ``ping``. A restart loses the live calls'
media sessions (rtpengine keeps them in memory): their audio stops, new calls work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from hitl_sip.config import Config, uses_rtpengine
from hitl_sip.errors import ConfigError
from hitl_sip.front.kamailio import _die_with_the_hub, _private
from hitl_sip.front.ng import ping
from hitl_sip.front.ports import internal_port
from hitl_sip.front.process import kill_group, stop_group
from hitl_sip.sip.profile import TrunkProfile

log = logging.getLogger(__name__)

EXTERNAL = "external"  # rtpengine's interface toward the trunks
INTERNAL = "internal"  # toward the workers
# rtpengine's log levels are syslog's
LOG_LEVELS = {"debug": 7, "info": 5, "warning": 4, "error": 3}
PING_FAILURES = 3  # consecutive unanswered pings before rtpengine is restarted


def media_host(config: Config) -> str:
    """The address rtpengine's public side binds: ``front.media_host``; else ``sip.host``
    unless it is a wildcard; else the local address of the default route (what the trunk
    reaches), loopback when there is none."""
    if config.front.media_host:
        return config.front.media_host
    if config.sip.host not in ("0.0.0.0", "::", ""):
        return config.sip.host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a route lookup, nothing is sent
            return str(probe.getsockname()[0])
        except OSError:
            log.warning("no default route: rtpengine's public side binds 127.0.0.1")
            return "127.0.0.1"


def free_ng_port(host: str = "127.0.0.1", avoid: Iterable[range] = (),
                 taken: Collection[int] = ()) -> int:
    """A free UDP port on ``host`` for the ng control protocol, outside the ephemeral range
    (:mod:`hitl_sip.front.ports`), ``avoid`` and ``taken``."""
    return internal_port(host, avoid=avoid, taken=taken, tcp=False)


def render_config(config: Config, *, port_start: int, port_end: int, public_address: str | None,
                  ng_port: int, external: str) -> str:
    """rtpengine's ini file (``--config-file``, section ``rtpengine``)."""
    advertise = f"!{public_address}" if public_address else ""
    return f"""# rtpengine of the hitl-sip front, generated at every start from the trunk profile
# {config.sip.profile!r} and [front]: edit those, not this file.
[rtpengine]
# userspace forwarding only: no kernel module, no iptables rules
table = -1
interface = {INTERNAL}/{config.front.worker_host};{EXTERNAL}/{external}{advertise}
listen-ng = 127.0.0.1:{ng_port}
foreground = true
log-stderr = true
log-level = {LOG_LEVELS.get(config.log.level, 5)}
# its core traces every RFC 4733 packet with the digit at debug (a card number typed on the
# keypad): the core logs at most at syslog's info (6) whatever log.level says (issue 15)
log-level-core = {min(LOG_LEVELS.get(config.log.level, 5), 6)}
port-min = {port_start}
port-max = {port_end}
# a stream's peer is the address in its SDP, never learnt from the packets (the first
# packet of an injector would otherwise win); with the per-call strict-source flag every
# packet from another address is dropped
endpoint-learning = off
# a call with no media for this long is forgotten (the workers send audio all the time)
timeout = 60
silent-timeout = 3600
final-timeout = {int(config.worker.max_call_seconds) + 60}
offer-timeout = 120
"""


def write_config(config: Config, directory: Path, *, port_start: int, port_end: int,
                 public_address: str | None, ng_port: int) -> Path:
    """``<directory>/rtpengine.conf``, 0600 in a 0700 directory (like the Kamailio files)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / "rtpengine.conf"
    _private(path, render_config(config, port_start=port_start, port_end=port_end,
                                 public_address=public_address, ng_port=ng_port,
                                 external=media_host(config)))
    return path


def check_media_ranges(config: Config, profile: TrunkProfile) -> None:
    """With rtpengine, the workers' RTP range must not overlap rtpengine's (the profile's)."""
    if not uses_rtpengine(config):
        return
    f = config.front
    if f.worker_rtp_port_start <= profile.rtp.end and profile.rtp.start <= f.worker_rtp_port_end:
        raise ConfigError(
            "front.worker_rtp_port_start",
            f"the workers' RTP range {f.worker_rtp_port_start}-{f.worker_rtp_port_end} overlaps "
            f"the profile's [rtp] range {profile.rtp.start}-{profile.rtp.end} (rtpengine's)")


CLAIM_PREFIX = "hitl-sip-media-relay"  # the abstract Unix socket names of the claims
UNIX_SOCKETS = Path("/proc/net/unix")  # every Unix socket of this network namespace
WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True)
class Claimed:
    """One address and port range a live media relay on this host binds."""

    address: str
    start: int
    end: int
    pid: int  # the process holding the claim (the relay's hub)
    name: str = ""

    def overlaps(self, other: Claimed) -> bool:
        if not (self.start <= other.end and other.start <= self.end):
            return False
        if self.address == other.address:
            return True
        wild = {self.address, other.address} & set(WILDCARDS)
        return bool(wild) and _family(self.address) == _family(other.address)


def _family(address: str) -> int:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


def live_claims(table: Path = UNIX_SOCKETS) -> list[Claimed]:
    """The claims held on this host (in this network namespace, where ports are shared)."""
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not fields[-1].startswith(f"@{CLAIM_PREFIX}/"):
            continue
        name = fields[-1][1:]
        try:
            _, address, ports, pid, _token = name.split("/")
            start, end = (int(p) for p in ports.split("-"))
            found.append(Claimed(address, start, end, int(pid), name))
        except ValueError:
            continue
    return found


def relay_ports(conf_file: Path) -> tuple[tuple[str, ...], int, int] | None:
    """The addresses and port range a generated ``rtpengine.conf`` binds (its ``interface``,
    ``port-min`` and ``port-max``); None when the file does not say."""
    try:
        text = conf_file.read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    try:
        start, end = int(values["port-min"]), int(values["port-max"])
        interfaces = values["interface"].split(";")
    except (KeyError, ValueError):
        return None
    # NAME/ADDRESS[!ADVERTISED]: the address bound, not the one advertised
    addresses = {i.split("/", 1)[-1].split("!", 1)[0].strip() for i in interfaces}
    return tuple(sorted(a for a in addresses if a)), start, end


class PortClaim:
    """This process's claim of ``addresses`` × ``start..end`` for one media relay: an abstract
    Unix socket per address, ``hitl-sip-media-relay/ADDRESS/START-END/PID/TOKEN``, which other
    hubs see in ``/proc/net/unix`` until it is released or this process ends."""

    def __init__(self, addresses: tuple[str, ...], start: int, end: int) -> None:
        self.claims: list[Claimed] = []
        self._sockets: list[socket.socket] = []
        token = secrets.token_hex(4)
        for address in addresses:
            name = f"{CLAIM_PREFIX}/{address}/{start}-{end}/{os.getpid()}/{token}"
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind("\0" + name)
            except OSError:
                sock.close()
                self.release()
                raise
            self._sockets.append(sock)
            self.claims.append(Claimed(address, start, end, os.getpid(), name))

    def conflicts(self, table: Path = UNIX_SOCKETS) -> list[tuple[Claimed, Claimed]]:
        """(ours, theirs) for every live claim of another relay that overlaps one of ours."""
        own = {c.name for c in self.claims}
        return [(mine, other) for other in live_claims(table) if other.name not in own
                for mine in self.claims if mine.overlaps(other)]

    def release(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


def claim_relay_ports(conf_file: Path) -> tuple[PortClaim | None, str | None]:
    """Claims the addresses and range of ``conf_file`` for this relay: (the claim, None),
    or (None, why not) when another live relay on this host has an overlapping one
    (rtpengine binds with ``SO_REUSEADDR``: both would bind the same ports and one would
    take the other's calls' packets). (None, None) when the file names no ports."""
    ports = relay_ports(conf_file)
    if ports is None:
        return None, None
    addresses, start, end = ports
    try:
        claim = PortClaim(addresses, start, end)
    except OSError as e:  # no abstract Unix sockets here: nothing to compare with
        log.warning("cannot claim the media relay's ports host-wide: %s", e)
        return None, None
    # looked up after our own bind: of two relays starting at once, each sees the other
    # (both refuse) rather than neither
    conflicts = claim.conflicts()
    if not conflicts:
        return claim, None
    claim.release()
    mine, theirs = conflicts[0]
    return None, (
        f"its ports {mine.start}-{mine.end} on {mine.address} overlap "
        f"{theirs.start}-{theirs.end}, those of another media relay on this host (hitl-sip "
        f"pid {theirs.pid}): rtpengine binds its ports with SO_REUSEADDR, so both would "
        f"bind the same ones and one would receive the other's calls' packets (their audio "
        f"stops mid-call); give each server its own [rtp] range in its trunk profile")


class RtpEngine:
    """Runs rtpengine in the foreground as a child of the hub; restarts it when it exits or
    stops answering ``ping`` (``front.probe_interval`` apart, :data:`PING_FAILURES` in a
    row)."""

    def __init__(self, config: Config, conf_file: Path, ng_port: int) -> None:
        self.config = config
        self.conf_file = conf_file
        self.ng_port = ng_port
        self.process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.last_pong = 0.0  # time.monotonic() of the last pong
        self.claim: PortClaim | None = None  # its addresses and range, held until stop()

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            self.config.front.rtpengine, f"--config-file={self.conf_file}",
            "--config-section=rtpengine",
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_the_hub,  # only prctl: no locks touched in the child
        )

    async def ping(self, wait: float = 1.0) -> bool:
        if await ping("127.0.0.1", self.ng_port, wait):
            self.last_pong = time.monotonic()
            return True
        return False

    async def _ready(self, within: float) -> bool:
        """Until rtpengine answers ``ping`` (True) or exits or ``within`` s pass (False)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process is None or self.process.returncode is not None:
                return False
            if await self.ping(0.2):
                return True
        return False

    async def start(self, within: float = 10.0) -> str | None:
        """Start rtpengine and wait for its first pong: None when it answers, else why not
        (it is then stopped). It does not start while another live relay on this host
        binds an overlapping range on one of its addresses (:func:`claim_relay_ports`)."""
        self.claim, conflict = claim_relay_ports(self.conf_file)
        if conflict is not None:
            return conflict
        self.process = await self._spawn()
        if not await self._ready(within):
            code = self.process.returncode
            await self.stop()
            return (f"rtpengine exited with code {code}" if code is not None
                    else f"rtpengine did not answer ping on 127.0.0.1:{self.ng_port} "
                         f"in {within:.0f}s")
        log.info("media relay (rtpengine pid %d) ready, ng on 127.0.0.1:%d",
                 self.process.pid, self.ng_port)
        self._task = asyncio.create_task(self._keep(), name="rtpengine")
        return None

    def public(self) -> dict[str, object]:
        """What /healthz shows of the media relay."""
        running = self.process is not None and self.process.returncode is None
        age = time.monotonic() - self.last_pong if self.last_pong else None
        return {"kind": "rtpengine", "running": running,
                "pid": self.process.pid if self.process else 0, "restarts": self.restarts,
                "responding": running and age is not None
                and age < self.config.front.probe_interval * PING_FAILURES + 1}

    async def _keep(self) -> None:
        backoff = 1.0
        while not self._stopping and self.process is not None:
            reason = await self._watch(self.process)
            if self._stopping:
                return
            self.last_pong = 0.0  # not responding until the next process answers
            kill_group(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await self.process.wait()
            log.error("the media relay (rtpengine) %s: restarting in %.0fs (live calls lose "
                      "their media)", reason, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1
            self.process = await self._spawn()
            if await self._ready(10.0):
                backoff = 1.0
                log.info("media relay (rtpengine pid %d) ready again", self.process.pid)

    async def _watch(self, process: asyncio.subprocess.Process) -> str:
        """Until the process exits or stops answering; returns which."""
        failures = 0
        interval = float(self.config.front.probe_interval)
        exited = asyncio.ensure_future(process.wait())
        try:
            while True:
                await asyncio.wait({exited}, timeout=interval)
                if exited.done():
                    return f"exited with code {exited.result()}"
                if await self.ping(1.0):
                    failures = 0
                    continue
                failures += 1
                if failures >= PING_FAILURES:
                    return f"did not answer {failures} pings"
        finally:
            exited.cancel()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.process is not None:
            await stop_group(self.process, "the media relay")
        if self.claim is not None:  # its ports are free once the process is gone
            self.claim.release()
            self.claim = None
