"""The same calls through hitl-sip's media worker and through rtpengine, side by side.

Each bridge joins a plain-RTP PCMU caller to a WebRTC agent (aiortc, DTLS-SRTP over ICE):

- **hitl-sip**: a real ``hitl-sip serve`` (hub + one worker, ``front.media = direct`` so
  the caller's RTP reaches the worker itself) runs ``bench/flows/bridge.yaml``. Callers are
  ``tests/support/rtpcaller.py`` (SIP over UDP, PCMU paced on a monotonic clock); the agents
  are :class:`hitl_sip.testing.agent.TestAgent` (python-socketio + aiortc), which log in,
  accept and offer WebRTC to the worker's aiortc peer. The worker runs what it runs on any
  bridged call (the bridge, pjmedia's clock and jitter buffer, the shadow transcription's
  voice-activity gate; the recogniser is its child process, shown apart).
- **rtpengine**: Debian's rtpengine, userspace only, started as ``serve`` starts it
  (:class:`hitl_sip.front.rtpengine.RtpEngine` with the generated configuration, a port
  block of its own from ``tests.support.net.media_ports``) and driven over ng. The caller's
  SDP offer (the very one ``RtpCaller`` sends in its INVITE) goes to ng ``offer`` with
  ``ICE=force``, ``transport-protocol=UDP/TLS/RTP/SAVPF``, ``SDES=off``,
  ``rtcp-mux=require`` and ``generate mid`` (what aiortc needs), for Opus also
  ``codec: {mask: [all], transcode: [opus]}`` (rtpengine decodes the caller's PCMU and
  encodes Opus, and back). An aiortc ``RTCPeerConnection`` (the same agent class, its
  microphone and receive-path timestamps) answers; the answer goes to ng ``answer`` with
  ``ICE=remove`` and ``transport-protocol=RTP/AVP``, and the caller sends its RTP to the
  address in the SDP rtpengine returns. aiortc takes the DTLS client role (rtpengine offers
  ``actpass``).

Both carry the same traffic, the marked bursts of :mod:`hitl_sip.testing.bursts` (the
caller's 440 Hz at frame 0 of every 25-frame cycle, the agent's 1 kHz at frame 12), and
latency is measured as ``bench/bridge_latency.py`` measures it: caller → agent from the
caller's ``sendto`` of a burst's first packet to the arrival at the agent's socket of the
first RTP packet whose decoded audio has the burst (timestamped in aiortc's receive path,
before any jitter buffer); agent → caller from the moment the agent's track hands the
burst's first frame to its encoder to the arrival at the caller's socket of the first
packet that carries it. Same host, one monotonic clock.

``--calls`` calls (default 3) are held through each bridge, both bridges' calls at the
same time (``--apart``: one bridge after the other); after 3 s of settling a window of
``--seconds`` is measured, the same window for both:

- **CPU per call**: the bridge process's user + system time over the window (psutil; the
  hitl-sip worker found among the children of the ``serve`` process, rtpengine's daemon),
  minus the same process's idle figure (10 s before the first call, agents logged in;
  both bridges' over the same 10 s), divided by the calls, % of one core. Held and read
  together, the two bridges meet the same machine: its speed moved by a quarter between
  minutes here, which moved the ratio of two runs made one after the other more than
  any change of code did.
- **latency** per direction: median, p95, p99 (nearest rank) over every burst onset of
  every call in the window.
- **lost**: RTP sequence gaps at the caller, RTP timestamp gaps at the agent, % of the
  window's frames; **late**: inter-arrival gaps over 60 ms (as ``bridge_capacity.py``
  counts them at the callers) plus dropouts (a quiet frame inside a burst, as
  ``bridge_latency.py`` counts them: audio too late for its slot, or lost), % of frames.

The callers and agents run in this process and share the machine with the bridge.

Usage: ``python bench/peer.py [--seconds 60] [--calls 3] [--codecs pcmu opus] [--json]``.
Progress goes to stderr, the report to stdout (``--json``: one more line with every
figure). Exit status 2 when rtpengine is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiortc import RTCPeerConnection, RTCSessionDescription

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hitl_sip.config import FrontConfig, load_config  # noqa: E402
from hitl_sip.front.ng import ng_request  # noqa: E402
from hitl_sip.front.rtpengine import RtpEngine, free_ng_port, write_config  # noqa: E402
from hitl_sip.media.ice import install_host_filter  # noqa: E402
from hitl_sip.testing.agent import TestAgent  # noqa: E402
from hitl_sip.testing.bursts import (  # noqa: E402
    AGENT_OFFSET,
    BURST,
    CYCLE,
    agent_source,
    caller_source,
    onsets,
)
from hitl_sip.testing.procstat import children_cpu, cpu_seconds  # noqa: E402
from hitl_sip.worker.bridge import use_immediate_jitter_buffer  # noqa: E402
from hitl_sip.worker.peer import answer_codec, codec_preferences  # noqa: E402
from tests.integration.test_agents import PASSWORD, add_agent  # noqa: E402
from tests.support.net import media_ports  # noqa: E402
from tests.support.rtpcaller import RtpCaller, parse_sdp_audio  # noqa: E402
from tests.support.server import Server, running_server  # noqa: E402

CALLS = 3
FRAME = 0.02
IDLE_SETTLE, IDLE_SECONDS = 1.0, 10.0  # the idle baseline, before the first call
SETTLE = 3.0  # after the last call is up, before the window
LATE_GAP = 0.06  # an inter-arrival gap this long is a late (or lost) frame
HOST = "127.0.0.1"
BRIDGES = ("hitl-sip", "rtpengine")
# ng flags toward the agent (the offer) and toward the caller (the answer)
OFFER_FLAGS: dict[str, Any] = {
    "direction": ["external", "internal"], "replace": ["origin", "session-connection"],
    "ICE": "force", "transport-protocol": "UDP/TLS/RTP/SAVPF", "SDES": ["off"],
    "rtcp-mux": ["require"], "flags": ["generate-mid"],
}
OPUS_CODEC = {"mask": ["all"], "transcode": ["opus"]}
ANSWER_FLAGS: dict[str, Any] = {
    "replace": ["origin", "session-connection"], "ICE": "remove",
    "transport-protocol": "RTP/AVP",
}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the two ends of a call ----------------------------------------------------------------


class PlainCaller(RtpCaller):
    """``RtpCaller`` without SIP: its SDP offer goes to rtpengine over ng and its RTP (the
    same sender and receiver threads, the same timestamps) to the address in the answer."""

    def __init__(self) -> None:
        super().__init__(9)  # the SIP socket is bound and never used

    @property
    def offer(self) -> str:
        return self._sdp.decode()

    def connect(self, answer_sdp: str) -> None:
        audio = parse_sdp_audio(answer_sdp.encode())
        if self.payload_type not in audio.payload_types:
            raise RuntimeError(f"rtpengine's answer does not carry PCMU:\n{answer_sdp}")
        self.remote_rtp = (audio.host, audio.port)
        self._spawn(self._rtp_receive_loop, "rtpcaller-rtp-rx")


class AnsweringAgent(TestAgent):
    """The test agent's microphone, receive-path timestamps and recorder on an aiortc peer
    that answers an SDP offer itself (no hub, no Socket.IO)."""

    def __init__(self, codec: str) -> None:
        super().__init__("http://127.0.0.1:9", "relay", "", source=agent_source,
                         codecs=(codec,))

    async def answer(self, offer: str) -> str:
        pc = RTCPeerConnection()
        self.pc = pc

        @pc.on("track")  # type: ignore[untyped-decorator]
        def on_track(track: Any) -> None:
            self._record_task = asyncio.create_task(self._record(track))

        @pc.on("connectionstatechange")  # type: ignore[untyped-decorator]
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        transceiver = pc.getTransceivers()[0]
        transceiver.setCodecPreferences(codec_preferences(self.codecs))
        pc.addTrack(self.mic)
        if self.low_latency:
            use_immediate_jitter_buffer(transceiver.receiver)
        self._timestamp_arrivals(transceiver.receiver)
        await pc.setLocalDescription(await pc.createAnswer())
        sdp = str(pc.localDescription.sdp)
        self.codec = answer_codec(sdp)
        self.mic.set_codec(self.codec)
        return sdp


@dataclass
class Call:
    caller: RtpCaller
    agent: TestAgent


# -- what the ends saw ---------------------------------------------------------------------


def match(arrivals: list[float], starts: list[float], t1: float, t2: float) -> list[float]:
    """Latency of each onset in [t1, t2] from the latest burst start before it (bursts are
    500 ms apart: over 250 ms is a miss, left out), as bench/bridge_latency.py does."""
    out = []
    for arrival in arrivals:
        if not t1 <= arrival <= t2:
            continue
        before = [s for s in starts if s <= arrival]
        if before and arrival - before[-1] < 0.25:
            out.append(arrival - before[-1])
    return out


def dropouts_between(frames: list[tuple[float, bytes]], t1: float, t2: float) -> int:
    """Dropouts (a quiet frame inside a burst) among the frames that arrived in (t1, t2],
    burst state carried over from before t1."""
    return (onsets([f for f in frames if f[0] <= t2])[1]
            - onsets([f for f in frames if f[0] <= t1])[1])


def late_gaps(arrivals: list[float]) -> int:
    return sum(1 for a, b in itertools.pairwise(sorted(arrivals)) if b - a > LATE_GAP)


def to_agent_view(call: Call, t1: float, t2: float) -> dict[str, Any]:
    agent = call.agent
    frames = [(arrival, pcm) for _, arrival, pcm in sorted(agent.heard_frames)]
    starts = [t for n, t in call.caller.sent if n % CYCLE == 0]
    arrivals = onsets(frames)[0]
    # RTP timestamp offsets (from the first packet) of the packets that arrived in the window
    got = sorted((offset, at) for offset, at in agent.rx_arrivals.items() if t1 <= at <= t2)
    step = 160 if agent.codec in ("pcmu", "pcma") else 960
    lost = sum((b - a) // step - 1 for (a, _), (b, _) in itertools.pairwise(got)
               if 1 < (b - a) // step < 1000)
    return {"latencies": match(arrivals, starts, t1, t2), "packets": len(got), "lost": lost,
            "late": late_gaps([at for _, at in got]),
            "dropouts": dropouts_between(frames, t1, t2)}


def to_caller_view(call: Call, t1: float, t2: float) -> dict[str, Any]:
    packets = sorted(call.caller.received, key=lambda p: p.arrival)
    frames = [(p.arrival, p.pcm) for p in packets]
    starts = [t for n, t in call.agent.mic.sent if n % CYCLE == AGENT_OFFSET]
    arrivals = onsets(frames)[0]
    window = [p for p in packets if t1 <= p.arrival <= t2]
    lost = sum(((b.seq - a.seq) & 0xFFFF) - 1 for a, b in itertools.pairwise(window)
               if 1 < ((b.seq - a.seq) & 0xFFFF) < 1000)
    return {"latencies": match(arrivals, starts, t1, t2), "packets": len(window), "lost": lost,
            "late": late_gaps([p.arrival for p in window]),
            "dropouts": dropouts_between(frames, t1, t2)}


def pct(ms: list[float], p: float) -> float:
    return round(ms[min(len(ms) - 1, max(0, math.ceil(p * len(ms)) - 1))], 1)


def direction(views: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    frames = int(seconds / FRAME) * len(views)
    bursts = int(seconds / (CYCLE * FRAME)) * len(views)
    ms = sorted(x * 1000 for v in views for x in v["latencies"])
    lost = sum(int(v["lost"]) for v in views)
    late = sum(int(v["late"]) + int(v["dropouts"]) for v in views)
    out: dict[str, Any] = {
        "onsets": len(ms), "bursts_expected": bursts,
        "packets": sum(int(v["packets"]) for v in views), "frames_expected": frames,
        "lost": lost, "lost_pct": round(100 * lost / frames, 3),
        "late_gaps": sum(int(v["late"]) for v in views),
        "dropouts": sum(int(v["dropouts"]) for v in views),
        "burst_frames": bursts * BURST,
        "late_pct": round(100 * late / frames, 3),
    }
    if ms:
        out.update(median=round(statistics.median(ms), 1), p95=pct(ms, 0.95),
                   p99=pct(ms, 0.99), max=round(ms[-1], 1))
    return out


def analyse(calls: list[Call], t1: float, t2: float) -> dict[str, Any]:
    seconds = t2 - t1
    return {"to_agent": direction([to_agent_view(c, t1, t2) for c in calls], seconds),
            "to_caller": direction([to_caller_view(c, t1, t2) for c in calls], seconds),
            "agent_codecs": sorted({c.agent.codec for c in calls})}


async def idle_cpu(readers: list[Callable[[], float]]) -> list[float]:
    """Each reader's process's CPU % of one core over the idle window (after a settle)."""
    await asyncio.sleep(IDLE_SETTLE)
    c0, t0 = [r() for r in readers], time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    spent = time.monotonic() - t0
    return [(r() - c) / spent * 100 for r, c in zip(readers, c0, strict=True)]


async def window(readers: list[Callable[[], float]],
                 seconds: float) -> tuple[float, float, list[float]]:
    """Settle, then the CPU % of one core each reader's process used over ``seconds``."""
    await asyncio.sleep(SETTLE)
    c1, t1 = [r() for r in readers], time.monotonic()
    await asyncio.sleep(seconds)
    c2, t2 = [r() for r in readers], time.monotonic()
    return t1, t2, [(b - a) / (t2 - t1) * 100 for a, b in zip(c1, c2, strict=True)]


