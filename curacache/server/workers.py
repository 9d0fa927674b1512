"""`curacache serve --workers N`: N server processes on one port, each a replica of the store.

Every worker is an ordinary `curacache serve` process bound with SO_REUSEPORT, so the kernel
spreads incoming connections over them; they share nothing but the store, whose change log
keeps their indexes in step (`curacache.server.replica`). This parent only starts them,
relays their output, restarts one that dies (it reloads from the store and catches up), and
passes SIGTERM/SIGINT on. Processes rather than threads: one Python process is bounded by
the GIL, which is the limit `--workers` exists to lift.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

READY = re.compile(r"listening on \S+:(\d+)")
METRICS = re.compile(r"metrics on (\S+)")
START_TIMEOUT_S = 300.0  # a worker loads every index before it listens
RESTART_PAUSE_S = 1.0


def free_port(host: str) -> int:
    """A port that is free now (port 0 cannot be shared: each worker would get its own)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Worker:
    def __init__(self, index: int, argv: Sequence[str]) -> None:
        self.index = index
        self.argv = list(argv)
        self.ready = threading.Event()
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[str]:
        self.ready.clear()
        proc = subprocess.Popen(
            [sys.executable, "-m", "curacache.cli", "serve", *self.argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._relay, args=(proc,), daemon=True).start()
        return proc

    def _relay(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if READY.search(line):
                metrics = METRICS.search(line)
                if metrics:  # before `ready`: the parent's own banner comes after every worker's
                    print(f"[worker {self.index}] metrics on {metrics.group(1)}", flush=True)
                self.ready.set()
            else:
                sys.stdout.write(f"[worker {self.index}] {line}")
                sys.stdout.flush()

    def restart(self) -> None:
        self.proc = self._spawn()


def run_workers(
    argv: Sequence[str],
    *,
    workers: int,
    host: str,
    port: int,
    banner: str,
    metrics_port: int | None = None,
) -> int:
    """Run `workers` copies of `curacache serve argv` on `host:port` until SIGTERM/SIGINT.
    Each worker is its own process with its own figures, so with `metrics_port` P worker i
    serves its metrics on P + i (P = 0: each on a free port of its own)."""
    if port == 0:
        port = free_port(host)
    child_argv = [*argv, "--port", str(port), "--worker"]

    def worker_argv(index: int) -> list[str]:
        if metrics_port is None:
            return child_argv
        return [*child_argv, "--metrics-port", str(metrics_port + index if metrics_port else 0)]

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    pool = [_Worker(i, worker_argv(i)) for i in range(workers)]
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for w in pool:
            while not w.ready.wait(0.1):
                if w.proc.poll() is not None or time.monotonic() > deadline or stopping.is_set():
                    print(f"curacache: worker {w.index} did not start", file=sys.stderr)
                    return 1
        print(f"curacache listening on {host}:{port} ({workers} workers); {banner}", flush=True)
        while not stopping.wait(0.2):
            for w in pool:
                if w.proc.poll() is not None and not stopping.is_set():
                    print(
                        f"curacache: worker {w.index} exited ({w.proc.returncode}); restarting",
                        flush=True,
                    )
                    time.sleep(RESTART_PAUSE_S)
                    w.restart()
        print("curacache: shutting down workers", flush=True)
        return 0
    finally:
        for w in pool:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in pool:
            try:
                w.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
