"""Debian's redis-server on a loopback port chosen at run time, for tests and benches that
run several hubs; it can be SIGKILLed and started again on the same port. It asks for a
password (``requirepass``), as a deployment's should; :data:`CLUSTER_SECRET` is what the
hubs seal their messages with. With ``tls`` (a directory) it speaks TLS only
(``rediss://``), with a self-signed certificate for 127.0.0.1 made there."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hitl_sip.front.certs import TlsPair, _make_self_signed
from tests.support.net import free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
CLUSTER_SECRET = "5e" * 32  # cluster.secret of the test hubs


class RedisServer:
    def __init__(self, tls: Path | None = None) -> None:
        self.port = free_port(kind=1)
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None
        self.tls: TlsPair | None = None
        if tls is not None:
            self.tls = TlsPair(tls / "redis.crt", tls / "redis.key.pem", self_signed=True)
            _make_self_signed(tls, self.tls, ["127.0.0.1"])

    @property
    def url(self) -> str:
        if self.tls is not None:  # the client trusts the self-signed certificate alone
            return (f"rediss://:{self.password}@127.0.0.1:{self.port}/0"
                    f"?ssl_ca_certs={self.tls.certificate}")
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> str:
        """``redis-cli`` with the password (from the environment, not the command line)."""
        tls = ["--tls", "--cacert", str(self.tls.certificate)] if self.tls else []
        done = subprocess.run([REDIS_CLI, "-p", str(self.port), *tls, *args],
                              capture_output=True, text=True, check=False, timeout=5,
                              env={**os.environ, "REDISCLI_AUTH": self.password})
        return done.stdout.strip()

    def ping(self) -> bool:
        return self.cli("ping") == "PONG"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [REDIS, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        assert self.process.stdin is not None  # the configuration, password included
        listen = f"port {self.port}\n"
        if self.tls is not None:  # TLS only: no plain port at all
            listen = (f"port 0\ntls-port {self.port}\ntls-cert-file {self.tls.certificate}\n"
                      f"tls-key-file {self.tls.private_key}\n"
                      f"tls-ca-cert-file {self.tls.certificate}\ntls-auth-clients no\n")
        self.process.stdin.write(
            f"{listen}bind 127.0.0.1\nsave \"\"\nappendonly no\n"
            f"requirepass {self.password}\n".encode())
        self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.1)

    def kill(self) -> int:
        """SIGKILL it (everything in it is lost: no persistence); its pid."""
        assert self.process is not None
        pid = self.process.pid
        self.process.kill()
        self.process.wait(10)
        return pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