def cpu_figures(idle: float, busy: float, calls: int) -> dict[str, float]:
    return {"cpu_idle_pct": round(idle, 2), "cpu_busy_pct": round(busy, 2),
            "cpu_per_call_pct": round((busy - idle) / calls, 2)}


async def close_calls(calls: list[Call]) -> None:
    for call in calls:
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(call.caller.close)
        await call.agent.close()


# -- hitl-sip ------------------------------------------------------------------------------


def worker_process(srv: Server) -> psutil.Process:
    """The media worker: the child of the ``serve`` process that /healthz names."""
    pid = srv.worker_pid()
    for child in psutil.Process(srv.process.pid).children(recursive=True):
        if child.pid == pid:
            return child
    raise RuntimeError(f"worker pid {pid} is not a child of serve (pid {srv.process.pid})")


def hitl_agents(srv: Server, codec: str, calls: int) -> list[TestAgent]:
    return [TestAgent(srv.http_url, f"agent{i}", PASSWORD, source=agent_source,
                      codecs=(codec,)) for i in range(calls)]


async def hitl_bridge(srv: Server, agents: list[TestAgent], made: list[Call]) -> None:
    """A call per agent through hitl-sip (SIP, the flow's agent node, WebRTC), appended to
    ``made`` as it is set up."""
    taken: set[str] = set()
    for i, agent in enumerate(agents):
        caller = RtpCaller(srv.sip_port())
        made.append(Call(caller, agent))
        await asyncio.to_thread(caller.call)
        caller.start_media(caller_source)
        await agent.take_new_call(taken)
        progress(f"  hitl-sip call {i + 1} bridged ({agent.codec})")


