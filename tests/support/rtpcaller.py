"""A real SIP caller (UAC) over UDP on 127.0.0.1 with its own RTP socket, paced by this process.

SIPp replays pcaps on its own timer and cannot tell a test *when* each packet left or
arrived, so latency questions ("how long after the caller's last word did the bot answer?")
need a caller whose clock the test owns. :class:`RtpCaller` places one call to the server's
UDP SIP port, sends one RTP packet every 20 ms from a monotonic anchor and timestamps every
packet it sends (:attr:`RtpCaller.sent`) and receives (:attr:`RtpCaller.received`) with
``time.monotonic()``, the clock tests and benchmarks read too.

The SIP messages come from :mod:`tests.support.sipwire` (one :class:`SipWire` socket builds
every request of the dialog; :class:`SipRequest` answers the server's requests). Three
threads do the waiting: one reads SIP (answers in-dialog BYE, re-INVITE, OPTIONS...; ACKs
retransmitted 2xx), one sends RTP and one receives it. The public methods block, so an
async test runs them with ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import queue
import random
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from hitl_sip.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from hitl_sip.media.rtp import DtmfEvent, RtpPacket, dtmf_event_code
from tests.support.net import free_port_pair
from tests.support.sipwire import (
    CALLER_NUMBER,
    SERVICE_NUMBER,
    Exchange,
    Request,
    SipRequest,
    SipResponse,
    SipWire,
    contact_uri,
    sdp_offer,
)

__all__ = [
    "FRAME_SAMPLES",
    "FRAME_SECONDS",
    "RtpCaller",
    "RxPacket",
    "SdpAudio",
    "parse_sdp_audio",
]

HOST = "127.0.0.1"
RATE = 8000
FRAME_SECONDS = 0.02
FRAME_SAMPLES = 160  # 20 ms at 8 kHz: the RTP timestamp step
FRAME_BYTES = FRAME_SAMPLES * 2  # s16le
SILENCE = bytes(FRAME_BYTES)
TELEPHONE_EVENT = 101
END_REPEATS = 3  # RFC 4733 §2.5.1.4: the end packet is sent three times

#: RFC 3261 retransmission timers for UDP (T1, T2).
T1 = 0.5
T2 = 4.0
#: How often the reader threads look at the stop flag.
POLL_SECONDS = 0.1
#: A sequence jump this large is a new stream or a restart, not loss to fill with silence.
MAX_FILL_PACKETS = 500
#: In-order delivery cannot show an RFC 3550 jitter of 40 ms or more: two consecutive
#: packets' transit times differ by at most -20 ms downwards (they arrive together), and
#: the mean difference is zero.
MAX_BURST_JITTER = 2 * FRAME_SECONDS

_ENCODERS: dict[int, Callable[[bytes], bytes]] = {0: ulaw_encode, 8: alaw_encode}
_DECODERS: dict[int, Callable[[bytes], bytes]] = {0: ulaw_decode, 8: alaw_decode}


@dataclass(frozen=True)
class RxPacket:
    """One RTP packet as it arrived: ``pcm`` is its audio decoded to s16le (empty for
    telephone-events, comfort noise and unknown payload types)."""

    arrival: float  # time.monotonic() right after recvfrom returned
    seq: int
    timestamp: int
    marker: bool
    pt: int
    pcm: bytes
    ssrc: int = 0


@dataclass(frozen=True)
class SdpAudio:
    """The audio stream an SDP describes: where to send RTP and the payload types offered."""

    host: str
    port: int
    payload_types: tuple[int, ...]


def parse_sdp_audio(body: bytes) -> SdpAudio:
    """The first ``m=audio`` line's port and payload types, and its connection address (the
    media-level ``c=`` when there is one, else the session-level one)."""
    session_host: str | None = None
    media_host: str | None = None
    port: int | None = None
    payload_types: tuple[int, ...] = ()
    in_audio = False
    for raw in body.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if port is not None:
                break  # only the first audio stream matters
            fields = line[2:].split()
            in_audio = bool(fields) and fields[0] == "audio"
            if in_audio:
                port = int(fields[1].split("/")[0])
                payload_types = tuple(int(f) for f in fields[3:] if f.isdigit())
        elif line.startswith("c="):
            address = line[2:].split()[-1].split("/")[0]
            if port is None and not in_audio:
                session_host = address
            elif in_audio:
                media_host = address
    host = media_host or session_host
    if port is None or host is None:
        raise ValueError(f"no audio stream with a connection address in SDP:\n{body!r}")
    return SdpAudio(host, port, payload_types)


def describe(response: SipResponse) -> str:
    """The response as text (status line, headers, body), for error messages."""
    lines = [f"SIP/2.0 {response.status} {response.reason}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    return "\n".join(lines) + "\n\n" + response.body.decode("utf-8", errors="replace")


@dataclass
class _DtmfJob:
    """One digit for the sender thread: its packets' payloads, sent one per 20 ms tick."""

    payloads: deque[bytes]
    done: threading.Event = field(default_factory=threading.Event)
    completed: bool = False


