"""QQP pairs, their stored MiniLM embeddings, duplicate clusters and the seeded A/B split.

Clusters (DESIGN §9): texts that are identical after the cache's own normalisation
(`cache.fingerprint.normalise_prompt`) and pairs labelled duplicate are joined transitively
(union-find over every pair's label, whichever half it is in: the labels are the ground truth).
A hit is correct when the returned entry's prompt lies in the lookup's cluster.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.cache_quality.labelled_prompts import DATA_DIR
from cache.fingerprint import normalise_prompt

PAIRS = "qqp_pairs.jsonl.gz"
TEXTS = "qqp_texts.json.gz"
EMBEDDINGS = "qqp_texts.minilm.f16.npy"


@dataclass(frozen=True, slots=True)
class Qqp:
    texts: list[str]  # the distinct questions (sorted), row order of `vectors`
    vectors: np.ndarray  # (n_texts, 384) float32, unit rows
    a: np.ndarray  # (n_pairs,) text index of each pair's stored prompt
    b: np.ndarray  # (n_pairs,) text index of each pair's lookup
    duplicate: np.ndarray  # (n_pairs,) bool
    cluster: np.ndarray  # (n_texts,) cluster id of each text

    @property
    def n_pairs(self) -> int:
        return int(self.a.shape[0])


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return int(root)

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            self.parent[max(rx, ry)] = min(rx, ry)

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def clusters(texts: list[str], a: np.ndarray, b: np.ndarray, duplicate: np.ndarray) -> np.ndarray:
    """Cluster id per text: normalised-identical texts and duplicate pairs, transitively."""
    uf = UnionFind(len(texts))
    first: dict[str, int] = {}
    for i, text in enumerate(texts):
        key = normalise_prompt(text)
        if key in first:
            uf.union(first[key], i)
        else:
            first[key] = i
    for x, y in zip(a[duplicate].tolist(), b[duplicate].tolist()):
        uf.union(x, y)
    return uf.labels()


def load(data_dir: Path = DATA_DIR, *, max_pairs: int | None = None) -> Qqp:
    """All pairs (or the first `max_pairs`), with embeddings cast to float32."""
    with gzip.open(data_dir / TEXTS, "rt", encoding="utf-8") as f:
        texts: list[str] = json.load(f)
    vectors = np.load(data_dir / EMBEDDINGS).astype(np.float32)
    if vectors.shape[0] != len(texts):
        raise ValueError(f"{EMBEDDINGS} has {vectors.shape[0]} rows for {len(texts)} texts")
    index = {t: i for i, t in enumerate(texts)}
    a: list[int] = []
    b: list[int] = []
    dup: list[bool] = []
    with gzip.open(data_dir / PAIRS, "rt", encoding="utf-8") as f:
        for line in f:
            if max_pairs is not None and len(a) >= max_pairs:
                break
            row = json.loads(line)
            a.append(index[row["a"]])
            b.append(index[row["b"]])
            dup.append(bool(row["duplicate"]))
    a_arr, b_arr, dup_arr = np.array(a), np.array(b), np.array(dup, dtype=bool)
    return Qqp(texts, vectors, a_arr, b_arr, dup_arr, clusters(texts, a_arr, b_arr, dup_arr))


def split_halves(n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair indices of half A (choose) and half B (evaluate), seeded."""
    order = np.random.default_rng(seed).permutation(n_pairs)
    half = n_pairs // 2
    return np.sort(order[:half]), np.sort(order[half:])
