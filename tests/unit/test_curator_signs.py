"""The sign-code pass (`curator.signs`, `_kernels.prune_by_signs`) against the exact oracle:
the candidates it keeps hold the true nearest ones, for both metrics and a dimension that is
not a multiple of 64, and it keeps few of them; in a search, the default ε0 finds what
scoring every candidate exactly finds, and ε0 is the knob (0: k candidates scored)."""

from __future__ import annotations

import numpy as np
import pytest

from curator import CuratorIndex, _kernels, signs
from curator.index import EPSILON
from tests.helpers import clustered


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("dim", [200, 384])
def test_prune_by_signs_keeps_the_true_top_10_and_few_others(metric: str, dim: int) -> None:
    rng = np.random.default_rng(dim)
    n, k = 3000, 10
    x = clustered(rng, n, dim, 20, spread=1.0)
    root = np.zeros((1, dim), np.uint8)  # one node, centroid 0 (lo 0, step 1: qs = q, qlo 0)
    leaf = np.zeros(n, dtype=np.int32)
    codes = np.zeros((n, signs.code_words(dim)), np.uint64)
    factors = np.zeros((n, 2), np.float32)
    labels = np.arange(n)
    lo, step = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    signs.encode(x, labels, leaf, root, lo, step, codes, factors)
    norms = np.einsum("ij,ij->i", x, x).astype(np.float32)
    cand = rng.permutation(n).astype(np.int32)
    planes = np.empty((4, codes.shape[1]), dtype=np.uint64)
    leaf_ip, stamp = np.empty(1, np.float32), np.full(1, -1, np.int64)
    hits, kept_sizes = [], []
    queries = x[rng.integers(0, n, 30)] + 0.3 * rng.standard_normal((30, dim))
    for i, q in enumerate(queries.astype(np.float32)):
        kept = _kernels.prune_by_signs(
            q, q, 0.0, root, leaf, codes, factors, norms, cand, k, EPSILON,
            metric == "ip", planes, leaf_ip, stamp, i,
        )  # fmt: skip
        assert kept.size >= k and np.unique(kept).size == kept.size
        assert set(kept.tolist()) <= set(cand.tolist())
        score = x @ q if metric == "ip" else -((x - q) ** 2).sum(axis=1)
        truth = np.argsort(-score)[:k]
        hits.append(len(set(truth.tolist()) & set(kept.tolist())) / k)
        kept_sizes.append(kept.size)
    assert np.mean(hits) >= 0.98, np.mean(hits)
    assert np.median(kept_sizes) < n / 4, np.median(kept_sizes)  # it does prune


def test_search_at_default_epsilon_finds_what_scoring_all_candidates_finds() -> None:
    rng = np.random.default_rng(5)
    n, dim = 6000, 32
    x = clustered(rng, n, dim, 60, spread=3.0)
    index = CuratorIndex(dim=dim, metric="l2", train_size=2000)
    index.add(np.arange(n), x, [["big"]] * n)
    q = (x[rng.integers(0, n, 50)] + 0.5 * rng.standard_normal((50, dim))).astype(np.float32)
    truth = np.argsort(((x[None] - q[:, None]) ** 2).sum(-1), axis=1)[:, :10]

    def recall(**params: float) -> float:
        labels = index.search("big", q, 10, **params)[0]
        return float(np.mean([len(set(a) & set(b)) for a, b in zip(labels, truth)])) / 10

    all_scored = recall(epsilon=1e6)
    assert recall() >= all_scored - 0.01, (recall(), all_scored)
    assert recall(epsilon=0) < all_scored  # the knob does something: k scored are too few
