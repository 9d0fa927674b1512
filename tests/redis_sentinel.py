"""Start a throw-away Sentinel setup for tests: one master, one replica and one Sentinel
(`redis-server --sentinel`, quorum 1) on free loopback ports, data in a temp dir; every
process stopped afterwards."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.redis_server import RedisProcess, RedisUnavailableError, find_redis_server

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000  # how long a silent master takes to be declared down
_READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisSentinel:
    """A master, its replica and a Sentinel watching them."""

    def __init__(self, tmp_dir: Path) -> None:
        binary = find_redis_server()
        self.master = RedisProcess(binary, _mkdir(tmp_dir / "a"), _free_port())
        self.replica = RedisProcess(
            binary,
            _mkdir(tmp_dir / "b"),
            _free_port(),
            ["--replicaof", "127.0.0.1", str(self.master.port)],
        )
        self.sentinel_port = _free_port()
        sentinel_dir = _mkdir(tmp_dir / "sentinel")
        self._conf = sentinel_dir / "sentinel.conf"  # Sentinel rewrites it: a file of its own
        self._conf.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            "protected-mode no\n"
            f"dir {sentinel_dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self._binary = binary
        self._log = sentinel_dir / "sentinel.log"
        self._sentinel: subprocess.Popen[bytes] | None = None
        try:
            self.master.start()
            self.replica.start()
            self._start_sentinel()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SERVICE}"

    def _start_sentinel(self) -> None:
        with open(self._log, "ab") as log:
            self._sentinel = subprocess.Popen(
                [self._binary, str(self._conf), "--sentinel"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def master_port(self) -> int:
        """The master's port as the Sentinel reports it now."""
        client = redis.Redis(port=self.sentinel_port, socket_timeout=2.0)
        try:
            # redis-py types the reply loosely: it is (host, port)
            address: tuple[str, int] = client.sentinel_get_master_addr_by_name(SERVICE)  # type: ignore[assignment]
            return int(address[1])
        finally:
            client.close()

    def wait_ready(self) -> None:
        """Until the replica is in sync and the Sentinel knows it (a failover needs both)."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            try:
                client = redis.Redis(port=self.sentinel_port, socket_timeout=1.0)
                try:
                    replicas = client.sentinel_slaves(SERVICE)
                finally:
                    client.close()
                if any(r.get("master-link-status") == "ok" for r in replicas):
                    return
            except redis.RedisError:
                pass
            if self._sentinel is not None and self._sentinel.poll() is not None:
                raise RedisUnavailableError(f"redis sentinel exited; see {self._log}")
            if time.monotonic() > deadline:
                raise RedisUnavailableError("the Sentinel setup did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._sentinel = self._sentinel, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.replica.stop()
        self.master.stop()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
