"""`hnsw`: PT-HNSW — one hnswlib graph per tenant, the fast, memory-hungry baseline.

Layout:

- a global label -> vector matrix: the label is the row (labels are dense, allocated by the
  caller with free-list reuse), capacity doubles; `grant` copies a row from it into the
  grantee's graph, so sharing needs no caller-side vector.
- per tenant, an hnswlib index holding its own COPY of every vector the tenant sees (a vector
  shared with T tenants is held T + 1 times), the set of labels live in it, and the set of
  labels marked deleted in it.

Writes: revoke/remove `mark_deleted` the label in the tenant's graph; a later insert takes a
deleted slot over (`allow_replace_deleted` / `replace_deleted=True`), and a label that is
still marked deleted in the graph is revived in place (`unmark_deleted`, plus an in-place
update when it was removed and re-added with another vector) — adding it with
`replace_deleted=True` could leave two slots with one label, corrupting hnswlib's label map.
Full graphs double (`resize_index`); a graph whose live labels drop to zero is freed, and one
that is more than 3/4 deleted (and large) is rebuilt from the global matrix.

Search: ef = max(ef, k), k_eff = min(k, live). hnswlib raises RuntimeError when it reaches
fewer than k_eff live elements; we retry with a larger ef, then search the tenant's live
vectors exactly. A graph holds only the tenant's vectors and hnswlib skips deleted ones, so
no result is invisible to the tenant. Scores are raw: hnswlib "ip" returns 1 - ip (converted
back), "l2" the squared distance.

Concurrency: as the Index port says, the owner's readers-writer lock is the only one: searches
call `knn_query` (GIL released, num_threads=1: the server parallelises across requests) under
its read side; writes run under its write side, since hnswlib is not safe for concurrent
insert + query. hnswlib keeps ef in the index, so two
concurrent searches of one tenant with different ef may run with each other's ef (a recall
difference only, never a visibility one).

Memory: hnswlib exposes no allocation size; `memory_bytes()` estimates it (see `_graph_bytes`).
Snapshots: none — a rebuild from the store costs one insert per (vector, tenant), and a
serialised graph per tenant would be as large as the index itself.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import faiss
import hnswlib
import numpy as np

from curacache.index.base import RAW_METRICS, SearchResult
from curacache.index.params import Param, resolve_params

_MIN_CAP = 16
_SEED = 100  # fixed graph-level seed: reproducible graphs
_BULK = (
    512  # inserts at least this large use several hnswlib threads (the owner holds the write lock)
)
_BULK_THREADS = 4
_REBUILD_MIN = 1024  # graphs smaller than this are never rebuilt to drop deleted slots
_EF_DEFAULT = 64
# hnswlib fixed costs (x86-64 Linux): sizeof(std::mutex); 65536 striped label-op mutexes per
# index (~2.6 MB even when empty — measured by RSS); an unordered_map node + bucket per label.
_MUTEX = 40
_LABEL_LOCKS = 65536
_LOOKUP_ENTRY = 40
_DICT_ENTRY_BYTES = 100  # CPython dict/set slot plus a boxed int
_SET_BYTES = sys.getsizeof(set())


def _grown(cap: int, need: int) -> int:
    cap = max(cap, _MIN_CAP)
    while cap < need:
        cap *= 2
    return cap


class _Graph:
    """One tenant's hnswlib index plus which labels are live / marked deleted in it."""

    __slots__ = ("dead", "idx", "live", "n_dead")

    def __init__(self, space: str, dim: int, cap: int, m: int, ef_construction: int) -> None:
        self.idx = hnswlib.Index(space=space, dim=dim)
        self.idx.init_index(
            max_elements=cap,
            ef_construction=ef_construction,
            M=m,
            random_seed=_SEED,
            allow_replace_deleted=True,
        )
        self.live: set[int] = set()
        # Labels marked deleted, possibly stale: a replacing insert may have taken the slot over.
        self.dead: set[int] = set()
        self.n_dead = 0  # exact number of deleted slots (what `replace_deleted` can reuse)

    def insert(self, keys: list[int], vectors: np.ndarray) -> None:
        """Make `keys` live (caller guarantees none is live yet)."""
        idx, fresh = self.idx, []
        for i, label in enumerate(keys):
            self.live.add(label)
            if label in self.dead:
                self.dead.discard(label)
                try:
                    idx.unmark_deleted(label)
                except RuntimeError:  # its slot was reused by another label
                    fresh.append(i)
                    continue
                self.n_dead -= 1
                if not np.array_equal(idx.get_items([label])[0], vectors[i]):
                    idx.add_items(vectors[i : i + 1], [label], num_threads=1)  # in-place update
            else:
                fresh.append(i)
        if not fresh:
            return
        m = len(fresh)
        reuse = min(m, self.n_dead)
        need = idx.get_current_count() + m - reuse
        if need > idx.get_max_elements():
            idx.resize_index(_grown(idx.get_max_elements(), need))
        threads = _BULK_THREADS if m >= _BULK else 1
        idx.add_items(
            vectors[fresh],
            np.asarray(keys, dtype=np.int64)[fresh],
            num_threads=threads,
            replace_deleted=True,
        )
        self.n_dead -= reuse
        if len(self.dead) > 2 * self.n_dead + _REBUILD_MIN:  # forget labels whose slot was taken
            self.dead &= set(self.idx.get_ids_list())

    def delete(self, label: int) -> None:
        self.idx.mark_deleted(label)
        self.live.discard(label)
        self.dead.add(label)
        self.n_dead += 1

    def wants_rebuild(self) -> bool:
        return self.n_dead > 3 * len(self.live) and self.idx.get_current_count() >= _REBUILD_MIN