def hitl_figures(idle: float, busy: float, speech: float, made: list[Call], *, t1: float,
                 t2: float) -> dict[str, Any]:
    return {**cpu_figures(idle, busy, len(made)), "speech_process_cpu_pct": round(speech, 2),
            **analyse(made, t1, t2)}


async def hitl_calls(srv: Server, codec: str, calls: int, seconds: float) -> dict[str, Any]:
    worker = worker_process(srv)
    agents = hitl_agents(srv, codec, calls)
    made: list[Call] = []
    try:
        for agent in agents:
            await agent.connect()
        (idle,) = await idle_cpu([lambda: cpu_seconds(worker)])
        await hitl_bridge(srv, agents, made)
        t1, t2, (busy, speech) = await window(
            [lambda: cpu_seconds(worker), lambda: children_cpu(worker)], seconds)
    finally:
        await close_calls(made)
    return hitl_figures(idle, busy, speech, made, t1=t1, t2=t2)


@contextlib.contextmanager
def hitl_server(codec: str, calls: int, lean: bool) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp:
        extra: dict[str, dict[str, Any]] = {
            "bot": {"flow": str(ROOT / "bench/flows/bridge.yaml")},
            "routing": {"queue_timeout": 120},
            "webrtc": {"codecs": [codec], "host_addresses": [HOST], "lean_g711": lean},
            "front": {"media": "direct"},
        }
        with running_server(Path(tmp), extra=extra) as srv:
            for i in range(calls):
                add_agent(srv.data_dir, f"agent{i}")
            yield srv


