"""Scenarios: load the server with the data a scenario needs, return the workload to send.

Data is real (../shared/data): QQP questions and their MiniLM embeddings for the cache,
arXiv papers (tenants = arXiv categories) for vector search. Setup is idempotent per run:
every scenario writes under names carrying `tag`, so a run never collides with an earlier one
on a long-lived server.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.load.workloads import (
    MODEL,
    CacheLookup,
    CacheStore,
    Connection,
    GatewayChat,
    Generate,
    HealthCheck,
    Mixed,
    Search,
    Upsert,
    Workload,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much data a scenario loads (the smoke test shrinks these)."""

    cache_entries: int = 2000
    cache_tenants: int = 4
    lookups: int = 2000
    search_records: int = 20_000
    search_tenants: int = 50
    search_queries: int = 2000
    gateway_prompts: int = 100
    generate_prompts: int = 200
    upsert_batch: int = 1
    hit_ratio: float = 0.8


class Data:
    """The shared data, loaded on first use."""

    def __init__(self, root: Path = DATA) -> None:
        self.root = root
        self._qqp: tuple[list[tuple[str, str]], list[str], np.ndarray] | None = None
        self._arxiv: tuple[list[list[str]], np.ndarray] | None = None

    def qqp(self) -> tuple[list[tuple[str, str]], list[str], np.ndarray]:
        """(pairs (a, b), texts, embeddings float32 in texts' order)."""
        if self._qqp is None:
            with gzip.open(self.root / "qqp_pairs.jsonl.gz", "rt") as f:
                pairs = [(p["a"], p["b"]) for p in map(json.loads, f)]
            with gzip.open(self.root / "qqp_texts.json.gz", "rt") as f:
                texts = json.load(f)
            emb = np.load(self.root / "qqp_texts.minilm.f16.npy", mmap_mode="r")
            self._qqp = (pairs, texts, emb)
        return self._qqp

    def arxiv(self) -> tuple[list[list[str]], np.ndarray]:
        """(categories per paper, embeddings (mmap, float16) in the same order)."""
        if self._arxiv is None:
            with gzip.open(self.root / "arxiv_papers.jsonl.gz", "rt") as f:
                cats = [p["categories"] for p in map(json.loads, f)]
            self._arxiv = (cats, np.load(self.root / "arxiv_papers.minilm.f16.npy", mmap_mode="r"))
        return self._arxiv

    def qqp_entries(self, n: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
        """n pairs: stored prompts (a), lookup prompts (b), and both embeddings."""
        pairs, texts, emb = self.qqp()
        row = {t: i for i, t in enumerate(texts)}
        chosen = pairs[:n]
        a = [p[0] for p in chosen]
        b = [p[1] for p in chosen]
        ea = np.asarray(emb[[row[t] for t in a]], dtype=np.float32)
        eb = np.asarray(emb[[row[t] for t in b]], dtype=np.float32)
        return a, b, ea, eb


Setup = Callable[[Connection, Data, Sizes, str], Awaitable[Workload]]


async def _fill_cache(conn: Connection, data: Data, sizes: Sizes, tag: str) -> CacheLookup:
    """Store QQP `a` questions over `cache_tenants` tenants; look up the paired `b` questions
    (duplicates should hit, hard negatives miss), with their embeddings."""
    a, b, ea, eb = data.qqp_entries(max(sizes.cache_entries, sizes.lookups))
    tenants = [f"{tag}-t{i}" for i in range(sizes.cache_tenants)]
    client = conn.client
    for i in range(sizes.cache_entries):
        await client.store(
            a[i], f"cached answer {i}", tenants[i % len(tenants)], model=MODEL, embedding=ea[i]
        )
    n = sizes.lookups
    return CacheLookup(prompts=b[:n], tenants=tenants, embeddings=eb[:n], name="lookup-embedding")


async def lookup_embedding(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    return await _fill_cache(conn, data, sizes, tag)


async def lookup_text(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    w = await _fill_cache(conn, data, sizes, tag)
    return CacheLookup(prompts=w.prompts, tenants=w.tenants, embeddings=None, name="lookup-text")


async def generate(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    """Needs a backend serving `fake-llm` behind the server (the local stack starts one)."""
    prompts = [
        f"{tag} generate hit prompt {i}: {q}"
        for i, q in enumerate(data.qqp()[1][: sizes.generate_prompts])
    ]
    for p in prompts:  # through the backend once, so these are stored
        async for _ in conn.client.generate(
            p, f"{tag}-gen", model=MODEL, params={"temperature": 0.0}
        ):
            pass
    return Generate(
        hit_prompts=prompts, hit_ratio=sizes.hit_ratio, tenant=f"{tag}-gen", name="generate"
    )


def arxiv_tenancy(data: Data, tenants: int) -> tuple[np.ndarray, list[list[str]]]:
    """The papers carrying one of the `tenants` most frequent categories, with the
    access list of each (its categories among those)."""
    cats, _ = data.arxiv()
    top = {c for c, _ in Counter(c for cs in cats for c in cs).most_common(tenants)}
    rows, access = [], []
    for i, cs in enumerate(cats):
        mine = [c for c in cs if c in top]
        if mine:
            rows.append(i)
            access.append(mine)
    return np.asarray(rows), access


async def _search(
    conn: Connection, data: Data, sizes: Sizes, tag: str, kind: str
) -> tuple[Search, np.ndarray, list[list[str]]]:
    rows, access = arxiv_tenancy(data, sizes.search_tenants)
    _, emb = data.arxiv()
    n, nq = sizes.search_records, sizes.search_queries
    if len(rows) < n + nq:
        raise SystemExit(f"arXiv data has {len(rows)} usable papers; need {n + nq}")
    coll = f"{tag}-arxiv-{kind}"
    client = conn.client
    await client.create_collection(coll, emb.shape[1], index=kind)
    vectors = np.asarray(emb[rows[:n]], dtype=np.float32)
    for s in range(0, n, 1000):
        ids = [f"p{r}" for r in rows[s : min(s + 1000, n)]]
        # Owner: the paper's first category; every listed category may see it.
        for owner in sorted({access[s + j][0] for j in range(len(ids))}):
            pick = [j for j in range(len(ids)) if access[s + j][0] == owner]
            await client.upsert(
                coll,
                [ids[j] for j in pick],
                vectors[[s + j for j in pick]],
                owner=owner,
                tenants=[access[s + j] for j in pick],
            )
    # Held-out papers, each issued as one of the tenants that can see it (data-proportional).
    q_rows = rows[n : n + nq]
    queries = np.asarray(emb[q_rows], dtype=np.float32)
    q_tenants = [access[n + i][i % len(access[n + i])] for i in range(nq)]
    return Search(coll, queries, q_tenants, name=f"search-{kind}"), vectors, access[:n]


async def search_curator(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    return (await _search(conn, data, sizes, tag, "curator"))[0]


async def search_hnsw(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    return (await _search(conn, data, sizes, tag, "hnsw"))[0]


async def upsert(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    """New records streamed into a Curator collection that already holds `search_records`."""
    search, vectors, access = await _search(conn, data, sizes, tag, "curator")
    return Upsert(search.collection, vectors, access, batch=sizes.upsert_batch, name="upsert")


async def mixed(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    """Read-mostly service traffic: 70% cache lookups (embedding), 10% cache stores,
    15% vector searches, 5% single-record upserts."""
    lookups = await _fill_cache(conn, data, sizes, tag)
    search, vectors, access = await _search(conn, data, sizes, tag, "curator")
    assert lookups.embeddings is not None
    parts: list[tuple[Workload, float]] = [
        (lookups, 0.70),
        (CacheStore(embeddings=lookups.embeddings, tenants=lookups.tenants), 0.10),
        (search, 0.15),
        (Upsert(search.collection, vectors, access, batch=1), 0.05),
    ]
    return Mixed(parts=parts, name="mixed")


async def gateway_hit(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    """Chat completions through the gateway for prompts already cached (the hit path)."""
    if not conn.gateway:
        raise SystemExit("scenario gateway-hit: needs --gateway URL (or a local stack)")
    prompts = [
        f"{tag} gateway {i}: {q}" for i, q in enumerate(data.qqp()[1][: sizes.gateway_prompts])
    ]
    call = await GatewayChat(prompts=prompts).connect(conn, 0)
    for i in range(len(prompts)):  # the misses that store them
        await call(i)
    return GatewayChat(prompts=prompts)


async def health(conn: Connection, data: Data, sizes: Sizes, tag: str) -> Workload:
    return HealthCheck()


SCENARIOS: dict[str, Setup] = {
    "health": health,
    "lookup-embedding": lookup_embedding,
    "lookup-text": lookup_text,
    "generate": generate,
    "search-curator": search_curator,
    "search-hnsw": search_hnsw,
    "upsert": upsert,
    "mixed": mixed,
    "gateway-hit": gateway_hit,
}
# What a scenario needs from a local stack.
NEEDS_BACKEND = {"generate", "gateway-hit"}
NEEDS_GATEWAY = {"gateway-hit"}
NEEDS_EMBEDDER = {"lookup-text", "generate", "gateway-hit"}