class HnswIndex:
    """Per-tenant HNSW graphs over copies of the tenant's vectors."""

    kind = "hnsw"

    def __init__(self, *, dim: int, metric: str, m: int = 16, ef_construction: int = 200) -> None:
        if metric not in RAW_METRICS:
            raise ValueError(f"metric must be one of {RAW_METRICS}, got {metric!r}")
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim, self.metric = dim, metric
        self.m, self.ef_construction = m, ef_construction
        self._faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        self._pad = np.float32(-np.inf if metric == "ip" else np.inf)
        self._mat = np.empty((0, dim), dtype=np.float32)  # row = label
        self._access: dict[int, set[str]] = {}  # label -> tenants that see it
        self._graphs: dict[str, _Graph] = {}

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
        if min(keys) < 0:
            raise ValueError("add: labels must be non-negative")
        top = max(keys) + 1
        if top > len(self._mat):
            mat = np.empty((_grown(len(self._mat), top), self.dim), dtype=np.float32)
            mat[: len(self._mat)] = self._mat
            self._mat = mat
        self._mat[keys] = vectors
        by_tenant: dict[str, list[int]] = {}
        for label, tenants in zip(keys, access):
            seen = self._access[label] = set(tenants)
            for tenant in seen:
                by_tenant.setdefault(tenant, []).append(label)
        for tenant, new in by_tenant.items():
            self._graph(tenant, len(new)).insert(new, self._mat[new])

    def grant(self, labels: np.ndarray, tenant: str) -> None:
        """Copy present labels' vectors into `tenant`'s graph; absent/already-seen skipped."""
        assert labels.ndim == 1
        new: list[int] = []
        for label in dict.fromkeys(labels.tolist()):  # dedupe, keep order
            seen = self._access.get(label)
            if seen is not None and tenant not in seen:
                seen.add(tenant)
                new.append(label)
        if new:
            self._graph(tenant, len(new)).insert(new, self._mat[new])

    def revoke(self, labels: np.ndarray, tenant: str) -> None:
        """Mark labels deleted in `tenant`'s graph; the vector stays (re-grantable)."""
        assert labels.ndim == 1
        if tenant not in self._graphs:
            return
        for label in labels.tolist():
            seen = self._access.get(label)
            if seen is not None and tenant in seen:
                seen.discard(tenant)
                self._graphs[tenant].delete(label)
        self._tidy(tenant)

    def remove(self, labels: np.ndarray) -> None:
        """Forget labels in every graph; absent ones skipped."""
        assert labels.ndim == 1
        touched: set[str] = set()
        for label in labels.tolist():
            seen = self._access.pop(label, None)
            for tenant in seen or ():
                self._graphs[tenant].delete(label)
                touched.add(tenant)
        for tenant in touched:
            self._tidy(tenant)
        if not self._access:  # release the emptied containers
            self._access, self._graphs = {}, {}
            self._mat = np.empty((0, self.dim), dtype=np.float32)

    def _graph(self, tenant: str, adding: int) -> _Graph:
        g = self._graphs.get(tenant)
        if g is None:
            space = "ip" if self.metric == "ip" else "l2"
            g = _Graph(space, self.dim, _grown(_MIN_CAP, adding), self.m, self.ef_construction)
            self._graphs[tenant] = g
        return g

    def _tidy(self, tenant: str) -> None:
        """Free an emptied graph; rebuild one that is mostly deleted slots."""
        g = self._graphs[tenant]
        if not g.live:
            del self._graphs[tenant]
        elif g.wants_rebuild():
            keys = sorted(g.live)
            del self._graphs[tenant]
            self._graph(tenant, len(keys)).insert(keys, self._mat[keys])

    # -- reads -------------------------------------------------------------------------------

    def search(
        self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]
    ) -> SearchResult:
        """Approximate top-k over `tenant`'s graph; short results padded with -1 and ∓inf."""
        assert queries.ndim == 2 and queries.shape[1] == self.dim and k >= 1
        nq = queries.shape[0]
        out_labels = np.full((nq, k), -1, dtype=np.int64)
        out_scores = np.full((nq, k), self._pad, dtype=np.float32)
        if nq == 0:
            return SearchResult(out_labels, out_scores)
        q = np.ascontiguousarray(queries, dtype=np.float32)
        ef = int(params.get("ef", _EF_DEFAULT))
        g = self._graphs.get(tenant)
        if g is None or not g.live:
            return SearchResult(out_labels, out_scores)
        k_eff = min(k, len(g.live))
        labels, scores = self._knn(g, q, k_eff, max(ef, k_eff))
        out_labels[:, :k_eff] = labels
        out_scores[:, :k_eff] = scores
        return SearchResult(out_labels, out_scores)

    def _knn(self, g: _Graph, q: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        idx = g.idx
        for attempt_ef in (ef, max(4 * ef, 256)):
            if attempt_ef > ef and ef >= idx.get_current_count():
                break  # a larger ef explores nothing more
            if idx.ef != attempt_ef:
                idx.set_ef(attempt_ef)
            try:
                labels, dists = idx.knn_query(q, k=k, num_threads=1)
            except RuntimeError:  # fewer than k live elements reached (many deleted)
                continue
            scores = 1.0 - dists if self.metric == "ip" else dists
            return labels.astype(np.int64), scores.astype(np.float32, copy=False)
        return self._exact(g, q, k)

    def _exact(self, g: _Graph, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.fromiter(g.live, dtype=np.int64, count=len(g.live))
        scores, rows = faiss.knn(q, self._mat[labels], k, metric=self._faiss_metric)
        return labels[rows], scores

    # -- introspection -----------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of labels held (visible to any tenant or to none)."""
        return len(self._access)

    def tenant_size(self, tenant: str) -> int:
        """Number of labels `tenant` sees."""
        g = self._graphs.get(tenant)
        return 0 if g is None else len(g.live)

    def _graph_bytes(self, g: _Graph) -> tuple[int, int]:
        """(vector copies, everything else) for one hnswlib index — an estimate.

        hnswlib allocates, for `cap` = max_elements: a level-0 block of cap * (dim*4 vector +
        (2M*4 + 4) links + 8 label), per slot an 8-byte upper-links pointer, a 4-byte level and
        a mutex, a visited list of cap * 2 bytes (one per concurrent searcher; we count one);
        per element a label-map entry and, at upper levels, (M*4 + 4) bytes per level with an
        expected 1/(M-1) levels above 0; plus 65536 label-op mutexes per index.
        """
        cap, count, m = g.idx.get_max_elements(), g.idx.get_current_count(), self.m
        vectors = cap * self.dim * 4
        per_slot = (2 * m * 4 + 4) + 8 + 8 + 4 + _MUTEX + 2
        per_elem = _LOOKUP_ENTRY + (m * 4 + 4) / max(m - 1, 1)
        return vectors, int(cap * per_slot + count * per_elem + _LABEL_LOCKS * _MUTEX)

    def memory_bytes(self) -> dict[str, int]:
        """Global matrix, per-tenant vector copies, graph structure (estimate), Python maps."""
        tenant_vectors = graph = entries = 0
        for g in self._graphs.values():
            v, rest = self._graph_bytes(g)
            tenant_vectors += v
            graph += rest
            entries += len(g.live) + len(g.dead)
        maps = (
            sys.getsizeof(self._access)
            + sys.getsizeof(self._graphs)
            + len(self._access) * (_SET_BYTES + _DICT_ENTRY_BYTES)
            + entries * _DICT_ENTRY_BYTES
        )
        return {
            "vectors": self._mat.nbytes,
            "tenant_vectors": tenant_vectors,
            "graph": graph,
            "maps": maps,
        }

    def snapshot(self) -> bytes | None:
        """None: rebuild from the store (one insert per (vector, tenant)); see module doc."""
        return None

    def restore(self, data: bytes) -> None:
        raise NotImplementedError("hnsw keeps no snapshots; rebuild it from the store")


class HnswKind:
    """The `hnsw` IndexKind: build params M, ef_construction; search param ef."""

    name = "hnsw"
    bounded_search = True  # ef-bounded graph walk
    build_params: Mapping[str, Param] = MappingProxyType(
        {
            "M": Param(16, 4, 128, integer=True, doc="graph degree (level 0 holds 2M links)"),
            "ef_construction": Param(200, 8, 4096, integer=True, doc="candidate list at insert"),
        }
    )
    search_params: Mapping[str, Param] = MappingProxyType(
        {
            "ef": Param(_EF_DEFAULT, 1, 32768, integer=True, doc="search candidate list (>= k)"),
        }
    )

    def create(self, *, dim: int, metric: str, params: Mapping[str, float]) -> HnswIndex:
        p = resolve_params(self.build_params, params, field="index_params")
        return HnswIndex(
            dim=dim, metric=metric, m=int(p["M"]), ef_construction=int(p["ef_construction"])
        )


HNSW = HnswKind()
