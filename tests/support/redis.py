"""Debian's redis-server on a loopback port chosen at run time, for tests and benches that
run several hubs; it can be SIGKILLed and started again on the same port."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.net import free_port

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port(kind=1)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        probe = subprocess.run([REDIS_CLI, "-p", str(self.port), "ping"], capture_output=True,
                               text=True, check=False, timeout=5)
        return probe.stdout.strip() == "PONG"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
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
