"""The three stalls of issue 11, measured against a local stack it starts:

1. start-up: seconds until health reports SERVING, then the first Curator search and first
   cache lookup (compiled kernels are loaded before SERVING, so these are ordinary requests);
2. a huge prompt: small text lookups of another tenant, timed while one lookup with a prompt
   at the size limit (1 MiB) runs, against the same lookups alone;
3. upserts: batches of `--batch` records into a Curator collection past its training size
   (the tree trains beside the writes): the slowest batch against the median.

    python -m bench.load.stalls [--records 25000] [--batch 100]

Writes bench/results/stalls.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.load.report import RESULTS
from bench.load.scenarios import Data, arxiv_tenancy
from bench.load.stack import LocalStack
from curacache.client import AsyncClient

SMALL = [f"What is the capital of country number {i}?" for i in range(400)]


async def small_lookups(client: AsyncClient, stop: asyncio.Event) -> list[float]:
    times = []
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        await client.lookup(SMALL[i % len(SMALL)], "small", model="fake-llm")
        times.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return times


async def huge_prompt(client: AsyncClient, seconds: float) -> dict[str, float]:
    stop = asyncio.Event()
    alone_task = asyncio.create_task(small_lookups(client, stop))
    await asyncio.sleep(seconds)
    stop.set()
    alone = await alone_task
    stop = asyncio.Event()
    beside_task = asyncio.create_task(small_lookups(client, stop))
    await asyncio.sleep(0.2)
    huge = "word " * ((1 << 20) // 5 - 1)  # just under the 1 MiB prompt limit
    t0 = time.perf_counter()
    await client.lookup(huge, "huge", model="fake-llm")
    huge_ms = (time.perf_counter() - t0) * 1e3
    await asyncio.sleep(0.2)
    stop.set()
    beside = await beside_task
    return {
        "huge_prompt_bytes": len(huge.encode()),
        "huge_lookup_ms": huge_ms,
        "small_alone_p50_ms": float(np.percentile(alone, 50)),
        "small_alone_max_ms": max(alone),
        "small_beside_p50_ms": float(np.percentile(beside, 50)),
        "small_beside_max_ms": max(beside),
        "small_beside_count": len(beside),
    }


async def upserts(client: AsyncClient, records: int, batch: int) -> dict[str, float]:
    data = Data()
    rows, access = arxiv_tenancy(data, 50)
    _, emb = data.arxiv()
    vectors = np.asarray(emb[rows[:records]], dtype=np.float32)
    await client.create_collection("stalls", vectors.shape[1], index="curator")
    times = []
    for s in range(0, records, batch):
        ids = [f"p{r}" for r in rows[s : s + batch]]
        t0 = time.perf_counter()
        await client.upsert(
            "stalls",
            ids,
            vectors[s : s + batch],
            owner="owner",
            tenants=[access[s + j] for j in range(len(ids))],
        )
        times.append((time.perf_counter() - t0) * 1e3)
    worst = int(np.argmax(times))
    return {
        "batches": len(times),
        "batch": batch,
        "median_ms": statistics.median(times),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": times[worst],
        "max_at_records": (worst + 1) * batch,
    }


async def run(args: argparse.Namespace, stack: LocalStack, started: float) -> dict:
    async with AsyncClient(stack.target, timeout=600) as client:
        serving_s = time.perf_counter() - started
        await client.create_collection("first", 8, index="curator")
        await client.upsert("first", ["a"], np.ones((1, 8), np.float32), owner="t")
        t0 = time.perf_counter()
        await client.search("first", np.ones(8, np.float32), "t", k=1)
        first_search_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        await client.lookup("first lookup after start", "t", model="fake-llm")
        first_lookup_ms = (time.perf_counter() - t0) * 1e3
        return {
            "startup": {
                "serving_after_s": serving_s,
                "first_search_ms": first_search_ms,
                "first_lookup_ms": first_lookup_ms,
            },
            "huge_prompt": await huge_prompt(client, 3.0),
            "upserts": await upserts(client, args.records, args.batch),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=25_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        stack = LocalStack(Path(tmp), embedder="minilm", backend=False)
        try:
            report = asyncio.run(run(args, stack, started))
        finally:
            stack.stop()
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "stalls.json"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
