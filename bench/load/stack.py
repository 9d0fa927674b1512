"""A local stack to load (fake-llm, `curacache serve`, optionally the gateway), and a sampler
of a local server process's CPU time, RSS and open file descriptors from /proc."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_loopback(host: str) -> None:
    """The generator only loads this machine: refuse anything that is not loopback."""
    try:
        addresses = {str(a[4][0]) for a in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise SystemExit(f"--target: cannot resolve {host!r}: {exc}") from None
    if not addresses or not all(a.startswith("127.") or a == "::1" for a in addresses):
        raise SystemExit(f"--target: {host!r} is not a loopback address; the generator refuses it")


class LocalStack:
    """Child processes on free loopback ports; `server_pid` is the gRPC server's own pid."""

    def __init__(
        self,
        data_dir: Path,
        *,
        embedder: str = "minilm",
        backend: bool = True,
        gateway: bool = False,
        metrics: bool = False,
        ttft_ms: float = 20.0,
        tokens_per_s: float = 2000.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        cli = [sys.executable, "-m", "curacache.cli"]
        env = {**os.environ, "CURACACHE_CACHE__EMBEDDER": embedder, **(extra_env or {})}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.metrics_url = ""
        try:
            if backend:
                sim_port = free_port()
                self.procs.append(
                    subprocess.Popen(
                        [
                            *cli,
                            "fake-llm",
                            "--port",
                            str(sim_port),
                            "--ttft-ms",
                            str(ttft_ms),
                            "--tokens-per-s",
                            str(tokens_per_s),
                            "--max-concurrency",
                            "256",
                        ],
                        stdout=subprocess.DEVNULL,
                        cwd=ROOT,
                    )
                )
                env["CURACACHE_CACHE__BACKENDS"] = f"sim=http://127.0.0.1:{sim_port}"
            grpc_port = free_port()
            serve = [
                *cli,
                "serve",
                "--port",
                str(grpc_port),
                "--data-dir",
                str(data_dir),
                "--log-level",
                "WARNING",
            ]
            if metrics:
                metrics_port = free_port()
                serve += ["--metrics-port", str(metrics_port)]
                self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            self.server = subprocess.Popen(
                serve, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT
            )
            self.procs.append(self.server)
            self.target = f"127.0.0.1:{grpc_port}"
            self._wait_banner(self.server)
            self.gateway = ""
            if gateway:
                http_port = free_port()
                self.procs.append(
                    subprocess.Popen(
                        [
                            *cli,
                            "gateway",
                            "--listen",
                            f"127.0.0.1:{http_port}",
                            "--server",
                            self.target,
                        ],
                        stdout=subprocess.DEVNULL,
                        cwd=ROOT,
                    )
                )
                self.gateway = f"http://127.0.0.1:{http_port}"
                self._wait_http(f"{self.gateway}/healthz")
        except BaseException:
            self.stop()
            raise

    @property
    def server_pid(self) -> int:
        return self.server.pid

    def _wait_banner(self, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
        assert proc.stdout is not None
        lines = []
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            lines.append(line)
            if re.search(r"listening on [\d.]+:(\d+)", line):
                # Keep draining so the server never blocks on a full pipe.
                threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
                return
        raise RuntimeError("the server did not start:\n" + "".join(lines[-30:]))

    def _wait_http(self, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"{url} did not answer")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass(frozen=True, slots=True)
class ProcSample:
    t: float  # time.time()
    cpu_s: float  # user + system, whole process
    rss_bytes: int
    fds: int


def read_proc(pids: Sequence[int]) -> ProcSample:
    """One sample of the server: summed over its processes (`serve --workers N`: each worker)."""
    t = time.time()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss, fds = 0.0, 0, 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        fds += len(os.listdir(f"/proc/{pid}/fd"))
    return ProcSample(t, cpu, rss, fds)


class ProcSampler:
    """Samples a local process every `interval_s` in a thread; `at(t)` is the sample nearest
    after wall time t, so a measured window's CPU is `at(end).cpu_s - at(start).cpu_s`."""

    def __init__(self, pids: Sequence[int], interval_s: float = 0.1) -> None:
        self.pids = list(pids)
        self.samples: list[ProcSample] = [read_proc(self.pids)]
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.samples.append(read_proc(self.pids))
            except OSError:  # the process ended
                return

    def at(self, t: float) -> ProcSample:
        times = [s.t for s in self.samples]
        return self.samples[min(bisect_left(times, t), len(times) - 1)]

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds used and RSS/fds at the end, for [start, end] (waits for a later sample)."""
        deadline = time.time() + 2
        while self.samples[-1].t < end and time.time() < deadline:
            time.sleep(self._interval)
        a, b = self.at(start), self.at(end)
        inside = [s.rss_bytes for s in self.samples if start <= s.t <= end] or [b.rss_bytes]
        return {
            "cpu_s": b.cpu_s - a.cpu_s,
            "wall_s": max(b.t - a.t, 1e-9),
            "rss_start_bytes": a.rss_bytes,
            "rss_bytes": b.rss_bytes,
            "rss_max_bytes": max(inside),
            "fds_start": a.fds,
            "fds": b.fds,
        }

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
