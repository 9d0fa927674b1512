"""Gateway overhead on loopback, every figure against a baseline from the same run.

Starts `curacache fake-llm` (200 ms time to first token), `curacache serve` and `curacache
gateway` as separate processes, then from this process (one asyncio loop, aiohttp as the HTTP
client, the SDK as the gRPC client):

1. hits: the same prompt from `--clients` concurrent clients, `--requests` each round:
   a. direct SDK `lookup` (the baseline the target names),
   b. gateway `POST /v1/chat/completions` (a hit: exact path; not streamed: `Cache.Complete`),
   c. the same with `"stream": true` (an SSE replay: `Cache.Generate`),
   d. gateway `GET /healthz` (the HTTP floor of this client and server);
2. misses: time to the first content token of a streamed answer, one request at a time,
   straight from fake-llm (the backend's own TTFT) and through the gateway (new prompts).

    python -m bench.gateway [--clients 16] [--requests 2000] [--rounds 3] [--misses 30]

Writes bench/results/gateway.json and .md; prints medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import numpy as np

from curacache.client import AsyncClient

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
MODEL = "fake-llm"
HIT_PROMPT = "How do I reverse a list in Python?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """fake-llm, the service and the gateway as child processes on free loopback ports."""

    def __init__(self, data_dir: Path, ttft_ms: float) -> None:
        self.sim_port, self.grpc_port, self.http_port = _free_port(), _free_port(), _free_port()
        cli = [sys.executable, "-m", "curacache.cli"]
        env = {**os.environ, "CURACACHE_CACHE__BACKENDS": f"sim=http://127.0.0.1:{self.sim_port}"}
        self.procs = [
            subprocess.Popen(
                [
                    *cli,
                    "fake-llm",
                    "--port",
                    str(self.sim_port),
                    "--ttft-ms",
                    str(ttft_ms),
                    "--tokens-per-s",
                    "200",
                    "--max-concurrency",
                    "64",
                ],
                stdout=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    *cli,
                    "serve",
                    "--port",
                    str(self.grpc_port),
                    "--data-dir",
                    str(data_dir),
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    *cli,
                    "gateway",
                    "--listen",
                    f"127.0.0.1:{self.http_port}",
                    "--server",
                    f"127.0.0.1:{self.grpc_port}",
                ],
                stdout=subprocess.DEVNULL,
            ),
        ]
        self.sim = f"http://127.0.0.1:{self.sim_port}/v1"
        self.gateway = f"http://127.0.0.1:{self.http_port}"
        self.target = f"127.0.0.1:{self.grpc_port}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{self.gateway}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError("the stack did not come up")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process has used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        out = {}
        for name, p in zip(("fake_llm", "server", "gateway"), self.procs):
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return out

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def closed_loop(call: Callable[[], Awaitable[None]], clients: int, requests: int) -> dict:
    """`clients` workers share `requests` calls; latency per call and throughput."""
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000.0
    return {
        "qps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n": len(latencies),
    }


async def first_token_ms(session: aiohttp.ClientSession, url: str, prompt: str) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "temperature": 0,
    }
    t0 = time.perf_counter()
    async with session.post(f"{url}/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if line.startswith(b"data: {") and _delta_text(json.loads(line[len(b"data: ") :])):
                elapsed = (time.perf_counter() - t0) * 1000.0
                async for _ in r.content:  # drain: the connection goes back to the pool whole
                    pass
                return elapsed
    raise AssertionError("no content token")


async def sdk_first_token_ms(sdk: AsyncClient, prompt: str) -> float:
    """The same miss straight through the service's Generate (the cache's own miss path)."""
    t0 = time.perf_counter()
    elapsed = None
    async for item in sdk.generate(
        [{"role": "user", "content": prompt}], "default", model=MODEL, params={"temperature": 0}
    ):
        if elapsed is None and isinstance(item, str) and item:
            elapsed = (time.perf_counter() - t0) * 1000.0
    assert elapsed is not None
    return elapsed


def _delta_text(event: dict) -> str:
    choices = event.get("choices") or [{}]
    return str((choices[0].get("delta") or {}).get("content") or "")


async def bench(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), args.ttft_ms)
        try:
            connector = aiohttp.TCPConnector(limit=args.clients * 2)
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                AsyncClient(stack.target) as sdk,
            ):
                await stack.wait_ready(http)
                chat = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": HIT_PROMPT}],
                    "temperature": 0,
                }
                async with http.post(
                    f"{stack.gateway}/v1/chat/completions", json=chat
                ) as r:  # the miss that stores it
                    assert r.status == 200 and r.headers["X-Cache"] == "MISS", await r.text()

                async def sdk_lookup() -> None:
                    result = await sdk.lookup(
                        [{"role": "user", "content": HIT_PROMPT}],
                        "default",
                        model=MODEL,
                        params={"temperature": 0},
                    )
                    assert result.hit

                async def gateway_hit() -> None:
                    async with http.post(f"{stack.gateway}/v1/chat/completions", json=chat) as r:
                        await r.read()
                        assert r.headers["X-Cache"] == "HIT"

                async def gateway_hit_stream() -> None:
                    async with http.post(
                        f"{stack.gateway}/v1/chat/completions", json={**chat, "stream": True}
                    ) as r:
                        await r.read()
                        assert r.headers["X-Cache"] == "HIT"

                async def healthz() -> None:
                    async with http.get(f"{stack.gateway}/healthz") as r:
                        await r.read()

                rounds = []
                load = [os.getloadavg()[0]]
                for i in range(args.rounds):
                    row = {}
                    for name, call in (
                        ("sdk_lookup", sdk_lookup),
                        ("gateway_hit", gateway_hit),
                        ("gateway_hit_stream", gateway_hit_stream),
                        ("healthz", healthz),
                    ):
                        await closed_loop(call, args.clients, args.clients * 10)  # warm-up
                        cpu_before = stack.cpu_seconds()
                        row[name] = await closed_loop(call, args.clients, args.requests)
                        cpu_after = stack.cpu_seconds()
                        row[name]["cpu_ms_per_request"] = {
                            k: (cpu_after[k] - cpu_before[k]) * 1000.0 / args.requests
                            for k in ("server", "gateway")
                        }
                    rounds.append(row)
                    print(
                        f"  round {i + 1}: "
                        + ", ".join(
                            f"{k} p50 {v['p50_ms']:.2f} ms {v['qps']:.0f}/s cpu/req server "
                            f"{v['cpu_ms_per_request']['server']:.2f} gateway {v['cpu_ms_per_request']['gateway']:.2f} ms"
                            for k, v in row.items()
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
                load.append(os.getloadavg()[0])
                backend, service, through = [], [], []
                for i in range(args.misses):
                    backend.append(
                        await first_token_ms(http, stack.sim, f"Tell me about topic {i} (direct)")
                    )
                    service.append(await sdk_first_token_ms(sdk, f"Tell me about topic {i} (sdk)"))
                    through.append(
                        await first_token_ms(
                            http, f"{stack.gateway}/v1", f"Tell me about topic {i} (gateway)"
                        )
                    )
                load.append(os.getloadavg()[0])
        finally:
            stack.stop()
    return {
        "load_average_1min": load,  # before the hits, after them, after the misses
        "rounds": rounds,
        "ttft_backend_ms": backend,
        "ttft_sdk_ms": service,
        "ttft_gateway_ms": through,
    }


def summarise(raw: dict, args: argparse.Namespace) -> dict:
    def med(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in raw["rounds"])

    def cpu(name: str, process: str) -> float:
        return statistics.median(r[name]["cpu_ms_per_request"][process] for r in raw["rounds"])

    hit_p50, sdk_p50 = med("gateway_hit", "p50_ms"), med("sdk_lookup", "p50_ms")
    ttft_b, ttft_g = (
        statistics.median(raw["ttft_backend_ms"]),
        statistics.median(raw["ttft_gateway_ms"]),
    )
    ttft_s = statistics.median(raw["ttft_sdk_ms"])
    return {
        "clients": args.clients,
        "load_average_1min": raw["load_average_1min"],
        **{
            name: {
                "p50_ms": med(name, "p50_ms"),
                "p99_ms": med(name, "p99_ms"),
                "qps": med(name, "qps"),
                "server_cpu_ms": cpu(name, "server"),
                "gateway_cpu_ms": cpu(name, "gateway"),
            }
            for name in CALLS
        },
        "hit_overhead_p50_ms": hit_p50 - sdk_p50,
        "hit_qps_vs_healthz": med("gateway_hit", "qps") / med("healthz", "qps"),
        "ttft_backend_ms": ttft_b,
        "ttft_sdk_ms": ttft_s,
        "ttft_gateway_ms": ttft_g,
        "ttft_added_ms": ttft_g - ttft_b,
        "targets": {
            "hit_overhead_p50_le_2ms": hit_p50 - sdk_p50 <= 2.0,
            "ttft_added_le_5ms": ttft_g - ttft_b <= 5.0,
        },
    }


CALLS = ("sdk_lookup", "gateway_hit", "gateway_hit_stream", "healthz")


def markdown(s: dict) -> str:
    rows = [
        f"| {name} | {s[name]['p50_ms']:.2f} | {s[name]['p99_ms']:.2f} | {s[name]['qps']:.0f} "
        f"| {s[name]['server_cpu_ms']:.2f} | {s[name]['gateway_cpu_ms']:.2f} |"
        for name in CALLS
    ]
    load = ", ".join(f"{x:.1f}" for x in s["load_average_1min"])
    return "\n".join(
        [
            f"Gateway bench ({s['clients']} concurrent clients, loopback; medians of rounds; "
            f"1-min load average before the hits, after them, after the misses: {load})",
            "",
            "| call | p50 ms | p99 ms | req/s | server CPU ms/req | gateway CPU ms/req |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"- hit overhead over a direct SDK lookup, p50: {s['hit_overhead_p50_ms']:.2f} ms "
            f"(target <= 2 ms: {'PASS' if s['targets']['hit_overhead_p50_le_2ms'] else 'FAIL'})",
            f"- hit throughput / gateway /healthz throughput: {s['hit_qps_vs_healthz']:.2f}",
            f"- miss time to first token: backend {s['ttft_backend_ms']:.1f} ms, through the gateway "
            f"{s['ttft_gateway_ms']:.1f} ms, added {s['ttft_added_ms']:.1f} ms "
            f"(target <= 5 ms: {'PASS' if s['targets']['ttft_added_le_5ms'] else 'FAIL'}); the service's own "
            f"Generate (SDK, no gateway) {s['ttft_sdk_ms']:.1f} ms",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--misses", type=int, default=30, help="streamed misses per side for time to first token"
    )
    parser.add_argument(
        "--ttft-ms", type=float, default=200.0, help="fake-llm's time to first token"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    raw = asyncio.run(bench(args))
    summary = summarise(raw, args)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    (args.out / "gateway.json").write_text(
        json.dumps({"summary": summary, "raw": raw, "machine": machine}, indent=1)
    )
    text = markdown(summary)
    (args.out / "gateway.md").write_text(text + "\n")
    print(text)
    return 0
