"""Capacity of one media worker: calls held, CPU per call, and the cost of the PCM callbacks.

Runs the worker's pjsua2 stack (:class:`~hitl_sip.worker.pjsip.PjStack`) in this process on
free loopback ports, with the worker's media behaviour: it admits up to three concurrent
calls (503 with ``Retry-After`` beyond), answers them, plays ``rtp/prompts/greeting.wav`` to
each caller (looped, so the outbound path carries audio for the whole window) and consumes
every inbound frame as the recorder does, without writing WAV files. SIPp places the calls;
each streams G.711 µ-law speech (``bench/sipp/streaming_call.xml``) until the bench hangs up.

Steps: idle baseline (stack up, no calls) → ``--calls`` calls → steady-state window →
a 4th call that must get 503 (with ``--calls 3``) → hang-up → micro-benchmarks of the SWIG
``ByteVector`` paths the callbacks use. Progress goes to stderr; the report to stdout
(``--json`` adds one JSON line with every figure).

Usage: ``.venv/bin/python bench/worker_capacity.py [--calls 3] [--seconds 10]`` (root: SIPp's
``play_pcap_audio`` sends through a raw socket).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NamedTuple

import pjsua2 as pj
import psutil

from hitl_sip.media.buffers import BufferClosed, FrameBuffer
from hitl_sip.media.g711 import ulaw_encode
from hitl_sip.media.wav import frames, read_wav, resample
from hitl_sip.testing.pcap import rtp_stream_packets, write_udp_pcap
from hitl_sip.worker.decision import Decision
from hitl_sip.worker.events import CallEnded, CallMediaReady, CallOffered, CallRejected, WorkerEvent
from hitl_sip.worker.pjsip import (
    FRAME_MS,
    PjStack,
    StackSettings,
    _read_vector_fast,
    _read_vector_slow,
)

log = logging.getLogger("bench.worker_capacity")

ROOT = Path(__file__).resolve().parents[1]
STREAMING_CALL = ROOT / "bench" / "sipp" / "streaming_call.xml"
EXPECT_503 = ROOT / "tests" / "sipp" / "expect_503.xml"
GREETING = ROOT / "rtp" / "prompts" / "greeting.wav"
CALLER_SPEECH = ROOT / "rtp" / "caller" / "agent_bill_8k.wav"

# One pjsua2 endpoint holds at most PJSUA_MAX_CALLS = 4 calls (a compile-time cap of the
# wheel, see bench/README.md). The worker admits 3 and keeps the 4th slot to answer 503.
MAX_CALLS = 3
RETRY_AFTER = 5
CALLER_RATE = 8000
CALLER_SAMPLES_PER_FRAME = CALLER_RATE * FRAME_MS // 1000
SETUP_TIMEOUT = 20.0
PROBE_TIMEOUT = 20.0
TEARDOWN_TIMEOUT = 15.0
# Left out of both windows: pjmedia's start-up (~50 ms of CPU in the first second) and the
# first second of the calls (jitter buffers filling, resamplers created).
SETTLE_SECONDS = 1.0


class BenchError(Exception):
    """The benchmark could not run or a call did not behave; ``exit_code`` says which."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    count: int
    median_us: float
    p99_us: float

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> Distribution:
        if not samples_ns:
            return cls(0, math.nan, math.nan)
        ordered = sorted(samples_ns)
        return cls(
            len(ordered),
            percentile(ordered, 50) / 1000,
            percentile(ordered, 99) / 1000,
        )


