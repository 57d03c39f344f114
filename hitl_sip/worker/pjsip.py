"""The pjsua2 adapter: one endpoint, polled from one dedicated thread.

Threads (DESIGN.md §2):

* the **pj thread** (:class:`PjStack`) creates the endpoint (``threadCnt=0``,
  ``mainThreadOnly``), runs ``libHandleEvents`` in a loop and executes every pjsua2 call we
  make, submitted from the asyncio loop as commands. All pjsua2 callbacks (incoming call,
  call state, media state, DTMF, registration, log) run here.
* pjmedia's **clock thread** calls :class:`PcmPort` callbacks every 20 ms. They only move
  PCM frames in or out of :class:`~hitl_sip.media.buffers.FrameBuffer` objects.
* the **asyncio loop** (the worker's main thread) never calls pjsua2; it receives plain-data
  events (:mod:`hitl_sip.worker.events`) through ``call_soon_threadsafe``.

Every pjsua2 object is created and released on the pj thread: a finished call and its port
go to a graveyard that the pj thread empties between polls, never inside a callback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import ipaddress
import logging
import queue
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pjsua2 as pj

from hitl_sip.errors import SipError
from hitl_sip.media.buffers import FrameBuffer
from hitl_sip.sip.uri import NameAddr
from hitl_sip.worker.decision import Admit, Decision
from hitl_sip.worker.events import (
    CallDtmf,
    CallEnded,
    CallHold,
    CallMediaReady,
    CallOffered,
    CallRejected,
    RegistrationChanged,
    WorkerEvent,
)
from hitl_sip.worker.metrics import WorkerMetrics
from hitl_sip.worker.recorder import StereoRecorder
from hitl_sip.worker.relay import TrunkRelay, rewrite, sdp_media

log = logging.getLogger(__name__)
pjlog = logging.getLogger("hitl_sip.pjsip.lib")

T = TypeVar("T")

FRAME_MS = 20
CODEC_IDS = {"PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1", "G722": "G722/16000/1"}
# the trunk profile's [rtp] srtp (hitl_sip.sip.profile.Srtp) as pjmedia's policy
SRTP_USE = {"off": pj.PJMEDIA_SRTP_DISABLED, "optional": pj.PJMEDIA_SRTP_OPTIONAL,
            "mandatory": pj.PJMEDIA_SRTP_MANDATORY}


# --- reading a frame out of SWIG cheaply -----------------------------------------------------

_VEC_PTRS = ctypes.c_void_p * 2


def _read_vector_slow(vec: Any) -> bytes:
    return bytes(vec)


def _read_vector_fast(vec: Any) -> bytes:
    # A libstdc++ std::vector<unsigned char> starts with its begin and end pointers; SWIG's
    # ``this`` is the address of the C++ object. One memcpy instead of a Python iteration
    # over 640 elements (~1.3 µs instead of ~230 µs per frame, see bench/).
    begin, end = _VEC_PTRS.from_address(int(vec.this))
    if not begin or not end:
        return b""
    return ctypes.string_at(begin, end - begin)


class VectorWriter:
    """Fills a frame's buffer with one memmove into a reused ``ByteVector``.

    ``pj.ByteVector(data)`` converts element by element (~7 µs for 160 bytes, ~25 µs for
    640); a vector of the frame's size made once and overwritten in place with
    ``ctypes.memmove`` costs ~1 µs, and assigning it to ``frame.buf`` is a C++ vector copy.
    Only the media clock thread calls :meth:`fill` of a port's writer."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._vec = pj.ByteVector(bytes(size))
        self._begin = 0
        begin, end = _VEC_PTRS.from_address(int(self._vec.this))
        if begin and end and end - begin == size:
            self._begin = int(begin)

    @property
    def fast(self) -> bool:
        return bool(self._begin)

    def fill(self, frame: Any, data: bytes) -> None:
        if self._begin and len(data) == self.size:
            ctypes.memmove(self._begin, data, self.size)
            frame.buf = self._vec
        else:
            frame.buf = pj.ByteVector(data)


def select_vector_reader() -> Callable[[Any], bytes]:
    """Return the fast reader if it reproduces SWIG's own copy exactly, else the slow one."""
    probe = bytes(range(256)) * 3
    frame = pj.MediaFrame()
    frame.buf = pj.ByteVector(probe)
    try:
        if _read_vector_fast(frame.buf) == probe and _read_vector_fast(pj.ByteVector()) == b"":
            return _read_vector_fast
    except (ValueError, OSError, TypeError):
        pass
    log.warning("fast ByteVector reader failed its self-check; using bytes(vec)")
    return _read_vector_slow


# --- the PCM port ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrunkLegStats:
    """Cumulative figures of the caller's audio stream (pjmedia's RTCP and jitter buffer)."""

    received: int
    lost: int
    late: int  # frames the jitter buffer discarded: too late to play
    jitter_ms: float
    delay_ms: float  # the jitter buffer's average delay


@dataclass
class PortTimings:
    """Recent callback durations in nanoseconds (bounded), for the benchmark."""

    received: deque[int] = field(default_factory=lambda: deque(maxlen=5000))
    requested: deque[int] = field(default_factory=lambda: deque(maxlen=5000))


class PcmPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Moves 20 ms frames between pjmedia's clock thread and two FrameBuffers.

    Nothing here blocks or touches asyncio: a deque append/pop and, at most, one
    ``call_soon_threadsafe`` wake-up inside :class:`FrameBuffer`.

    Ports are pooled, created once and re-bound call after call, never destroyed while
    the media clock runs: destroying a SWIG director object races with the clock thread
    calling into it (its attributes vanish mid-callback), and every ``createPort`` takes
    a conference slot and a pool. :meth:`bind` and :meth:`unbind` swap one tuple, which
    the clock thread reads atomically.
    """

    def __init__(
        self,
        frame_bytes: int,
        read_vector: Callable[[Any], bytes],
        metrics: WorkerMetrics,
        timings: PortTimings | None,
    ) -> None:
        super().__init__()
        self.frame_bytes = frame_bytes
        self.silence = bytes(frame_bytes)
        self.read_vector = read_vector
        self.metrics = metrics
        self.timings = timings
        self.buffers: tuple[FrameBuffer, FrameBuffer] | None = None
        self.writer = VectorWriter(frame_bytes)
        self.source_active = False  # set by the loop while it feeds audio to the caller
        #: the call's relay sends the agent's frames to the trunk itself (PjStack.relay_carries):
        #: the port transmits nothing to the stream then, and the caller's tick takes what
        #: the caller hears (the recording's right channel, the underrun count)
        self.tx_via_relay = False
        self.recorder: StereoRecorder | None = None  # both sides of every tick, when recorded

    def bind(self, inbound: FrameBuffer, outbound: FrameBuffer) -> None:
        self.source_active = False
        self.buffers = (inbound, outbound)

    def unbind(self) -> None:
        buffers = self.buffers
        self.buffers = None
        self.recorder = None
        self.source_active = False
        self.tx_via_relay = False
        if buffers is not None:
            buffers[0].close()
            buffers[1].close()

    @property
    def inbound(self) -> FrameBuffer | None:
        return self.buffers[0] if self.buffers else None

    @property
    def outbound(self) -> FrameBuffer | None:
        return self.buffers[1] if self.buffers else None

    def onFrameReceived(self, frame: Any) -> None:
        t0 = time.perf_counter_ns()
        try:
            buffers = self.buffers
            if buffers is None:
                return
            inbound = buffers[0]
            if frame.size:
                data = self.read_vector(frame.buf)
            else:
                data = self.silence
                self.metrics.underruns.inc(direction="from_caller")
            if len(data) != self.frame_bytes:
                data = (data + self.silence)[: self.frame_bytes]
            recorder = self.recorder
            if recorder is not None:
                recorder.left(data)
            if self.tx_via_relay:
                self._heard(buffers[1])
            before = inbound.overruns
            inbound.push_nowait(data)
            if inbound.overruns != before:
                self.metrics.overruns.inc(direction="from_caller")
        except Exception:  # never let an exception unwind into pjmedia's clock thread
            self.metrics.callback_errors.inc()
        if self.timings is not None:
            self.timings.received.append(time.perf_counter_ns() - t0)

    def onFrameRequested(self, frame: Any) -> None:
        t0 = time.perf_counter_ns()
        try:
            buffers = self.buffers
            # (tx_via_relay: a tick before the cut lands; the caller's tick takes the frame)
            data = (self.silence if buffers is None or self.tx_via_relay
                    else self._heard(buffers[1]))
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            self.writer.fill(frame, data)
            frame.size = len(data)
        except Exception:
            self.metrics.callback_errors.inc()
        if self.timings is not None:
            self.timings.requested.append(time.perf_counter_ns() - t0)

    def _heard(self, outbound: FrameBuffer) -> bytes:
        """What the caller hears this tick (silence when nothing came), recorded."""
        data = outbound.pop_nowait()
        if data is None:
            data = self.silence
            if self.source_active:
                self.metrics.underruns.inc(direction="to_caller")
        recorder = self.recorder
        if recorder is not None:
            recorder.right(data)
        return data


# --- settings and the stack ------------------------------------------------------------------


@dataclass(frozen=True)
class StackSettings:
    host: str = "127.0.0.1"
    port: int = 0
    transports: tuple[str, ...] = ("udp",)
    # behind the SIP front: the SIP transports bind here, with no public address (the front
    # advertises it); media stays on ``host`` / ``public_address``
    sip_bind: str = ""
    public_address: str = ""
    user_agent: str = "hitl-sip"
    clock_rate: int = 16000
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722")
    rtp_port_start: int = 20000
    rtp_port_end: int = 20999
    srtp: str = "off"  # off / optional / mandatory: SDES-keyed SRTP toward the trunk
    buffer_frames: int = 50
    sip_trace: bool = False
    register: dict[str, Any] | None = None
    collect_timings: bool = False
    # a relay of the worker's own in front of pjmedia for plain-RTP G.711 calls
    # (hitl_sip/worker/relay.py): the human phase without the conference tick
    trunk_relay: bool = True


@dataclass(frozen=True)
class StackInfo:
    addresses: dict[str, str]


_TX_RESPONSE = re.compile(r"^TX \d+ bytes Response msg (\d{3})/")
_TOP_VIA = re.compile(r"^(?:Via|v)[ \t]*:[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z]+)",
                      re.IGNORECASE | re.MULTILINE)
_RX_REQUEST = re.compile(r"^RX \d+ bytes Request msg ([A-Z]+)/")


class _LogWriter(pj.LogWriter):  # type: ignore[misc]
    """Routes pjsip's log to Python logging and counts SIP traffic from the message log."""

    def __init__(self, metrics: WorkerMetrics, sip_trace: bool) -> None:
        super().__init__()
        self.metrics = metrics
        self.sip_trace = sip_trace

    def write(self, entry: Any) -> None:
        try:
            msg: str = entry.msg
            level: int = entry.level
            if level == 4 and (msg.startswith("TX ") or msg.startswith("RX ")):
                m = _TX_RESPONSE.match(msg)
                if m:
                    self.metrics.responses.inc(1.0, **{"class": m.group(1)[0] + "xx"})
                else:
                    m = _RX_REQUEST.match(msg)
                    if m:
                        self.metrics.requests.inc(method=m.group(1))
                if self.sip_trace:  # whole messages carry numbers: opt-in, debug only
                    pjlog.debug("%s", msg.rstrip())
                return
            text = msg.rstrip()
            if not self.sip_trace:
                # pjsip appends the offending packet (numbers and all) to parse errors
                text = text.split("\n", 1)[0]
            if level <= 1:
                pjlog.error("%s", text)
            elif level == 2:
                pjlog.warning("%s", text)
            elif level == 3:
                pjlog.debug("%s", text)
        except Exception:  # a logging failure must never reach pjlib
            pass


