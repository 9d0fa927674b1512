"""1-bit sign codes of the vectors: a cheap first pass over a large tenant's candidates.

Why: a search scores every id of the buckets it chose. On a tenant that spans much of the
tree that is thousands of ids (its γ2 nearest lists), and scoring one exactly reads its whole
row of the vector matrix (4·dim bytes, 1.5 KB at 384 d) from a random place: that memory
traffic was the search's whole cost on the largest tenants (profile in
bench/curator/README.md). So every label also keeps one bit per dimension (dim/8 bytes, one
cache line at 384 d) and two floats; a search with more than k candidates first estimates
each one's score with an error bound from those, and scores exactly only the candidates whose
bound still reaches the top k.

The code of x is the sign pattern of r = x - c, c the centroid of x's GCT leaf (the tree the
search walks anyway; the root alone before training). The estimate and its bound are
RaBitQ's (Gao & Long, SIGMOD 2024; 1 bit per dimension, without its random rotation):

    q·x ≈ q·c + s · Σ_j q_j sign(r_j),      s = ||r||² / ||r||₁,
    |error| ≤ ε0 · e · ||q||,                e = ||r|| · sqrt(1 - a²) / (a · sqrt(dim - 1)),

with a = ||r||₁ / (sqrt(dim) ||r||) (how well the sign pattern aligns with r; s makes the
estimate exact when q is r itself) and ε0 the search's `epsilon`: e·||q|| is about one
standard error of the estimate. Why a bound and not a fixed number of candidates to re-score:
the estimates' error depends on the data (their dimension above all), and a fixed number lost
recall where they are coarse (32 dimensions: a 10.7k-id tenant's recall 0.99 -> 0.94 with its
200 best estimates); the bound re-scores what the error leaves in doubt. Why ε0 = 3 and not
the paper's 1.9: without the rotation the error's tails are heavier (arXiv: |error| > 3
standard errors for 0.2-4.7% of (query, id) pairs, by tenant), and 1.9 dropped true
neighbours that sit near the k-th score, which in a small tenant is most of them (q-fin.GN,
13 ids: recall 0.965 against 1.000 with every candidate scored); with 3, every tenant of the
categories workload got the recall of scoring all, at ~4× the rows re-scored (cs.CV, 11k
candidates: 163 -> 618; figures in bench/curator/README.md). Why the leaf's centroid and not
one centre for all: smaller residuals, closer estimates. Why no rotation: it costs a dim × dim
product per query, and on the large tenants the error's spread stayed the same.

Σ_j q_j sign(r_j) is computed with the query quantized to 4 bits, 5 popcounts per 64
dimensions (`prune`), and q·c with one uint8 dot per leaf. Memory: one row per label of
dim/8 code bytes (rounded up to 8) and 16 more (s, e, the label's leaf and its squared norm),
64 B at 384 d: 4.2% of the float32 row.

Why everything a candidate's estimate reads sits in its one row, and the rows are 64-byte
aligned: candidates come from random places, and each separate array read (code, factors,
leaf) was another cache miss; at 384 d a row is one cache line, fetched ahead of use
(`prefetch_row`) while the previous candidates are estimated. Per candidate (queries of the
categories workload, 2.3k candidates each, caches cold): ~140 ns with three arrays, ~105
with prefetches into them, ~53 with the one prefetched row (figures in
bench/curator/README.md). The leaf (also in the index's `leaf`
array, which the write paths read) and the norm are copies for that reason.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from curator._numeric import FASTMATH, dot, dot_code, popcount, prefetch_row

ALIGN = 64  # bytes: a cache line


def code_words(dim: int) -> int:
    """uint64 words of one label's code (bit k of word w is dimension 64w + k)."""
    return (dim + 63) // 64


def row_words(dim: int) -> int:
    """uint64 words of one label's row: its code, then (s, e) as two float32, then its leaf
    (int32) and squared norm (float32). In a float32 / int32 view of the rows, s is column
    2W, e 2W + 1, the leaf 2W + 2 and the norm 2W + 3 (W = `code_words`)."""
    return code_words(dim) + 2


def empty_rows(n: int, dim: int) -> np.ndarray:
    """Zeroed (n, row_words(dim)) uint64 rows starting on a cache-line boundary (numpy only
    promises 16 bytes, and a row split over two lines costs two misses)."""
    nbytes = n * row_words(dim) * 8
    buf = np.zeros(nbytes + ALIGN, dtype=np.uint8)
    skip = -buf.ctypes.data % ALIGN
    return buf[skip : skip + nbytes].view(np.uint64).reshape(n, row_words(dim))


