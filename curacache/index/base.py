"""The Index port: in-process multi-tenant vector search over integer labels.

The collection layer owns the string-id <-> int64 label map, the access lists and cosine
normalisation; an index sees only labels, float32 vectors, tenant names and one of two raw
metrics: "ip" (inner product, larger is better; cosine arrives here as ip over unit vectors)
or "l2" (squared euclidean distance, smaller is better).

Thread-safety contract: any number of `search` calls may run concurrently with each other;
a write must not overlap a search or another write. The owner (the collection) holds one
readers-writer lock over the index and its label map, so a search takes one lock
(docs/architecture.md); no index kind locks again inside. Standalone users (the benchmarks,
the tests) either stay on one thread or hold such a lock themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from curacache.index.params import Param
from curacache.index.rwlock import RWLock

RAW_METRICS = ("ip", "l2")


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Row i holds query i's hits, best first; unused slots have label -1.

    `scores` are raw: inner products for "ip", squared distances for "l2".
    """

    labels: np.ndarray  # int64 (nq, k)
    scores: np.ndarray  # float32 (nq, k)


@runtime_checkable
class Index(Protocol):
    kind: str
    dim: int
    metric: str

    def add(self, labels: np.ndarray, vectors: np.ndarray, access: Sequence[Sequence[str]]) -> None:
        """Insert new labels; `access[i]` lists the tenants that may see `labels[i]`."""

    def grant(self, labels: np.ndarray, tenant: str) -> None:
        """Let `tenant` see these (present) labels; labels it already sees are skipped."""

    def revoke(self, labels: np.ndarray, tenant: str) -> None:
        """Stop `tenant` seeing these labels; labels it does not see are skipped."""

    def remove(self, labels: np.ndarray) -> None:
        """Forget these labels for every tenant; absent labels are skipped."""

    def search(
        self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]
    ) -> SearchResult:
        """Top-k among the labels `tenant` can see, for each row of `queries` (nq, dim)."""

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held by the index, by component (e.g. vectors, ids, tree, tenant lists)."""

    def snapshot(self) -> bytes | None:
        """A serialised state to restore from without retraining, or None if not worth it."""

    def restore(self, data: bytes) -> None: ...


@runtime_checkable
class Retrainable(Protocol):
    """An index whose structure is learned from the data and goes stale as the data grows."""

    def retrain_due(self) -> bool:
        """True when the data has changed enough that `retrain` would pay."""

    def retrain(self, lock: RWLock) -> bool:
        """Re-learn the structure; `lock` is the one its owner guards it with: taken only
        around the steps that touch the index, so searches go on meanwhile. True if installed."""


class IndexKind(Protocol):
    """A registered index kind: validates its parameters and builds empty indexes."""

    name: str
    build_params: Mapping[str, Param]  # accepted at create (see params.resolve_params)
    search_params: Mapping[str, Param]  # accepted per search
    # One search's work is bounded whatever the collection's size (Curator, HNSW; not flat):
    # the server may then run it on the event loop instead of hopping to a thread.
    bounded_search: bool

    def create(self, *, dim: int, metric: str, params: Mapping[str, float]) -> Index: ...