def contact_host(contact: str) -> str:
    """``host[:port]`` of a Contact header value (``<sip:x@203.0.113.7:5060;transport=udp>``):
    where a REFER's target goes when the profile names no ``refer_host``."""
    try:
        uri = NameAddr.parse(contact).uri
    except ValueError as e:
        raise SipError("the remote party's Contact has no host to transfer to") from e
    if not uri.host:
        raise SipError("the remote party's Contact has no host to transfer to")
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    return host if uri.port is None else f"{host}:{uri.port}"


def settle(outcome: concurrent.futures.Future[tuple[int, str]], code: int, reason: str) -> None:
    """Complete a REFER's outcome once (the loop may have given up on it meanwhile)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        outcome.set_result((code, reason))


# --- MESSAGE: refused before pjsua's IM module answers it ----------------------------------
#
# pjsua registers an IM module (``mod-pjsua-im``, priority APPLICATION) that answers every
# MESSAGE outside a dialog 200, and its call code answers one inside a dialog 200 too; no
# pjsua2 setting turns either off (``Account.onInstantMessage`` only reports it afterwards).
# So the stack registers a pjsip module of its own through the extension's exported symbols,
# just before the dialog layer: it sees every new request first and answers a MESSAGE 403
# itself, statelessly (a retransmission gets the same). Nothing else is touched.

PJSIP_MOD_PRIORITY_UA_PROXY_LAYER = 32  # pjsip/sip_module.h: transactions 16, dialogs 32
MESSAGE_REFUSED = 403


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


_ON_RX_REQUEST = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class _PjsipModule(ctypes.Structure):
    """``struct pjsip_module`` (pjsip/sip_module.h), the callbacks this one does not use
    left NULL."""

    _fields_ = [
        ("prev", ctypes.c_void_p),
        ("next", ctypes.c_void_p),
        ("name", _PjStr),
        ("id", ctypes.c_int),
        ("priority", ctypes.c_int),
        ("load", ctypes.c_void_p),
        ("start", ctypes.c_void_p),
        ("stop", ctypes.c_void_p),
        ("unload", ctypes.c_void_p),
        ("on_rx_request", _ON_RX_REQUEST),
        ("on_rx_response", ctypes.c_void_p),
        ("on_tx_request", ctypes.c_void_p),
        ("on_tx_response", ctypes.c_void_p),
        ("on_tsx_state", ctypes.c_void_p),
    ]


class MessageRefusal:
    """A pjsip module that answers MESSAGE 403 before pjsua's IM module can answer 200.
    Registered on the pj thread after ``libInit``; it lives as long as the endpoint (which
    unregisters it in ``libDestroy``), so the stack keeps it."""

    NAME = b"mod-hitl-no-message"

    def __init__(self) -> None:
        lib = ctypes.CDLL(pj._pjsua2.__file__)
        self._get_endpt = lib.pjsua_get_pjsip_endpt
        self._get_endpt.restype = ctypes.c_void_p
        self._get_endpt.argtypes = []
        self._register = lib.pjsip_endpt_register_module
        self._register.restype = ctypes.c_int
        self._register.argtypes = [ctypes.c_void_p, ctypes.POINTER(_PjsipModule)]
        self._info = lib.pjsip_rx_data_get_info
        self._info.restype = ctypes.c_char_p
        self._info.argtypes = [ctypes.c_void_p]
        self._respond = lib.pjsip_endpt_respond_stateless
        self._respond.restype = ctypes.c_int
        self._respond.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._endpt: int | None = None
        self._callback = _ON_RX_REQUEST(self._on_rx_request)
        self._module = _PjsipModule(
            name=_PjStr(self.NAME, len(self.NAME)), id=-1,
            priority=PJSIP_MOD_PRIORITY_UA_PROXY_LAYER - 1, on_rx_request=self._callback)

    def register(self) -> None:
        self._endpt = self._get_endpt()
        status = self._register(self._endpt, ctypes.byref(self._module))
        if status != 0:
            raise SipError(f"the MESSAGE refusal module was not registered (pj status {status})")

    def _on_rx_request(self, rdata: int | None) -> int:
        try:
            # "Request msg MESSAGE/cseq=1 (rdata0x...)": the method without rdata's layout
            info = self._info(rdata) or b""
            if not info.startswith(b"Request msg MESSAGE/"):
                return 0
            self._respond(self._endpt, rdata, MESSAGE_REFUSED, None, None, None)
            return 1
        except Exception:  # never into pjlib: pjsua's own handling then applies
            log.exception("MESSAGE refusal failed")
            return 0


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, stack: PjStack, account: Any, pj_call_id: int, call_id: str) -> None:
        super().__init__(account, pj_call_id)
        self.stack = stack
        self.call_id = call_id
        self.port: PcmPort | None = None
        self.connected_media: Any = None
        self.held = False
        self.answered_at: float | None = None
        self.created_at = time.monotonic()
        self.rejection: Decision | None = None
        self.hangup_by_system = False
        self.admitted = False
        self.ended = False
        # our REFER's outcome: (final status, reason) from the carrier's NOTIFY (sipfrag) or
        # the REFER's own failure; completed on the pj thread, awaited on the loop
        self.refer: concurrent.futures.Future[tuple[int, str]] | None = None
        self.relay: TrunkRelay | None = None  # with trunk_relay: in front of pjmedia
        self.relay_stream: tuple[Any, ...] | None = None  # the stream it last primed

    def onCallState(self, prm: Any) -> None:
        self.stack._guard(self._on_state)

    def onCallTransferStatus(self, prm: Any) -> None:
        """Progress of our REFER: pjsua reports 100 when it is accepted (202), then each
        NOTIFY's sipfrag status; a failed REFER comes as its final status."""
        code, final = int(prm.statusCode), bool(prm.finalNotify)
        refer = self.refer
        if refer is None or refer.done() or (code < 200 and not final):
            return
        prm.cont = False  # no more NOTIFYs wanted: the outcome is known
        settle(refer, code if code >= 200 else 500, str(prm.reason))

    def onCallTransferRequest(self, prm: Any) -> None:
        # a REFER *to us* (the trunk asking our worker to call someone): never followed
        prm.statusCode = 603

    def _on_state(self) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.answered_at is None:
            self.answered_at = time.monotonic()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and not self.ended:
            self.ended = True
            self.stack._on_call_disconnected(self, ci.lastStatusCode, ci.lastReason)

    def onCallMediaState(self, prm: Any) -> None:
        self.stack._guard(lambda: self.stack._on_media_state(self))

    def onCallSdpCreated(self, prm: Any) -> None:
        self.stack._guard(lambda: self.stack._on_sdp_created(self, prm))

    def onDtmfDigit(self, prm: Any) -> None:
        self.stack._guard(lambda: self.stack._on_dtmf(self, str(prm.digit), "rfc4733"))


