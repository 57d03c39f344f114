"""Runs SIPp scenarios from tests/sipp against the server under test."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port, free_port_pair

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "sipp"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"


@dataclass
class SippResult:
    returncode: int
    stdout: str
    errors: str
    media_port: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def explain(self) -> str:
        return (
            f"sipp exit {self.returncode}\n{self.stdout[-3000:]}\n"
            f"--- errors ---\n{self.errors[-3000:]}"
        )


def run_sipp(
    scenario: str,
    target_port: int,
    tmp: Path,
    *,
    local_ip: str = "127.0.0.1",
    target_ip: str = "127.0.0.1",
    calls: int = 1,
    limit: int = 1,
    rate: float = 10,
    service: str = "+14155550123",
    media_port: int | None = None,
    keys: dict[str, str] | None = None,
    transport: str = "u1",
    timeout: float = 60,
    background: bool = False,
    duration_ms: int = 300,
    extra: list[str] | None = None,
) -> SippResult | subprocess.Popen[str]:
    """Run one SIPp client (UAC) scenario; calls/limit/rate map to -m/-l/-r."""
    media_port = media_port or free_port_pair()
    err = tmp / f"sipp-{Path(scenario).stem}-{media_port}-errors.log"
    args = [
        SIPP, f"{target_ip}:{target_port}",
        "-sf", scenario if scenario.endswith(".xml") else str(SCENARIOS / f"{scenario}.xml"),
        "-i", local_ip, "-p", str(free_port(host=local_ip)), "-mi", local_ip,
        "-mp", str(media_port), "-t", transport,
        "-s", service, "-d", str(duration_ms), "-m", str(calls), "-l", str(limit), "-r", str(rate),
        "-timeout", f"{int(timeout)}s", "-timeout_error",
        "-trace_err", "-error_file", str(err), "-nostdin", "-nd",
        "-default_behaviors", "all,-bye",
    ]
    args += extra or []
    for key, value in (keys or {}).items():
        args += ["-key", key, value]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if background:
        return proc
    out, _ = proc.communicate(timeout=timeout + 30)
    errors = err.read_text(errors="replace") if err.exists() else ""
    return SippResult(proc.returncode, out, errors, media_port)


def finish(
    proc: subprocess.Popen[str], tmp: Path, media_port: int = 0, timeout: float = 60
) -> SippResult:
    out, _ = proc.communicate(timeout=timeout)
    errs = "".join(p.read_text(errors="replace") for p in tmp.glob("sipp-*-errors.log"))
    return SippResult(proc.returncode, out, errs, media_port)
