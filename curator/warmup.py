"""Compile (first start after an install) or load from numba's on-disk cache every compiled
kernel, by running a tiny index through each operation: the server calls this at start-up,
before it reports SERVING, so no request ever pays for compilation (several seconds; 26 CPU
seconds from scratch on the 2-core development machine)."""

from __future__ import annotations

import time

import numpy as np

from curator import _kernels, _writes, signs
from curator.index import METRICS, CuratorIndex

# The compiled functions Python calls (the others compile with their compiled callers);
# tests/unit/test_curator_warmup.py checks this list against the sources.
ENTRY_POINTS = (
    _kernels.route,
    _kernels.search,
    _kernels.seen_by,
    signs.encode,
    _writes.build,
    _writes.grant,
    _writes.revoke,
)


def warm_up() -> float:
    """Exercise every compiled entry point for every metric, unless this process already has
    them all; returns the seconds it took."""
    started = time.perf_counter()
    if all(kernel.signatures for kernel in ENTRY_POINTS):
        return 0.0
    rng = np.random.default_rng(0)
    n, dim = 256, 8
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = np.arange(n, dtype=np.int64)
    access = [("a",) if i % 3 else ("a", "b") for i in range(n)]
    fitted = None
    for metric in METRICS:
        index = CuratorIndex(
            dim=dim, metric=metric, max_sl_size=4, branching=4, max_depth=2, auto_train=False
        )
        index.add(labels[:32], vectors[:32], access[:32])  # untrained: root shortlists
        index.search("a", vectors[:2], 5)
        if fitted is None:  # one k-means serves every metric's tiny index
            fitted = index.fit(index.training_sample())
        index.install(fitted)
        index.add(labels[32:], vectors[32:], access[32:])  # trained: lists split down the tree
        for tenant in ("a", "b"):
            index.search(tenant, vectors[:2], 5)
        index.grant(labels[:40], "c")
        index.revoke(labels[:40], "c")
        index.remove(labels[:64])
        index.restore(index.snapshot())  # canonical rebuild
    return time.perf_counter() - started
