"""How many concurrent calls one pjsua2 endpoint accepts, for several ``uaConfig.maxCalls``.

Each trial runs in a fresh child process (one pjsua2 library per process): a bare endpoint
(``threadCnt=0``, polled from the main thread) whose account answers every incoming call
200 OK, then SIPp places ``--offer`` calls at once (``bench/sipp/hold_or_busy.xml``), each
held 3 s. The child reports what pjsua does with them:

* ``effective`` — ``pjsua_call_get_max_count()`` read through ctypes after ``libInit``: the
  call limit pjsua actually applies;
* ``accepted`` — calls that reached ``onIncomingCall`` and were answered, and ``peak``, the
  most confirmed at once;
* ``busy`` — INVITEs pjsua refused itself with 486 Busy Here (counted from its message
  log) and ``too_many`` — its "Unable to accept incoming call (too many calls)" log lines.

Usage: ``.venv/bin/python bench/max_calls_probe.py [--max-calls 2 5 32] [--offer 6]`` (root
is not needed: the probe sends no RTP).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pjsua2 as pj

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "bench" / "sipp" / "hold_or_busy.xml"
TRIAL_SECONDS = 30.0
_TX_RESPONSE = re.compile(r"^TX \d+ bytes Response msg (\d{3})/INVITE")


@dataclass
class Trial:
    configured: int
    effective: int
    offered: int
    accepted: int
    peak: int
    busy: int
    too_many: int
    sipp_exit: int


def free_udp_port(even: bool = False) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not even or port % 2 == 0:
            return port


class _Log(pj.LogWriter):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.busy = 0
        self.too_many = 0

    def write(self, entry: Any) -> None:
        msg: str = entry.msg
        m = _TX_RESPONSE.match(msg)
        if m and m.group(1) == "486":
            self.busy += 1
        if "too many calls" in msg:
            self.too_many += 1


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, probe: _Probe, account: Any, call_id: int) -> None:
        super().__init__(account, call_id)
        self.probe = probe
        self.confirmed = False

    def onCallState(self, prm: Any) -> None:  # pjsua2 API name
        state = self.getInfo().state
        if state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            self.probe.confirmed += 1
            self.probe.peak = max(self.probe.peak, self.probe.confirmed)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED and self.confirmed:
            self.confirmed = False
            self.probe.confirmed -= 1


class _Probe(pj.Account):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[_Call] = []  # kept alive until the library is destroyed
        self.confirmed = 0
        self.peak = 0

    def onIncomingCall(self, prm: Any) -> None:  # pjsua2 API name
        call = _Call(self, self, prm.callId)
        self.calls.append(call)
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)


def run_trial(max_calls: int, offer: int) -> Trial:
    """The child side: one endpoint, one SIPp run, the counts."""
    lib = ctypes.CDLL(pj._pjsua2.__file__)
    lib.pj_log_set_level(1)  # keep libCreate's console lines out of the JSON on stdout
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = max_calls
    writer = _Log()
    cfg.logConfig.writer = writer
    cfg.logConfig.level = 4
    cfg.logConfig.consoleLevel = 4  # the writer gets only what passes consoleLevel
    cfg.logConfig.decor = 0
    cfg.logConfig.msgLogging = 1
    cfg.medConfig.threadCnt = 1
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    effective = int(lib.pjsua_call_get_max_count())
    tc = pj.TransportConfig()
    tc.boundAddress = "127.0.0.1"
    tc.port = free_udp_port()
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tc)
    ep.libStart()
    account = _Probe()
    ac = pj.AccountConfig()
    ac.idUri = "sip:probe@127.0.0.1"
    ac.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    ac.mediaConfig.transportConfig.port = 42000
    ac.mediaConfig.transportConfig.portRange = 1000
    account.create(ac, True)
    with tempfile.TemporaryDirectory(prefix="bench-maxcalls-") as tmp:
        args = [
            shutil.which("sipp") or "sipp",
            f"127.0.0.1:{tc.port}",
            *("-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(free_udp_port())),
            *("-mi", "127.0.0.1", "-mp", str(free_udp_port(even=True))),
            *("-m", str(offer), "-l", str(offer), "-r", "100", "-rp", "1000"),
            *("-timeout", f"{TRIAL_SECONDS:.0f}s", "-timeout_error", "-nostdin"),
            *("-trace_err", "-error_file", str(Path(tmp) / "errors.log")),
        ]
        sipp = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TRIAL_SECONDS + 5
        while sipp.poll() is None and time.monotonic() < deadline:
            ep.libHandleEvents(10)
        if sipp.poll() is None:
            sipp.kill()
        sipp_exit = sipp.wait()
        while account.confirmed and time.monotonic() < deadline:
            ep.libHandleEvents(10)
    trial = Trial(
        configured=max_calls,
        effective=effective,
        offered=offer,
        accepted=len(account.calls),
        peak=account.peak,
        busy=writer.busy,
        too_many=writer.too_many,
        sipp_exit=sipp_exit,
    )
    account.calls.clear()
    account.shutdown()
    ep.libDestroy()
    return trial


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Concurrent calls one pjsua2 endpoint accepts.")
    p.add_argument("--max-calls", type=int, nargs="+", default=[2, 5, 32])
    p.add_argument("--offer", type=int, default=6, help="calls SIPp places at once")
    p.add_argument("--trial", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.trial is not None:
        print(json.dumps(asdict(run_trial(args.trial, args.offer))))
        return 0
    if shutil.which("sipp") is None:
        print("error: SIPp is not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    print(f"pjsua2 call limit probe: {args.offer} concurrent SIPp calls per trial, held 3 s")
    print("  maxCalls  effective  accepted  peak held  486 sent  'too many calls' logs")
    for max_calls in args.max_calls:
        child = subprocess.run(
            [sys.executable, __file__, "--trial", str(max_calls), "--offer", str(args.offer)],
            capture_output=True,
            text=True,
            timeout=TRIAL_SECONDS + 30,
            check=False,
        )
        lines = [line for line in child.stdout.splitlines() if line.startswith("{")]
        if child.returncode != 0 or not lines:
            print(f"error: trial maxCalls={max_calls} failed:\n{child.stderr[-2000:]}")
            return 1
        t = Trial(**json.loads(lines[-1]))
        print(
            f"  {t.configured:>8}  {t.effective:>9}  {t.accepted:>8}  {t.peak:>9}  "
            f"{t.busy:>8}  {t.too_many:>20}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