def run_hitl(codec: str, calls: int, seconds: float, lean: bool = True) -> dict[str, Any]:
    with hitl_server(codec, calls, lean) as srv:
        return asyncio.run(hitl_calls(srv, codec, calls, seconds))


# -- rtpengine -----------------------------------------------------------------------------


async def relay_call(ng_port: int, n: int, codec: str) -> Call:
    """One call through rtpengine: the caller's offer, aiortc's answer, media flowing."""
    caller, agent = PlainCaller(), AnsweringAgent(codec)
    call = Call(caller, agent)
    try:
        ids = {"call-id": f"peer-{n}", "from-tag": "caller"}
        offer: dict[str, Any] = {"command": "offer", **ids, "sdp": caller.offer, **OFFER_FLAGS}
        if codec == "opus":
            offer["codec"] = OPUS_CODEC
        toward_agent = await ng_request(HOST, ng_port, offer)
        if toward_agent.get("result") != "ok":
            raise RuntimeError(f"ng offer failed: {toward_agent}")
        sdp = await agent.answer(str(toward_agent["sdp"]))
        toward_caller = await ng_request(HOST, ng_port, {
            "command": "answer", **ids, "to-tag": "agent", "sdp": sdp, **ANSWER_FLAGS})
        if toward_caller.get("result") != "ok":
            raise RuntimeError(f"ng answer failed: {toward_caller}")
        caller.connect(str(toward_caller["sdp"]))
        async with asyncio.timeout(15):
            # the caller talks once DTLS is up (rtpengine drops what comes before, loudly)
            await agent.connected.wait()
            caller.start_media(caller_source)
            await agent.hearing.wait()
    except BaseException:
        await close_calls([call])
        raise
    return call


