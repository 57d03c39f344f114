"""A per-call RTP relay in front of pjmedia: the human phase without the conference tick.

pjmedia hands every frame through its 20 ms conference clock, and each direction of a
bridged call waits for that tick once (0–20 ms, at a phase fixed per call; bench/README.md,
"After issue 19"). With ``worker.trunk_relay`` the worker answers every plain-RTP G.711 call
with a relay of its own in front of pjmedia:

    trunk (or rtpengine) ⇄ relay's outer pair (named in our SDP)
                           relay's inner pair (on pjmedia's address) ⇄ pjmedia's sockets

* Our SDP names the relay (``on_call_sdp_created``: pjsua2 parses the rewritten text
  back). pjmedia's stream sends to the trunk's SDP address until it has heard
  :data:`PRIME_PACKETS` packets from the relay, so the relay primes it with silence as
  the stream starts (:meth:`TrunkRelay.prime`).
* The sockets are read on one thread for the worker's relays (:class:`RelayIO`), not on
  the event loop: a packet waits for the interpreter lock at most, never for a loop
  callback, so pjmedia's jitter buffer gets the trunk's packets as they come.
* The trunk's RTP is served in C (``hitl_sip/media/_rtpcore.c``) on that thread, without
  the interpreter: strict source, the renumbered copy to pjmedia, and — once
  :attr:`TrunkRelay.direct` has said where the caller's audio goes (the agent's lean
  leg, or nowhere) — the packet there. A verdict holds until the session says who hears
  the caller may have changed (:meth:`TrunkRelay.disarm`), for a second at most.
* While the agent's frames go out, pjmedia's copy of them is not made:
  :attr:`TrunkRelay.on_carry` tells the stack, which stops the call's port transmitting
  to pjmedia's stream (``PjStack.relay_carries``: no Python callback for that direction
  on pjmedia's clock thread, no encoding; the stream sends silence, which nobody reads
  until the hand-back), and the thread stops polling the inner socket; :data:`HANDBACK`
  after the agent's last frame both come back, and what pjmedia queued meanwhile is read
  and dropped at once.
* Every packet is forwarded both ways, RTCP too: the bot phase, DTMF, recording, the shadow
  transcription and the quality figures keep running on pjmedia's stream. pjmedia hears
  one stream from the primer on (:class:`InboundStream`): the trunk's packets carry on
  the primer's SSRC and numbering, so its loss count never takes the jump for losses.
* Strict source: a packet from any address but the one the trunk's SDP names is dropped
  and counted (what rtpengine's ``strict-source`` does on the default edge).
* The caller's G.711 payloads are decoded as they arrive and handed to
  :attr:`to_agent` (the session's current agent track) — no tick to wait for.
* While the agent's frames come (:meth:`send_pcm`), they go to the trunk from here,
  encoded with the call's G.711 law, and pjmedia's own packets are dropped; when they stop
  for :data:`HANDBACK` (hold audio, a mute, the bot again) pjmedia's packets flow again.
  Everything we send carries one SSRC (pjmedia's), a sequence of our own and timestamps
  that advance with the audio, and no marker bit on audio, so the trunk sees one
  continuous stream; packets leave under the numbering's lock, so the wire's order is
  the numbering's whichever thread sends.

SDES-SRTP calls are not relayed (the payloads are encrypted); nor calls at a 16 kHz clock
rate (the caller track takes the call's rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable

import numpy as np

from hitl_sip.media._rtpcore import Core, Inbound, Relay, Sender, TrunkOut
from hitl_sip.media.g711 import BY_PT
from hitl_sip.media.rtp import payload_bounds

log = logging.getLogger(__name__)

Addr = tuple[str, int]

#: how long after the agent's last frame pjmedia's own packets reach the trunk again
HANDBACK = 0.06
#: packets pjmedia's stream must hear from a new source before it sends there
#: (``PJMEDIA_RTP_NAT_PROBATION_CNT``, unless the SDP carries the trunk's SSRC)
PRIME_PACKETS = 10
#: at most this many of pjmedia's packets read and dropped at a hand-back (more than a
#: socket buffer holds)
DRAIN_LIMIT = 4096
#: the receive buffer of the socket pjmedia's packets reach (the kernel doubles it)
INNER_RCVBUF = 65536
#: a 20 ms frame of silence in each law (the primer's payload)
SILENCE = {0: b"\xff" * 160, 8: b"\xd5" * 160}
_random = random.SystemRandom()


class TrunkRelay:
    """One call's relay: created on the pj thread, started, fed (:meth:`send_pcm`) and
    closed on the loop; its sockets are read on the relay thread (:class:`RelayIO`)."""

    def __init__(self, host: str, pj_rtp: Addr, trunk: Addr, trunk_rtcp: Addr,
                 ports: tuple[int, int] = (0, 0)) -> None:
        self.rtp, self.rtcp = bind_pair(host, *ports)
        self.port = int(self.rtp.getsockname()[1])
        # pjmedia's side: a pair of its own on pjmedia's address, so that pjmedia's packets
        # (dropped while the agent talks) need not wake the relay thread then
        try:
            self.inner_rtp, self.inner_rtcp = bind_pair(pj_rtp[0])
            # what pjmedia's stream sends through a cut waits here until the hand-back
            # drains it on the loop: a bounded buffer (~3 s of packets), whatever the
            # host's default, bounds that drain (the relay thread reads it as it comes)
            self.inner_rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, INNER_RCVBUF)
        except OSError:
            self.rtp.close()
            self.rtcp.close()
            raise
        self.pj_rtp = pj_rtp
        self.pj_rtcp: Addr = (pj_rtp[0], pj_rtp[1] + 1)
        self.trunk = trunk
        self.trunk_rtcp = trunk_rtcp
        #: what pjmedia hears is one stream, the primer's: its SSRC, sequence and clock
        #: carry on through the trunk's packets (and any SSRC the trunk changes to)
        self._rx = InboundStream()
        #: everything we send the trunk, one stream (C, its own lock: the relay thread
        #: sends pjmedia's packets, the loop the agent's frames): pjmedia's SSRC, a
        #: sequence of our own, timestamps that advance with the audio; pjmedia's packets
        #: are dropped within :data:`HANDBACK` of the agent's last frame. Its trunk address
        #: is the one source whose RTP is taken.
        self.out = TrunkOut(self.rtp.fileno(), trunk, HANDBACK)
        #: the trunk's RTP, served by the C core on the relay thread (:meth:`_on_packet`
        #: for what it is not armed to decide)
        self._core = Relay(self.rtp.fileno(), self.inner_rtp.fileno(), pj_rtp, self.out,
                           self._rx, self._on_packet)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: set at pjmedia's first packet here: its stream sends to the relay from then on
        self.pjmedia_latched = asyncio.Event()
        self._to_agent: Callable[[bytes], None] | None = None
        self._direct: Callable[[int, bytes], Sender | bool] | None = None
        #: told on the loop when the agent's frames start going out from here (True) and
        #: when pjmedia's packets go to the trunk again (False): pjmedia need not send
        #: meanwhile (PjStack.relay_carries); None: pjmedia's packets are read and dropped
        self.on_carry: Callable[[bool], None] | None = None
        self._refused = 0  # RTCP or pjmedia's packets from a source the SDP does not name
        self._inner_polled = False  # pjmedia's packets read by the thread (else by send_pcm)
        self._handback: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Serve the sockets from the worker's relay thread (:class:`RelayIO`); called on
        the loop, whose thread then gets the caller's frames and the latch."""
        if self._closed or self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        io = RelayIO.get()
        io.add_relay(self._core)
        io.add(self.rtcp.fileno(), lambda: self._read(self.rtcp, self._on_rtcp))
        io.add(self.inner_rtcp.fileno(), lambda: self._read(self.inner_rtcp, self._on_rtcp))
        self._poll_inner(True)

    def _poll_inner(self, on: bool) -> None:
        """pjmedia's RTP is read by the relay thread, except while the agent's frames go
        out: then :meth:`send_pcm` drains it on the loop, which is awake for those frames
        anyway (pjmedia's packets are dropped meanwhile), and :meth:`_check_handback`
        gives it back to the thread when they stop."""
        if on == self._inner_polled or self._closed:
            return
        self._inner_polled = on
        io = RelayIO.get()
        if on:
            io.add(self.inner_rtp.fileno(), lambda: self._read(self.inner_rtp, self._on_inner))
        else:
            io.remove(self.inner_rtp.fileno())

    def close(self) -> None:
        """On the loop's thread, like :meth:`start` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.to_agent = None
        if self._handback is not None:
            self._handback.cancel()
        if self._loop is not None:
            io = RelayIO.get()
            for sock in (self.rtp, self.rtcp, self.inner_rtp, self.inner_rtcp):
                io.remove(sock.fileno())
        self._core.close()
        for sock in (self.rtp, self.rtcp, self.inner_rtp, self.inner_rtcp):
            sock.close()

    @staticmethod
    def _read(sock: socket.socket, on: Callable[[bytes, Addr], None], limit: int = 1) -> None:
        """What is waiting, ``limit`` datagrams at most. The relay thread reads one per
        readiness: its epoll is level-triggered, so more waiting are reported at once
        again (reading on until the socket was empty cost a failed ``recvfrom`` per packet,
        and its BlockingIOError — strerror, gettext, a traceback — in Python); the loop's
        drains read what is there."""
        for _ in range(limit):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP unreachable for an earlier send; closed meanwhile
                if sock.fileno() < 0:
                    return
                log.debug("relay socket: %s", e)
                continue
            on(data, addr)

    def _to_loop(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(fn, *args)

    def update_trunk(self, trunk: Addr, trunk_rtcp: Addr) -> None:
        """A new SDP from the trunk (a re-INVITE) may name another address."""
        self.trunk, self.trunk_rtcp = trunk, trunk_rtcp
        self.out.set_trunk(trunk)  # where we send, and the one source taken

    @property
    def from_agent(self) -> int:
        """Agent frames sent to the trunk by the relay."""
        return self.out.from_agent

    @property
    def carrying(self) -> bool:
        """The agent's frames go out from here and pjmedia's copy is cut
        (:attr:`on_carry`): an agent frame may go to :attr:`out` as it is."""
        return not self._inner_polled and self.on_carry is not None and not self._closed

    @property
    def refused(self) -> int:
        """Packets from a source the SDP does not name (RTP, RTCP, on either side)."""
        return self._refused + self._core.refused

    @property
    def to_agent(self) -> Callable[[bytes], None] | None:
        """The caller's decoded audio (8 kHz s16le, 20 ms) while the call is bridged."""
        return self._to_agent

    @to_agent.setter
    def to_agent(self, sink: Callable[[bytes], None] | None) -> None:
        self._to_agent = sink
        self._core.disarm()

    @property
    def direct(self) -> Callable[[int, bytes], Sender | bool] | None:
        """Called first on this thread with a G.711 packet of the trunk's (its payload
        type, the whole packet) while the C core is not armed: the agent leg's
        :class:`Sender` when it was sent there (the core sends the next ones itself), True
        when nobody wants it (the bot phase: the core drops the next ones), a false value
        when the loop is to hand it on (decoded for :attr:`to_agent`). A verdict holds
        for ``_rtpcore.LEASE`` packets or until :meth:`disarm`."""
        return self._direct

    @direct.setter
    def direct(self, decide: Callable[[int, bytes], Sender | bool] | None) -> None:
        self._direct = decide
        self._core.disarm()

    def disarm(self) -> None:
        """Who takes the caller's audio may have changed (the session's state, its agent,
        what the agent hears): the next G.711 packet goes to :attr:`direct` again."""
        self._core.disarm()

    def prime(self, pt: int) -> None:
        """Make pjmedia's stream send to the relay from its first frame (called on the pj
        thread once the stream runs, and again whenever pjsua rebuilds it).

        pjmedia sends to the address in the trunk's SDP until it has heard
        :data:`PRIME_PACKETS` packets from another source; until then its packets leave
        from its own port, which rtpengine's strict source drops and a trunk may too — the
        greeting's first seconds, when the caller sends nothing. So the relay sends that
        many frames of silence of its own first, and then the two packets of a sequence
        restart (:meth:`InboundStream.primer`): pjmedia empties its jitter buffer of that
        silence (it held the caller's first words 100-200 ms late for seconds) and starts
        its counts over. The trunk's packets then continue that stream.
        """
        silence = SILENCE.get(pt)
        if silence is None or self._closed:
            return
        for header in self._rx.primer(pt):
            with contextlib.suppress(OSError):
                self.inner_rtp.sendto(header + silence, self.pj_rtp)

    # -- packets ----------------------------------------------------------------------------

    def _send(self, sock: socket.socket, data: bytes, addr: Addr) -> None:
        try:
            sock.sendto(data, addr)
        except OSError as e:  # a full socket buffer (the packet is late anyway), ICMP
            log.debug("relay send to %s: %s", addr, e)

    def _on_packet(self, pt: int, data: bytes) -> Sender | bool:
        """A G.711 packet of the trunk's the C core is not armed for (on the relay
        thread; the core has forwarded it to pjmedia): the verdict for the next ones."""
        sink = self._to_agent
        if sink is None:
            return True
        direct = self._direct
        verdict = direct(pt, data) if direct is not None else False
        if not verdict:
            start, end = payload_bounds(data)
            if start < end:  # (else one pjmedia refuses the same way, or empty)
                self._to_loop(sink, BY_PT[pt].decode[
                    np.frombuffer(data, np.uint8, end - start, start)].tobytes())
        return verdict

    def _on_inner(self, data: bytes, addr: Addr) -> None:
        if addr == self.pj_rtp and len(data) >= 12 and data[0] >> 6 == 2:
            self._from_pjmedia(data)
        else:
            self._refused += 1

    def _from_pjmedia(self, data: bytes) -> None:
        out = self.out
        if not out.started:
            self._to_loop(self.pjmedia_latched.set)
        out.pjmedia(data)

    def _on_rtcp(self, data: bytes, addr: Addr) -> None:
        """Either RTCP socket: pjmedia's reports reach the inner one (it latches onto the
        source of the trunk's, forwarded from there), the trunk's the outer one."""
        if addr == self.pj_rtcp:
            self._send(self.rtcp, self._rx.report_to_trunk(data), self.trunk_rtcp)
        elif addr == self.trunk_rtcp:
            self._send(self.inner_rtcp, data, self.pj_rtcp)
        else:
            self._refused += 1

    def send_pcm(self, frame: bytes) -> None:
        """One 20 ms frame for the caller (8 kHz s16le), to the trunk now (on the loop)."""
        out = self.out
        law = BY_PT.get(out.law)
        if self._closed or law is None or not out.ssrc:
            return  # pjmedia has not sent yet: its path carries the frame
        payload = law.encode[np.frombuffer(frame, "<i2").view("<u2")].tobytes()
        if self._inner_polled:
            self._poll_inner(False)
            self._handback_at(HANDBACK)
            if self.on_carry is not None:
                self.on_carry(True)
        elif self.on_carry is None:  # pjmedia keeps sending: its packets are dropped
            self._read(self.inner_rtp, self._drop_pjmedia, DRAIN_LIMIT)
        out.send(payload)

    def _handback_at(self, delay: float) -> None:
        if self._loop is not None and not self._closed:
            self._handback = self._loop.call_later(delay, self._check_handback)

    def _check_handback(self) -> None:
        """The agent's frames stopped for :data:`HANDBACK`: pjmedia's packets go to the
        trunk again, read by the relay thread as they come."""
        self._handback = None
        quiet = time.monotonic() - self.out.agent_at
        if quiet < HANDBACK:
            self._handback_at(HANDBACK - quiet)
            return
        # what came meanwhile, all of it (pjmedia's stream sends silence through a cut:
        # a socket buffer's worth, read now rather than sent as a burst)
        self._read(self.inner_rtp, self._drop_pjmedia, DRAIN_LIMIT)
        if self.on_carry is not None:  # what a full socket buffer kept is old: pjmedia's
            self.out.forget_pjmedia()  # next packet is the next frame
        self._poll_inner(True)
        if self.on_carry is not None:
            self.on_carry(False)

    def _drop_pjmedia(self, data: bytes, addr: Addr) -> None:
        """A packet of pjmedia's from while the agent's frames went out: not sent, its
        clock followed (the step of the next one we send counts from it)."""
        if addr == self.pj_rtp:
            self.out.follow_pjmedia(data)