def percentile(ordered: Sequence[int], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class CpuSample:
    """Process CPU seconds (all threads) at a wall-clock instant, split by thread group."""

    wall: float
    process: float
    threads: dict[str, float]


@dataclass(frozen=True)
class CpuUsage:
    wall_seconds: float
    percent: float  # of one core
    threads_percent: dict[str, float]


THREAD_GROUPS = ("asyncio loop", "pjsua poll thread", "pjmedia and other threads")


def thread_cpu_seconds(thread: threading.Thread | None) -> float:
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def cpu_sample() -> CpuSample:
    """Nanosecond-resolution CPU clocks: the process's, and the two Python threads' own.

    pjmedia's threads (the media clock that calls the PCM port, the RTP receive thread) are
    not Python threads; their share is the process total minus the two we can name.
    """
    poll = next((t for t in threading.enumerate() if t.name == "pjsua"), None)
    wall = time.monotonic()
    process = time.process_time()
    loop = thread_cpu_seconds(threading.main_thread())
    pj_poll = thread_cpu_seconds(poll)
    return CpuSample(
        wall,
        process,
        {
            THREAD_GROUPS[0]: loop,
            THREAD_GROUPS[1]: pj_poll,
            THREAD_GROUPS[2]: process - loop - pj_poll,
        },
    )


def cpu_usage(start: CpuSample, end: CpuSample) -> CpuUsage:
    wall = end.wall - start.wall
    return CpuUsage(
        wall,
        100 * (end.process - start.process) / wall,
        {k: 100 * (end.threads[k] - start.threads[k]) / wall for k in THREAD_GROUPS},
    )


def quiet_pjlib_startup() -> None:
    """Keep pjlib's start-up lines off stdout.

    ``libCreate`` logs at pjlib's default level (5) to the console until ``libInit``
    installs the stack's log writer; the level is a pjlib global, settable before that.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(pj._pjsua2.__file__).pj_log_set_level(1)


# --- the worker under test ---------------------------------------------------------------------


@dataclass
class BenchCall:
    call_id: str
    answered: bool = False
    frames_received: int = 0
    frames_sent: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FrameCounters(NamedTuple):
    received: int
    sent: int
    underruns_from: float  # the caller's stream gave no audio
    overruns_from: float
    underruns_to: float  # nothing queued while the greeting played
    overruns_to: float


class BenchWorker:
    """The worker's call handling around a PjStack, minus hub, flows and WAV writing."""

    def __init__(self, settings: StackSettings, greeting: list[bytes], expected_calls: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.stack = PjStack(settings, self.loop, self.on_event, self.admit)
        self.greeting = greeting
        self.expected_calls = expected_calls
        self.calls: dict[str, BenchCall] = {}
        self.held: set[str] = set()
        self.peak_held = 0
        self.media_up = 0
        self.rejections: list[int] = []
        self.failures: list[str] = []
        self.all_up = asyncio.Event()
        self.rejected = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self._tasks: set[asyncio.Task[None]] = set()

    # Runs on the pj thread inside onIncomingCall, like hitl_sip.worker.admission.Admission
    # (whose allow-list and digest checks cost per INVITE, not per frame).
    def admit(self, source: str, raw: str, active: int, draining: bool) -> Decision:
        if draining or active >= MAX_CALLS:
            return Decision(
                503,
                "Service Unavailable",
                "rejected_capacity",
                (("Retry-After", str(RETRY_AFTER)),),
            )
        return Decision()

    def spawn(self, coro: Coroutine[Any, Any, None], call: BenchCall | None = None) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if call is not None:
            call.tasks.append(task)

    def on_event(self, event: WorkerEvent) -> None:
        if isinstance(event, CallOffered):
            call = BenchCall(event.call_id)
            self.calls[event.call_id] = call
            self.idle.clear()
            self.spawn(self._answer(call), call)
        elif isinstance(event, CallMediaReady):
            media_call = self.calls.get(event.call_id)
            if media_call is None:
                return
            self.media_up += 1
            self.spawn(self._consume(media_call, event.inbound), media_call)
            self.spawn(self._play(media_call, event.outbound), media_call)
            self._check_all_up()
        elif isinstance(event, CallRejected):
            self.rejections.append(event.status)
            self.rejected.set()
        elif isinstance(event, CallEnded):
            ended = self.calls.pop(event.call_id, None)
            self.held.discard(event.call_id)
            if event.outcome != "completed":
                self.failures.append(f"{event.outcome} ({event.status} {event.reason})")
            if ended is not None:
                for task in ended.tasks:
                    task.cancel()
            if not self.calls:
                self.idle.set()

    async def _answer(self, call: BenchCall) -> None:
        if await self.stack.answer(call.call_id, 200):
            call.answered = True
            self.held.add(call.call_id)
            self.peak_held = max(self.peak_held, len(self.held))
            self._check_all_up()

    def _check_all_up(self) -> None:
        # pjsua reports media while answer() runs, so either event can come last.
        if len(self.held) >= self.expected_calls and self.media_up >= self.expected_calls:
            self.all_up.set()

    async def _consume(self, call: BenchCall, inbound: FrameBuffer) -> None:
        with contextlib.suppress(BufferClosed):
            while True:
                await inbound.get()
                call.frames_received += 1

    async def _play(self, call: BenchCall, outbound: FrameBuffer) -> None:
        self.stack.set_source_active(call.call_id, True)
        try:
            while True:
                for frame in self.greeting:
                    await outbound.put(frame)
                    call.frames_sent += 1
        except BufferClosed:
            pass
        finally:
            self.stack.set_source_active(call.call_id, False)

    def frame_counters(self) -> FrameCounters:
        metrics = self.stack.metrics
        return FrameCounters(
            sum(c.frames_received for c in self.calls.values()),
            sum(c.frames_sent for c in self.calls.values()),
            metrics.underruns.get(direction="from_caller"),
            metrics.overruns.get(direction="from_caller"),
            metrics.underruns.get(direction="to_caller"),
            metrics.overruns.get(direction="to_caller"),
        )

    async def hang_up_all(self) -> None:
        for call_id in list(self.calls):
            await self.stack.hangup(call_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.stack.stop()


# --- SIPp --------------------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_even_port(span: int = 4) -> int:
    """An even UDP port with ``span`` consecutive free ports (RTP/RTCP, SIPp audio + video)."""
    for _ in range(200):
        port = free_udp_port()
        if port % 2 or port + span > 65535:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for p in range(port, port + span):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind(("127.0.0.1", p))
            except OSError:
                continue
        return port
    raise BenchError("no free UDP port range found on 127.0.0.1")


@dataclass
class Sipp:
    proc: asyncio.subprocess.Process
    error_file: Path
    what: str

    async def finish(self) -> None:
        """Wait for SIPp to exit; raise with its output unless every call succeeded."""
        out, _ = await self.proc.communicate()
        if self.proc.returncode != 0:
            errors = ""
            if self.error_file.exists():
                errors = self.error_file.read_text(errors="replace")[-2000:]
            tail = out.decode(errors="replace")[-2000:]
            raise BenchError(
                f"SIPp ({self.what}) exited with {self.proc.returncode}\n{tail}\n"
                f"--- SIPp errors ---\n{errors}"
            )

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_sipp(
    sipp: str,
    scenario: Path,
    target: str,
    *,
    calls: int,
    give_up_after: float,
    workdir: Path,
    what: str,
) -> Sipp:
    """Start a SIPp client in ``workdir`` placing ``calls`` calls at once to ``target``."""
    error_file = workdir / f"sipp-{scenario.stem}-errors.log"
    options = {
        "-sf": str(scenario),
        "-i": "127.0.0.1",
        "-p": str(free_udp_port()),
        "-mi": "127.0.0.1",
        "-mp": str(free_even_port()),
        "-t": "u1",
        "-s": "+14155550123",
        "-m": str(calls),
        "-l": str(calls),
        "-r": "10",
        "-timeout": f"{math.ceil(give_up_after)}s",
        "-error_file": str(error_file),
        "-default_behaviors": "all,-bye",
    }
    args = [sipp, target, *(x for pair in options.items() for x in pair)]
    args += ["-timeout_error", "-trace_err", "-nostdin"]
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    return Sipp(proc, error_file, what)


@contextlib.asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """``asyncio.timeout`` that fails the benchmark with a message saying what was late."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise BenchError(f"timed out after {seconds:.0f} s waiting for {what}") from None


async def wait_or_fail(event: asyncio.Event, sipp: Sipp, what: str) -> None:
    """Wait for ``event``; fail early, with SIPp's output, if SIPp exits first."""
    waiter = asyncio.ensure_future(event.wait())
    exited = asyncio.ensure_future(sipp.proc.wait())
    try:
        await asyncio.wait({waiter, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        exited.cancel()
    if not event.is_set():
        await sipp.finish()  # raises with SIPp's output when it failed
        raise BenchError(f"SIPp ({sipp.what}) finished before {what}")


# --- media -------------------------------------------------------------------------------------


def load_greeting(clock_rate: int, frame_bytes: int) -> list[bytes]:
    rate, pcm = read_wav(GREETING)
    if rate != clock_rate:
        pcm = resample(pcm, rate, clock_rate)
    return list(frames(pcm, frame_bytes))


def write_caller_pcap(path: Path, seconds: float) -> None:
    """PCMU RTP of the caller corpus speech, looped to ``seconds``, one unbroken stream."""
    rate, pcm = read_wav(CALLER_SPEECH)
    if rate != CALLER_RATE:
        pcm = resample(pcm, rate, CALLER_RATE)
    speech = list(frames(pcm, 2 * CALLER_SAMPLES_PER_FRAME))
    count = math.ceil(seconds * 1000 / FRAME_MS)
    payloads = [ulaw_encode(speech[i % len(speech)]) for i in range(count)]
    packets = rtp_stream_packets(
        payloads, 0, CALLER_SAMPLES_PER_FRAME, ssrc=0x0BE4C400, start_time=1_700_000_000.0
    )
    write_udp_pcap(path, packets)


# --- ByteVector micro-benchmark ----------------------------------------------------------------


def time_per_call(fn: Callable[[], object], iterations: int) -> Distribution:
    for _ in range(min(1000, iterations)):
        fn()
    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return Distribution.of_ns(samples)


def vector_benchmarks(frame_bytes: int, iterations: int) -> dict[str, Distribution]:
    """The three SWIG paths of the callbacks, on one 20 ms frame."""
    payload = bytes(i & 0xFF for i in range(frame_bytes))
    frame = pj.MediaFrame()
    frame.buf = pj.ByteVector(payload)
    if _read_vector_fast(frame.buf) != payload or _read_vector_slow(frame.buf) != payload:
        raise BenchError("the ByteVector readers do not reproduce the frame; nothing to time")

    def write() -> None:
        frame.buf = pj.ByteVector(payload)

    return {
        "read_fast": time_per_call(lambda: _read_vector_fast(frame.buf), iterations),
        "read_slow": time_per_call(lambda: _read_vector_slow(frame.buf), iterations),
        "write": time_per_call(write, iterations),
    }


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Results:
    date: str
    machine: str
    command: str
    calls: int
    seconds: float
    clock_rate: int
    frame_bytes: int
    peak_calls_held: int
    fourth_call_status: int | None
    idle: CpuUsage
    loaded: CpuUsage
    per_call_percent: float
    rss_mib_idle: float
    rss_mib_loaded: float
    frames_from_callers: int
    frames_to_callers: int
    underruns_from_callers: float
    overruns_from_callers: float
    underruns_to_callers: float
    overruns_to_callers: float
    received: Distribution
    requested: Distribution
    vectors: dict[str, Distribution]


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"pjsua2-python {pj_version()}"
    )


def pj_version() -> str:
    try:
        return version("pjsua2-python")
    except PackageNotFoundError:
        return "unknown"


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def drain(source: deque[int], into: list[int]) -> None:
    """Move samples out of a deque the clock thread appends to (popleft is thread-safe)."""
    while True:
        try:
            into.append(source.popleft())
        except IndexError:
            return


async def measure_window(
    seconds: float, step: Callable[[], None] | None = None
) -> tuple[CpuSample, CpuSample]:
    start = cpu_sample()
    deadline = start.wall + seconds
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(1.0, left))
        if step is not None:
            step()
    return start, cpu_sample()


async def run(args: argparse.Namespace, sipp_path: str, workdir: Path) -> Results:
    clock_rate: int = args.clock_rate
    frame_bytes = clock_rate * FRAME_MS // 1000 * 2
    hold = args.seconds + SETUP_TIMEOUT + PROBE_TIMEOUT + TEARDOWN_TIMEOUT
    write_caller_pcap(workdir / "caller.pcap", args.seconds + 15)
    rtp_start = free_even_port()
    settings = StackSettings(
        host="127.0.0.1",
        port=free_udp_port(),
        clock_rate=clock_rate,
        rtp_port_start=rtp_start,
        rtp_port_end=min(65534, rtp_start + 200),
        buffer_frames=50,
        collect_timings=True,
    )
    worker = BenchWorker(settings, load_greeting(clock_rate, frame_bytes), args.calls)
    timings = worker.stack.timings
    assert timings is not None
    sipps: list[Sipp] = []
    try:
        quiet_pjlib_startup()
        info = await worker.stack.start()
        target = info.addresses["udp"]
        log.info("worker SIP on udp:%s; idle baseline for %.0f s", target, args.seconds)
        await asyncio.sleep(SETTLE_SECONDS)  # a measurement margin, not a synchronisation
        idle = cpu_usage(*await measure_window(args.seconds))
        rss_idle = rss_mib()

        log.info("SIPp places %d streaming call(s)", args.calls)
        sipp = await start_sipp(
            sipp_path,
            STREAMING_CALL,
            target,
            calls=args.calls,
            give_up_after=hold,
            workdir=workdir,
            what="streaming calls",
        )
        sipps.append(sipp)
        what = f"media on {args.calls} calls"
        async with deadline(SETUP_TIMEOUT, what):
            await wait_or_fail(worker.all_up, sipp, what)
        if len(worker.held) != args.calls:
            raise BenchError(f"{len(worker.held)} of {args.calls} calls answered")

        log.info("steady state: measuring %.0f s with %d calls", args.seconds, args.calls)
        await asyncio.sleep(SETTLE_SECONDS)
        received: list[int] = []
        requested: list[int] = []
        timings.received.clear()
        timings.requested.clear()
        before = worker.frame_counters()

        def collect() -> None:
            drain(timings.received, received)
            drain(timings.requested, requested)

        window = await measure_window(args.seconds, collect)
        collect()
        if not received or not requested:
            raise BenchError("no PCM callback timings were collected during the window")
        if len(worker.held) != args.calls or worker.failures:
            raise BenchError(f"calls dropped during the window: {worker.failures or worker.held}")
        loaded = cpu_usage(*window)
        rss_loaded = rss_mib()
        after = worker.frame_counters()

        fourth: int | None = None
        if args.calls == MAX_CALLS:
            log.info("a 4th call while %d are held: expecting 503", MAX_CALLS)
            probe = await start_sipp(
                sipp_path,
                EXPECT_503,
                target,
                calls=1,
                give_up_after=PROBE_TIMEOUT,
                workdir=workdir,
                what="4th call, 503",
            )
            sipps.append(probe)
            async with deadline(PROBE_TIMEOUT + 5, "the 4th call's 503"):
                await probe.finish()
                await worker.rejected.wait()
            fourth = worker.rejections[0]
            if fourth != 503 or len(worker.held) != MAX_CALLS:
                raise BenchError(
                    f"4th call got {fourth} with {len(worker.held)} calls held; expected 503"
                )

        log.info("hanging up")
        async with deadline(TEARDOWN_TIMEOUT, "the calls to end"):
            await worker.hang_up_all()
            await worker.idle.wait()
            await sipp.finish()
        if worker.failures:
            raise BenchError(f"calls did not complete: {worker.failures}")
    finally:
        for started in sipps:
            await started.stop()
        await worker.close()

    log.info("ByteVector micro-benchmarks, %d iterations each", args.iterations)
    vectors = vector_benchmarks(frame_bytes, args.iterations)
    return Results(
        date=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        machine=machine_description(),
        command=" ".join([Path(sys.executable).name, *sys.argv]),
        calls=args.calls,
        seconds=args.seconds,
        clock_rate=clock_rate,
        frame_bytes=frame_bytes,
        peak_calls_held=worker.peak_held,
        fourth_call_status=fourth,
        idle=idle,
        loaded=loaded,
        per_call_percent=(loaded.percent - idle.percent) / args.calls,
        rss_mib_idle=rss_idle,
        rss_mib_loaded=rss_loaded,
        frames_from_callers=after.received - before.received,
        frames_to_callers=after.sent - before.sent,
        underruns_from_callers=after.underruns_from - before.underruns_from,
        overruns_from_callers=after.overruns_from - before.overruns_from,
        underruns_to_callers=after.underruns_to - before.underruns_to,
        overruns_to_callers=after.overruns_to - before.overruns_to,
        received=Distribution.of_ns(received),
        requested=Distribution.of_ns(requested),
        vectors=vectors,
    )


# --- report ------------------------------------------------------------------------------------


def calls(n: int) -> str:
    return f"{n} call" if n == 1 else f"{n} calls"


def report(r: Results) -> str:
    expected = round(r.calls * r.loaded.wall_seconds * 1000 / FRAME_MS)
    per_frame_budget = (r.loaded.percent - r.idle.percent) / 100 * FRAME_MS * 1000 / r.calls
    fourth = (
        f"{r.fourth_call_status} Service Unavailable (SIPp checked its Retry-After)"
        if r.fourth_call_status is not None
        else f"not probed (needs --calls {MAX_CALLS})"
    )

    def dist(d: Distribution) -> str:
        return f"median {d.median_us:8.2f} µs   p99 {d.p99_us:8.2f} µs   n={d.count}"

    lines = [
        "worker capacity benchmark",
        f"  date                     {r.date}",
        f"  machine                  {r.machine}",
        f"  command                  {r.command}",
        f"  setup                    {calls(r.calls)} from SIPp (PCMU 8 kHz in, greeting out), "
        f"bridge {r.clock_rate} Hz, {r.frame_bytes}-byte frames, window {r.seconds:.0f} s",
        "",
        "calls",
        f"  concurrent calls held    {r.peak_calls_held} (peak answered at once; "
        f"limit {MAX_CALLS} per worker, PJSUA_MAX_CALLS = 4)",
        f"  4th call                 {fourth}",
        f"  frames from callers      {r.frames_from_callers} (expected ~{expected}), "
        f"underruns {r.underruns_from_callers:.0f}, overruns {r.overruns_from_callers:.0f}",
        f"  frames to callers        {r.frames_to_callers} (expected ~{expected}), "
        f"underruns {r.underruns_to_callers:.0f}, overruns {r.overruns_to_callers:.0f}",
        "",
        "CPU (process, all threads; % of one core)",
        f"  idle, 0 calls            {r.idle.percent:6.2f} %",
        f"  {f'loaded, {calls(r.calls)}':<25}{r.loaded.percent:6.2f} %",
        f"  per call                 {r.per_call_percent:6.2f} % "
        f"(= {per_frame_budget:.0f} µs of CPU per call every 20 ms)",
    ]
    for group in THREAD_GROUPS:
        lines.append(
            f"    {group:<26} idle {r.idle.threads_percent[group]:6.2f} %   "
            f"loaded {r.loaded.threads_percent[group]:6.2f} %"
        )
    lines += [
        f"  resident memory          {r.rss_mib_idle:.0f} MiB idle, {r.rss_mib_loaded:.0f} MiB "
        f"with {calls(r.calls)}",
        "",
        "PCM callbacks, per 20 ms frame (Python body, timed inside the callback)",
        f"  onFrameReceived  caller→us   {dist(r.received)}",
        f"  onFrameRequested us→caller   {dist(r.requested)}",
        "",
        f"SWIG ByteVector, one {r.frame_bytes}-byte frame",
        f"  read, ctypes memcpy          {dist(r.vectors['read_fast'])}",
        f"  read, bytes(vec)             {dist(r.vectors['read_slow'])}",
        f"  write, ByteVector(bytes)     {dist(r.vectors['write'])}",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Worker capacity: calls held, CPU per call, PCM callback cost.",
    )
    p.add_argument(
        "--calls",
        type=int,
        default=MAX_CALLS,
        choices=range(1, MAX_CALLS + 1),
        help=f"concurrent SIPp calls (1-{MAX_CALLS}; a worker admits {MAX_CALLS}), default "
        "%(default)s",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="length of the idle and of the loaded window, default %(default)s",
    )
    p.add_argument(
        "--clock-rate",
        type=int,
        default=16000,
        choices=(8000, 16000, 32000, 48000),
        help="pjmedia bridge rate, which sets the PCM frame size; default %(default)s",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=20000,
        help="iterations of each ByteVector micro-benchmark, default %(default)s",
    )
    p.add_argument("--json", action="store_true", help="also print one JSON line of figures")
    args = p.parse_args(argv)
    if args.seconds < 1:
        p.error("--seconds must be at least 1")
    if args.iterations < 1:
        p.error("--iterations must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    sipp = shutil.which("sipp")
    if sipp is None:
        print("error: SIPp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print(
            "error: run as root: SIPp's play_pcap_audio sends RTP through a raw socket",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp:
        try:
            results = asyncio.run(run(args, sipp, Path(tmp)))
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
    print(report(results))
    if args.json:
        print(json.dumps(asdict(results), ensure_ascii=False, allow_nan=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
