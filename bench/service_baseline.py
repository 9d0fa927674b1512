"""Service baseline: upsert throughput and single-query `flat` search latency, both stores.

Runs `curacache serve` as a separate process (so client and server do not share a GIL), on
100k real 384-d MiniLM vectors (../shared/data/qqp_texts.minilm.f16.npy), once per store:
SQLite (WAL, synchronous=FULL) and a private redis-server (AOF, appendfsync always).

    python bench/service_baseline.py [--n 100000] [--repeats 3] [--queries 1000]

Writes bench/results/service_baseline.json and prints a table (medians over repeats).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curacache.client import Client  # noqa: E402
from tests.redis_server import start_redis_server  # noqa: E402
from tests.server_harness import ProcessServer  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qqp_texts.minilm.f16.npy"
BATCH = 1000


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run_store(
    name: str, args: list[str], vectors: np.ndarray, queries: np.ndarray, repeats: int
) -> dict:
    server = ProcessServer(args)
    result: dict = {"store": name, "upsert_vectors_per_s": [], "search_ms": {}}
    try:
        with Client(server.target, timeout=600) as c:
            ids = [f"v{i}" for i in range(len(vectors))]
            for r in range(repeats):
                coll = f"bench{r}"
                c.create_collection(coll, vectors.shape[1], index="flat")
                started = time.perf_counter()
                for s in range(0, len(vectors), BATCH):
                    c.upsert(coll, ids[s : s + BATCH], vectors[s : s + BATCH], owner="tenant")
                elapsed = time.perf_counter() - started
                result["upsert_vectors_per_s"].append(len(vectors) / elapsed)
                progress(
                    f"{name}: upsert repeat {r + 1}/{repeats}: {len(vectors) / elapsed:,.0f} vectors/s"
                )
                if r < repeats - 1:
                    c.delete_collection(coll)
            coll = f"bench{repeats - 1}"
            for q in queries[:50]:  # warm-up
                c.search(coll, q, "tenant", k=10)
            rounds = []
            for r in range(repeats):
                times = []
                for q in queries:
                    t0 = time.perf_counter()
                    c.search(coll, q, "tenant", k=10)
                    times.append((time.perf_counter() - t0) * 1e3)
                rounds.append(times)
                progress(
                    f"{name}: search repeat {r + 1}/{repeats}: p50 {np.percentile(times, 50):.2f} ms"
                )
            result["search_ms"] = {
                "p50": statistics.median(float(np.percentile(t, 50)) for t in rounds),
                "p99": statistics.median(float(np.percentile(t, 99)) for t in rounds),
                "mean": statistics.median(float(np.mean(t)) for t in rounds),
                "calls_per_round": len(queries),
            }
            result["stats"] = {
                "record_count": c.stats(coll).record_count,
                "index_memory_total_bytes": c.stats(coll).index_memory_total_bytes,
                "store_bytes": c.stats(coll).store_bytes,
            }
    finally:
        server.terminate()
    result["upsert_vectors_per_s_median"] = statistics.median(result["upsert_vectors_per_s"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()

    data = np.load(DATA, mmap_mode="r")
    if len(data) < args.n + args.queries:
        raise SystemExit(f"{DATA} has {len(data)} rows; need {args.n + args.queries}")
    vectors = np.asarray(data[: args.n], dtype=np.float32)
    queries = np.asarray(data[args.n : args.n + args.queries], dtype=np.float32)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            if store == "sqlite":
                results.append(
                    run_store(
                        "sqlite", ["--data-dir", f"{tmp}/sqlite"], vectors, queries, args.repeats
                    )
                )
            else:
                redis_proc = start_redis_server(Path(tmp))
                try:
                    store_args = ["--storage", "redis", "--redis-url", redis_proc.url]
                    results.append(run_store("redis", store_args, vectors, queries, args.repeats))
                finally:
                    redis_proc.stop()

    report = {
        "benchmark": "service_baseline",
        "n_vectors": args.n,
        "dim": int(vectors.shape[1]),
        "batch": BATCH,
        "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "clients": 1,
        "results": results,
    }
    out = ROOT / "bench" / "results" / "service_baseline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("\n| store | upsert vectors/s (median) | flat search p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for r in results:
        s = r["search_ms"]
        print(
            f"| {r['store']} | {r['upsert_vectors_per_s_median']:,.0f} | {s['p50']:.2f} | {s['p99']:.2f} | {s['mean']:.2f} |"
        )
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