class _Account(pj.Account):  # type: ignore[misc]
    def __init__(self, stack: PjStack, name: str) -> None:
        super().__init__()
        self.stack = stack
        self.name = name

    def onIncomingCall(self, prm: Any) -> None:
        self.stack._guard(lambda: self.stack._on_incoming(self, prm))

    def onRegState(self, prm: Any) -> None:
        self.stack._guard(lambda: self.stack._on_reg_state(self, prm))

    def onIncomingSubscribe(self, prm: Any) -> None:
        # no presence here: pjsua would accept (200) and send NOTIFYs to any Contact given
        prm.code = 403
        prm.reason = "Forbidden"


class PjStack:
    """Owns the pjsua2 endpoint and the thread that polls it."""

    def __init__(
        self,
        settings: StackSettings,
        loop: asyncio.AbstractEventLoop,
        sink: Callable[[WorkerEvent], None],
        admit: Admit,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self.sink = sink
        self.admit = admit
        self.metrics = metrics or WorkerMetrics()
        self.draining = False
        self.timings = PortTimings() if settings.collect_timings else None
        self._commands: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._ready: concurrent.futures.Future[StackInfo] = concurrent.futures.Future()
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pjsua", daemon=True)
        self._calls: dict[str, _Call] = {}
        self._graveyard: list[Any] = []
        self._free_ports: list[PcmPort] = []
        self._after_callbacks: list[Callable[[], None]] = []
        self._all_ports: list[PcmPort] = []
        self._accounts: list[_Account] = []
        self._ep: Any = None
        self._log_writer: _LogWriter | None = None
        self._message_refusal = MessageRefusal()
        self._read_vector: Callable[[Any], bytes] = _read_vector_slow
        self.frame_bytes = settings.clock_rate * FRAME_MS // 1000 * 2

    # -- loop-side API ------------------------------------------------------------------

    async def start(self) -> StackInfo:
        self._running.set()
        self._thread.start()
        return await asyncio.wrap_future(self._ready)

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the pj thread; await the returned future for its result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if not self._running.is_set():
            fut.set_exception(SipError("the SIP stack is not running"))
        else:
            self._commands.put((fn, fut))
        return asyncio.wrap_future(fut, loop=self.loop)

    async def answer(self, call_id: str, status: int = 200) -> bool:
        def do() -> bool:
            call = self._calls.get(call_id)
            if call is None or call.ended:
                return False
            op = pj.CallOpParam()
            op.statusCode = status
            call.answer(op)
            return True

        return await self.submit(do)

    async def hangup(self, call_id: str, status: int = 200) -> bool:
        def do() -> bool:
            call = self._calls.get(call_id)
            if call is None or call.ended:
                return False
            call.hangup_by_system = True
            op = pj.CallOpParam()
            op.statusCode = status
            call.hangup(op)
            return True

        return await self.submit(do)

    async def refer(self, call_id: str, user: str, host: str | None,
                    wait: float) -> tuple[int, str]:
        """A blind transfer of the call to ``sip:<user>@<host>`` (``host`` None: the host and
        port of the remote party's Contact) by REFER; the final status and reason of the
        carrier's NOTIFY (or of the REFER itself), ``(408, ...)`` after ``wait`` seconds.
        :class:`SipError` when the call is gone or a transfer is under way."""
        outcome: concurrent.futures.Future[tuple[int, str]] = concurrent.futures.Future()

        def do() -> None:
            call = self._calls.get(call_id)
            if call is None or call.ended:
                raise SipError("the call is over")
            if call.refer is not None and not call.refer.done():
                raise SipError("a transfer of this call is under way")
            target = host or contact_host(str(call.getInfo().remoteContact))
            call.refer = outcome
            try:
                call.xfer(f"<sip:{user}@{target}>", pj.CallOpParam(True))
            except pj.Error as e:
                call.refer = None
                raise SipError(f"REFER not sent: {e.reason}") from e  # no URI: a number

        await self.submit(do)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(outcome, loop=self.loop), wait)
        except TimeoutError:
            return 408, "no final NOTIFY in time"

    def set_source_active(self, call_id: str, active: bool) -> None:
        """Tell the port whether silence now is an underrun (read by the clock thread)."""
        call = self._calls.get(call_id)
        if call is not None and call.port is not None:
            call.port.source_active = active

    async def stream_stats(self, call_id: str) -> TrunkLegStats | None:
        """What pjmedia measured of the caller's audio so far (None: no audio stream)."""
        def do() -> TrunkLegStats | None:
            call = self._calls.get(call_id)
            if call is None or call.ended or call.port is None:
                return None
            info = call.getInfo()  # kept: its media vector dies with it
            try:
                index = next(i for i, mi in enumerate(info.media)
                             if mi.type == pj.PJMEDIA_TYPE_AUDIO)
                stat = call.getStreamStat(index)
            except (StopIteration, pj.Error):
                return None
            rx, jb = stat.rtcp.rxStat, stat.jbuf
            return TrunkLegStats(received=int(rx.pkt), lost=int(rx.loss),
                                 late=int(jb.discard),
                                 jitter_ms=float(rx.jitterUsec.last) / 1000.0,
                                 delay_ms=float(jb.avgDelayMsec))

        return await self.submit(do)

    def set_recorder(self, call_id: str, recorder: StereoRecorder | None) -> bool:
        """Record both sides of the call's port from its next tick (False: no port)."""
        call = self._calls.get(call_id)
        if call is None or call.port is None:
            return False
        call.port.recorder = recorder
        return True

    def active_calls(self) -> int:
        return len(self._calls)

    async def stop(self, join_timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        self._running.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, join_timeout)

    # -- pj thread ------------------------------------------------------------------------

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception:
            log.exception("error in a pjsua2 callback (the call goes on)")

    def _emit(self, event: WorkerEvent) -> None:
        try:
            self.loop.call_soon_threadsafe(self.sink, event)
        except RuntimeError:
            log.debug("event %s dropped: the loop is closed", type(event).__name__)

    def _run(self) -> None:
        try:
            info = self._init_endpoint()
        except Exception as e:
            log.exception("pjsua2 start failed")
            self._running.clear()
            self._ready.set_exception(SipError(f"SIP stack failed to start: {e}"))
            self._destroy()
            return
        self._ready.set_result(info)
        ep = self._ep
        while self._running.is_set():
            ep.libHandleEvents(10)
            self._run_after_callbacks()
            self._run_commands()
            self._graveyard.clear()
        self._shutdown()

    def _run_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except Exception as e:
                fut.set_exception(e)

    def _init_endpoint(self) -> StackInfo:
        s = self.settings
        # libCreate logs pjlib's start-up to stdout before our writer is installed; the
        # level is a pjlib global, settable through the extension's own symbol.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(pj._pjsua2.__file__).pj_log_set_level(1)
        ep = pj.Endpoint()
        self._ep = ep
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = 4
        cfg.uaConfig.userAgent = s.user_agent
        self._log_writer = _LogWriter(self.metrics, s.sip_trace)
        cfg.logConfig.writer = self._log_writer
        cfg.logConfig.level = 4
        cfg.logConfig.consoleLevel = 4
        cfg.logConfig.decor = 0
        cfg.logConfig.msgLogging = 1
        cfg.medConfig.clockRate = s.clock_rate
        cfg.medConfig.sndClockRate = s.clock_rate
        cfg.medConfig.channelCount = 1
        cfg.medConfig.audioFramePtime = FRAME_MS
        cfg.medConfig.ptime = FRAME_MS
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.threadCnt = 1
        ep.libInit(cfg)
        self._message_refusal.register()
        ep.audDevManager().setNullDev()
        addresses: dict[str, str] = {}
        kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP}
        for name in s.transports:
            tc = pj.TransportConfig()
            tc.port = s.port
            tc.boundAddress = s.sip_bind or s.host
            if s.public_address and not s.sip_bind:
                tc.publicAddress = s.public_address
            tid = ep.transportCreate(kinds[name], tc)
            ti = ep.transportGetInfo(tid)
            addresses[name] = ti.localName
        self._configure_codecs(ep)
        ep.libStart()
        self._read_vector = select_vector_reader()
        self._accounts.append(self._create_account("local", None))
        if s.register:
            self._accounts.append(self._create_account("trunk", s.register))
        return StackInfo(addresses=addresses)

    def _configure_codecs(self, ep: Any) -> None:
        wanted = {CODEC_IDS[c]: 255 - i for i, c in enumerate(self.settings.codecs)}
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, wanted.get(codec.codecId, 0))

    def _create_account(self, name: str, register: dict[str, Any] | None) -> _Account:
        s = self.settings
        acc = _Account(self, name)
        ac = pj.AccountConfig()
        host = s.sip_bind or s.public_address or s.host
        ac.idUri = f"sip:hitl-sip@{host}"
        mt = ac.mediaConfig.transportConfig
        mt.port = s.rtp_port_start
        mt.portRange = max(0, s.rtp_port_end - s.rtp_port_start)
        mt.boundAddress = self._pj_media_host
        if s.public_address:
            mt.publicAddress = s.public_address
        ac.mediaConfig.srtpUse = SRTP_USE[s.srtp]
        # the trunk's signalling is TLS at the front, which reaches this worker over UDP on
        # loopback: pjsua must not ask for sips/TLS on its own leg before offering SDES keys
        ac.mediaConfig.srtpSecureSignaling = 0
        if s.srtp != "off":
            # SDES (RFC 4568) only: carriers' SRTP; DTLS-SRTP is for WebRTC
            ac.mediaConfig.srtpOpt.keyings = pj.IntVector([pj.PJMEDIA_SRTP_KEYING_SDES])
        ac.natConfig.sdpNatRewriteUse = 0
        ac.natConfig.contactRewriteUse = 0
        ac.natConfig.viaRewriteUse = 0
        ac.sipConfig.authInitialEmpty = False
        if register:
            ac.idUri = register["aor"]
            ac.regConfig.registrarUri = register["registrar"]
            ac.regConfig.registerOnAdd = True
            ac.regConfig.timeoutSec = int(register.get("expires", 300))
            ac.regConfig.retryIntervalSec = int(register.get("retry_interval", 30))
            cred = pj.AuthCredInfo(
                "digest", "*", register["username"], 0, register.get("password", "")
            )
            ac.sipConfig.authCreds.append(cred)
        acc.create(ac, name == "local")
        return acc

    def _on_incoming(self, account: _Account, prm: Any) -> None:
        rdata = prm.rdata
        raw: str = rdata.wholeMsg
        source: str = rdata.srcAddress
        via = _TOP_VIA.search(raw)
        transport = via.group(1).lower() if via else "udp"
        call_id = uuid.uuid4().hex[:16]
        call = _Call(self, account, prm.callId, call_id)
        admitted = sum(1 for c in self._calls.values() if c.admitted)
        self._calls[call_id] = call
        decision = self.admit(source, raw, admitted, self.draining)
        op = pj.CallOpParam()
        if decision.status:
            call.rejection = decision
            op.statusCode = decision.status
            if decision.reason:
                op.reason = decision.reason
            for name, value in decision.headers:
                h = pj.SipHeader()
                h.hName = name
                h.hValue = value
                op.txOption.headers.append(h)
            if decision.immediate:
                call.answer(op)
            else:
                # A final response inside onIncomingCall that ends the call at once (e.g. for
                # a datagram pjsip truncated) makes pjsua reset the call slot and pjsua2 free
                # the cloned INVITE a second time: abort. Answer right after the callback.
                self._after_callbacks.append(lambda: self._reject(call, op))
            return
        call.admitted = True
        self.metrics.active_calls.set(admitted + 1)
        op.statusCode = 180
        call.answer(op)
        self._emit(CallOffered(call_id, source, transport, decision.metadata))

    def _reject(self, call: _Call, op: Any) -> None:
        if not call.ended:
            call.answer(op)

    def _run_after_callbacks(self) -> None:
        while self._after_callbacks:
            self._guard(self._after_callbacks.pop(0))

    @property
    def _pj_media_host(self) -> str:
        return pj_media_host(self.settings)

    def relay_carries(self, call_id: str, carries: bool) -> None:
        """While the call's relay sends the agent's frames to the trunk itself, pjmedia's
        copy of them is dropped at the relay: the port stops transmitting to the stream —
        pjmedia's clock thread no longer calls into Python for that direction, and the
        stream encodes no audio (it sends silence, which the relay drops at the
        hand-back) — and the caller's tick takes the frames the caller hears, for the
        recording. ``carries`` False (the relay handed back: hold audio, the bot):
        connected again. Called on the loop; done on the pj thread."""
        def do() -> None:
            call = self._calls.get(call_id)
            port = call.port if call is not None else None
            media = call.connected_media if call is not None else None
            if port is None or media is None or port.tx_via_relay == carries:
                return
            try:
                if carries:
                    port.tx_via_relay = True
                    port.stopTransmit(media)
                else:
                    port.startTransmit(media)
                    port.tx_via_relay = False
            except pj.Error as e:
                log.warning("[call %s] relay %s: %s", call_id,
                            "cut" if carries else "hand-back", e.info())

        self.submit(do).add_done_callback(lambda f: f.cancelled() or f.exception())

    def relay_of(self, call_id: str) -> TrunkRelay | None:
        """The call's relay (set on the pj thread before its media is up; read here)."""
        call = self._calls.get(call_id)
        return None if call is None else call.relay

    def _on_sdp_created(self, call: _Call, prm: Any) -> None:
        """With ``trunk_relay``, our SDP names the call's relay in front of pjmedia
        (hitl_sip/worker/relay.py); a re-INVITE's SDP keeps naming it."""
        if not self.settings.trunk_relay or self.settings.clock_rate != 8000:
            return
        local = sdp_media(prm.sdp.wholeSdp)
        remote = sdp_media(prm.remSdp.wholeSdp) if prm.remSdp.wholeSdp else None
        if local is None or remote is None or "SAVP" in local[3] or "SAVP" in remote[3]:
            return  # SRTP (its payloads are not ours to read), or no audio
        relay = call.relay
        if relay is None:
            if not remote[1] or remote[0] == "0.0.0.0":
                return
            pj_host = self._pj_media_host
            pj_host = "127.0.0.1" if pj_host in ("", "0.0.0.0") else pj_host
            try:
                relay = TrunkRelay(self.settings.host, (pj_host, local[1]),
                                   (remote[0], remote[1]), (remote[0], remote[2]),
                                   (self.settings.rtp_port_start, self.settings.rtp_port_end))
            except OSError as e:
                if pj_host == self.settings.host:
                    log.warning("[call %s] no relay, the call goes through pjmedia alone: %s",
                                call.call_id, e)
                    return
                # pjmedia listens on loopback only: without its relay the call has no media
                log.error("[call %s] no relay for the call's media, ending it (503): %s",
                          call.call_id, e)
                self._after_callbacks.append(lambda: self._end_unrelayed(call))
                return
            call.relay = relay
            self.loop.call_soon_threadsafe(relay.start)
        elif remote[1] and remote[0] != "0.0.0.0":
            target = (remote[0], remote[1]), (remote[0], remote[2])
            self.loop.call_soon_threadsafe(relay.update_trunk, *target)
        prm.sdp.wholeSdp = rewrite(prm.sdp.wholeSdp,
                                   self.settings.public_address or self.settings.host,
                                   relay.port)


    def _end_unrelayed(self, call: _Call) -> None:
        if call.ended:
            return
        call.hangup_by_system = True
        op = pj.CallOpParam()
        op.statusCode = 503
        call.hangup(op)

    def _on_call_disconnected(self, call: _Call, status: int, reason: str) -> None:
        self._calls.pop(call.call_id, None)
        if call.relay is not None:
            self.loop.call_soon_threadsafe(call.relay.close)
            self.metrics.relay_refused.inc(call.relay.refused)
        if call.refer is not None:
            settle(call.refer, 487, "the call ended")
        self._release_media(call)
        self._graveyard.append(call)
        if call.rejection is not None:
            outcome = call.rejection.outcome
            self.metrics.calls.inc(outcome=outcome)
            self._emit(CallRejected(call.rejection.status, outcome))
            return
        if not call.admitted:
            return
        admitted = sum(1 for c in self._calls.values() if c.admitted)
        self.metrics.active_calls.set(admitted)
        answered = call.answered_at is not None
        if answered:
            outcome = "completed"
        elif status == 487:
            outcome = "cancelled"
        else:
            outcome = "failed"
        self.metrics.calls.inc(outcome=outcome)
        by = "system" if call.hangup_by_system else "caller"
        duration = time.monotonic() - (call.answered_at or call.created_at)
        self._emit(CallEnded(call.call_id, outcome, status, reason, by, answered, duration))

    def _release_media(self, call: _Call, *, disconnect: bool = False) -> None:
        """Return the call's port to the pool. After DISCONNECTED pjsua has already removed
        the call's conference slot (and with it every connection), so only a call still
        alive needs an explicit disconnect."""
        port = call.port
        if port is None:
            return
        if disconnect and call.connected_media is not None:
            with contextlib.suppress(pj.Error):
                call.connected_media.stopTransmit(port)
                port.stopTransmit(call.connected_media)
        port.unbind()
        call.connected_media = None
        call.port = None
        self._free_ports.append(port)

    def _acquire_port(self) -> PcmPort:
        if self._free_ports:
            return self._free_ports.pop()
        port = PcmPort(self.frame_bytes, self._read_vector, self.metrics, self.timings)
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.settings.clock_rate, 1, FRAME_MS * 1000, 16)
        port.createPort(f"pcm-{len(self._all_ports)}", fmt)
        self._all_ports.append(port)
        return port

    def _on_media_state(self, call: _Call) -> None:
        ci = call.getInfo()
        audio_index = -1
        status = None
        for i, mi in enumerate(ci.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                audio_index = i
                status = mi.status
                break
        if audio_index < 0:
            return
        held = status in (pj.PJSUA_CALL_MEDIA_REMOTE_HOLD, pj.PJSUA_CALL_MEDIA_NONE)
        if held != call.held:
            call.held = held
            self._emit(CallHold(call.call_id, held))
        if status not in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
            return
        media = call.getAudioMedia(audio_index)
        if call.relay is not None:
            self._prime_relay(call, audio_index)
        first = call.port is None
        inbound = outbound = None
        if first:
            cap = self.settings.buffer_frames
            inbound = FrameBuffer(self.loop, cap)
            outbound = FrameBuffer(
                self.loop, cap,
                on_overrun=lambda: self.metrics.overruns.inc(direction="to_caller"),
            )
            port = self._acquire_port()
            port.bind(inbound, outbound)
            call.port = port
        else:
            assert call.port is not None
            port = call.port
        if call.connected_media is not None and call.connected_media.getPortId() != (
            media.getPortId()
        ):
            with contextlib.suppress(pj.Error):
                call.connected_media.stopTransmit(port)
                port.stopTransmit(call.connected_media)
            call.connected_media = None
        if call.connected_media is None:
            media.startTransmit(port)
            if not port.tx_via_relay:
                port.startTransmit(media)
            call.connected_media = media
        codec = ""
        with contextlib.suppress(pj.Error):
            codec = call.getStreamInfo(audio_index).codecName
        if inbound is not None and outbound is not None:
            self._emit(CallMediaReady(call.call_id, codec, inbound, outbound))

    def _prime_relay(self, call: _Call, audio_index: int) -> None:
        """A new or rebuilt stream sends to the SDP's address until it latches onto the
        relay: prime it before anything is connected to it (until then it sends only
        silence of its own, from 127.0.0.1, which the kernel does not route to a trunk
        that is not on loopback)."""
        assert call.relay is not None
        with contextlib.suppress(pj.Error):
            info = call.getStreamInfo(audio_index)
            stream = (info.remoteRtpAddress, info.codecName, info.dir, info.rxPt)
            if stream != call.relay_stream:
                call.relay_stream = stream
                call.relay.prime(info.rxPt)

    def _on_dtmf(self, call: _Call, digit: str, method: str) -> None:
        self.metrics.dtmf.inc()
        self._emit(CallDtmf(call.call_id, digit, method))

    def _on_reg_state(self, account: _Account, prm: Any) -> None:
        info = account.getInfo()
        active = bool(info.regIsActive)
        code = int(prm.code)
        self.metrics.registered.set(1.0 if active else 0.0, account=account.name)
        if active:
            log.info("registration %s active (expires %ss)", account.name, info.regExpiresSec)
        else:
            log.warning(
                "registration %s failed or ended: %s %s (pjsua retries)",
                account.name, code, prm.reason,
            )
        self._emit(RegistrationChanged(account.name, active, code, str(prm.reason)))

    def _shutdown(self) -> None:
        ep = self._ep
        try:
            if self._calls:
                ep.hangupAllCalls()
                deadline = time.monotonic() + 2.0
                while self._calls and time.monotonic() < deadline:
                    ep.libHandleEvents(10)
            self._run_commands()
            for call in list(self._calls.values()):
                self._release_media(call, disconnect=True)
            self._calls.clear()
            self._graveyard.clear()
            # Stop the media clock before the ports go: no callback may reach a port
            # whose Python half is being torn down.
            ep.audDevManager().setNoDev()
            self._free_ports.clear()
            self._all_ports.clear()
            for acc in self._accounts:
                acc.shutdown()
            self._accounts.clear()
        except pj.Error as e:
            log.warning("error while shutting the SIP stack down: %s", e.info())
        finally:
            self._destroy()
        # Fail whatever was submitted after the stop.
        while True:
            try:
                _, fut = self._commands.get_nowait()
            except queue.Empty:
                break
            if fut.set_running_or_notify_cancel():
                fut.set_exception(SipError("the SIP stack stopped"))

    def _destroy(self) -> None:
        ep = self._ep
        if ep is None:
            return
        # pjsua waits a second after unregistering for the answers (and whatever else
        # comes); with no registration there is nothing to wait for
        flags = 0 if self.settings.register else pj.PJSUA_DESTROY_NO_RX_MSG
        try:
            ep.libDestroy(flags)
        except pj.Error as e:
            log.warning("libDestroy failed: %s", e.info())
        self._ep = None
        self._log_writer = None


def pj_media_host(s: StackSettings) -> str:
    """Where pjmedia binds its RTP sockets: on 127.0.0.1 when every call has a relay in
    front of it (plain RTP only, 8 kHz, an IPv4 media host: the relay's sockets are IPv4)
    — its ports are in no SDP, but they are in the profile's range and pjsua hands them
    out in order, and a flood from another source would make its stream switch to that
    source; else on the media host."""
    if s.trunk_relay and s.clock_rate == 8000 and s.srtp == "off" and _ipv4(s.host):
        return "127.0.0.1"
    return s.host


def _ipv4(host: str) -> bool:
    try:
        return host == "" or ipaddress.ip_address(host).version == 4
    except ValueError:  # a name
        return False