class InboundStream(Inbound):
    """The stream pjmedia receives from a relay: the primer's silence, then the trunk's
    packets renumbered into it — one SSRC, a sequence that goes on by one, a clock that
    goes on by the time that passed — however the trunk numbers its own, and whenever
    it changes SSRC (rtpengine's SSRC normalisation does the same). Gaps and the RFC 4733
    events' shared timestamps within a trunk stream are kept as they are. pjmedia's
    receiver reports name the trunk's SSRC and sequence again on the way out.

    Had the trunk's packets kept their own SSRC and numbering, pjmedia's RTCP counter
    (which does not start over at a new SSRC) would have taken the jump from the primer's
    random sequence to the trunk's as lost packets whenever it fell within 3,000 ahead —
    one call in twenty, its first quality report near MOS 1; and when it did not, the
    restart cost the caller's first two packets.

    The numbering (:meth:`renumber`, ``_next``) is the C core's (``_rtpcore.Inbound``, one
    lock): the relay thread renumbers every trunk packet there without the interpreter,
    the pj thread primes."""

    def __init__(self) -> None:
        super().__init__(_random.getrandbits(32) or 1, _random.getrandbits(16),
                         _random.getrandbits(32))

    def primer(self, pt: int) -> list[bytes]:
        """The primer's RTP headers (payload type ``pt``, each for a frame of silence):
        :data:`PRIME_PACKETS` in sequence, for pjmedia to latch onto the relay, then two
        after a jump of half the sequence space — the first one pjmedia discards, the
        second restarts its sequence: its jitter buffer is emptied of the silence and its
        RTCP counts start over, before the trunk's first packet."""
        steps = [1] * PRIME_PACKETS + [0x8000, 1]
        return [self._next(pt, step) for step in steps]

    def report_to_trunk(self, data: bytes) -> bytes:
        """pjmedia's RTCP (compound): report blocks about our SSRC name the trunk's SSRC
        and its extended highest sequence number again."""
        peer, seq_off = self.peer()
        if peer is None:
            return data
        out = bytearray(data)
        ssrc = self.ssrc
        at = 0
        while at + 8 <= len(out) and out[at] >> 6 == 2:
            count, pt = out[at] & 0x1F, out[at + 1]
            end = at + 4 * (struct.unpack_from("!H", out, at + 2)[0] + 1)
            if end > len(out):
                break
            block = at + (28 if pt == 200 else 8) if pt in (200, 201) else end
            for _ in range(count if pt in (200, 201) else 0):
                if block + 24 > end:
                    break
                if struct.unpack_from("!I", out, block)[0] == ssrc:
                    highest = struct.unpack_from("!I", out, block + 8)[0]
                    low = (highest - seq_off) & 0xFFFF
                    struct.pack_into("!II", out, block, peer, (highest & 0xFFFF0000) | low)
                block += 24
            at = end
        return bytes(out)


