"""CuratorIndex: multi-tenant vector search over one shared clustering tree (DESIGN §4).

State (one copy of every vector; per (vector, tenant) one id in one list), drawn and
explained in docs/architecture.md:

- `vectors` (cap, dim) float32, row = label (labels are dense, caller-allocated, < 2**31),
  `norms` (cap,) squared norms (metric "l2" only: inner-product scores never read them),
  `leaf` (cap,) int32 GCT leaf per label (-1 = absent); the label's root->leaf path is
  `tree.ancestors[leaf]`.
- `sign_rows` (cap, dim/64 + 2) uint64, 64-byte aligned: each label's 1-bit code with its
  two factors, its leaf and its squared norm (`curator.signs`: one cache line at 384 d), so a
  search over thousands of a large tenant's candidates scores exactly only the best
  estimated ones; relative to the label's GCT leaf centroid, so recomputed whenever the tree
  is replaced.
- `tree`: the global clustering tree (`curator.tree`), replaced whole by training.
- `store`: every tenant's sub-tree, counts and shortlists (`curator.store`,
  `curator.layout`), and the tenant names.

No label -> tenants map: whether tenant t sees label x is answered by t's one list on x's
path, so grant and revoke recognise no-ops without one, and remove() asks every tenant in one
compiled call (O(tenants) work per removed label instead of O(tenants that see it)).

Symbols: τ = `max_sl_size` (split threshold of a shortlist), b0 = `branching` (root fan-out of
the GCT), γ1 = `gamma1` (expansion factor: stop the traversal at γ1·γ2·k collected ids in
γ1·γ2 buckets),
γ2 = `gamma2` (recall knob: the candidates are the nearest buckets up to γ2·k ids and at
least γ2 buckets; the bucket count is what keeps a large tenant's recall up, see `search`),
ε0 = `epsilon` (of those candidates, score exactly those whose sign-code estimate, within
ε0 standard errors, may reach the top k).

Lazy training: until the index first holds `train_size` vectors the GCT is the root alone,
so every tenant's ids sit in its root shortlist and search is exact. Then (`retrain_due()`)
the tree is trained and installed: every label re-routed, every tenant's structure rebuilt in
its canonical form (what re-inserting everything through the grant path would give, built in
bulk). With `auto_train` the add() that reaches `train_size` does it inline; the service
passes False and retrains in the background in three steps (`training_sample`, `fit` without
any lock, `install`), again each time the index has grown RETRAIN_GROWTH×.

Concurrency: none of its own (the pure algorithm holds no lock). Searches may run in
parallel with each other (the compiled kernels release the GIL); a write must exclude them.
The service's collection holds one readers-writer lock over the index and its label map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curator import _kernels, _persist, signs
from curator.store import TenantStore, TenantView
from curator.tree import Tree, train_tree

METRICS = ("ip", "l2")
# The defaults of the build and search parameters (their one home: the service's parameter
# specs in `curacache.index.curator` read them from here). Symbols in the module docstring.
MAX_SL_SIZE = 256  # τ (the paper's setting)
BRANCHING = 32  # b0
MAX_DEPTH = 8
TRAIN_SIZE = 20_000
GAMMA1 = 2.0  # γ1 (the paper's setting)
GAMMA2 = 128.0  # γ2 (the paper's setting)
# ε0 of the sign codes' error bound, in standard errors: 3, not RaBitQ's 1.9, because without
# its random rotation the errors' tails are heavier (why 3 and what it costs: `curator.signs`).
EPSILON = 3.0
MAX_LABEL = 2**31 - 1
# Largest sample the GCT is trained on; FAISS subsamples per level anyway (256 per centroid).
MAX_TRAIN_SAMPLE = 200_000
# Retrain once the collection has grown this much since the last training: centroids fitted
# on a quarter of the data still route well, and k-means cost stays amortised O(1) per insert.
RETRAIN_GROWTH = 4
_MIN_CAP = 8


@dataclass(frozen=True, slots=True)
class TrainingSample:
    """What `CuratorIndex.training_sample` copies out for `fit`."""

    vectors: np.ndarray
    n_live: int


@dataclass(frozen=True, slots=True)
class FittedTree:
    """What `CuratorIndex.fit` hands to `install`."""

    tree: Tree
    n_live: int


class CuratorIndex:
    """Curator: per-tenant sub-trees (shortlists) of one shared GCT; see the module docstring."""

    kind = "curator"

    def __init__(
        self,
        *,
        dim: int,
        metric: str,
        max_sl_size: int = MAX_SL_SIZE,
        branching: int = BRANCHING,
        max_depth: int = MAX_DEPTH,
        train_size: int = TRAIN_SIZE,
        use_gpu: bool | None = None,
        auto_train: bool = True,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if dim <= 0 or max_sl_size < 1 or branching < 2 or max_depth < 1 or train_size < 1:
            raise ValueError(
                "dim, max_sl_size, branching, max_depth and train_size must be positive"
            )
        self.dim = dim
        self.metric = metric
        self.max_sl_size = int(max_sl_size)  # τ
        self.branching = int(branching)  # b0
        self.max_depth = int(max_depth)
        self.train_size = int(train_size)
        self.use_gpu = use_gpu
        self.auto_train = auto_train
        self._pad = np.float32(-np.inf if metric == "ip" else np.inf)
        self._tree = Tree.root_only(dim)
        self._train_at = self.train_size  # next live count at which to try training
        self._store = TenantStore()
        self._reset_rows()

    # -- label rows -----------------------------------------------------------------------------

    def _reset_rows(self) -> None:
        self._vectors = np.empty((0, self.dim), dtype=np.float32)
        self._norms = np.empty(0, dtype=np.float32)
        self._leaf = np.empty(0, dtype=np.int32)  # -1 = absent
        self._sign_rows = signs.empty_rows(0, self.dim)
        self._n = 0

    def _grown(self, hi: int) -> int:
        """Label capacity for labels < hi: 1.25× the current one (appends stay amortised O(1))
        or exactly hi when a batch jumps further. Why not 1.5× or 2×: the per-label arrays,
        the vector matrix above all, carry the spare (figures in bench/curator/README.md)."""
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
        sign_rows = signs.empty_rows(cap, self.dim)
        sign_rows[:keep] = self._sign_rows[:keep]
        self._vectors, self._norms, self._leaf = vec, norms, leaf
        self._sign_rows = sign_rows

    def _encode(self, labels: np.ndarray) -> None:
        """(Re)compute these routed labels' sign codes from their vectors and leaf centroids."""
        tree = self._tree
        signs.encode(
            self._vectors,
            np.asarray(labels, dtype=np.int64),
            self._leaf,
            tree.codes,
            tree.lo,
            tree.step,
            self._sign_rows,
        )

    def _live(self, label: int) -> bool:
        return 0 <= label < self._leaf.shape[0] and self._leaf.item(label) >= 0

    @staticmethod
    def _distinct(labels: np.ndarray) -> list[int]:
        """Labels as Python ints, first occurrences only (a single label: no conversions)."""
        if labels.__class__ is np.ndarray and labels.size == 1 and labels.dtype.kind == "i":
            return [labels.item(0)]
        seq = np.asarray(labels, dtype=np.int64).ravel().tolist()
        return seq if len(seq) < 2 else list(dict.fromkeys(seq))

    def _seen_by(self, labels: list[int]) -> list[list[int]]:
        """For each label, the tenant ints that see it (one compiled call over all tenants)."""
        return self._store.seen_by(labels, self._tree, self._leaf)

    # -- writes ---------------------------------------------------------------------------------

    def add(self, labels: np.ndarray, vectors: np.ndarray, access: Sequence[Sequence[str]]) -> None:
        """Insert new labels; `access[i]` lists the tenants that see `labels[i]`.

        A label already present (or repeated in the batch) raises ValueError, and nothing is
        applied. With `auto_train`, trains the GCT when the live count first reaches `train_size`.
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
        present = labels[labels < len(self._leaf)]
        present = present[self._leaf[present] >= 0]
        if present.size:
            raise ValueError(f"add: labels already present: {present[:10].tolist()}")
        hi = int(labels.max()) + 1
        if hi > len(self._leaf):
            self._resize(self._grown(hi))
        self._vectors[labels] = vectors
        if self.metric == "l2":
            self._norms[labels] = np.einsum("ij,ij->i", vectors, vectors)
        self._leaf[labels] = self._tree.route_leaves(vectors)
        self._encode(labels)
        self._n += n
        store, tree, leaf, tau = self._store, self._tree, self._leaf, self.max_sl_size
        for label, tenants in zip(labels.tolist(), access):
            for name in dict.fromkeys(tenants):
                t = store.index_of.get(name)
                store.grant(store.add(name) if t is None else t, label, tree, leaf, tau)
        if self.auto_train and not self._tree.trained and self._n >= self._train_at:
            self.retrain()

    def grant(self, labels: np.ndarray, tenant: str) -> None:
        """Let `tenant` see these labels (grant path); absent or already-seen labels are skipped."""
        store, tree, leaf, tau = self._store, self._tree, self._leaf, self.max_sl_size
        t = store.index_of.get(tenant)
        created = t is None
        if t is None:
            t = store.add(tenant)
        for label in self._distinct(labels):
            store.grant(t, label, tree, leaf, tau)
        if created and store.size(t) == 0:  # a new tenant that got nothing
            store.drop(t)

    def revoke(self, labels: np.ndarray, tenant: str) -> None:
        """Stop `tenant` seeing these labels (remove from its list, merge upward); no-ops skipped."""
        store, tree, leaf, tau = self._store, self._tree, self._leaf, self.max_sl_size
        t = store.index_of.get(tenant)
        if t is None:
            return
        for label in self._distinct(labels):
            if store.revoke(t, label, tree, leaf, tau) and store.size(t) == 0:
                store.drop(t)  # that was its last label
                return

    def remove(self, labels: np.ndarray) -> None:
        """Forget labels: revoke for every tenant that sees them, free the rows; absent skipped."""
        store, tree, leaf, tau = self._store, self._tree, self._leaf, self.max_sl_size
        seq = [label for label in self._distinct(labels) if self._live(label)]
        for label, tenants in zip(seq, self._seen_by(seq)):
            for t in tenants:
                store.revoke(t, label, tree, leaf, tau)
                if store.size(t) == 0:
                    store.drop(t)
            leaf[label] = -1
            self._n -= 1
        if self._n == 0:
            self._reset_rows()
        elif len(self._leaf) > _MIN_CAP and self._n <= len(self._leaf) // 4:  # else hi can't be
            hi = int(np.flatnonzero(self._leaf >= 0)[-1]) + 1
            if hi <= len(self._leaf) // 4:
                self._resize(max(_MIN_CAP, hi + hi // 2))

    # -- training -------------------------------------------------------------------------------

    def retrain(self) -> bool:
        """Train a new GCT on (a sample of) the current vectors and install it: the three
        steps below in a row. Returns False if the data could not be split (tree unchanged)."""
        return self.install(self.fit(self.training_sample()))

    def retrain_due(self) -> bool:
        """True once the live count reached `train_size` (untrained) or grew RETRAIN_GROWTH×
        since the last training: the owner then calls `retrain`, or its three steps."""
        return self._n >= self._train_at

    def training_sample(self) -> TrainingSample:
        """Step 1 of a retrain (reads the index): a sample of the present vectors."""
        live = np.flatnonzero(self._leaf >= 0)
        if live.size > MAX_TRAIN_SAMPLE:
            rng = np.random.default_rng(live.size)
            live = np.sort(rng.choice(live, MAX_TRAIN_SAMPLE, replace=False))
        return TrainingSample(self._vectors[live], self._n)

    def fit(self, sample: TrainingSample) -> FittedTree:
        """Step 2 (reads no index state, so it needs no lock): k-means over the sample."""
        if sample.vectors.shape[0] == 0:
            return FittedTree(Tree.root_only(self.dim), 0)
        tree = train_tree(
            sample.vectors, branching=self.branching, max_depth=self.max_depth, use_gpu=self.use_gpu
        )
        return FittedTree(tree, sample.n_live)

    def install(self, fitted: FittedTree) -> bool:
        """Step 3 (writes the index): route every present label through the new tree and
        rebuild every tenant's structure in canonical form. False (nothing installed) when
        k-means could not split the sample: training is retried once the index has doubled."""
        if not fitted.tree.trained:
            self._train_at = max(self._train_at, 2 * fitted.n_live)
            return False
        seen = [(t, self._store.labels(t)) for t, _ in self._store.live()]
        self._tree = tree = fitted.tree
        live = np.flatnonzero(self._leaf >= 0)
        self._train_at = RETRAIN_GROWTH * max(int(live.size), self.train_size)
        self._leaf[live] = tree.route_leaves(self._vectors[live])
        self._encode(live)  # relative to the new tree's leaves
        self._store.rebuild(seen, tree, self._leaf, self.max_sl_size)
        return True

    # -- search ---------------------------------------------------------------------------------

    def search(
        self,
        tenant: str,
        queries: np.ndarray,
        k: int,
        gamma1: float = GAMMA1,
        gamma2: float = GAMMA2,
        epsilon: float = EPSILON,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k labels (int64 (nq, k)) and raw scores (float32) among those `tenant` sees.

        Best-first over the tenant's sub-tree until γ1·γ2·k ids in γ1·γ2 buckets are
        collected; the nearest buckets up to γ2·k ids and γ2 buckets are the candidates.
        Of more than k candidates, only those whose score estimated from their sign codes,
        within ε0 = `epsilon` standard errors, may reach the top k are scored exactly
        (`curator.signs`; a huge `epsilon` scores every candidate exactly). Short rows are
        padded with -1 / ∓inf.

        γ2 is the recall/latency knob, in tenant-size terms: a tenant that sees up to ~γ2·k
        ids is searched (nearly) exhaustively; a larger one gets its nearest γ2 buckets (its
        lists of at most τ ids), which cover about the same share of its true neighbours
        whatever its size, so its cost grows with its ids per bucket and its recall does not
        fall with its size. The sign codes keep what that costs down: however many
        candidates, only those that may be in the top k have their vector rows read whole.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim or k < 1:
            raise ValueError(f"search: queries must be (nq, {self.dim}) and k >= 1")
        nq = queries.shape[0]
        out_labels = np.full((nq, k), -1, dtype=np.int64)
        out_scores = np.full((nq, k), self._pad, dtype=np.float32)
        t = self._store.index_of.get(tenant)
        if t is None or nq == 0:
            return out_labels, out_scores
        tree = self._tree
        _kernels.search(
            queries,
            tree.codes,
            tree.lo,
            tree.step,
            tree.cnorm,
            tree.child_start,
            tree.child_count,
            self._store.table(t),
            self._store.ids,
            self._vectors,
            self._norms,
            self._sign_rows,
            max(1, int(gamma1 * gamma2 * k)),
            max(1, int(gamma2 * k)),
            max(1, int(gamma2)),
            float(epsilon),
            self.metric == "ip",
            out_labels,
            out_scores,
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

    @property
    def store(self) -> TenantStore:
        """Every tenant's rows and lists (for tests and diagnostics: do not mutate)."""
        return self._store

    def labels(self) -> np.ndarray:
        """The present labels (int64, ascending), e.g. to reconcile a snapshot with a store."""
        return np.flatnonzero(self._leaf >= 0).astype(np.int64)

    def tenants(self) -> list[str]:
        """Tenants that see at least one label."""
        return sorted(self._store.index_of)

    def access_of(self, label: int) -> list[str]:
        """Tenants that see `label` (empty if absent)."""
        seen = self._seen_by([label])[0] if self._live(label) else []
        return sorted(str(self._store.names[t]) for t in seen)

    def path_of(self, label: int) -> np.ndarray:
        """`label`'s root->leaf GCT path (copy; -1 padded; all -1 if absent)."""
        if not self._live(label):
            return np.full(self._tree.height + 1, -1, dtype=np.int32)
        return self._tree.ancestors[self._leaf[label]].copy()

    def leaves(self) -> np.ndarray:
        """GCT leaf of every label slot (int32 copy, -1 = absent)."""
        return self._leaf.copy()

    def sign_codes(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """These live labels' sign codes and factors (`curator.signs`; copies, for tests and
        diagnostics)."""
        return signs.split_rows(self._sign_rows[np.asarray(labels, dtype=np.int64)], self.dim)

    def tenant_view(self, tenant: str) -> TenantView | None:
        """`tenant`'s rows and lists as they are now (a copy; for tests and diagnostics)."""
        t = self._store.index_of.get(tenant)
        return None if t is None else self._store.view(t)

    def canonical_view(self, labels: np.ndarray) -> TenantView:
        """The rows and lists a tenant seeing exactly these live labels has in canonical form
        (built in bulk, as after training; for tests)."""
        store = TenantStore()
        t = store.add("")
        store.build(t, np.unique(np.asarray(labels)), self._tree, self._leaf, self.max_sl_size)
        return store.view(t)

    def memory_bytes(self) -> dict[str, int]:
        """Allocated bytes by component (spare capacity included; Python overhead estimated)."""
        return {
            "vectors": self._vectors.nbytes,
            "norms": self._norms.nbytes,
            "paths": self._leaf.nbytes,  # one leaf per label; paths via tree.ancestors
            "sign_codes": self._sign_rows.nbytes + signs.ALIGN,
            "tree": self._tree.nbytes(),  # incl. ancestors
            **self._store.nbytes(),  # tenant_counts, shortlists, tenant_map
        }

    # -- persistence ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Full state (tree, vectors, leaves, each tenant's labels, params) as npz."""
        live = np.flatnonzero(self._leaf >= 0)
        hi = int(live[-1]) + 1 if live.size else 0
        tenants = {name: self._store.labels(t) for t, name in self._store.live()}
        params = {
            "max_sl_size": self.max_sl_size,
            "branching": self.branching,
            "max_depth": self.max_depth,
            "train_size": self.train_size,
            "train_at": self._train_at,
        }
        snap = _persist.Snapshot(
            params, self._tree, self._vectors[:hi], self._norms[:hi], self._leaf[:hi], tenants
        )
        return _persist.dump(snap, dim=self.dim, metric=self.metric)

    def restore(self, data: bytes) -> None:
        """Replace the state with a snapshot's: same search results, no retraining (each
        tenant's structure is rebuilt from its labels in canonical form, which is what it was).

        The snapshot's own τ, b0, max_depth and train_size win (the structure depends on them).
        A snapshot that does not fit raises ValueError and changes nothing.
        """
        snap = _persist.load(data, dim=self.dim, metric=self.metric)
        p = snap.params
        self.max_sl_size, self.branching, self.max_depth = (
            p["max_sl_size"],
            p["branching"],
            p["max_depth"],
        )
        self.train_size, self._train_at = p["train_size"], p["train_at"]
        self._tree = snap.tree
        self._reset_rows()
        self._store.clear()
        hi = snap.leaf.shape[0]
        if hi:
            self._resize(self._grown(hi))  # after _reset_rows: exactly hi
            self._vectors[:hi] = snap.vectors
            self._norms[: snap.norms.shape[0]] = snap.norms
            self._leaf[:hi] = snap.leaf
            self._encode(np.flatnonzero(snap.leaf >= 0))
        self._n = int(np.count_nonzero(snap.leaf >= 0))
        seen = [(self._store.add(name), labels) for name, labels in snap.tenants.items()]
        self._store.rebuild(seen, self._tree, self._leaf, self.max_sl_size)
