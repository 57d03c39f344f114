"""A lean G.711 path for a WebRTC leg: the RTP aiortc would carry, one callback a packet.

aiortc carries every packet of a leg through a chain of asyncio hand-offs: on the way in
aioice's queue, the DTLS transport's task, ``RtpPacket.parse``, the receiver's statistics,
NACK generator and jitter buffer; on the way out the sender's task woken by the track, an
``RtpPacket`` with its header extensions, SRTP and aioice's ``sendto`` coroutine. For
G.711 there is nothing to encode or reassemble, and those hand-offs were most of a bridged
call's CPU (bench/README.md, "What is left … on PCMU CPU"). So once aiortc's DTLS
handshake is done, a G.711 leg's RTP takes a path of its own:

* **Out** (:meth:`LeanG711.send_pcm` on the loop, or :meth:`LeanG711.send_payload` on
  the trunk relay's thread with the trunk's own G.711 payload — and the relay's C core
  itself, armed with :attr:`LeanG711.sender`): the payload in the leg's law, a header
  made from a template aiortc serialised once (its SSRC, payload type and MID extension,
  as the SDP announced them), SRTP with the keys aiortc's handshake exported (a
  pylibsrtp session of our own, driven from C: ``_rtpcore.Sender``), and the datagram to
  the candidate pair aioice has nominated — on a duplicate of its socket, at once, from
  either thread.
* **In** (:meth:`LeanG711.receive`, installed in front of aioice's queue): the agent's
  SRTP packets of the G.711 payload type are unprotected, counted in aiortc's own
  receiver statistics (``getStats`` and its receiver reports stay right), decoded and
  handed on, in the datagram's callback.

aiortc keeps everything else: ICE and its consent checks, DTLS, RTCP both ways (with
its own SRTP sessions: RTP and RTCP are keyed apart), and Opus legs. aiortc's sender
never sends RTP on a lean leg (the track holds its pulls: :meth:`CallerTrack.hold`), so
the leg's SSRC has one sequence, ours. If anything of aiortc's is not where this expects
it, :func:`attach` returns None and the leg stays on aiortc's path.
"""

from __future__ import annotations

import logging
import secrets
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket as AiortcRtpPacket
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

from hitl_sip.media._rtpcore import Sender
from hitl_sip.media.g711 import BY_NAME, BY_PT
from hitl_sip.media.rtp import payload_bounds

log = logging.getLogger(__name__)

RATE = 8000


