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
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket as AiortcRtpPacket
from pylibsrtp import Error as SrtpError
from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

from hitl_sip.media._rtpcore import Receiver, Sender, TrunkOut
from hitl_sip.media.g711 import BY_NAME, BY_PT, Law

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
                 streams: dict[int, Any],
                 to_trunk: Callable[[], TrunkOut | None] | None = None,
                 on_sent: Callable[[bytes], None] | None = None) -> None:
        law = BY_NAME[codec]
        self._encode = law.encode
        self.payload_type = payload_type
        #: the leg's outgoing RTP (C): the relay's core sends the trunk's payloads on it
        self.sender = sender
        #: the leg's incoming RTP (C): SRTP, the replay check, the decoding and — when
        #: ``to_trunk`` names the relay's stream — the payload to the trunk as it came
        self._receiver = c_receiver(rx, payload_type, codec)
        self._on_pcm = on_pcm
        self._to_trunk = to_trunk
        self._on_sent = on_sent
        self._streams = streams  # aiortc's receiver's, by SSRC: its stats and reports
        self.closed = False
        self.on_close: Callable[[], None] | None = None

    @property
    def received(self) -> int:
        return self._receiver.received

    @property
    def refused(self) -> int:
        """Failed SRTP authentication, or old/duplicate packets."""
        return self._receiver.refused

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
        to_trunk = self._to_trunk
        got = self._receiver.receive(data, to_trunk() if to_trunk is not None else None)
        if got is None:
            return False
        if got:  # (else refused: forged, a duplicate, or older than what was played)
            seq, ts, ssrc, pcm, sent = got
            stats = self._streams.get(ssrc)
            if stats is None:
                stats = self._streams[ssrc] = StreamStatistics(RATE)
            stats.add(_Seen(seq, ts))  # type: ignore[arg-type]  # what add() reads of one
            if sent and self._on_sent is not None:
                self._on_sent(pcm)
            elif pcm:
                self._on_pcm(np.frombuffer(pcm, np.int16), RATE)
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


def _srtp(session: Session, function: str) -> tuple[int, int]:
    """The addresses of pylibsrtp's own ``function`` (srtp_protect, srtp_unprotect) and of
    ``session``'s context, for the C core (which keeps the session alive)."""
    return (int(ffi.cast("uintptr_t", ffi.addressof(lib, function))),
            int(ffi.cast("uintptr_t", session._srtp[0])))


def _laws(codec: str) -> tuple[Law, Law]:
    """The leg's G.711 law and the other one."""
    law = BY_NAME[codec]
    return law, next(o for o in BY_PT.values() if o is not law)


def c_receiver(session: Session, payload_type: int, codec: str) -> Receiver:
    """The C core's receiver for a leg: SRTP by ``srtp_unprotect`` on ``session``;
    payloads decoded with the law's table, and mapped to the other law's bytes for a
    trunk on that one."""
    law, other = _laws(codec)
    return Receiver(*_srtp(session, "srtp_unprotect"), session, payload_type,
                    law.payload_type, law.decode.astype(np.int16).tobytes(),
                    law.transcoder(other).tobytes())


def c_sender(session: Session, header: bytes, codec: str) -> Sender:
    """The C core's sender for a leg: SRTP by ``srtp_protect`` on ``session``; the
    trunk's payloads of the other G.711 law are mapped to the leg's byte by byte."""
    law, other = _laws(codec)
    return Sender(*_srtp(session, "srtp_protect"), session, header, law.payload_type,
                  other.payload_type, other.transcoder(law).tobytes())


def attach(transceiver: Any, codec: str,
           on_pcm: Callable[[npt.NDArray[np.int16], int], None],
           to_trunk: Callable[[], TrunkOut | None] | None = None,
           on_sent: Callable[[bytes], None] | None = None) -> LeanG711 | None:
    """The lean path for a connected transceiver's G.711 RTP (None, changing nothing, when
    aiortc's objects are not where this expects them — the leg stays on aiortc's path).
    The agent's audio goes to ``on_pcm``, or, when ``to_trunk`` names a stream to the
    trunk, there as it came and then to ``on_sent``."""
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
                    on_pcm=on_pcm, streams=streams, to_trunk=to_trunk, on_sent=on_sent)
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

    def follow(pair: Any) -> bool:
        transport = getattr(getattr(pair, "protocol", None), "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:  # a TURN allocation's (aioice's TurnTransport): not a socket
            return False
        sender.set_dest(sock.fileno(), tuple(pair.remote_addr[:2]))
        return True

    first = connection._nominated.get(1)
    if first is not None and not follow(first):
        raise ValueError("the nominated pair is relayed by TURN")
    connection._nominated = _Nominated(connection._nominated, follow)


class _Nominated(dict[int, Any]):
    """aioice's ``Connection._nominated`` (component → pair), telling of component 1."""

    def __init__(self, pairs: dict[int, Any], on_rtp: Callable[[Any], bool]) -> None:
        super().__init__(pairs)
        self._on_rtp = on_rtp

    def __setitem__(self, component: int, pair: Any) -> None:
        super().__setitem__(component, pair)
        if component == 1 and not self._on_rtp(pair):
            log.warning("lean G.711 path: the agent's new candidate pair is relayed by TURN; "
                        "its packets keep the previous pair")
