"""Brute-force search: what every index and the service are checked against."""

from __future__ import annotations

import numpy as np


def exact_top_k(
    vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, metric: str
) -> list[tuple[str, float]]:
    """Top-k (id, score) by the API's score convention (similarity, or L2 distance)."""
    if not ids:
        return []
    x = vectors.astype(np.float64)
    q = query.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q)
    if metric == "l2":
        scores = np.sqrt(((x - q) ** 2).sum(axis=1))
        order = np.argsort(scores, kind="stable")
    else:
        scores = x @ q
        order = np.argsort(-scores, kind="stable")
    return [(ids[i], float(scores[i])) for i in order[:k]]