def _bind_rtp_pair() -> tuple[socket.socket, socket.socket]:
    """An RTP socket on an even loopback port and an RTCP sink on the next one (the server
    sends RTCP to port + 1; a bound socket there keeps ICMP errors away from it)."""
    for _ in range(20):
        port = free_port_pair()
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((HOST, port))
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise RuntimeError("no free RTP/RTCP port pair on 127.0.0.1")


class RtpCaller:
    """One call from a SIP trunk-like caller to the server's UDP SIP port ``sip_port``.

    ``call()`` → ``start_media()`` → ``dtmf()``/wait → ``hangup()`` → ``close()`` (or use it as
    a context manager, which hangs up a live call and closes). ``payload_type`` (0 PCMU or
    8 PCMA) is offered first and used for the audio this caller sends; ``headers`` go on the
    INVITE (e.g. ``X-Twilio-CallSid``).

    What a test reads, all times ``time.monotonic()``: :attr:`sent` ``(tick n, send time)``
    per packet, :attr:`received` one :class:`RxPacket` per packet, :attr:`answered_at`,
    :attr:`ended_at` and :attr:`ended_by_server` (the server sent the BYE).
    """

    def __init__(
        self,
        sip_port: int,
        *,
        caller: str = CALLER_NUMBER,
        service: str = SERVICE_NUMBER,
        headers: dict[str, str] | None = None,
        payload_type: int = 0,
        loss: float = 0.0,
        jitter: float = 0.0,
        seed: int = 1,
        burst_jitter: float = 0.0,
    ) -> None:
        if payload_type not in _ENCODERS:
            raise ValueError(f"payload_type must be 0 (PCMU) or 8 (PCMA), got {payload_type}")
        self.payload_type = payload_type
        # a lossy line: each packet dropped with probability ``loss``; each sent up to
        # 2 x ``jitter`` seconds after its slot (in order), so the RFC 3550 interarrival
        # jitter the server measures is about ``jitter``
        self.loss = loss
        self.jitter = jitter
        # (that spread, in order, reads about half of ``jitter``: 16-18 ms for 30 ms.)
        # ``burst_jitter``: a line that delivers in bursts (a radio link, a congested
        # queue) — it holds packets and releases all it holds at random moments, on average
        # every 40 / (40 - burst_jitter in ms) packets (4 for 30 ms), so consecutive packets
        # arrive together or after a hold; the RFC 3550 jitter the server measures is then
        # about ``burst_jitter`` (simulated, 5 % loss: 20.0 ms for 0.02, 29.9 ms for 0.03)
        if not 0.0 <= burst_jitter < MAX_BURST_JITTER:
            raise ValueError(f"burst_jitter must be in [0, {MAX_BURST_JITTER}) s, "
                             f"got {burst_jitter}")
        self.burst_jitter = burst_jitter
        self._release_at: float | None = None  # the bursty line's next release
        self._rng = random.Random(seed)
        self.dropped = 0
        self.headers = dict(headers or {})
        self.received: list[RxPacket] = []
        self.sent: list[tuple[int, float]] = []
        #: time.monotonic() of the first packet's slot; packet n is due at anchor + n * 20 ms.
        self.media_anchor: float | None = None
        self.invite_sent_at: float | None = None
        self.answered_at: float | None = None  # arrival of the 2xx
        self.answer: SipResponse | None = None
        self.remote_rtp: tuple[str, int] | None = None
        self.answer_payload_types: tuple[int, ...] = ()
        self.ended_by_server = False
        self.ended_at: float | None = None  # our BYE answered, or the server's BYE arrived
        self.media_error: BaseException | None = None
        self.receive_error: OSError | None = None  # the receiver stopped on it

        self._wire = SipWire(sip_port, "udp", HOST, caller=caller, service=service)
        self._rtp, self._rtcp = _bind_rtp_pair()
        self._rtp.settimeout(POLL_SECONDS)
        self.rtp_port = int(self._rtp.getsockname()[1])
        other = 8 if payload_type == 0 else 0
        self._sdp = sdp_offer(
            HOST,
            self.rtp_port,
            payload_types=(payload_type, other, TELEPHONE_EVENT),
            attributes=(f"a=fmtp:{TELEPHONE_EVENT} 0-16", "a=ptime:20"),
        )

        self._cond = threading.Condition()
        self._responses: list[tuple[float, SipResponse]] = []  # our Call-ID only
        self._invite: Request | None = None
        self._ack: Request | None = None
        self._remote_tag: str | None = None
        self._target: str | None = None  # Request-URI of in-dialog requests
        self._routes: list[tuple[str, str]] = []  # Route headers of in-dialog requests
        self._cseq = 1

        self._stop = threading.Event()  # every thread
        self._media_stop = threading.Event()  # the sender only
        self._ended = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sender: threading.Thread | None = None
        self._source: Callable[[int], bytes] | None = None
        self._dtmf_jobs: queue.Queue[_DtmfJob] = queue.Queue()
        self._closed = False

    # --- context manager --------------------------------------------------------------------

    def __enter__(self) -> RtpCaller:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except RuntimeError:
            if exc is None:  # do not hide the test's own failure behind a sender error
                raise

    # --- SIP --------------------------------------------------------------------------------

    @property
    def call_id(self) -> str | None:
        return self._invite.call_id if self._invite else None

    @property
    def provisional(self) -> list[int]:
        """The provisional (1xx) statuses that answered the INVITE so far: with one, a
        stateful proxy took the INVITE and the caller no longer retransmits it."""
        invite = self._invite
        if invite is None:
            return []
        with self._cond:
            return [r.status for _, r in self._responses
                    if r.cseq == (invite.cseq, "INVITE") and not r.is_final]

    @property
    def sip_address(self) -> tuple[str, int]:
        """This caller's SIP socket (its Via and Contact): where in-dialog requests go."""
        return self._wire.local

    def call(self, timeout: float = 10) -> None:
        """INVITE with a PCMU/PCMA/telephone-event offer (ptime 20), wait for the 2xx (after
        any 100/180/183), ACK it and take the remote RTP address from the answer.

        Raises ``TimeoutError`` when no final answer came in ``timeout`` seconds (a ringing
        call is CANCELled first) and ``RuntimeError`` with the whole response otherwise.
        """
        if self._invite is not None:
            raise RuntimeError("call() places one call per RtpCaller")
        self._spawn(self._sip_loop, "rtpcaller-sip")
        self._spawn(self._rtp_receive_loop, "rtpcaller-rtp-rx")
        invite = self._wire.invite(body=self._sdp, headers=list(self.headers.items()))
        self._invite = invite
        self.invite_sent_at = time.monotonic()
        answered = self._transact(invite, timeout)
        if answered is None:
            self._cancel(invite)
            raise TimeoutError(f"no final answer to the INVITE in {timeout}s")
        at, final = answered
        if not 200 <= final.status < 300:  # the SIP thread ACKs non-2xx finals
            raise RuntimeError(f"INVITE answered {final}:\n{describe(final)}")
        self.answer, self.answered_at = final, at
        self._remote_tag = final.to_tag
        self._target = contact_uri(final) or invite.uri
        # RFC 3261 §12.1.2: the route set is the 2xx's Record-Route, reversed (a SIP front
        # such as Kamailio record-routes; in-dialog requests must pass it again)
        record_route = [v.strip() for n, v in final.headers if n.lower() == "record-route"
                        for v in v.split(",")]
        self._routes = [("Route", r) for r in reversed(record_route)]
        ack = self._wire.request(
            "ACK", uri=self._target, call_id=invite.call_id, cseq=invite.cseq,
            from_tag=invite.from_tag, to_tag=self._remote_tag, headers=self._routes,
        )
        with self._cond:
            self._ack = ack
        self._wire.send(ack.data)
        try:
            audio = parse_sdp_audio(final.body)
        except ValueError as e:
            self.hangup()
            raise RuntimeError(f"unusable SDP answer: {e}\n{describe(final)}") from e
        self.answer_payload_types = audio.payload_types
        if self.payload_type not in audio.payload_types:
            self.hangup()
            raise RuntimeError(
                f"the answer does not accept payload type {self.payload_type}:\n{describe(final)}"
            )
        self.remote_rtp = (audio.host, audio.port)

    def hangup(self, timeout: float = 5) -> None:
        """BYE and wait for its 200; nothing to do when the server already hung up."""
        if self._remote_tag is None or self._invite is None:
            raise RuntimeError("no established call to hang up")
        if self._ended.is_set():
            return
        self._stop_media()
        self._cseq += 1
        bye = self._wire.request(
            "BYE", uri=self._target, call_id=self._invite.call_id, cseq=self._cseq,
            from_tag=self._invite.from_tag, to_tag=self._remote_tag, headers=self._routes,
        )
        answered = self._transact(bye, timeout)
        if self.ended_by_server:  # the server's BYE crossed ours
            return
        if answered is None:
            raise TimeoutError(f"no answer to the BYE in {timeout}s")
        at, final = answered
        self.ended_at = at
        self._ended.set()
        if final.status != 200:
            raise RuntimeError(f"BYE answered {final}:\n{describe(final)}")

    def wait_ended(self, timeout: float) -> bool:
        """Whether the call ended (either side hung up) within ``timeout`` seconds."""
        return self._ended.wait(timeout)

    def _transact(self, request: Request, timeout: float) -> tuple[float, SipResponse] | None:
        """Sends ``request``, retransmitting on RFC 3261's UDP timers (an INVITE only until
        a provisional answer), and returns the final answer with its arrival time."""
        key = (request.cseq, request.method)
        deadline = time.monotonic() + timeout
        interval = T1
        resend_at = time.monotonic() + interval
        self._wire.send(request.data)
        with self._cond:
            while True:
                mine = [(at, r) for at, r in self._responses if r.cseq == key]
                final = next(((at, r) for at, r in mine if r.is_final), None)
                if final is not None:
                    return final
                now = time.monotonic()
                if now >= deadline:
                    return None
                retransmitting = not (request.method == "INVITE" and mine)
                if retransmitting and now >= resend_at:
                    self._wire.send(request.data)
                    interval = min(interval * 2, T2)
                    resend_at = now + interval
                wake = min(deadline, resend_at) if retransmitting else deadline
                self._cond.wait(max(0.0, wake - now))

    def _cancel(self, invite: Request) -> None:
        """CANCELs a ringing INVITE (the SIP thread ACKs the 487); a 2xx crossing it gets
        ACK + BYE so no call stays up on the server."""
        with self._cond:
            ringing = any(r.cseq == (invite.cseq, "INVITE") for _, r in self._responses)
        if not ringing:
            return
        cancel = self._wire.request(
            "CANCEL", uri=invite.uri, call_id=invite.call_id, cseq=invite.cseq,
            from_tag=invite.from_tag, branch=invite.branch,
        )
        self._transact(cancel, 2.0)
        answered = self._transact_wait(invite, 2.0)
        if answered is not None and answered[1].status < 300:
            final = answered[1]
            self._remote_tag, self._target = final.to_tag, contact_uri(final) or invite.uri
            ack = self._wire.request(
                "ACK", uri=self._target, call_id=invite.call_id, cseq=invite.cseq,
                from_tag=invite.from_tag, to_tag=self._remote_tag,
            )
            self._wire.send(ack.data)
            with contextlib.suppress(TimeoutError, RuntimeError):
                self.hangup(2.0)

    def _transact_wait(self, request: Request, timeout: float) -> tuple[float, SipResponse] | None:
        """The final answer to an already sent ``request``, without sending anything."""
        key = (request.cseq, request.method)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                final = next(
                    ((at, r) for at, r in self._responses if r.cseq == key and r.is_final), None
                )
                remaining = deadline - time.monotonic()
                if final is not None or remaining <= 0:
                    return final
                self._cond.wait(remaining)

    def _sip_loop(self) -> None:
        """Reads the SIP socket: files our responses, answers the server's requests."""
        exchange = Exchange()
        while not self._stop.is_set():
            try:
                got = self._wire.receive(time.monotonic() + POLL_SECONDS, exchange)
            except OSError:
                return
            arrival = time.monotonic()
            requests, exchange.requests = exchange.requests, []
            exchange.unparsable.clear()
            for raw in requests:
                self._on_request(raw, arrival)
            if got:
                self._on_responses(got, arrival)

    def _on_responses(self, responses: list[SipResponse], arrival: float) -> None:
        invite = self._invite
        if invite is None:
            return
        with self._cond:
            for response in responses:
                if response.call_id != invite.call_id:
                    continue  # a stray answer to an earlier socket owner
                self._responses.append((arrival, response))
                if response.cseq != (invite.cseq, "INVITE") or not response.is_final:
                    continue
                if response.status >= 300:  # ACK is part of a non-2xx INVITE transaction
                    self._wire.send(self._wire.request(
                        "ACK", uri=invite.uri, call_id=invite.call_id, cseq=invite.cseq,
                        from_tag=invite.from_tag, to_tag=response.to_tag, branch=invite.branch,
                    ).data)
                elif self._ack is not None:  # a retransmitted 2xx: our ACK was lost
                    self._wire.send(self._ack.data)
            self._cond.notify_all()

    def _on_request(self, raw: bytes, arrival: float) -> None:
        try:
            request = SipRequest.parse(raw)
        except ValueError:
            return
        if request.method == "ACK":
            return
        contact = ("Contact", f"<sip:rtpcaller@{self._wire.local[0]}:{self._wire.local[1]}>")
        ours = self._invite is not None and request.call_id == self._invite.call_id
        if not ours:
            if request.method == "OPTIONS":
                self._wire.send(request.response(200, "OK"))
            else:
                self._wire.send(request.response(481, "Call/Transaction Does Not Exist"))
            return
        if request.method == "BYE":
            self._wire.send(request.response(200, "OK"))
            if not self._ended.is_set():
                self.ended_by_server = True
                self.ended_at = arrival
                self._media_stop.set()  # the SIP thread must not wait for the sender
                self._ended.set()
        elif request.method in ("INVITE", "UPDATE"):
            if request.body:
                try:
                    audio = parse_sdp_audio(request.body)
                except ValueError:
                    self._wire.send(request.response(488, "Not Acceptable Here"))
                    return
                if audio.port:  # port 0 would disable the stream; keep sending where we did
                    self.remote_rtp = (audio.host, audio.port)
            self._wire.send(request.response(
                200, "OK", headers=[contact], body=self._sdp, content_type="application/sdp"
            ))
        else:  # INFO, OPTIONS, NOTIFY... inside the dialog
            self._wire.send(request.response(200, "OK", headers=[contact]))

    # --- RTP --------------------------------------------------------------------------------

    def start_media(self, source: Callable[[int], bytes] | None = None) -> None:
        """Starts sending one packet every 20 ms: frame ``n`` is ``source(n)`` (320 bytes of
        8 kHz s16le PCM), silence without a source. Sending stops at hang-up."""
        if self.remote_rtp is None:
            raise RuntimeError("start_media() needs an answered call()")
        if self._sender is not None:
            raise RuntimeError("media already started")
        self._source = source
        self._sender = self._spawn(self._rtp_send_loop, "rtpcaller-rtp-tx")

    def dtmf(self, digit: str, duration_ms: int = 100, timeout: float = 5) -> None:
        """Sends ``digit`` as RFC 4733 telephone-events (payload type 101) on the media
        stream, the way a trunk does: one packet per 20 ms tick, all with the timestamp of the
        tick the event started on, the first with the marker bit, durations growing by 160,
        then the end packet three times. The audio resumes on the media clock (the ticks the
        event took are not sent as audio). Returns once the last end packet is sent."""
        code = dtmf_event_code(digit)
        if self._sender is None or not self._sender.is_alive():
            raise RuntimeError("dtmf() needs start_media() and a live call")
        ticks = max(2, duration_ms // 20)
        payloads = [DtmfEvent(code, duration=FRAME_SAMPLES * k).serialize()
                    for k in range(1, ticks + 1)]
        end = DtmfEvent(code, end=True, duration=FRAME_SAMPLES * ticks).serialize()
        job = _DtmfJob(deque([*payloads, *[end] * END_REPEATS]))
        self._dtmf_jobs.put(job)
        job.done.wait(timeout)
        if not job.completed:
            raise RuntimeError(f"DTMF {digit!r} was not sent (media stopped or timed out)")

    def _stop_media(self) -> None:
        """Stops sending and waits for the sender, so no packet follows (say) our BYE."""
        self._media_stop.set()
        if self._sender is not None and self._sender is not threading.current_thread():
            self._sender.join(1.0)

    def _rtp_send_loop(self) -> None:
        """One packet per 20 ms tick, tick ``n`` due at ``anchor + n * 0.02``: a late tick is
        sent at once and the next ones keep their slots, so lateness never accumulates."""
        encode = _ENCODERS[self.payload_type]
        ssrc = secrets.randbits(32)
        first_seq = secrets.randbits(16)
        first_ts = secrets.randbits(32)
        job: _DtmfJob | None = None
        event_ts = 0
        marker = False
        anchor = time.monotonic()
        self.media_anchor = anchor
        n = 0
        try:
            while not (self._media_stop.is_set() or self._stop.is_set()):
                late = self._rng.uniform(0.0, 2 * self.jitter) if self.jitter else 0.0
                if self.burst_jitter:
                    late += self._held_for(anchor + n * FRAME_SECONDS)
                delay = anchor + n * FRAME_SECONDS + late - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                    if self._media_stop.is_set() or self._stop.is_set():
                        break
                timestamp = (first_ts + n * FRAME_SAMPLES) & 0xFFFFFFFF
                if job is None:
                    try:
                        job = self._dtmf_jobs.get_nowait()
                    except queue.Empty:
                        job = None
                    event_ts = timestamp
                    marker = job is not None
                if job is not None:
                    packet = RtpPacket(TELEPHONE_EVENT, marker, (first_seq + n) & 0xFFFF,
                                       event_ts, ssrc, job.payloads.popleft())
                    marker = False
                else:
                    pcm = self._source(n) if self._source is not None else SILENCE
                    if len(pcm) != FRAME_BYTES:
                        raise ValueError(f"source({n}) gave {len(pcm)} bytes, not {FRAME_BYTES}")
                    packet = RtpPacket(self.payload_type, n == 0, (first_seq + n) & 0xFFFF,
                                       timestamp, ssrc, encode(pcm))
                remote = self.remote_rtp
                assert remote is not None
                sent_at = time.monotonic()
                if self.loss and job is None and self._rng.random() < self.loss:
                    self.dropped += 1  # lost on the way: never sent
                else:
                    self._rtp.sendto(packet.serialize(), remote)
                self.sent.append((n, sent_at))
                if job is not None and not job.payloads:
                    job.completed = True
                    job.done.set()
                    job = None
                n += 1
        except Exception as e:  # surfaced by close(): a thread cannot fail the test itself
            if not self._stop.is_set():
                self.media_error = e
        finally:
            if job is not None:
                job.done.set()
            while not self._dtmf_jobs.empty():
                self._dtmf_jobs.get_nowait().done.set()

    def _held_for(self, slot: float) -> float:
        """How long the bursty line holds the packet due at ``slot``: until its first
        release at or after the slot (the intervals uniform within ±50 % of their mean)."""
        mean = FRAME_SECONDS * MAX_BURST_JITTER / (MAX_BURST_JITTER - self.burst_jitter)
        if self._release_at is None:
            self._release_at = slot
        while self._release_at < slot:
            self._release_at += self._rng.uniform(0.5 * mean, 1.5 * mean)
        return self._release_at - slot

    def _rtp_receive_loop(self) -> None:
        """Records every RTP packet with its arrival time, audio decoded to s16le."""
        while not self._stop.is_set():
            try:
                data = self._rtp.recv(65535)
            except TimeoutError:
                continue
            except OSError as e:
                if not self._stop.is_set():
                    self.receive_error = e
                return
            arrival = time.monotonic()
            try:
                packet = RtpPacket.parse(data)
            except ValueError:
                continue
            decode = _DECODERS.get(packet.payload_type)
            self.received.append(RxPacket(
                arrival=arrival,
                seq=packet.sequence_number,
                timestamp=packet.timestamp,
                marker=packet.marker,
                pt=packet.payload_type,
                pcm=decode(packet.payload) if decode else b"",
                ssrc=packet.ssrc,
            ))

    def received_pcm(self) -> bytes:
        """All received audio in arrival order as 8 kHz s16le; each sequence number missing
        between two packets of a stream becomes one packet's worth of silence. A duplicate or
        a packet arriving after its slot was filled is dropped."""
        out = bytearray()
        last: tuple[int, int] | None = None  # (ssrc, seq)
        for packet in list(self.received):
            if last is not None and last[0] == packet.ssrc:
                step = (packet.seq - last[1]) & 0xFFFF
                if step == 0 or step >= 0x8000:
                    continue
                if step <= MAX_FILL_PACKETS:
                    out += bytes((len(packet.pcm) or FRAME_BYTES) * (step - 1))
            last = (packet.ssrc, packet.seq)
            out += packet.pcm
        return bytes(out)

    # --- lifetime ---------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def close(self) -> None:
        """Hangs up a live call (best effort), stops the threads and closes the sockets.
        Raises ``RuntimeError`` if the sender failed (e.g. a bad ``source`` frame)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._remote_tag is not None and not self._ended.is_set():
                self.hangup(2.0)
        except (TimeoutError, RuntimeError, OSError):
            pass
        finally:
            self._media_stop.set()
            self._stop.set()
            for thread in self._threads:
                thread.join(2.0)
            self._rtp.close()
            self._rtcp.close()
            self._wire.close()
        if self.media_error is not None:
            raise RuntimeError("the RTP sender failed") from self.media_error
