"""Replication lag: a write acknowledged by server A -> visible to server B's search.

    python -m bench.replication [--rate 1000] [--seconds 10] [--setups sqlite,redis,cluster]

Each setup runs two `curacache serve` processes on one store (child processes, free ports):
- sqlite:  two processes on one SQLite file: what `--workers 2` runs (its workers are exactly
           such processes; separate ports here so that the writer can pick A and the reader B);
- redis:   two processes on one private standalone redis-server (AOF, fsync always);
- cluster: two processes on a private 3-master + 3-replica Redis Cluster.

An open-loop writer sends single-record upserts to A at `--rate` per second (send times fixed
in advance; several in flight when A is slower). For every `--probe-every`-th acknowledged
write, a search is sent at once to B with that write's log position (`min_log_position`): B
answers once it has applied the change, and the answer is checked to contain the record
(k=1, the record's own vector, flat index). Lag = time of B's answer - time of A's ack, so it
includes one search round trip (it overstates the lag by that much).

Reports achieved write rate, lag p50/p99/max (ms), servers' CPU ms per write, and the load
average, in bench/results/replication.json and on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from curacache.client import AsyncClient  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.redis_server import start_redis_server  # noqa: E402
from tests.server_harness import ProcessServer  # noqa: E402

DIM = 64
TICK_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_S


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(a: str, b: str, rate: float, seconds: float, probe_every: int) -> dict:
    rng = np.random.default_rng(0)
    n = int(rate * seconds)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    lags: list[float] = []
    missing = 0
    errors: Counter[str] = Counter()
    async with AsyncClient(a, timeout=30) as ca, AsyncClient(b, timeout=30) as cb:
        await ca.create_collection("lag", DIM, index="flat")
        await cb.search("lag", vectors[0], "t", min_log_position=ca.log_position("lag"))

        async def one(i: int) -> None:
            nonlocal missing
            step = "upsert on A"
            try:
                await ca.upsert("lag", [f"r{i}"], vectors[i : i + 1], owner="t")
                acked = time.perf_counter()
                token = ca.log_position("lag")
                if i % probe_every:
                    return
                step = "search on B"
                hits = await cb.search("lag", vectors[i], "t", k=1, min_log_position=token)
                seen = time.perf_counter()
                if [h.id for h in hits] == [f"r{i}"]:
                    lags.append((seen - acked) * 1000)
                else:
                    missing += 1
            except Exception as exc:  # counted by kind and reported, never hidden
                errors[f"{step}: {type(exc).__name__}: {str(exc)[:60]}"] += 1

        tasks = []
        start = time.perf_counter()
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        sent = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "writes": n,
        "send_s": round(sent, 2),
        "all_acked_s": round(elapsed, 2),
        "achieved_writes_per_s": round(n / elapsed, 1),
        "probes": len(lags),
        "probe_misses": missing,
        "errors": dict(errors.most_common(5)),
        "lag_ms_p50": round(statistics.median(lags), 2) if lags else None,
        "lag_ms_p99": round(percentile(lags, 0.99), 2) if lags else None,
        "lag_ms_max": round(max(lags), 2) if lags else None,
    }


def run_setup(name: str, args: list[str], opts: argparse.Namespace) -> dict:
    env = {"CURACACHE_CACHE__EMBEDDER": "hashing"}
    servers = [ProcessServer(args, env=env) for _ in range(2)]
    try:
        cpu0 = [cpu_s(s.proc.pid) for s in servers]
        load0 = os.getloadavg()[0]
        result = asyncio.run(
            drive(servers[0].target, servers[1].target, opts.rate, opts.seconds, opts.probe_every)
        )
        cpu1 = [cpu_s(s.proc.pid) for s in servers]
        result["setup"] = name
        result["target_writes_per_s"] = opts.rate
        result["cpu_ms_per_write_a"] = round((cpu1[0] - cpu0[0]) * 1000 / result["writes"], 3)
        result["cpu_ms_per_write_b"] = round((cpu1[1] - cpu0[1]) * 1000 / result["writes"], 3)
        result["loadavg_1m_before"] = round(load0, 2)
        result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        return result
    finally:
        for s in servers:
            s.terminate()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=1000.0, help="writes per second to A")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--probe-every", type=int, default=5, help="probe B after every n-th write")
    p.add_argument("--setups", default="sqlite,redis,cluster")
    opts = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in opts.setups.split(","):
            print(f"  .. {name}", file=sys.stderr, flush=True)
            if name == "sqlite":
                results.append(run_setup(name, ["--data-dir", f"{tmp}/sqlite"], opts))
            elif name == "redis":
                redis = start_redis_server(Path(tmp) / "redis")
                try:
                    args = ["--storage", "redis", "--redis-url", redis.url]
                    results.append(run_setup(name, args, opts))
                finally:
                    redis.stop()
            elif name == "cluster":
                cluster = RedisCluster(Path(tmp) / "cluster")
                try:
                    args = ["--storage", "redis", "--redis-url", cluster.url]
                    results.append(run_setup(name, args, opts))
                finally:
                    cluster.stop()
            else:
                p.error(f"unknown setup {name!r}")
            print(json.dumps(results[-1]), flush=True)
    out = ROOT / "bench" / "results" / "replication.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return 0
