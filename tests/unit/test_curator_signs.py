"""The sign-code pass (`curator.signs`) against the exact oracle: the candidates it keeps hold
the true nearest ones, for both metrics and a dimension that is not a multiple of 64, it
keeps few of them, and it computes the estimate the
module docstring states (a numpy re-derivation from the packed rows); the exact scoring's
two passes with those bounds (`_kernels.score_topk`) find what brute force finds; in a search, the default ε0
finds what scoring every candidate exactly finds, and ε0 is the knob (0: k candidates
scored)."""

from __future__ import annotations

import numpy as np
import pytest

from curator import CuratorIndex, _kernels, signs
from curator.index import EPSILON
from tests.helpers import clustered


def _encoded(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, ...]:
    """n clustered vectors encoded against one node with centroid 0 (lo 0, step 1: qs = q,
    qlo 0): (vectors, tree codes, rows)."""
    x = clustered(rng, n, dim, 20, spread=1.0)
    root = np.zeros((1, dim), np.uint8)
    leaf = np.zeros(n, dtype=np.int32)
    rows = signs.empty_rows(n, dim)
    lo, step = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    signs.encode(x, np.arange(n), leaf, root, lo, step, rows)
    return x, root, rows


def _prune(
    q: np.ndarray, root: np.ndarray, rows: np.ndarray, cand: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    planes = np.empty((4, signs.code_words(q.shape[0])), dtype=np.uint64)
    leaf_ip, stamp = np.empty(1, np.float32), np.full(1, -1, np.int64)
    return signs.prune(
        q, q, 0.0, root, rows, cand, k, EPSILON, metric == "ip", planes, leaf_ip, stamp, 0
    )  # fmt: skip


def test_rows_are_aligned_and_carry_leaf_and_norm() -> None:
    rng = np.random.default_rng(1)
    x, _, rows = _encoded(rng, 50, 384)
    assert rows.ctypes.data % 64 == 0 and rows.shape[1] * 8 == 64  # one cache line at 384 d
    w = signs.code_words(384)
    assert np.all(rows.view(np.int32)[:, 2 * w + 2] == 0)
    np.testing.assert_allclose(rows.view(np.float32)[:, 2 * w + 3], (x * x).sum(1), rtol=1e-5)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("dim", [200, 384])
def test_prune_keeps_the_true_top_10_and_few_others(metric: str, dim: int) -> None:
    rng = np.random.default_rng(dim)
    n, k = 3000, 10
    x, root, rows = _encoded(rng, n, dim)
    cand = rng.permutation(n).astype(np.int32)
    hits, kept_sizes = [], []
    queries = x[rng.integers(0, n, 30)] + 0.3 * rng.standard_normal((30, dim))
    for q in queries.astype(np.float32):
        kept, bound = _prune(q, root, rows, cand, k, metric)
        assert kept.size >= k and np.unique(kept).size == kept.size
        assert set(kept.tolist()) <= set(cand.tolist())
        score = x @ q if metric == "ip" else -((x - q) ** 2).sum(axis=1)
        truth = np.argsort(-score)[:k]
        hits.append(len(set(truth.tolist()) & set(kept.tolist())) / k)
        kept_sizes.append(kept.size)
        # the bounds are optimistic for (nearly) every kept candidate: key >= bound
        key = -score[kept]
        assert np.mean(key >= bound - 1e-3 * np.abs(key).max()) >= 0.99
    assert np.mean(hits) >= 0.98, np.mean(hits)
    assert np.median(kept_sizes) < n / 4, np.median(kept_sizes)  # it does prune


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_prune_computes_the_stated_estimate(metric: str) -> None:
    """The kept set is {optimistic key <= k-th pessimistic key} for the estimate of the
    module docstring, re-derived in numpy from the packed rows (4-bit query included);
    candidates within float rounding of the bar may go either way."""
    rng = np.random.default_rng(7)
    n, dim, k = 2000, 200, 10
    x, root, rows = _encoded(rng, n, dim)
    w = signs.code_words(dim)
    f = rows.view(np.float32)
    s, e, norm = f[:, 2 * w], f[:, 2 * w + 1], f[:, 2 * w + 3]
    bits = np.unpackbits(rows[:, :w].view(np.uint8), axis=1, bitorder="little")[:, :dim]
    cand = rng.permutation(n).astype(np.int32)
    for q in (x[rng.integers(0, n, 10)] + 0.3 * rng.standard_normal((10, dim))).astype(np.float32):
        lo = q.min()
        step = (q.max() - lo) / 15.0
        u = np.floor((q - lo) / step + 0.5)
        dot_b = bits @ (lo + step * u)
        ip = s * (2.0 * dot_b - q.sum())  # centroid 0
        err = EPSILON * e * np.linalg.norm(q)
        if metric == "ip":
            best, worst = -ip - err, -ip + err
        else:
            best, worst = norm - 2 * (ip + err) + q @ q, norm - 2 * (ip - err) + q @ q
        bar = np.sort(worst[cand])[k - 1]
        tol = 1e-3 * (np.abs(best).max() + 1)
        kept, bound = _prune(q, root, rows, cand, k, metric)
        kept_set = set(kept.tolist())
        assert set(cand[best[cand] < bar - tol].tolist()) <= kept_set
        assert not kept_set & set(cand[best[cand] > bar + tol].tolist())
        np.testing.assert_allclose(bound, best[kept], atol=tol)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_bounded_score_topk_finds_the_brute_force_top_k(metric: str) -> None:
    """With optimistic bounds (exact key minus a random slack), the two passes return brute
    force's top k, whatever the candidates' order; with an empty bound it scores all."""
    rng = np.random.default_rng(3)
    n, dim, k = 500, 48, 10
    x = rng.standard_normal((n, dim)).astype(np.float32)
    norms = (x * x).sum(1).astype(np.float32)
    for _ in range(20):
        q = rng.standard_normal(dim).astype(np.float32)
        key = -(x @ q) if metric == "ip" else ((x - q) ** 2).sum(1)
        cand = rng.permutation(n).astype(np.int32)
        bound = (key[cand] - rng.uniform(0, 2, n)).astype(np.float32)
        for b in (bound, np.empty(0, np.float32)):
            labels, scores = np.full(k, -1, np.int64), np.zeros(k, np.float32)
            filled = _kernels.score_topk(q, x, norms, cand, b, metric == "ip", labels, scores)
            assert filled == k
            np.testing.assert_array_equal(labels, np.argsort(key, kind="stable")[:k])


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
