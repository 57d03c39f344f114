"""Runs ``hitl-sip serve`` as a real subprocess on free loopback ports for a test."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port, media_ports

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_url: str
    data_dir: Path
    log_path: Path
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    internal_url: str = ""  # /metrics, the detailed /healthz (http.internal_port)
    # the [rtp] range of its trunk profile, rtpengine's, when rtpengine relays its media:
    # a block of its own (tests.support.net.media_ports); None with direct media
    media_ports: range | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """For urllib against an HTTPS hub: trusts the hub's self-signed certificate."""
        if not self.http_url.startswith("https:"):
            return None
        return ssl.create_default_context(
            cafile=str(self.data_dir / "http" / "tls" / "front.crt"))

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.internal_url + "/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def sip_port(self, worker: int = 0, transport: str = "udp") -> int:
        """Where a trunk sends SIP: the front's port (every server has one unless
        ``front.mode = "none"``); without a front, worker ``worker``'s own."""
        _, body = self.health()
        front = body.get("front") or {}
        if front.get("sip", {}).get(transport):
            return int(front["sip"][transport].rsplit(":", 1)[1])
        return int(body["workers"][worker]["sip"][transport].rsplit(":", 1)[1])

    def worker_sip_port(self, worker: int = 0, transport: str = "udp") -> int:
        """Worker ``worker``'s own SIP port (behind the front: only the front may use it)."""
        _, body = self.health()
        return int(body["workers"][worker]["sip"][transport].rsplit(":", 1)[1])

    def worker_pid(self, worker: int = 0) -> int:
        _, body = self.health()
        return int(body["workers"][worker]["pid"])

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.internal_url + "/metrics", timeout=2) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` (``_total`` included) whose labels include
        ``labels``."""
        return sum(
            s.value
            for family in text_string_to_metric_families(self.metrics_text())
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n--- server log ---\n{self.log()}")

    def call_records(self) -> list[dict[str, Any]]:
        rec = self.data_dir / "recordings"
        records = [json.loads(p.read_text()) for p in rec.glob("*.json")]
        return sorted(records, key=lambda r: str(r["receivedAt"]))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-8000:]

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``/healthz`` says every worker is ready; AssertionError when the server
        exits or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}\n"
                                     f"{self.log()}")
            try:
                status, body = self.health()
                if status == 200 and body.get("workersReady") == self.workers:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not healthy in {timeout}s\n{self.log()}")
            time.sleep(0.05)

    def start_again(self, timeout: float = 30.0) -> None:
        """After the server's process died (a SIGKILL in a test): the same command, config
        and data directory again, as a process manager would; its log is appended."""
        assert self.process.poll() is not None, "the server is still running"
        with open(self.log_path, "ab") as logf:
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=logf,
                                            stderr=subprocess.STDOUT, env=self.env)
        self.wait_ready(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def write_config(path: Path, sections: dict[str, dict[str, Any]], top: dict[str, Any]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return json.dumps(str(v))

    lines = [f"{k} = {fmt(v)}" for k, v in top.items()]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {fmt(v)}" for k, v in values.items())
    path.write_text("\n".join(lines) + "\n")


PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # hitl_sip.sip.profile's
TABLE = re.compile(r"\s*\[([^\[\]]+)\]\s*(#.*)?$")
RANGE_KEY = re.compile(r"\s*port_(start|end)\s*=")


def with_rtp_range(text: str, ports: range) -> str:
    """The trunk profile ``text`` with ``ports`` as its ``[rtp]`` range (its other keys kept)."""
    out: list[str] = []
    table, placed = "", False
    lines = [f"port_start = {ports.start}", f"port_end = {ports.stop - 1}"]
    for line in text.splitlines():
        header = TABLE.match(line)
        if header:
            table = header.group(1).strip()
            out.append(line)
            if table == "rtp":
                out += lines
                placed = True
        elif not (table == "rtp" and RANGE_KEY.match(line)):
            out.append(line)
    if not placed:
        out += ["", "[rtp]", *lines]
    result = "\n".join(out) + "\n"
    rtp = tomllib.loads(result).get("rtp", {})
    if (rtp.get("port_start"), rtp.get("port_end")) != (ports.start, ports.stop - 1):
        raise ValueError(f"cannot set the [rtp] range of this profile:\n{text}")
    return result


def _relayed(extra: dict[str, dict[str, Any]], env: dict[str, str]) -> bool:
    """Whether the server's media passes rtpengine (the default front and media)."""
    front = extra.get("front", {})
    mode = str(front.get("mode", env.get("HITL_SIP_FRONT_MODE", "")))
    media = str(front.get("media", env.get("HITL_SIP_FRONT_MEDIA", "rtpengine")))
    return mode != "none" and media == "rtpengine"


@contextmanager
def running_server(
    tmp: Path,
    *,
    worker: dict[str, Any] | None = None,
    sip: dict[str, Any] | None = None,
    profile: str = "local",
    workers: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout: float = 20.0,
    extra: dict[str, dict[str, Any]] | None = None,
    args: list[str] | None = None,
    profiles: dict[str, str] | None = None,
) -> Iterator[Server]:
    """``args``: more ``hitl-sip serve`` flags, after ``--config`` (flags override the file).
    ``profiles``: trunk profiles (name -> TOML text) in a profiles directory of their own,
    with the stock ones (name ``profile`` to use one).

    With rtpengine on the media path (the default) the server uses a copy of its profile
    whose ``[rtp]`` range is a block no other test server on the host has meanwhile
    (:func:`tests.support.net.media_ports`, :attr:`Server.media_ports`): rtpengine binds
    with ``SO_REUSEADDR``, so two servers' relays on one range would take each other's
    calls' packets (hitl-sip refuses to start a second one)."""
    with ExitStack() as stack:
        ports = None
        full_env = {**os.environ, **(env or {})}
        if _relayed(extra or {}, full_env):
            ports = stack.enter_context(media_ports())
            chosen = str((sip or {}).get("profile", profile))  # sip.profile wins, as in the file
            profile = _own_range_profile(tmp, chosen, profiles, ports)
            if sip and "profile" in sip:
                sip = {**sip, "profile": profile}
        yield from _run(tmp, worker=worker, sip=sip, profile=profile, workers=workers,
                        env=full_env, ready_timeout=ready_timeout, extra=extra, args=args,
                        profiles=profiles, ports=ports)


def _own_range_profile(tmp: Path, profile: str, profiles: dict[str, str] | None,
                       ports: range) -> str:
    """The path of a copy of ``profile`` (a name: from ``profiles`` or the stock ones; else a
    path) with ``ports`` as its ``[rtp]`` range, written in ``tmp``."""
    if PROFILE_NAME.fullmatch(profile):
        name = profile
        text = (profiles or {}).get(name) or (ROOT / "sip_profiles" / f"{name}.toml").read_text()
    else:
        name, text = Path(profile).stem, Path(profile).read_text()
    own = tmp / f"{name}.rtp-{ports.start}.toml"
    own.write_text(with_rtp_range(text, ports))
    return str(own)


def _run(
    tmp: Path,
    *,
    worker: dict[str, Any] | None,
    sip: dict[str, Any] | None,
    profile: str,
    workers: int,
    env: dict[str, str],  # the whole environment of the server
    ready_timeout: float,
    extra: dict[str, dict[str, Any]] | None,
    args: list[str] | None,
    profiles: dict[str, str] | None,
    ports: range | None,
) -> Iterator[Server]:
    http_port, internal_port = free_port(), free_port()
    data_dir = tmp / "data"
    extra = dict(extra or {})
    http = {"host": "127.0.0.1", "port": http_port, "internal_port": internal_port,
            **extra.pop("http", {})}
    sections = {
        "sip": {"host": "127.0.0.1", "port": 0, "transports": ["udp", "tcp"],
                "profile": profile, **(sip or {})},
        "http": http,
        "worker": {"count": workers, "drain_grace": 5, **(worker or {})},
        "log": {"level": "info"},
        **extra,
    }
    config = tmp / "hitl-sip.toml"
    top = {"data_dir": str(data_dir)}
    if profiles:
        directory = tmp / "profiles"
        directory.mkdir(exist_ok=True)
        for stock in (ROOT / "sip_profiles").glob("*.toml"):
            (directory / stock.name).write_text(stock.read_text())
        for name, text in profiles.items():
            (directory / f"{name}.toml").write_text(text)
        top["profiles_dir"] = str(directory)
    write_config(config, sections, top)
    log_path = tmp / "server.log"
    command = [sys.executable, "-m", "hitl_sip.cli", "serve", "--config", str(config),
               *(args or [])]
    log_path.write_bytes(b"")  # several processes (a restarted hub, its old workers) append
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT,
                                env=env)
    scheme = "https" if http.get("tls") else "http"
    server = Server(proc, f"{scheme}://127.0.0.1:{http_port}", data_dir, log_path, command,
                    env, workers, f"http://127.0.0.1:{internal_port}", ports)
    try:
        server.wait_ready(ready_timeout)
        yield server
    finally:
        server.stop()


def trunk_profile(name: str = "lab", cidrs: tuple[str, ...] = ("127.0.0.1/32",)) -> str:
    """A trunk profile (TOML) whose allow-list is ``cidrs`` only: with the default, a
    client bound to 127.0.0.2 is a stranger (Linux answers on all of 127/8)."""
    listed = ", ".join(f'"{c}"' for c in cidrs)
    return f'name = "{name}"\n\n[allow]\ncidrs = [{listed}]\nallow_any = false\n'