def rtpengine_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout + out.stderr).strip().removeprefix("Version:").strip() or "?"


@contextlib.contextmanager
def relay_config(tmp: Path) -> Iterator[tuple[Any, Path, int]]:
    """rtpengine's configuration as ``serve`` writes it, on a port block of its own."""
    config = load_config(None, env={}, overrides={"sip.host": HOST, "log.level": "warning"})
    with media_ports() as ports:
        ng_port = free_ng_port()
        conf = write_config(config, tmp, port_start=ports.start, port_end=ports.stop - 1,
                            public_address=None, ng_port=ng_port)
        yield config, conf, ng_port


@contextlib.asynccontextmanager
async def rtpengine_running() -> AsyncIterator[tuple[psutil.Process, int]]:
    """rtpengine as ``serve`` starts it: (its daemon's process, its ng port)."""
    with tempfile.TemporaryDirectory(prefix="hitl-bench-") as tmp, \
            relay_config(Path(tmp)) as (config, conf, ng_port):
        relay = RtpEngine(config, conf, ng_port)
        problem = await relay.start()
        if problem:
            raise RuntimeError(problem)
        assert relay.process is not None
        try:
            yield psutil.Process(relay.process.pid), ng_port
        finally:
            await relay.stop()


async def relay_bridge(ng_port: int, codec: str, calls: int, made: list[Call]) -> None:
    for n in range(calls):
        made.append(await relay_call(ng_port, n, codec))
        progress(f"  rtpengine call {n + 1} bridged ({made[-1].agent.codec})")


async def relay_close(ng_port: int, made: list[Call]) -> None:
    await close_calls(made)
    for n in range(len(made)):
        with contextlib.suppress(OSError, TimeoutError, ValueError):
            await ng_request(HOST, ng_port, {"command": "delete", "call-id": f"peer-{n}",
                                             "from-tag": "caller"})


