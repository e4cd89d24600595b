"""A throw-away ``redis-server`` on a free loopback port, for the rate-limit plugin's Redis tests.

Import the fixture into a test module (``from tools.redis_server import redis_url``).  When
``redis-server`` is not installed the tests are skipped on a developer machine and fail when the
``CI`` environment variable is set (run ``tests/tools/ensure_redis.sh`` first).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import free_port

ENSURE = Path(__file__).with_name("ensure_redis.sh")


def redis_server_binary() -> str:
    """The path of ``redis-server``; skips (fails under CI) when it is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = f"redis-server is not installed (run {ENSURE})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the Redis tests", pytrace=False)
        pytest.skip(message)
    return binary


class RedisServer:
    """``redis-server`` without persistence, bound to 127.0.0.1 on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> RedisServer:
        import redis

        command = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        self._log = (self.workdir / "redis.log").open("wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early:\n{self.log()}")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return (self.workdir / "redis.log").read_text(errors="replace")

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A running Redis for the module's tests."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis database."""
    redis_server.flush()
    return redis_server.url