class RelayIO:
    """The worker's relay thread: one epoll over every call's relay sockets, in the C core
    (``_rtpcore.Core``), which serves the trunks' RTP without the interpreter and hands
    the other sockets' readiness to their Python handlers here.

    On the event loop a relayed packet waited for whatever the loop was doing — a 60 ms
    callback held every trunk packet of every call, and pjmedia's jitter buffer then got
    them as a burst (the recordings' jitter checks failed under CI load). Here a packet
    waits at most for the interpreter lock (handed over every ``sys.getswitchinterval()``,
    5 ms) when Python handles it, and for nothing when the core does. Handlers run on this
    thread; they reach the loop with ``call_soon_threadsafe``.
    """

    _instance: RelayIO | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._core = Core()
        self._handlers: dict[int, Callable[[], None]] = {}
        self._thread = threading.Thread(target=self._core.run, args=(self._dispatch,),
                                        name="relay-io", daemon=True)
        self._thread.start()

    @classmethod
    def get(cls) -> RelayIO:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def add(self, fd: int, handler: Callable[[], None]) -> None:
        self._handlers[fd] = handler
        self._core.add_python(fd)

    def add_relay(self, relay: Relay) -> None:
        """A call's trunk socket, served by the core."""
        self._core.add_relay(relay)

    def remove(self, fd: int) -> None:
        """Before the descriptor is closed (a number the kernel may hand out again)."""
        self._handlers.pop(fd, None)
        self._core.remove(fd)

    def _dispatch(self, fd: int) -> None:
        handler = self._handlers.get(fd)
        if handler is None:
            return
        try:
            handler()
        except Exception:  # one call's fault never stops the others' media
            log.exception("relay handler failed")