class _Seen:
    """What aiortc's StreamStatistics reads of a packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self, sequence_number: int, timestamp: int) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp


class LeanG711:
    """One G.711 leg's RTP both ways: received on the event loop's thread, sent from
    either (its :attr:`sender` numbers and sends under its own lock; after a pause of
    more than 60 ms between frames the timestamp jumps by the time that passed)."""

    def __init__(self, *, codec: str, payload_type: int, sender: Sender, rx: Session,
                 on_pcm: Callable[[npt.NDArray[np.int16], int], None],
                 streams: dict[int, Any]) -> None:
        law = BY_NAME[codec]
        self._encode, self._decode = law.encode, law.decode
        self.payload_type = payload_type
        #: the leg's outgoing RTP (C): the relay's core sends the trunk's payloads on it
        self.sender = sender
        self._rx = rx
        self._on_pcm = on_pcm
        self._streams = streams  # aiortc's receiver's, by SSRC: its stats and reports
        self._last_in: int | None = None  # the newest sequence number taken from the agent
        self.closed = False
        self.on_close: Callable[[], None] | None = None
        self.received = 0
        self.refused = 0  # failed SRTP authentication, or old/duplicate packets

    @property
    def sent(self) -> int:
        return self.sender.sent

    # -- to the agent -------------------------------------------------------------------------

    def send_pcm(self, pcm: bytes) -> None:
        """One 20 ms frame (8 kHz s16le) to the agent, now."""
        self.sender.send(self._encode[np.frombuffer(pcm, "<i2").view("<u2")].tobytes())

    def send_payload(self, pt: int, payload: bytes) -> None:
        """One trunk packet's G.711 payload (payload type ``pt``: 0 or 8) to the agent,
        now — from the relay's thread; no PCM in between (the other law is mapped byte
        by byte)."""
        self.sender.send_payload(pt, payload)

    def close(self) -> None:
        self.closed = True
        self.sender.close()
        if self.on_close is not None:
            self.on_close()

    # -- from the agent -----------------------------------------------------------------------

    def receive(self, data: bytes) -> bool:
        """A datagram from the nominated pair: True when it was the agent's G.711 RTP
        (taken here), False for anything else (DTLS, RTCP, other payload types: aiortc's)."""
        if len(data) < 12 or not 127 < data[0] < 192 or 192 <= data[1] <= 223:
            return False
        if data[1] & 0x7F != self.payload_type:
            return False
        try:
            plain = self._rx.unprotect(data)
        except SrtpError:
            self.refused += 1
            return True
        seq, ts, ssrc = struct.unpack_from("!HII", plain, 2)
        last = self._last_in
        if last is not None and not 0 < (seq - last) & 0xFFFF < 0x8000:
            self.refused += 1  # a duplicate, or older than what was played: a late packet
            return True
        self._last_in = seq
        stats = self._streams.get(ssrc)
        if stats is None:
            stats = self._streams[ssrc] = StreamStatistics(RATE)
        stats.add(_Seen(seq, ts))  # type: ignore[arg-type]  # what add() reads of one
        start, end = payload_bounds(plain)
        if start < end:
            self.received += 1
            self._on_pcm(self._decode[np.frombuffer(plain, np.uint8, end - start, start)],
                         RATE)
        return True


def srtp_sessions(dtls: Any) -> tuple[Session, Session]:
    """(tx, rx) SRTP sessions of our own with the keys aiortc's handshake exported — as
    ``RTCDtlsTransport._setup_srtp`` derives them (RFC 5764 §4.2)."""
    selected = dtls._ssl.get_selected_srtp_profile()
    profile = next(p for p in dtls._srtp_profiles if p.openssl_profile == selected)
    view = dtls._ssl.export_keying_material(
        b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    ours, theirs = (1, 0) if dtls._role == "server" else (0, 1)
    sessions = []
    for idx, kind in ((ours, Policy.SSRC_ANY_OUTBOUND), (theirs, Policy.SSRC_ANY_INBOUND)):
        policy = Policy(key=profile.get_key_and_salt(view, idx), ssrc_type=kind,
                        srtp_profile=profile.libsrtp_profile)
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        sessions.append(Session(policy))
    return sessions[0], sessions[1]


def c_sender(session: Session, header: bytes, codec: str) -> Sender:
    """The C core's sender for a leg: SRTP by pylibsrtp's own ``srtp_protect`` on
    ``session``'s context (the session is kept alive with it); the trunk's payloads of
    the other G.711 law are mapped to the leg's byte by byte."""
    law = BY_NAME[codec]
    other = next(o for o in BY_PT.values() if o is not law)
    protect = int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect")))
    ctx = int(ffi.cast("uintptr_t", session._srtp[0]))
    return Sender(protect, ctx, session, header, law.payload_type, other.payload_type,
                  other.transcoder(law).tobytes())


def attach(transceiver: Any, codec: str,
           on_pcm: Callable[[npt.NDArray[np.int16], int], None]) -> LeanG711 | None:
    """The lean path for a connected transceiver's G.711 RTP (None, changing nothing, when
    aiortc's objects are not where this expects them — the leg stays on aiortc's path)."""
    try:
        sender, receiver = transceiver.sender, transceiver.receiver
        dtls = sender.transport
        if dtls is None or dtls.state != "connected":
            return None
        connection = dtls.transport._connection
        pair = connection._nominated.get(1)
        if pair is None or pair.protocol.transport is None:
            return None
        params = receiver._RTCRtpReceiver__codecs
        payload_type = next(pt for pt, c in params.items()
                            if c.mimeType.lower() == f"audio/{codec}")
        streams = receiver._RTCRtpReceiver__remote_streams
        template = AiortcRtpPacket(payload_type=payload_type,
                                   sequence_number=secrets.randbits(16),
                                   timestamp=secrets.randbits(32),
                                   ssrc=sender._ssrc)
        template.extensions.mid = sender._RTCRtpSender__mid
        header = template.serialize(sender._RTCRtpSender__rtp_header_extensions_map)
        tx, rx = srtp_sessions(dtls)
        out = c_sender(tx, header, codec)
        follow_pair(connection, out)
    except (AttributeError, StopIteration, TypeError, ValueError, SrtpError, OSError) as e:
        log.warning("lean G.711 path not available (aiortc changed shape?): %r", e)
        return None
    lean = LeanG711(codec=codec, payload_type=payload_type, sender=out, rx=rx,
                    on_pcm=on_pcm, streams=streams)
    aiortc_side = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if not lean.receive(data):
            aiortc_side(data, component)

    connection.data_received = data_received
    return lean


def follow_pair(connection: Any, sender: Sender) -> None:
    """Keep ``sender`` on the candidate pair aioice has nominated (the browser may switch
    pairs): it sends on a duplicate of that pair's socket (the loop's asyncio transport
    is not for other threads, the kernel's socket is), and aioice's table of nominated
    pairs is replaced by one that tells it of each change."""

    def follow(pair: Any) -> None:
        transport = getattr(getattr(pair, "protocol", None), "transport", None)
        if transport is not None:
            sender.set_dest(transport.get_extra_info("socket").fileno(),
                            tuple(pair.remote_addr[:2]))

    table = _Nominated(connection._nominated, follow)
    connection._nominated = table
    follow(table.get(1))


class _Nominated(dict[int, Any]):
    """aioice's ``Connection._nominated`` (component → pair), telling of component 1."""

    def __init__(self, pairs: dict[int, Any], on_rtp: Callable[[Any], None]) -> None:
        super().__init__(pairs)
        self._on_rtp = on_rtp

    def __setitem__(self, component: int, pair: Any) -> None:
        super().__setitem__(component, pair)
        if component == 1:
            self._on_rtp(pair)
