"""Data for bench/curator: arXiv papers, held-out queries, tenant access, query mixes, truth.

- Papers and their MiniLM embeddings come from ../shared/data (float16 -> float32, unit norm).
- `--max-papers N` takes a seeded random sample of N papers (quick runs).
- Held-out query papers: a seeded random sample, topped up so every category with enough
  papers has at least `min_per_cat` held-out papers (otherwise small tenants would never
  query in the tenant-uniform mix). Held-out papers are never indexed.
- Workloads (labels = row numbers of the workload's indexed matrix):
  * "categories": tenant = category with >= 10 indexed papers; a paper is visible to each of
    its categories that is a tenant.
  * "subscribers": 300 tenants, each picking 1-3 categories uniformly among those with >= 10
    indexed papers and seeing every paper of them.
  * "archives": the categories' tenants plus one per arXiv archive (the category's prefix
    before the dot: cs, math, astro-ph, ...; >= 10 indexed papers) seeing every paper of its
    categories, so tenants from ten papers to tens of thousands share one collection. An
    archive without sub-categories (hep-th, gr-qc, ...) is its category's tenant already.
  Papers visible to no tenant are not indexed (they would only inflate the shared indexes).
- Query mixes: "proportional" (each held-out paper issued as every tenant that can see it,
  seeded sample of `queries` pairs) and "uniform" (every tenant issues the same number of
  queries, drawn from the held-out papers it can see).
- Exact top-k per (query, tenant) over the tenant's visible indexed vectors (inner product).
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT.parent / "shared" / "data"
PAPERS = "arxiv_papers.jsonl.gz"
EMBEDDINGS = "arxiv_papers.minilm.f16.npy"
MIN_TENANT_PAPERS = 10
WORKLOADS = ("categories", "subscribers", "archives")


@dataclass
class Corpus:
    vectors: np.ndarray  # (N, d) float32
    categories: list[list[str]]


@dataclass
class Mix:
    name: str  # "proportional" | "uniform"
    qidx: np.ndarray  # (P,) int: row of the workload's query matrix
    tenants: list[str]  # (P,) tenant issuing pair i
    gt: np.ndarray  # (P, k) int64 exact top-k labels among what the tenant sees


@dataclass
class Workload:
    name: str
    X: np.ndarray  # (n, d) indexed vectors; label = row
    Q: np.ndarray  # (m, d) held-out query vectors
    tenants: list[str]
    members: dict[str, np.ndarray]  # tenant -> sorted int64 labels it sees
    access: list[list[str]]  # per indexed row: tenants that see it
    query_tenants: list[list[str]]  # per held-out query: tenants that can see that paper
    mixes: dict[str, Mix] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def load_corpus(data_dir: Path = DATA_DIR, max_papers: int | None = None, seed: int = 0) -> Corpus:
    cats: list[list[str]] = []
    with gzip.open(data_dir / PAPERS, "rt", encoding="utf-8") as f:
        for line in f:
            cats.append(json.loads(line)["categories"])
    emb = np.load(data_dir / EMBEDDINGS, mmap_mode="r")
    if len(emb) != len(cats):
        raise ValueError(f"{EMBEDDINGS} has {len(emb)} rows, {PAPERS} {len(cats)} papers")
    rows = np.arange(len(cats))
    if max_papers is not None and max_papers < len(cats):
        rows = np.sort(np.random.default_rng(seed).choice(len(cats), max_papers, replace=False))
    vectors = np.ascontiguousarray(emb[rows], dtype=np.float32)
    return Corpus(vectors=vectors, categories=[cats[i] for i in rows])


def split_holdout(
    corpus: Corpus, holdout: int, min_per_cat: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(indexed rows, held-out rows): random sample + per-category top-up (see module doc)."""
    rng = np.random.default_rng(seed + 1)
    n = len(corpus.categories)
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, min(holdout, n // 5), replace=False)] = True
    by_cat: dict[str, list[int]] = {}
    for i, cs in enumerate(corpus.categories):
        for c in cs:
            by_cat.setdefault(c, []).append(i)
    for c in sorted(by_cat):
        rows = np.asarray(by_cat[c])
        n_held = int(held[rows].sum())
        # top up only as far as the category keeps >= MIN_TENANT_PAPERS indexed papers
        need = min(min_per_cat - n_held, len(rows) - n_held - MIN_TENANT_PAPERS)
        if need > 0:
            free = rows[~held[rows]]
            held[rng.choice(free, need, replace=False)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def _eligible(categories: list[list[str]]) -> list[str]:
    counts: dict[str, int] = {}
    for cs in categories:
        for c in cs:
            counts[c] = counts.get(c, 0) + 1
    return sorted(c for c, m in counts.items() if m >= MIN_TENANT_PAPERS)


def archive_of(category: str) -> str:
    """arXiv archive of a category: the prefix before the dot ("cs.CV" -> "cs")."""
    return category.split(".", 1)[0]


def tenant_rule(
    name: str, indexed_cats: list[list[str]], n_subscribers: int = 300, seed: int = 0
) -> tuple[list[str], dict[str, list[str]]]:
    """(tenants, category -> tenants that see its papers) for workload `name`."""
    eligible = _eligible(indexed_cats)
    if name == "categories":
        return eligible, {c: [c] for c in eligible}
    if name == "subscribers":
        rng = np.random.default_rng(seed + 2)
        tenants = [f"sub{s:03d}" for s in range(n_subscribers)]
        of_cat: dict[str, list[str]] = {}
        for t in tenants:
            m = int(rng.integers(1, 4))
            for c in rng.choice(len(eligible), min(m, len(eligible)), replace=False):
                of_cat.setdefault(eligible[int(c)], []).append(t)
        return tenants, of_cat
    if name == "archives":
        archives = _eligible([sorted({archive_of(c) for c in cs}) for cs in indexed_cats])
        of_cat = {c: [c] for c in eligible}
        for cs in indexed_cats:
            for c in cs:
                a = archive_of(c)
                if a != c and a in archives:
                    of_cat.setdefault(c, [])
                    if a not in of_cat[c]:
                        of_cat[c].append(a)
        return eligible + [a for a in archives if a not in eligible], of_cat
    raise ValueError(f"unknown workload {name!r} ({', '.join(WORKLOADS)})")


def _visible(cats: list[str], of_cat: dict[str, list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for c in cats:
        for t in of_cat.get(c, ()):
            seen[t] = None
    return list(seen)


def build_workload(
    name: str, corpus: Corpus, indexed: np.ndarray, held: np.ndarray, seed: int = 0
) -> Workload:
    cats = corpus.categories
    tenants, of_cat = tenant_rule(name, [cats[i] for i in indexed], seed=seed)
    vis = [_visible(cats[i], of_cat) for i in indexed]
    keep = np.asarray([i for i, v in zip(indexed, vis) if v], dtype=np.int64)
    access = [v for v in vis if v]
    members_l: dict[str, list[int]] = {t: [] for t in tenants}
    for label, ts in enumerate(access):
        for t in ts:
            members_l[t].append(label)
    members = {t: np.asarray(m, dtype=np.int64) for t, m in members_l.items() if m}
    tenants = [t for t in tenants if t in members]
    sizes = np.asarray([len(members[t]) for t in tenants])
    wl = Workload(
        name=name,
        X=corpus.vectors[keep],
        Q=corpus.vectors[held],
        tenants=tenants,
        members=members,
        access=access,
        query_tenants=[_visible(cats[i], of_cat) for i in held],
    )
    wl.stats = {
        "indexed": len(keep),
        "held_out": len(held),
        "tenants": len(tenants),
        "share_degree": float(np.mean([len(a) for a in access])) if access else 0.0,
        "tenant_size": {
            "min": int(sizes.min()),
            "p50": int(np.median(sizes)),
            "max": int(sizes.max()),
        },
        "visible_pairs": int(sizes.sum()),
    }
    return wl


def make_mixes(wl: Workload, queries: int, k: int = 10, seed: int = 0) -> None:
    """Fill wl.mixes with the proportional and uniform mixes and their exact truth."""
    rng = np.random.default_rng(seed + 3)
    pairs = [(q, t) for q, ts in enumerate(wl.query_tenants) for t in ts]
    if len(pairs) > queries:
        pick = np.sort(rng.choice(len(pairs), queries, replace=False))
        pairs = [pairs[i] for i in pick]
    wl.mixes["proportional"] = _mix("proportional", wl, pairs, k)

    seeable: dict[str, list[int]] = {}
    for q, ts in enumerate(wl.query_tenants):
        for t in ts:
            seeable.setdefault(t, []).append(q)
    per_tenant = max(1, math.ceil(queries / max(1, len(wl.tenants))))
    upairs: list[tuple[int, str]] = []
    skipped = 0
    for t in wl.tenants:
        cand = seeable.get(t)
        if not cand:
            skipped += 1
            continue
        qs = rng.choice(cand, per_tenant, replace=len(cand) < per_tenant)
        upairs.extend((int(q), t) for q in qs)
    order = rng.permutation(len(upairs))  # interleave tenants, as a live mix would
    wl.mixes["uniform"] = _mix("uniform", wl, [upairs[i] for i in order], k)
    wl.stats["proportional_pairs_total"] = sum(len(ts) for ts in wl.query_tenants)
    wl.stats["uniform_per_tenant"] = per_tenant
    wl.stats["uniform_tenants_without_queries"] = skipped


def _mix(name: str, wl: Workload, pairs: list[tuple[int, str]], k: int) -> Mix:
    qidx = np.asarray([q for q, _ in pairs], dtype=np.int64)
    tenants = [t for _, t in pairs]
    return Mix(name, qidx, tenants, exact_topk(wl, qidx, tenants, k))


def exact_topk(wl: Workload, qidx: np.ndarray, tenants: list[str], k: int) -> np.ndarray:
    """Exact top-k labels per (query, tenant) pair; -1 pads tenants with < k vectors."""
    gt = np.full((len(qidx), k), -1, dtype=np.int64)
    by_tenant: dict[str, list[int]] = {}
    for i, t in enumerate(tenants):
        by_tenant.setdefault(t, []).append(i)
    for t, rows in by_tenant.items():
        mem = wl.members[t]
        kk = min(k, len(mem))
        _, idx = faiss.knn(wl.Q[qidx[rows]], wl.X[mem], kk, metric=faiss.METRIC_INNER_PRODUCT)
        gt[np.asarray(rows), :kk] = mem[idx]
    return gt