def split_rows(rows: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes (n, W) uint64, factors (n, 2) float32 = (s, e)) of these rows (copies)."""
    w = code_words(dim)
    return rows[:, :w].copy(), rows.view(np.float32)[:, 2 * w : 2 * w + 2].copy()


@njit(nogil=True, cache=True)
def encode(
    vectors: np.ndarray,
    labels: np.ndarray,
    leaf: np.ndarray,
    codes: np.ndarray,
    lo: np.ndarray,
    step: np.ndarray,
    out_rows: np.ndarray,
) -> None:
    """For each label x, out_rows[x] = the sign bits of r = vectors[x] - the centroid of its
    GCT leaf (`leaf[x]`; the tree's quantized centroids `codes`, `lo`, `step`), (s, e) (see
    the module docstring; both 0 when r = 0), leaf[x] and ||vectors[x]||² (layout:
    `row_words`). Compiled: an insert encodes one label, and a dozen small numpy calls cost
    ~50 µs more than this."""
    dim = vectors.shape[1]
    w = out_rows.shape[1] - 2  # code words (`row_words`)
    f = out_rows.view(np.float32)
    li = out_rows.view(np.int32)
    for i in range(labels.shape[0]):
        x = labels[i]
        c = leaf[x]
        out_rows[x, :w] = 0
        l1 = 0.0
        sq = 0.0
        for j in range(dim):
            r = vectors[x, j] - (lo[j] + step[j] * np.float32(codes[c, j]))
            if r >= 0:
                out_rows[x, j >> 6] |= np.uint64(1) << np.uint64(j & 63)
            l1 += abs(r)
            sq += r * r
        if l1 > 0.0:
            a = l1 / np.sqrt(dim * sq)  # in (0, 1]
            f[x, 2 * w] = sq / l1
            f[x, 2 * w + 1] = np.sqrt(sq * max(1.0 - a * a, 0.0)) / a / np.sqrt(max(dim - 1, 1))
        else:
            f[x, 2 * w] = 0.0
            f[x, 2 * w + 1] = 0.0
        li[x, 2 * w + 2] = c
        f[x, 2 * w + 3] = dot(vectors[x], vectors[x])


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def _query_planes(q: np.ndarray, planes: np.ndarray) -> tuple[float, float, float]:
    """Quantize q to 4 bits per dimension, q_j ≈ lo + step·u_j, u_j in 0..15, and write u's
    bit planes: bit j of planes[p, j // 64] is bit p of u_j (words past the end stay 0).
    Returns (lo, step, Σ q_j). Why 4 bits: RaBitQ's choice (its estimator's error dominates)."""
    lo = q.min()
    step = (q.max() - lo) / 15.0
    if step <= 0.0:
        step = 1.0
    planes[:] = 0
    total = 0.0
    for j in range(q.shape[0]):
        total += q[j]
        u = np.uint64(int((q[j] - lo) / step + 0.5))
        bit = np.uint64(1) << np.uint64(j & 63)
        for p in range(4):
            if (u >> np.uint64(p)) & np.uint64(1):
                planes[p, j >> 6] |= bit
    return lo, step, total


# How many candidates ahead of the one being estimated its row is prefetched: far enough to
# cover a miss (~100 ns) at ~30 ns of work per candidate (8 and 16 measured alike).
_AHEAD = 16


@njit(nogil=True, cache=True, fastmath=FASTMATH)
def prune(
    q: np.ndarray,
    qs: np.ndarray,
    qlo: float | np.float32,
    codes: np.ndarray,
    rows: np.ndarray,
    cand: np.ndarray,
    k: int,
    eps: float,
    is_ip: bool,
    planes: np.ndarray,
    leaf_ip: np.ndarray,
    leaf_stamp: np.ndarray,
    stamp: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The candidates (len(cand) > k) that may be among the top k by their sign codes, and
    each one's optimistic key (the caller's exact pass uses it as a bound, `score_topk`).

    Each candidate's score is estimated with an error bound, eps·e·||q||; keys are as in the
    exact scoring (`score_topk` in `curator._kernels`; smaller is better: -q·x for ip,
    ||x - q||² for l2). U is the k-th best pessimistic key, and a candidate is kept when its
    optimistic key reaches U (so at least k are kept, and which ones does not depend on their
    order).
    `planes` is (4, code words) uint64 scratch; `leaf_ip[c]` caches q·(node c's centroid)
    where `leaf_stamp[c] == stamp` (this query's). The query enters as for
    the traversal (`traverse` in `curator._kernels`: q, and qs = q·step, qlo = q·lo).

    With b_j = 1 where r_j >= 0: Σ_j q_j sign(r_j) = 2 Σ_j q_j b_j - Σ_j q_j, and with q 4-bit
    quantized (`_query_planes`) Σ_j q_j b_j ≈ lo·popcount(b) + step·Σ_p 2^p popcount(plane_p
    & b): a candidate costs 5 popcounts per 64 dimensions."""
    qlo4, qstep4, qsum = _query_planes(q, planes)
    qq = dot(q, q)
    qnorm = np.sqrt(qq)
    n = cand.shape[0]
    nw = planes.shape[1]
    f = rows.view(np.float32)
    li = rows.view(np.int32)
    best = np.empty(n, dtype=np.float32)
    worst = np.empty(n, dtype=np.float32)
    for i in range(min(_AHEAD, n)):
        prefetch_row(rows, cand[i])
    for i in range(n):
        if i + _AHEAD < n:
            prefetch_row(rows, cand[i + _AHEAD])
        x = cand[i]
        c = li[x, 2 * nw + 2]
        if leaf_stamp[c] != stamp:  # q·c, once per leaf and query
            leaf_ip[c] = qlo + dot_code(qs, codes[c])
            leaf_stamp[c] = stamp
        ones = np.uint64(0)
        weighted = np.uint64(0)
        for w in range(nw):
            b = rows[x, w]
            ones += popcount(b)
            weighted += (
                popcount(b & planes[0, w])
                + (popcount(b & planes[1, w]) << np.uint64(1))
                + (popcount(b & planes[2, w]) << np.uint64(2))
                + (popcount(b & planes[3, w]) << np.uint64(3))
            )
        dot_b = qlo4 * np.float32(ones) + qstep4 * np.float32(weighted)  # ≈ Σ_j q_j b_j
        ip = leaf_ip[c] + f[x, 2 * nw] * (2.0 * dot_b - qsum)
        err = eps * f[x, 2 * nw + 1] * qnorm
        if is_ip:
            best[i] = -ip - err
            worst[i] = -ip + err
        else:
            best[i] = f[x, 2 * nw + 3] - 2.0 * (ip + err) + qq
            worst[i] = f[x, 2 * nw + 3] - 2.0 * (ip - err) + qq
    keep = best <= np.partition(worst, k - 1)[k - 1]
    return cand[keep], best[keep]
