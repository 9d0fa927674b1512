"""Miss-path cost of a lookup, in process, over the real storage, and MiniLM's embed cost.

The cache is `cache.service.SemanticCache` with the server's own `CollectionRepository` over a
`VectorDB(SqliteStore(tmp))` (default index kind), the shipped classifier and policies (quotas
raised so that storing every `a` under one tenant evicts nothing). Lookups carry their
embedding, so the embed step is skipped; thin proxies time each port call of every lookup:
`exact` (the exact-key get), `classify`, `search` and `fetch` (documents of the candidates above
the threshold: on a miss below the threshold there is none, so it is timed on semantic hits).
`total_cpu` is the same lookups' CPU time on the calling thread (every step runs on it when
the index lock is free): near `total` means the time was work, far below it means waiting
(another process holding the core, or a thread hop).
Separately, the MiniLM embedder's cost per single query (what a lookup without an embedding
adds).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cache.classifier import LinearClassifier
from cache.clock import SystemClock
from cache.policy import default_policies
from cache.service import SemanticCache
from cache.testing import FakeBackend
from cache.types import CachedResponse, CacheEntry, LookupRequest, Reason
from curacache.embed.minilm import MiniLMEmbedder
from curacache.server.cache_ports import COLLECTION, CollectionRepository
from curacache.server.config import CacheConfig
from curacache.server.vectordb import VectorDB
from storage.sqlite import SqliteStore

TENANT = "bench"
DIM = 384


class _Timed:
    """Appends (step, ms) of every call it proxies to a shared list."""

    def __init__(self, inner: object, log: list[tuple[str, float]]) -> None:
        self._inner, self._log = inner, log

    def _note(self, step: str, t0: float) -> None:
        self._log.append((step, (time.perf_counter() - t0) * 1000.0))


class TimedRepository(_Timed):
    async def put(self, entry: CacheEntry, vector: np.ndarray) -> None:
        await self._inner.put(entry, vector)  # type: ignore[attr-defined]

    async def get(self, entry_ids: Sequence[str]) -> dict[str, CacheEntry]:
        t0 = time.perf_counter()
        out = await self._inner.get(entry_ids)  # type: ignore[attr-defined]
        self._note("get", t0)
        return out

    async def delete(self, entry_ids: Sequence[str]) -> int:
        return await self._inner.delete(entry_ids)  # type: ignore[attr-defined]

    async def search(self, vector: np.ndarray, tenant: str, k: int) -> list[tuple[str, float]]:
        t0 = time.perf_counter()
        out = await self._inner.search(vector, tenant, k)  # type: ignore[attr-defined]
        self._note("search", t0)
        return out

    def scan(self) -> Any:
        return self._inner.scan()  # type: ignore[attr-defined]


class TimedClassifier(_Timed):
    def classify(self, vector: np.ndarray) -> tuple[str, float]:
        t0 = time.perf_counter()
        out = self._inner.classify(vector)  # type: ignore[attr-defined]
        self._note("classify", t0)
        return out


class NoEmbedder:
    """Every lookup here carries its embedding: calling the embedder is a bench bug."""

    dim = DIM

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise AssertionError("the miss-path benchmark must send embeddings")

    async def aclose(self) -> None:
        return None


def percentiles(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if not len(arr):
        return {"calls": 0}
    return {
        "calls": len(arr),
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
    }


async def _miss_path(
    tmp: Path,
    texts: Sequence[str],
    vectors: np.ndarray,
    stored: Sequence[int],
    misses: Sequence[int],
    hits: Sequence[int],
    warmup: int,
    progress: bool,
) -> dict[str, object]:
    log: list[tuple[str, float]] = []
    store = SqliteStore(tmp / "cache.db")
    db = VectorDB(store)
    clf = LinearClassifier.load()
    policies = {
        name: replace(p, quota_per_tenant=p.quota_total) for name, p in default_policies().items()
    }
    shipped = CacheConfig()  # the server's defaults for cache collections (index kind and params)
    cache = SemanticCache(
        repository=TimedRepository(
            CollectionRepository(
                db=db, dim=DIM, index_kind=shipped.index_kind, index_params=shipped.index_params
            ),
            log,
        ),
        embedder=NoEmbedder(),
        classifier=TimedClassifier(clf, log),
        backend=FakeBackend(),
        clock=SystemClock(),
        policies=policies,
        confidence_floor=clf.floor,
    )
    answer = CachedResponse(text="cached answer", finish_reason="stop")
    t0 = time.perf_counter()
    for t in tqdm(stored, desc="store entries (in-process)", unit="entry", disable=not progress):
        await cache.store(
            LookupRequest(tenant=TENANT, prompt=texts[t], embedding=vectors[t]), answer
        )
    store_s = time.perf_counter() - t0

    async def run(rows: Sequence[int], want: set[Reason], desc: str) -> dict[str, object]:
        steps: dict[str, list[float]] = {
            "exact": [],
            "classify": [],
            "search": [],
            "fetch": [],
            "total": [],
            "total_cpu": [],
        }
        reasons: dict[str, int] = {}
        for n, t in enumerate(tqdm(rows, desc=desc, unit="lookup", disable=not progress)):
            log.clear()
            t0, c0 = time.perf_counter(), time.thread_time()
            result = await cache.lookup(
                LookupRequest(tenant=TENANT, prompt=texts[t], embedding=vectors[t])
            )
            cpu = (time.thread_time() - c0) * 1000.0
            total = (time.perf_counter() - t0) * 1000.0
            if n < warmup:
                continue
            reasons[result.reason.value] = reasons.get(result.reason.value, 0) + 1
            if result.reason not in want:
                continue
            gets = [ms for step, ms in log if step == "get"]
            steps["total"].append(total)
            steps["total_cpu"].append(cpu)
            steps["exact"].append(gets[0] if gets else 0.0)
            steps["fetch"] += gets[1:]
            steps["classify"] += [ms for step, ms in log if step == "classify"]
            steps["search"] += [ms for step, ms in log if step == "search"]
        return {"steps": {k: percentiles(v) for k, v in steps.items() if v}, "reasons": reasons}

    miss = await run(misses, {Reason.BELOW_THRESHOLD}, "miss-path lookups")
    hit = await run(hits, {Reason.SEMANTIC}, "semantic-hit lookups")
    index_only = _index_search(db, vectors, misses[warmup:])
    counters = {c: s.counters.step_ms for c, s in cache.stats().items() if s.counters.lookups}
    store.close()
    return {
        "entries": len(stored),
        "store_s": store_s,
        "miss": miss,
        "semantic_hit": hit,
        "index_search_only": index_only,
        "stats_step_ewma_ms": {c: dict(v) for c, v in counters.items()},
    }


def _index_search(db: VectorDB, vectors: np.ndarray, rows: Sequence[int]) -> dict[str, float]:
    """One index search per miss lookup, called directly (no thread hop): the share of the
    `search` step that the index itself costs (the repository's search runs through
    asyncio.to_thread, and also as the shared scope "*" when shared entries exist)."""
    collection = db.get(COLLECTION)
    times = []
    for t in rows:
        q = vectors[t].reshape(1, -1)
        t0 = time.perf_counter()
        collection.search(TENANT, q, 5, {}, with_payload=False)
        times.append((time.perf_counter() - t0) * 1000.0)
    return percentiles(times)


def miss_path(
    texts: Sequence[str],
    vectors: np.ndarray,
    stored: Sequence[int],
    misses: Sequence[int],
    hits: Sequence[int],
    *,
    warmup: int = 100,
    progress: bool = True,
) -> dict[str, object]:
    """`stored`: text indices to store; `misses`/`hits`: lookups expected (offline) to miss
    below the threshold / hit semantically; the first `warmup` of each are not counted."""
    with tempfile.TemporaryDirectory(prefix="cache-quality-") as tmp:
        return asyncio.run(
            _miss_path(Path(tmp), texts, vectors, stored, misses, hits, warmup, progress)
        )


def embed_cost(
    queries: Sequence[str], *, warmup: int = 20, progress: bool = True
) -> dict[str, object]:
    """MiniLM (the default embedder, unbatched) per single query."""

    async def run() -> dict[str, object]:
        embedder = MiniLMEmbedder()
        try:
            times = []
            for n, q in enumerate(
                tqdm(queries, desc="MiniLM embed (1 query)", unit="query", disable=not progress)
            ):
                t0 = time.perf_counter()
                await embedder.embed([q])
                if n >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
            return {"backend": getattr(embedder, "backend", None), **percentiles(times)}
        finally:
            await embedder.aclose()

    return asyncio.run(run())