def bind_pair(host: str, first: int = 0, last: int = 0) -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on ``host``, RTP on an even port and RTCP on the next one: drawn at
    random from ``first``..``last`` (the worker's share of the profile's [rtp] range, which
    pjmedia's own ports share: pjsua skips a pair that is taken), or ephemeral when
    ``first`` is 0. Drawn at random so that a call's media address cannot be guessed from
    the previous call's."""
    pairs = (last - first + 1) // 2 if first else 0
    for _ in range(64):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((host, first + (first & 1) + 2 * _random.randrange(pairs) if pairs else 0))
        except OSError:
            rtp.close()
            continue
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535 and (not pairs or port + 1 <= last):
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, port + 1))
            except OSError:
                rtcp.close()
            else:
                rtp.setblocking(False)
                rtcp.setblocking(False)
                return rtp, rtcp
        rtp.close()
    where = f"{first}-{last}" if pairs else "any port"
    raise OSError(f"no free even/odd port pair on {host} ({where}) for a relay")


# -- SDP --------------------------------------------------------------------------------------

_M_AUDIO = re.compile(r"^m=audio (\d+) (\S+)", re.M)
_C_IN = re.compile(r"^c=IN IP4 (\S+)", re.M)
_A_RTCP = re.compile(r"^a=rtcp:(\d+)([^\r\n]*)", re.M)


def sdp_media(sdp: str) -> tuple[str, int, int, str] | None:
    """(address, RTP port, RTCP port, transport) of an SDP's first audio stream."""
    m, c = _M_AUDIO.search(sdp), _C_IN.search(sdp)
    if m is None or c is None:
        return None
    port = int(m.group(1))
    rtcp = _A_RTCP.search(sdp)
    return c.group(1), port, int(rtcp.group(1)) if rtcp else port + 1, m.group(2)


def rewrite(sdp: str, host: str, port: int) -> str:
    """Our SDP with its audio stream (and its RTCP) at the relay's ``host``:``port``."""
    sdp = _M_AUDIO.sub(lambda m: f"m=audio {port} {m.group(2)}", sdp, count=1)
    sdp = _C_IN.sub(f"c=IN IP4 {host}", sdp)
    return _A_RTCP.sub(lambda m: f"a=rtcp:{port + 1}"
                       + re.sub(r"IN IP4 \S+", f"IN IP4 {host}", m.group(2)), sdp)
