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


def code_words(dim: int) -> int:
    """uint64 words of one label's code (bit k of word w is dimension 64w + k)."""
    return (dim + 63) // 64


def encode(vectors: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint64 (n, code_words(dim)), factors float32 (n, 2): (s, e)) of float32 rows,
    each relative to its row of `centers` (see the module docstring). s and e side by side:
    a candidate's estimate reads them both, one cache line instead of two."""
    r = vectors - centers
    n, dim = r.shape
    bits = np.zeros((n, 64 * code_words(dim)), dtype=np.bool_)
    bits[:, :dim] = r >= 0
    codes = np.packbits(bits, axis=1, bitorder="little").view("<u8").astype(np.uint64)
    l1 = np.abs(r).sum(axis=1, dtype=np.float64)
    sq = np.einsum("ij,ij->i", r, r, dtype=np.float64)
    nonzero = l1 > 0
    scales = np.divide(sq, l1, out=np.zeros(n), where=nonzero)
    a = np.divide(l1, np.sqrt(dim * sq), out=np.ones(n), where=nonzero)  # in (0, 1]
    errors = np.sqrt(sq) * np.sqrt(np.maximum(1.0 - a * a, 0.0)) / a / np.sqrt(max(dim - 1, 1))
    return codes, np.stack([scales, errors], axis=1).astype(np.float32)
