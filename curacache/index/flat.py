"""`flat`: exact per-tenant search with FAISS — the baseline and the ground-truth oracle.

Layout (why: exactness with one dense BLAS call per search, no per-vector access checks):

- a global label -> vector store: one contiguous float32 matrix, a free list and a
  label -> slot dict. It is what `grant` copies from, so sharing needs no caller-side vector.
- per tenant, a contiguous float32 matrix of exactly the vectors that tenant sees, a parallel
  int64 labels array and a label -> row dict; capacity doubles on growth and halves when a
  quarter full; removal is swap-with-last (O(dim)).

Memory: a vector shared with T tenants is held T + 1 times (store + one row per tenant) —
this is the per-tenant baseline Curator is measured against; see `memory_bytes()`.

Concurrency: as the Index port says, the owner's readers-writer lock is the only one: searches
run FAISS (which releases the GIL) in parallel under its read side; add/grant/revoke/remove
run under its write side, so no search sees a half-applied write. GPU FAISS is used when present (`faiss.get_num_gpus() > 0`), CPU FAISS otherwise.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import faiss
import numpy as np

from curacache.index.base import RAW_METRICS, SearchResult
from curacache.index.params import Param, resolve_params

_MIN_CAP = 8
# Below this many tenant rows a GPU round trip (host->device copy of the rows) loses to CPU.
_GPU_MIN_ROWS = 4096
# Rough CPython costs for `memory_bytes()["maps"]`: a dict slot plus a boxed int key/value,
# and an empty-ish set object per label (its access list).
_DICT_ENTRY_BYTES = 100
_SET_BYTES = sys.getsizeof(set())


def _grown(cap: int, need: int) -> int:
    cap = max(cap, _MIN_CAP)
    while cap < need:
        cap *= 2
    return cap


class _Rows:
    """One tenant's vectors: dense (n, dim) prefix of a (cap, dim) matrix + labels + row map."""

    __slots__ = ("labels", "mat", "n", "row_of")

    def __init__(self, dim: int) -> None:
        self.mat = np.empty((0, dim), dtype=np.float32)
        self.labels = np.empty(0, dtype=np.int64)
        self.row_of: dict[int, int] = {}
        self.n = 0

    def _resize(self, cap: int) -> None:
        mat = np.empty((cap, self.mat.shape[1]), dtype=np.float32)
        labels = np.empty(cap, dtype=np.int64)
        mat[: self.n] = self.mat[: self.n]
        labels[: self.n] = self.labels[: self.n]
        self.mat, self.labels = mat, labels

    def append(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows for labels the tenant does not see yet (caller guarantees it)."""
        m = len(labels)
        if m == 0:
            return
        n = self.n
        if n + m > len(self.labels):
            self._resize(_grown(len(self.labels), n + m))
        self.mat[n : n + m] = vectors
        self.labels[n : n + m] = labels
        for i, label in enumerate(labels.tolist()):
            self.row_of[label] = n + i
        self.n = n + m

    def discard(self, label: int) -> None:
        """Drop `label`'s row by moving the last row into its place."""
        row = self.row_of.pop(label, None)
        if row is None:
            return
        last = self.n - 1
        if row != last:
            self.mat[row] = self.mat[last]
            moved = int(self.labels[last])
            self.labels[row] = moved
            self.row_of[moved] = row
        self.n = last
        cap = len(self.labels)
        if cap > _MIN_CAP and self.n <= cap // 4:
            self._resize(max(_MIN_CAP, cap // 2))

    def nbytes(self) -> tuple[int, int]:
        return self.mat.nbytes, self.labels.nbytes


class _Store:
    """Global label -> vector store: contiguous matrix, free list of slots, label -> slot."""

    __slots__ = ("free", "mat", "slot_of", "top")

    def __init__(self, dim: int) -> None:
        self._reset(dim)

    def _reset(self, dim: int) -> None:
        self.mat = np.empty((0, dim), dtype=np.float32)
        self.slot_of: dict[int, int] = {}
        self.free: list[int] = []  # vacated slots below `top`, reused LIFO
        self.top = 0  # slots [0, top) have been handed out at least once

    def put(self, labels: list[int], vectors: np.ndarray) -> None:
        m = len(labels)
        reuse = min(m, len(self.free))
        slots = [self.free.pop() for _ in range(reuse)]
        fresh = m - reuse
        if self.top + fresh > len(self.mat):
            cap = _grown(len(self.mat), self.top + fresh)
            mat = np.empty((cap, self.mat.shape[1]), dtype=np.float32)
            mat[: self.top] = self.mat[: self.top]
            self.mat = mat
        slots.extend(range(self.top, self.top + fresh))
        self.top += fresh
        self.mat[slots] = vectors
        for label, slot in zip(labels, slots):
            self.slot_of[label] = slot

    def get(self, labels: list[int]) -> np.ndarray:
        return self.mat[[self.slot_of[label] for label in labels]]

    def drop(self, label: int) -> None:
        self.free.append(self.slot_of.pop(label))
        live = len(self.slot_of)
        if live == 0:  # fresh containers: dicts never give back their tables otherwise
            self._reset(self.mat.shape[1])
        elif len(self.mat) > _MIN_CAP and live <= len(self.mat) // 4:
            self._compact(max(_MIN_CAP, len(self.mat) // 2))

    def _compact(self, cap: int) -> None:
        labels = list(self.slot_of)
        mat = np.empty((cap, self.mat.shape[1]), dtype=np.float32)
        mat[: len(labels)] = self.mat[[self.slot_of[label] for label in labels]]
        self.mat = mat
        self.slot_of = {label: i for i, label in enumerate(labels)}
        self.free = []
        self.top = len(labels)


class FlatIndex:
    """Exact multi-tenant search; one dense FAISS brute-force call per (tenant, query batch)."""

    kind = "flat"

    def __init__(self, *, dim: int, metric: str, use_gpu: bool | None = None) -> None:
        if metric not in RAW_METRICS:
            raise ValueError(f"metric must be one of {RAW_METRICS}, got {metric!r}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.metric = metric
        self._faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        self._pad = np.float32(-np.inf if metric == "ip" else np.inf)
        self._store = _Store(dim)
        self._access: dict[int, set[str]] = {}  # label -> tenants that see it
        self._tenants: dict[str, _Rows] = {}
        if use_gpu is None:
            use_gpu = faiss.get_num_gpus() > 0
        # StandardGpuResources is not thread-safe: one per index, calls serialised by a mutex.
        self._gpu_res: Any = faiss.StandardGpuResources() if use_gpu else None
        self._gpu_mutex = threading.Lock()

    @property
    def uses_gpu(self) -> bool:
        return self._gpu_res is not None

    # -- writes (under the owner's write lock) -----------------------------------------------

    def add(self, labels: np.ndarray, vectors: np.ndarray, access: Sequence[Sequence[str]]) -> None:
        """Insert new labels; an already-present (or repeated) label raises ValueError."""
        n = len(labels)
        assert labels.ndim == 1 and vectors.shape == (n, self.dim) and len(access) == n
        if n == 0:
            return
        keys = labels.tolist()
        if len(set(keys)) != n:
            raise ValueError("add: duplicate labels in one batch")
        present = [label for label in keys if label in self._access]
        if present:
            raise ValueError(f"add: labels already present: {present[:10]}")
        self._store.put(keys, vectors)
        by_tenant: dict[str, list[int]] = {}
        for i, (label, tenants) in enumerate(zip(keys, access)):
            seen = set(tenants)
            self._access[label] = seen
            for tenant in seen:
                by_tenant.setdefault(tenant, []).append(i)
        for tenant, idx in by_tenant.items():
            rows = self._tenants.get(tenant)
            if rows is None:
                rows = self._tenants[tenant] = _Rows(self.dim)
            rows.append(labels[idx], vectors[idx])

    def grant(self, labels: np.ndarray, tenant: str) -> None:
        """Copy present labels' vectors into `tenant`'s matrix; absent/already-seen skipped."""
        assert labels.ndim == 1
        new: list[int] = []
        for label in dict.fromkeys(labels.tolist()):  # dedupe, keep order
            seen = self._access.get(label)
            if seen is not None and tenant not in seen:
                seen.add(tenant)
                new.append(label)
        if not new:
            return
        rows = self._tenants.get(tenant)
        if rows is None:
            rows = self._tenants[tenant] = _Rows(self.dim)
        rows.append(np.asarray(new, dtype=np.int64), self._store.get(new))

    def revoke(self, labels: np.ndarray, tenant: str) -> None:
        """Drop labels from `tenant`'s matrix; the vector stays in the store (re-grantable)."""
        assert labels.ndim == 1
        rows = self._tenants.get(tenant)
        if rows is None:
            return
        for label in labels.tolist():
            seen = self._access.get(label)
            if seen is not None and tenant in seen:
                seen.discard(tenant)
                rows.discard(label)
        if rows.n == 0:
            del self._tenants[tenant]

    def remove(self, labels: np.ndarray) -> None:
        """Forget labels everywhere (store slot goes to the free list); absent ones skipped."""
        assert labels.ndim == 1
        for label in labels.tolist():
            seen = self._access.pop(label, None)
            if seen is None:
                continue
            for tenant in seen:
                rows = self._tenants[tenant]
                rows.discard(label)
                if rows.n == 0:
                    del self._tenants[tenant]
            self._store.drop(label)
        if not self._access:
            self._access = {}  # release the emptied dict's table
            self._tenants = {}

    # -- reads -------------------------------------------------------------------------------

    def search(
        self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]
    ) -> SearchResult:
        """Exact top-k over `tenant`'s rows; short results padded with label -1 and ∓inf."""
        assert queries.ndim == 2 and queries.shape[1] == self.dim and k >= 1
        nq = queries.shape[0]
        out_labels = np.full((nq, k), -1, dtype=np.int64)
        out_scores = np.full((nq, k), self._pad, dtype=np.float32)
        if nq == 0:
            return SearchResult(out_labels, out_scores)
        rows = self._tenants.get(tenant)
        if rows is None or rows.n == 0:
            return SearchResult(out_labels, out_scores)
        n = rows.n
        k_eff = min(k, n)
        scores, rows_found = self._knn(queries, rows.mat[:n], k_eff)
        hit = rows_found >= 0  # always true for finite inputs and k_eff <= n; kept for safety
        out_labels[:, :k_eff] = np.where(hit, rows.labels[np.where(hit, rows_found, 0)], -1)
        out_scores[:, :k_eff] = np.where(hit, scores, self._pad)
        return SearchResult(out_labels, out_scores)

    def _knn(self, xq: np.ndarray, xb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu_res is not None and len(xb) >= _GPU_MIN_ROWS:
            with self._gpu_mutex:
                return faiss.knn_gpu(self._gpu_res, xq, xb, k, metric=self._faiss_metric)
        return faiss.knn(xq, xb, k, metric=self._faiss_metric)

    # -- introspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of labels held (visible to any tenant or to none)."""
        return len(self._access)

    def tenant_size(self, tenant: str) -> int:
        """Number of labels `tenant` sees."""
        rows = self._tenants.get(tenant)
        return 0 if rows is None else rows.n

    def memory_bytes(self) -> dict[str, int]:
        """Allocated bytes: store matrix, per-tenant matrices and labels, and a rough map cost."""
        tenant_vectors = tenant_labels = 0
        row_entries = 0
        for rows in self._tenants.values():
            v, lab = rows.nbytes()
            tenant_vectors += v
            tenant_labels += lab
            row_entries += len(rows.row_of)
        store = self._store
        maps = (
            sys.getsizeof(self._access)
            + sys.getsizeof(self._tenants)
            + sys.getsizeof(store.slot_of)
            + sys.getsizeof(store.free)
            + len(self._access) * (_SET_BYTES + _DICT_ENTRY_BYTES)
            + (len(store.slot_of) + row_entries) * _DICT_ENTRY_BYTES
        )
        return {
            "vectors": store.mat.nbytes,
            "tenant_vectors": tenant_vectors,
            "labels": tenant_labels,
            "maps": maps,
        }

    def snapshot(self) -> bytes | None:
        """None: rebuilding from the store is a copy per vector, cheaper than a serialisation."""
        return None

    def restore(self, data: bytes) -> None:
        raise NotImplementedError("flat keeps no snapshots; rebuild it from the store")


class FlatKind:
    """The `flat` IndexKind: no build or search parameters."""

    name = "flat"
    bounded_search = False  # scans all the tenant's vectors
    build_params: Mapping[str, Param] = MappingProxyType({})
    search_params: Mapping[str, Param] = MappingProxyType({})

    def __init__(self, *, use_gpu: bool | None = None) -> None:
        self.use_gpu = use_gpu

    def create(self, *, dim: int, metric: str, params: Mapping[str, float]) -> FlatIndex:
        resolve_params(self.build_params, params, field="index_params")
        return FlatIndex(dim=dim, metric=metric, use_gpu=self.use_gpu)


FLAT = FlatKind()