async def relay_calls(codec: str, calls: int, seconds: float) -> dict[str, Any]:
    async with rtpengine_running() as (proc, ng_port):
        made: list[Call] = []
        try:
            (idle,) = await idle_cpu([lambda: cpu_seconds(proc)])
            await relay_bridge(ng_port, codec, calls, made)
            t1, t2, (busy,) = await window([lambda: cpu_seconds(proc)], seconds)
        finally:
            await relay_close(ng_port, made)
    return {**cpu_figures(idle, busy, calls), **analyse(made, t1, t2)}


# -- both at once --------------------------------------------------------------------------


async def both_calls(srv: Server, codec: str, calls: int,
                     seconds: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """hitl-sip's calls and rtpengine's held at the same time, both processes' CPU read
    over the same idle window and the same loaded window: whatever else the machine does
    meanwhile (its speed moves by ±25 % between minutes here) weighs on both alike."""
    worker = worker_process(srv)
    agents = hitl_agents(srv, codec, calls)
    ours: list[Call] = []
    theirs: list[Call] = []
    async with rtpengine_running() as (proc, ng_port):
        try:
            for agent in agents:
                await agent.connect()
            idle_ours, idle_theirs = await idle_cpu(
                [lambda: cpu_seconds(worker), lambda: cpu_seconds(proc)])
            await hitl_bridge(srv, agents, ours)
            await relay_bridge(ng_port, codec, calls, theirs)
            t1, t2, (busy, speech, busy_theirs) = await window(
                [lambda: cpu_seconds(worker), lambda: children_cpu(worker),
                 lambda: cpu_seconds(proc)], seconds)
        finally:
            await close_calls(ours)
            await relay_close(ng_port, theirs)
    return (hitl_figures(idle_ours, busy, speech, ours, t1=t1, t2=t2),
            {**cpu_figures(idle_theirs, busy_theirs, calls), **analyse(theirs, t1, t2)})


def run_both(codec: str, calls: int, seconds: float,
             lean: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    with hitl_server(codec, calls, lean) as srv:
        return asyncio.run(both_calls(srv, codec, calls, seconds))


# -- the report ----------------------------------------------------------------------------


def ratio(a: Any, b: Any) -> float | None:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0:
        return None
    return round(a / b, 2)


def ratios(results: list[dict[str, Any]], codec: str) -> dict[str, float | None]:
    by = {r["bridge"]: r for r in results if r["codec"] == codec}
    if set(by) != set(BRIDGES):
        return {}
    ours, theirs = by["hitl-sip"], by["rtpengine"]
    return {
        "cpu_per_call": ratio(ours["cpu_per_call_pct"], theirs["cpu_per_call_pct"]),
        "median_to_agent": ratio(ours["to_agent"].get("median"),
                                 theirs["to_agent"].get("median")),
        "median_to_caller": ratio(ours["to_caller"].get("median"),
                                  theirs["to_caller"].get("median")),
    }


def fmt(value: Any, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


def report(results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    print(f"peer benchmark: the same {meta['calls']} calls through hitl-sip's media worker "
          f"and through rtpengine {meta['rtpengine']} (userspace)")
    print(f"  date      {meta['date']}")
    print(f"  machine   {meta['machine']}")
    print(f"  command   {meta['command']}")
    print(f"  window    {meta['seconds']:.0f} s, {meta['calls']} calls held, caller PCMU, "
          "a marked burst every 500 ms each way")
    print()
    print(f"{'bridge':10} {'codec':5} {'CPU/call':>8} {'idle':>6} {'direction':15} "
          f"{'onsets':>9} {'median':>7} {'p95':>7} {'p99':>7} {'lost %':>7} {'late %':>7}")
    for r in results:
        for i, (key, label) in enumerate((("to_agent", "caller -> agent"),
                                          ("to_caller", "agent -> caller"))):
            s = r[key]
            head = (f"{r['bridge']:10} {r['codec']:5} {r['cpu_per_call_pct']:>7}% "
                    f"{r['cpu_idle_pct']:>5}%" if i == 0 else " " * 32)
            print(f"{head} {label:15} {s['onsets']:>4}/{s['bursts_expected']:<4} "
                  f"{fmt(s.get('median')):>7} {fmt(s.get('p95')):>7} {fmt(s.get('p99')):>7} "
                  f"{s['lost_pct']:>7} {s['late_pct']:>7}")
    print("  CPU/call: the bridge process over the window minus its idle figure, per call, "
          "% of one core; latency in ms")
    for r in results:
        if r["bridge"] == "hitl-sip":
            print(f"  hitl-sip {r['codec']}: worker {r['cpu_busy_pct']}% of a core with the "
                  f"calls; its speech process (recogniser, {2 * meta['calls']} streams) "
                  f"{r['speech_process_cpu_pct']}% more, not counted above")
    print()
    print("hitl-sip / rtpengine")
    for codec in meta["codecs"]:
        q = ratios(results, codec)
        if q:
            print(f"  {codec:5} CPU per call {fmt(q['cpu_per_call'], 'x'):>7}   median latency "
                  f"caller -> agent {fmt(q['median_to_agent'], 'x'):>6}, agent -> caller "
                  f"{fmt(q['median_to_caller'], 'x'):>6}")


def machine() -> str:
    cpu = platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = psutil.cpu_count() or 0
    ram = psutil.virtual_memory().total / 2**30
    return (f"{cpu}, {cores} cores, {ram:.0f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measured window per run")
    p.add_argument("--calls", type=int, default=CALLS, choices=range(1, 4),
                   help="calls held at once (a worker holds 3)")
    p.add_argument("--codecs", nargs="+", default=["pcmu", "opus"], choices=["pcmu", "opus"],
                   help="the agent's WebRTC codec")
    p.add_argument("--bridges", nargs="+", default=list(BRIDGES), choices=BRIDGES)
    p.add_argument("--aiortc-rtp", action="store_true",
                   help="webrtc.lean_g711 = false: aiortc carries every G.711 packet")
    p.add_argument("--apart", action="store_true",
                   help="one bridge after the other (the default: both at once, one window)")
    p.add_argument("--json", action="store_true", help="one more line with every figure")
    args = p.parse_args(argv)
    if args.seconds < 2:
        p.error("--seconds must be at least 2")
    binary = FrontConfig().rtpengine  # what serve runs unless configured otherwise
    if "rtpengine" in args.bridges and not shutil.which(binary):
        print(f"peer.py: rtpengine ({binary!r}) is not installed: apt-get install "
              "rtpengine-daemon (or run with --bridges hitl-sip)", file=sys.stderr)
        return 2
    install_host_filter([HOST])
    results: list[dict[str, Any]] = []
    together = set(args.bridges) == set(BRIDGES) and not args.apart
    for codec in args.codecs:
        if together:
            progress(f"hitl-sip and rtpengine at once, {codec}: {args.calls} calls each, "
                     f"{args.seconds:.0f} s window")
            pair = run_both(codec, args.calls, args.seconds, lean=not args.aiortc_rtp)
            for bridge, out in zip(BRIDGES, pair, strict=True):
                results.append({"bridge": bridge, "codec": codec, "calls": args.calls, **out})
            continue
        for bridge in args.bridges:
            progress(f"{bridge}, {codec}: {args.calls} calls, {args.seconds:.0f} s window")
            if bridge == "hitl-sip":
                out = run_hitl(codec, args.calls, args.seconds, lean=not args.aiortc_rtp)
            else:
                out = asyncio.run(relay_calls(codec, args.calls, args.seconds))
            results.append({"bridge": bridge, "codec": codec, "calls": args.calls, **out})
    meta = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "command": "python bench/peer.py " + " ".join(sys.argv[1:]),
        "rtpengine": rtpengine_version(shutil.which(binary) or binary),
        "seconds": args.seconds, "calls": args.calls, "codecs": args.codecs,
        "lean_g711": not args.aiortc_rtp, "together": together,
    }
    report(results, meta)
    if args.json:
        print(json.dumps({**meta, "results": results,
                          "ratios": {c: ratios(results, c) for c in args.codecs}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
