"""Run a real Curacache server on port 0, in a background thread or as a child process; and the
`fake-llm` backend simulator in a background thread."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from curacache.client import Client, UnavailableError
from curacache.llm.simulator import FakeLLM, SimConfig
from curacache.server.app import CuracacheServer, create_server
from curacache.server.config import ServerConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def make_config(
    storage: str, data_dir: Path, redis_url: str | None, **overrides: Any
) -> ServerConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "storage.kind": storage,
        "storage.data_dir": data_dir,
        "grace_seconds": 1.0,
        # The real MiniLM embedder is for the cache tests (they set cache.embedder="minilm");
        # everything else gets the instant hashing one.
        "cache.embedder": "hashing",
    }
    if redis_url:
        values["storage.redis_url"] = redis_url
    values.update(overrides)
    return load_config(env={}, overrides=values)


class ThreadServer:
    """A server on its own event loop in a thread, so blocking clients can call it from tests."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server: CuracacheServer
        self.server, self.port = self._run(self._start())
        self.target = f"127.0.0.1:{self.port}"

    async def _start(self) -> tuple[CuracacheServer, int]:
        server, port = await create_server(self.config)
        await server.start()
        return server, port

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.server.stop(grace=1.0))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


MODEL = "fake-llm"  # the model name the simulator serves


class ThreadFakeLLM:
    """The simulator on its own event loop in a thread (the servers under test run elsewhere)."""

    def __init__(self, config: SimConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.sim = FakeLLM(config=config)
        asyncio.run_coroutine_threadsafe(self.sim.start(), self._loop).result(30)
        self.base_url = f"http://127.0.0.1:{self.sim.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class ProcessServer:
    """`curacache serve` as a child process (for SIGKILL crash tests)."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curacache.cli", "serve", "--port", "0", *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.banner = ""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner += line
            match = re.search(r"listening on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise RuntimeError(f"server did not start:\n{self.banner}")
        self.target = f"127.0.0.1:{self.port}"
        # Keep draining output so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner += line

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def write_through_failover(
    client: Client,
    collection: str,
    vector: np.ndarray,
    *,
    kill: Callable[[], None],
    restart: Callable[[], None],
    kill_at: int,
    enough: int,
    budget_s: float,
) -> tuple[list[str], int]:
    """Single-record upserts (owner "alice") while a Redis master is killed before write
    `kill_at`; the dead node is restarted after 10 failed writes (as an operator or supervisor
    would). Goes on until a write has failed and `enough` were acknowledged, within
    `budget_s`. Returns the acknowledged ids and how many writes got UNAVAILABLE."""
    acked: list[str] = []
    failed = 0
    deadline = time.monotonic() + budget_s
    i = 0
    while failed == 0 or len(acked) < enough:
        assert time.monotonic() < deadline, f"writes did not resume ({failed} failed)"
        if i == kill_at:
            kill()
        try:
            client.upsert(collection, [f"r{i}"], vector, owner="alice")
            acked.append(f"r{i}")
        except UnavailableError:
            failed += 1
            if failed == 10:
                restart()
            time.sleep(0.1)
        i += 1
    return acked, failed
