"""CuratorIndex: multi-tenant vector search over one shared clustering tree (DESIGN §4).

State (why: one copy of every vector, per (vector, tenant) one id in one list):

- `vectors` (cap, dim) float32, row = label (labels are dense, caller-allocated, < 2**31),
  `norms` (cap,) squared norms (metric "l2" only: inner-product scores never read them, so an
  "ip" index keeps an empty array instead of 4 bytes per label), `leaf` (cap,) int32 GCT
  leaf per label (-1 = absent); the label's root->leaf path is `tree.ancestors[leaf]` (4
  bytes per label, not 4·(height + 1)).
- `members`: the GCT leaves' member slots (`curator.members`), which leaf bitmaps index.
- per tenant (string -> small int, ints reused): a `TenantTree` (counts, shortlists).

No label -> tenants map: whether tenant t sees label x is answered by t's one list on x's
path (`TenantTree.has`, compiled), so grant and revoke recognise no-ops without one, and
remove() asks every tenant, in one compiled call over all of them (`curator.directory`). Why:
the map cost 2 bytes per (label, tenant) pair plus 8 per label, 2.3 MiB of the 8.9 MiB index
on the 300-subscriber arXiv bench (share degree 11.6); the price is a remove() that does
O(tenants) work instead of O(share degree): ~0.1-0.2 µs per tenant, mostly cache misses on
each tenant's table (measured: ~50 µs per removed label at 300 tenants, of a ~110 µs delete).

Symbols: τ = `max_sl_size` (split threshold of a shortlist), b0 = `branching` (root fan-out of
the GCT), γ1 = `gamma1` (expansion factor: stop the traversal at γ1·γ2·k collected ids),
γ2 = `gamma2` (recall knob: score the nearest buckets up to γ2·k ids exactly).

Lazy training: until the collection first holds `train_size` vectors the GCT is the root
alone, so every tenant's ids sit in its root shortlist and search is exact. When the count
first reaches `train_size`, the add() that reached it trains the tree synchronously (that
add returns once the tree is installed; k-means runs outside the lock, so searches continue
meanwhile) and installs it under the write lock: every label re-routed, every tenant's
structure rebuilt in its canonical form — the result of re-inserting everything through the
grant path, built in bulk (`TenantTree.build`). `retrain()` does the same on demand and may
be called from a background thread; `retrain_due()` says when the collection has grown
RETRAIN_GROWTH× since the last training, and the caller schedules it.

Routing (measured deviation from "nearest child at every level"): paths come from a beam
search (width 4) over the levels, and training moves centroids to the mean of what the
router sends them (2 rounds); see `curator.tree`. On arXiv (73.7k × 384, 142 category
tenants, tree trained on the first 20k) recall@10 at the default γ rises from 0.88 to 0.90
at equal search cost.

Concurrency: searches take the read side of an RWLock (the numba kernels release the GIL,
so searches run in parallel); writes take the write side, so no search sees a half-applied
split or merge. The caller serialises writers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from curator import _kernels, _persist
from curator.directory import TenantDirectory
from curator.members import LeafMembers
from curator.rwlock import RWLock
from curator.tenants import MIN_CAP as _MIN_LIST_CAP
from curator.tenants import TenantTree
from curator.tree import Tree, train_tree

METRICS = ("ip", "l2")
MAX_LABEL = 2**31 - 1
# Largest sample the GCT is trained on; FAISS subsamples per level anyway (256 per centroid).
MAX_TRAIN_SAMPLE = 200_000
# Retrain once the collection has grown this much since the last training: centroids fitted
# on a quarter of the data still route well, and k-means cost stays amortised O(1) per insert.
RETRAIN_GROWTH = 4
_MIN_CAP = 8
_INT64 = np.dtype(np.int64)


class CuratorIndex:
    """Curator: per-tenant sub-trees (shortlists) of one shared GCT; see the module docstring."""

    kind = "curator"

    def __init__(
        self,
        *,
        dim: int,
        metric: str,
        max_sl_size: int = 256,
        branching: int = 32,
        max_depth: int = 8,
        train_size: int = 20_000,
        use_gpu: bool | None = None,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if dim <= 0 or max_sl_size < 1 or branching < 2 or max_depth < 1 or train_size < 1:
            raise ValueError("dim, max_sl_size, branching, max_depth and train_size must be positive")
        self.dim = dim
        self.metric = metric
        self.max_sl_size = int(max_sl_size)  # τ
        self.branching = int(branching)  # b0
        self.max_depth = int(max_depth)
        self.train_size = int(train_size)
        self.use_gpu = use_gpu
        self._lock = RWLock()
        self._grant_pair = _kernels.grant_pair_entry()  # see `grant`
        self._train_mutex = threading.Lock()  # one (re)training at a time
        self._pad = np.float32(-np.inf if metric == "ip" else np.inf)
        self._tree = Tree.root_only(dim)
        self._train_at = self.train_size  # next live count at which to try training
        self._reset_rows()
        self._reset_tenants()

    # -- storage helpers (write lock held) -----------------------------------------------------

    def _reset_rows(self) -> None:
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._norms = np.empty(0, dtype=np.float32)
        self._leaf = np.empty(0, dtype=np.int32)  # -1 = absent
        self._members = LeafMembers.build(self._leaf, self._tree.child_count)
        self._n = 0

    def _reset_tenants(self) -> None:
        self._tenants = TenantDirectory()

    def _grown(self, hi: int) -> int:
        """Label capacity for labels < hi: 1.25x the current one (appends stay amortised O(1))
        or exactly hi when a batch jumps further. Why 1.25x, not 2x or 1.5x: the per-label
        arrays (vectors, paths, then also a label -> tenants map) carry the spare, and on the 73k-paper bench
        1.5x left 93k rows (index memory beyond the raw vectors 3.02 -> 2.84 MiB, the vector
        matrix 137 -> 114 MiB with 1.25x); the price is more copying while a collection grows
        (each row is copied ~4 times instead of ~2)."""
        cap = len(self._leaf)
        return max(_MIN_CAP, hi, cap + cap // 4)

    def _resize(self, cap: int) -> None:
        keep = min(cap, len(self._leaf))
        vec = np.empty((cap, self.dim), dtype=np.float32)
        vec[:keep] = self._vectors[:keep]
        norms = np.zeros(cap if self.metric == "l2" else 0, dtype=np.float32)
        norms[: min(keep, norms.shape[0])] = self._norms[: min(keep, norms.shape[0])]
        leaf = np.full(cap, -1, dtype=np.int32)
        leaf[:keep] = self._leaf[:keep]
        self._vectors, self._norms, self._leaf = vec, norms, leaf

    def _tenant(self, name: str, create: bool) -> int:
        t = self._tenants.ids.get(name)
        if t is None and create:
            t = self._tenants.add(name, TenantTree(self._members))
        return -1 if t is None else t

    def _changed(self, t: int) -> None:
        """Tenant t's structure may have changed: drop it if empty, else keep the directory's
        compiled view of its arrays current."""
        tt = self._tenants.trees[t]
        if tt is not None and tt.size == 0:
            self._tenants.drop(t)
        else:
            self._tenants.sync(t)

    def _grant_one(self, label: int, t: int) -> None:
        tt = self._tenants.trees[t]
        assert tt is not None
        tt.grant(label, self._tree, self._leaf, self.max_sl_size)
        self._tenants.sync(t)

    def _revoke_one(self, label: int, t: int) -> None:
        tt = self._tenants.trees[t]
        assert tt is not None
        tt.revoke(label, self._tree, self._leaf, self.max_sl_size)
        self._changed(t)

    def _seen_by(self, labels: list[int]) -> list[list[int]]:
        """For each label, the tenant ints that see it (one compiled call over all tenants)."""
        return self._tenants.seen_by(labels, self._tree.ancestors, self._leaf, self._members)

    def _live(self, label: int) -> bool:
        return 0 <= label < self._leaf.shape[0] and self._leaf.item(label) >= 0

    @staticmethod
    def _distinct(labels: np.ndarray) -> list[int]:
        """Labels as Python ints, first occurrences only (a single label skips the dict)."""
        if type(labels) is np.ndarray and labels.ndim == 1 and labels.dtype.kind == "i":
            seq = labels.tolist()
        else:
            seq = np.asarray(labels, dtype=np.int64).ravel().tolist()
        return seq if len(seq) < 2 else list(dict.fromkeys(seq))

    # -- writes ---------------------------------------------------------------------------------

    def add(self, labels: np.ndarray, vectors: np.ndarray, access: Sequence[Sequence[str]]) -> None:
        """Insert new labels; `access[i]` lists the tenants that see `labels[i]`.

        A label already present (or repeated in the batch) raises ValueError, and nothing is
        applied. May train the GCT when the live count first reaches `train_size`.
        """
        labels = np.asarray(labels, dtype=np.int64)
        n = labels.shape[0]
        if labels.ndim != 1 or len(access) != n:
            raise ValueError("add: labels must be 1-D with one access list per label")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (n, self.dim):
            raise ValueError(f"add: vectors must be ({n}, {self.dim})")
        if n == 0:
            return
        if labels.min() < 0 or labels.max() > MAX_LABEL:
            raise ValueError(f"add: labels must be in [0, {MAX_LABEL}]")
        if np.unique(labels).shape[0] != n:
            raise ValueError("add: duplicate labels in one batch")
        with self._lock.write():
            hi = int(labels.max()) + 1
            if hi > len(self._leaf):
                self._resize(self._grown(hi))
            present = labels[self._leaf[labels] >= 0]
            if present.size:
                raise ValueError(f"add: labels already present: {present[:10].tolist()}")
            self._vectors[labels] = vectors
            if self.metric == "l2":
                self._norms[labels] = np.einsum("ij,ij->i", vectors, vectors)
            self._leaf[labels] = leaves = self._tree.route_leaves(vectors)
            self._n += n
            if self._members.active:
                for label, at in zip(labels.tolist(), leaves.tolist()):
                    self._members.add(at, label)
            for label, tenants in zip(labels.tolist(), access):
                for t in dict.fromkeys(self._tenant(name, True) for name in tenants):
                    self._grant_one(label, t)
            due = self._n >= self._train_at and not self._tree.trained
        if due:
            self._train(force=False)

    def grant(self, labels: np.ndarray, tenant: str) -> None:
        """Let `tenant` see these labels (grant path); absent or already-seen labels are skipped.

        Kept lean for the common single-label call of an existing tenant (the service grants
        one cached entry at a time): one compiled call (`_kernels.grant_pair`) does the
        liveness and no-op checks and the tenant's common cases; splits, arena growth and new
        tenants take the general path (`_grant_general`).
        """
        if labels.__class__ is np.ndarray and labels.dtype is _INT64 and labels.size == 1:
            seq: Sequence[int] = (labels.item(0),)
        else:
            seq = self._distinct(labels)
        lock = self._lock
        lock.acquire_write()
        try:
            tenants = self._tenants
            t = tenants.ids.get(tenant)
            if t is None:
                self._grant_general(seq, tenant)
                return
            tt, mem, grant_pair = tenants.trees[t], self._members, self._grant_pair
            anc, leaf, tau = self._tree.ancestors, self._leaf, self.max_sl_size
            for label in seq:
                # tt's arrays are re-read per label: the general path may reallocate them
                if grant_pair(tt.table, tt.pool, tt.meta, anc, leaf, label, tau, _MIN_LIST_CAP, mem.blocks, mem.pool) >= 0:
                    self._grant_general((label,), tenant)  # nothing changed: step by step
        finally:
            lock.release_write()

    def _grant_general(self, seq: Sequence[int], tenant: str) -> None:
        """`grant` for any labels and tenant, step by step (write lock held)."""
        t = -1
        tt = None
        granted = False
        tree, leaf, tau = self._tree, self._leaf, self.max_sl_size
        for label in seq:
            if not self._live(label):
                continue
            if t < 0:
                t = self._tenant(tenant, True)
                tt = self._tenants.trees[t]
                assert tt is not None
            if tt.grant(label, tree, leaf, tau):
                granted = True
        if t >= 0:
            self._changed(t)  # a new tenant that got nothing is dropped again

    def revoke(self, labels: np.ndarray, tenant: str) -> None:
        """Stop `tenant` seeing these labels (remove from its list, merge upward); no-ops skipped."""
        seq = self._distinct(labels)
        with self._lock.write():
            t = self._tenant(tenant, False)
            if t < 0:
                return
            for label in seq:
                if self._live(label):
                    self._revoke_one(label, t)
                    if self._tenants.ids.get(tenant) != t:  # that was its last label
                        break

    def remove(self, labels: np.ndarray) -> None:
        """Forget labels: revoke for every tenant that sees them, free the rows; absent skipped."""
        seq = self._distinct(labels)
        with self._lock.write():
            seq = [label for label in seq if self._live(label)]
            for label, tenants in zip(seq, self._seen_by(seq)):
                for t in tenants:
                    self._revoke_one(label, t)
                if self._members.active:
                    self._members.remove(self._leaf.item(label), label)
                self._leaf[label] = -1
                self._n -= 1
            if self._n == 0:
                self._reset_rows()
            elif len(self._leaf) > _MIN_CAP and self._n <= len(self._leaf) // 4:  # else hi can't be
                hi = int(np.flatnonzero(self._leaf >= 0)[-1]) + 1
                if hi <= len(self._leaf) // 4:
                    self._resize(max(_MIN_CAP, hi + hi // 2))

    # -- training -------------------------------------------------------------------------------

    def retrain(self) -> bool:
        """Train a new GCT on (a sample of) the current vectors and install it.

        k-means runs without holding the index lock (searches and writes continue); the
        install (route every label, rebuild every tenant's canonical sub-tree) holds the
        write lock. Returns False if the data could not be split (tree stays as it is).
        """
        return self._train(force=True)

    def retrain_due(self) -> bool:
        """True once the live count has grown RETRAIN_GROWTH× since the tree was trained."""
        return self._tree.trained and self._n >= self._train_at

    def _train(self, *, force: bool) -> bool:
        with self._train_mutex:
            with self._lock.read():
                live = np.flatnonzero(self._leaf >= 0)
                if live.size == 0 or (not force and self._tree.trained):
                    return False
                if live.size > MAX_TRAIN_SAMPLE:
                    rng = np.random.default_rng(live.size)
                    live = np.sort(rng.choice(live, MAX_TRAIN_SAMPLE, replace=False))
                sample = self._vectors[live]
                n_live = self._n
            tree = train_tree(sample, branching=self.branching, max_depth=self.max_depth, use_gpu=self.use_gpu)
            with self._lock.write():
                if not tree.trained:
                    self._train_at = max(self._train_at, 2 * n_live)  # retry when it has doubled
                    return False
                self._install(tree)
                return True

    def _install(self, tree: Tree) -> None:
        """Route every present label through `tree` and rebuild all tenant structures."""
        seen = [(t, tt.export()[2]) for t, _, tt in self._tenants.live()]  # decoded by the old GCT
        self._tree = tree
        live = np.flatnonzero(self._leaf >= 0)
        self._train_at = RETRAIN_GROWTH * max(int(live.size), self.train_size)
        self._leaf[live] = tree.route_leaves(self._vectors[live])
        self._members = LeafMembers.build(self._leaf, tree.child_count)
        for t, ids in seen:
            self._tenants.replace(t, TenantTree.build(ids, tree, self._leaf, self.max_sl_size, self._members))

    # -- search ---------------------------------------------------------------------------------

    def search(
        self, tenant: str, queries: np.ndarray, k: int, gamma1: float = 2, gamma2: float = 128
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels (int64 (nq, k)) and raw scores (float32) among those `tenant` sees.

        Best-first over the tenant's sub-tree until γ1·γ2·k ids are collected; the nearest
        buckets up to γ2·k ids are scored exactly. Short rows are padded with -1 / ∓inf.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim or k < 1:
            raise ValueError(f"search: queries must be (nq, {self.dim}) and k >= 1")
        nq = queries.shape[0]
        out_labels = np.full((nq, k), -1, dtype=np.int64)
        out_scores = np.full((nq, k), self._pad, dtype=np.float32)
        collect = max(1, int(gamma1 * gamma2 * k))
        keep = max(1, int(gamma2 * k))
        with self._lock.read():
            tt = self.tenant_tree(tenant)
            if tt is None or nq == 0:
                return out_labels, out_scores
            tree = self._tree
            _kernels.search(
                queries, tree.codes, tree.lo, tree.step, tree.cnorm, tree.child_start, tree.child_count,
                tt.table, tt.meta, tt.pool, self._members.blocks, self._members.pool, self._vectors, self._norms,
                collect, keep, self.metric == "ip", out_labels, out_scores,
            )
        return out_labels, out_scores

    # -- introspection --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    @property
    def tree(self) -> Tree:
        """The current GCT (immutable; replaced by training)."""
        return self._tree

    @property
    def trained(self) -> bool:
        return self._tree.trained

    def labels(self) -> np.ndarray:
        """The present labels (int64, ascending), e.g. to reconcile a snapshot with a store."""
        with self._lock.read():
            return np.flatnonzero(self._leaf >= 0).astype(np.int64)

    def tenants(self) -> list[str]:
        """Tenants that see at least one label."""
        with self._lock.read():
            return sorted(self._tenants.ids)

    def access_of(self, label: int) -> list[str]:
        """Tenants that see `label` (empty if absent)."""
        with self._lock.read():
            seen = self._seen_by([label])[0] if self._live(label) else []
            return sorted(str(self._tenants.names[t]) for t in seen)

    def path_of(self, label: int) -> np.ndarray:
        """`label`'s root->leaf GCT path (copy; -1 padded; all -1 if absent)."""
        with self._lock.read():
            if not self._live(label):
                return np.full(self._tree.height + 1, -1, dtype=np.int32)
            return self._tree.ancestors[self._leaf[label]].copy()

    def leaves(self) -> np.ndarray:
        """GCT leaf of every label slot (int32 copy, -1 = absent), e.g. for `TenantTree.build`."""
        with self._lock.read():
            return self._leaf.copy()

    @property
    def leaf_members(self) -> LeafMembers:
        """The GCT leaves' member slots (what leaf bitmaps index; for tests and diagnostics)."""
        return self._members

    def tenant_tree(self, tenant: str) -> TenantTree | None:
        """The live structure of `tenant` (for tests and diagnostics: do not mutate)."""
        t = self._tenants.ids.get(tenant)
        return None if t is None else self._tenants.trees[t]

    def memory_bytes(self) -> dict[str, int]:
        """Allocated bytes by component (spare capacity included; Python overhead estimated)."""
        with self._lock.read():
            counts = lists = 0
            for _, _, tt in self._tenants.live():
                c, a = tt.nbytes()
                counts += c
                lists += a
            member_nodes, member_slots = self._members.nbytes()
            return {
                "vectors": self._vectors.nbytes,
                "norms": self._norms.nbytes,
                "paths": self._leaf.nbytes,  # one leaf per label; paths via tree.ancestors
                "leaf_members": member_slots,
                "tree": self._tree.nbytes() + member_nodes,  # incl. ancestors and the leaves' blocks
                "tenant_counts": counts,
                "shortlists": lists,
                "tenant_map": self._tenants.nbytes(),
            }

    # -- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Full state (tree, vectors, paths, tenant structures, tenant names, params) as npz."""
        with self._lock.read():
            return _persist.dump(self)

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's: same search results, no retraining.

        The snapshot's own τ, b0, max_depth and train_size win (the structure depends on them).
        """
        state = _persist.load(data, dim=self.dim, metric=self.metric)
        with self._lock.write():
            _persist.apply(self, state)
