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
dimensions (`prune_by_signs` in `curator._kernels`: ~11 ns a candidate against ~200 ns for
an exact score from a random row, and ~110 ns with a per-query table of each code byte's 256
sums), and q·c with one uint8 dot per leaf. Memory: dim/8 (rounded up to 8) + 8 bytes per
label (3.6% of the float32 row at 384 d).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def code_words(dim: int) -> int:
    """uint64 words of one label's code (bit k of word w is dimension 64w + k)."""
    return (dim + 63) // 64


@njit(nogil=True, cache=True)
def encode(
    vectors: np.ndarray,
    labels: np.ndarray,
    leaf: np.ndarray,
    codes: np.ndarray,
    lo: np.ndarray,
    step: np.ndarray,
    out_codes: np.ndarray,
    out_factors: np.ndarray,
) -> None:
    """For each label x: out_codes[x] = the sign bits of r = vectors[x] - the centroid of its
    GCT leaf (`leaf[x]`; the tree's quantized centroids `codes`, `lo`, `step`), and
    out_factors[x] = (s, e) (see the module docstring; both 0 when r = 0). Compiled: an
    insert encodes one label, and a dozen small numpy calls cost ~50 µs more than this."""
    dim = vectors.shape[1]
    for i in range(labels.shape[0]):
        x = labels[i]
        c = leaf[x]
        out_codes[x, :] = 0
        l1 = 0.0
        sq = 0.0
        for j in range(dim):
            r = vectors[x, j] - (lo[j] + step[j] * np.float32(codes[c, j]))
            if r >= 0:
                out_codes[x, j >> 6] |= np.uint64(1) << np.uint64(j & 63)
            l1 += abs(r)
            sq += r * r
        if l1 > 0.0:
            a = l1 / np.sqrt(dim * sq)  # in (0, 1]
            out_factors[x, 0] = sq / l1
            out_factors[x, 1] = np.sqrt(sq * max(1.0 - a * a, 0.0)) / a / np.sqrt(max(dim - 1, 1))
        else:
            out_factors[x, 0] = 0.0
            out_factors[x, 1] = 0.0
