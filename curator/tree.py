"""The global clustering tree (GCT): hierarchical k-means flattened into arrays.

Node 0 is the root. Nodes are numbered breadth-first and the children of a node occupy one
contiguous id range `[child_start, child_start + child_count)`, so their centroids are one
contiguous block of `codes` (one pass scores them all). A node with `child_count == 0` is a
GCT leaf. An untrained tree is the root alone (every tenant's ids sit in its root shortlist and
search is exact).

Centroids are stored as 8-bit scalar-quantized codes (per dimension: `lo + step * code`, the
range spanning every centroid of the tree), not float32. Why: float32 centroids were the
largest part of the index beyond the raw vectors; codes take a quarter (figures in
bench/curator/README.md). Every use (routing, search) goes through the same dequantized values and `cnorm` is computed
from them, so routing and search stay consistent. A node's key is
||q - c||² - ||q||² = ||c||² - 2 (q·lo + Σ (q·step)_j code_j): the query is scaled once per
query, then each centroid costs one uint8 × float32 dot. The quantization step is ~1/255 of a
dimension's range across centroids, which leaves recall at equal γ unchanged on arXiv.

Training (why these choices, DESIGN §4): FAISS k-means (GPU when present), `niter` 20, fixed
seed so a rebuild from the same sample gives the same tree. Root branching b0; below the
root every node branches max(b/2, 4) where b is its parent's branching; a node is split only
if it received >= 8 training points per child, and never below `max_depth`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from curator import _kernels

MIN_POINTS_PER_CHILD = 8
KMEANS_NITER = 20
KMEANS_SEED = 1234
# Routing beam width and centroid refinement rounds (beam 1 and 0 rounds is the plain
# design; why not: `train_tree`, figures in bench/curator/README.md).
ROUTE_BEAM = 4
REFINE_ROUNDS = 2


def quantize(centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes uint8 (n, dim), lo float32 (dim,), step float32 (dim,)): per-dimension 8-bit
    scalar quantization spanning the rows' range (a constant dimension gets step 1, code 0)."""
    c = np.asarray(centroids, dtype=np.float32)
    lo = c.min(axis=0) if c.shape[0] else np.zeros(c.shape[1], np.float32)
    span = (c.max(axis=0) - lo) if c.shape[0] else np.zeros(c.shape[1], np.float32)
    step = np.where(span > 0, span / 255.0, 1.0).astype(np.float32)
    codes = np.clip(np.rint((c - lo) / step), 0, 255).astype(np.uint8)
    return codes, lo.astype(np.float32), step


def dequantize(codes: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The float32 centroids the codes stand for (a new array)."""
    return lo + step * codes.astype(np.float32)


@dataclass(frozen=True, slots=True)
class Tree:
    """Flattened GCT arrays (read-only once built; a retrain builds a new Tree)."""

    codes: (
        np.ndarray
    )  # uint8 (n_nodes, dim) quantized centroids; the root's is the sample mean (unused)
    lo: np.ndarray  # float32 (dim,) centroid = lo + step * code
    step: np.ndarray  # float32 (dim,)
    cnorm: np.ndarray  # float32 (n_nodes,) squared norms of the dequantized centroids
    child_start: np.ndarray  # int32 (n_nodes,)
    child_count: np.ndarray  # int32 (n_nodes,), 0 at GCT leaves
    parent: np.ndarray  # int32 (n_nodes,), -1 at the root
    depth: np.ndarray  # int32 (n_nodes,), 0 at the root
    # int32 (n_nodes, height + 1): row n = root..n, -1 padded. Derived in __post_init__ (not
    # persisted). Why: the index stores one leaf per label (4 bytes) instead of its whole
    # root->leaf path; a label's path is `ancestors[leaf]`, and the table costs O(nodes).
    ancestors: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.check()
        n, height = self.n_nodes, int(self.depth.max())
        anc = np.full((n, height + 1), -1, dtype=np.int32)
        anc[0, 0] = 0
        for d in range(1, height + 1):  # parents before children: one pass per level
            nodes = np.flatnonzero(self.depth == d)
            anc[nodes, :d] = anc[self.parent[nodes], :d]
            anc[nodes, d] = nodes
        object.__setattr__(self, "ancestors", anc)

    @classmethod
    def from_centroids(
        cls,
        centroids: np.ndarray,
        child_start: ArrayLike,
        child_count: ArrayLike,
        parent: ArrayLike,
        depth: ArrayLike,
    ) -> Tree:
        """A tree over float centroids (quantized here; `cnorm` from the dequantized values)."""
        codes, lo, step = quantize(centroids)
        deq = dequantize(codes, lo, step)
        return cls(
            codes=codes,
            lo=lo,
            step=step,
            cnorm=np.einsum("ij,ij->i", deq, deq).astype(np.float32),
            child_start=np.asarray(child_start, dtype=np.int32),
            child_count=np.asarray(child_count, dtype=np.int32),
            parent=np.asarray(parent, dtype=np.int32),
            depth=np.asarray(depth, dtype=np.int32),
        )

    @property
    def centroids(self) -> np.ndarray:
        """Dequantized centroids, float32 (n_nodes, dim) (a new array; for diagnostics)."""
        return dequantize(self.codes, self.lo, self.step)

    @property
    def n_nodes(self) -> int:
        return int(self.child_count.shape[0])

    @property
    def height(self) -> int:
        """Depth of the deepest node (0 for an untrained tree)."""
        return int(self.depth.max())

    @property
    def trained(self) -> bool:
        return self.n_nodes > 1

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values()) + self.ancestors.nbytes

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "codes": self.codes,
            "lo": self.lo,
            "step": self.step,
            "cnorm": self.cnorm,
            "child_start": self.child_start,
            "child_count": self.child_count,
            "parent": self.parent,
            "depth": self.depth,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Tree:
        t = cls(
            codes=np.ascontiguousarray(arrays["codes"], dtype=np.uint8),
            lo=np.ascontiguousarray(arrays["lo"], dtype=np.float32),
            step=np.ascontiguousarray(arrays["step"], dtype=np.float32),
            cnorm=np.ascontiguousarray(arrays["cnorm"], dtype=np.float32),
            child_start=np.ascontiguousarray(arrays["child_start"], dtype=np.int32),
            child_count=np.ascontiguousarray(arrays["child_count"], dtype=np.int32),
            parent=np.ascontiguousarray(arrays["parent"], dtype=np.int32),
            depth=np.ascontiguousarray(arrays["depth"], dtype=np.int32),
        )  # __post_init__ checks the structure
        return t

    @classmethod
    def root_only(cls, dim: int) -> Tree:
        return cls(
            codes=np.zeros((1, dim), dtype=np.uint8),
            lo=np.zeros(dim, dtype=np.float32),
            step=np.ones(dim, dtype=np.float32),
            cnorm=np.zeros(1, dtype=np.float32),
            child_start=np.zeros(1, dtype=np.int32),
            child_count=np.zeros(1, dtype=np.int32),
            parent=np.full(1, -1, dtype=np.int32),
            depth=np.zeros(1, dtype=np.int32),
        )

    def check(self) -> None:
        """Structural sanity (every construction, so a restored tree is safe to walk).

        Contiguous children, every non-root node inside its parent's child range one level
        deeper (so parents precede children and `ancestors` is well defined).
        """
        n = self.n_nodes
        dim = self.codes.shape[1] if self.codes.ndim == 2 else -1
        if self.lo.shape != (dim,) or self.step.shape != (dim,):
            raise ValueError("tree quantizer arrays disagree with the codes")
        if not (
            self.codes.shape[0]
            == self.cnorm.shape[0]
            == self.parent.shape[0]
            == self.depth.shape[0]
            == n
        ):
            raise ValueError("tree arrays disagree in length")
        if n == 0 or self.parent[0] != -1 or self.depth[0] != 0:
            raise ValueError("tree has no root")
        if self.child_start.shape[0] != n:
            raise ValueError("tree arrays disagree in length")
        nodes = np.arange(1, n)
        p = self.parent[1:].astype(np.int64)
        if np.any((p < 0) | (p >= nodes)):
            raise ValueError("tree parents must precede their children")
        cs = self.child_start[p]
        if np.any(
            (nodes < cs)
            | (nodes >= cs + self.child_count[p])
            | (self.depth[1:] != self.depth[p] + 1)
        ):
            raise ValueError("tree node outside its parent's child range")
        for node in np.flatnonzero(self.child_count > 0).tolist():
            start, count = int(self.child_start[node]), int(self.child_count[node])
            kids = np.arange(start, start + count)
            if (
                start <= node
                or start + count > n
                or np.any(self.parent[kids] != node)
                or np.any(self.depth[kids] != self.depth[node] + 1)
            ):
                raise ValueError(f"tree node {node} has inconsistent children")

    def route_leaves(self, x: np.ndarray, beam: int | None = None) -> np.ndarray:
        """(n,) int32 GCT leaf of every row of `x` (its path is `ancestors[leaf]`).

        Beam search over the levels (beam 1 = nearest child at every level); see
        `_kernels.route`.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(x.shape[0], dtype=np.int32)
        if x.shape[0]:
            _kernels.route(
                x,
                self.codes,
                self.lo,
                self.step,
                self.cnorm,
                self.child_start,
                self.child_count,
                ROUTE_BEAM if beam is None else beam,
                out,
            )
        return out

    def route(self, x: np.ndarray, beam: int | None = None) -> np.ndarray:
        """(n, height + 1) int32 root->leaf paths of the rows of `x`, -1 padded."""
        return self.ancestors[self.route_leaves(x, beam)]

    def recentered(self, x: np.ndarray, leaf: np.ndarray) -> Tree:
        """A copy whose node centroids are the means of the rows of `x` routed through them.

        Why: k-means centroids describe the training split, but search ranks buckets by the
        centroid of what actually sits below a node; after beam routing the two differ.
        Nodes no row reached keep their centroid.
        """
        n_nodes, dim = self.n_nodes, self.codes.shape[1]
        order = np.argsort(leaf, kind="stable")
        uniq, starts = np.unique(leaf[order], return_index=True)
        sums = np.zeros((n_nodes, dim), dtype=np.float64)
        counts = np.zeros(n_nodes, dtype=np.int64)
        sums[uniq] = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
        counts[uniq] = np.diff(np.append(starts, len(leaf)))
        for node in range(n_nodes - 1, 0, -1):  # children have larger ids than their parent
            p = self.parent[node]
            sums[p] += sums[node]
            counts[p] += counts[node]
        cents = self.centroids
        hit = counts > 0
        cents[hit] = (sums[hit] / counts[hit, None]).astype(np.float32)
        return Tree.from_centroids(
            cents, self.child_start, self.child_count, self.parent, self.depth
        )


def child_branching(b: int) -> int:
    """Branching of the children of a node that branches `b` (DESIGN §4: max(b/2, 4))."""
    return max(b // 2, 4)


def _kmeans(x: np.ndarray, k: int, use_gpu: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (k, dim) and the nearest-centroid assignment of every row of `x` (on the GPU
    when `use_gpu`, or when None and FAISS sees one)."""
    import faiss  # only training uses FAISS: importing `curator` does not load it

    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=KMEANS_NITER,
        seed=KMEANS_SEED,
        gpu=faiss.get_num_gpus() > 0 if use_gpu is None else use_gpu,
        verbose=False,
        min_points_per_centroid=1,  # we already require 8 per child; silences FAISS's warning
        max_points_per_centroid=256,
    )
    km.train(x)
    _, assign = km.index.search(x, 1)
    assert km.centroids is not None  # set by train()
    return km.centroids.astype(np.float32, copy=False), assign.ravel()


def train_tree(
    sample: np.ndarray,
    *,
    branching: int,
    max_depth: int,
    use_gpu: bool | None = None,
    refine_rounds: int | None = None,
) -> Tree:
    """Hierarchical k-means over `sample` (n, dim), flattened breadth-first, then refined.

    b0 = `branching` at the root; max(b/2, 4) below. A node with fewer than 8 training points
    per would-be child, or at `max_depth`, stays a leaf. Empty k-means clusters are dropped.
    Refinement (deviation from plain hierarchical k-means, measured): `refine_rounds` times,
    route the sample with the beam router and move every centroid to the mean of what it
    received: k-means centroids describe the training split, search ranks buckets by what
    actually sits below a node. Beam routing plus refinement raise recall@10 at the default γ
    and equal search cost, for a little more training time (bench/curator/README.md).
    """
    x = np.ascontiguousarray(sample, dtype=np.float32)
    n, dim = x.shape
    centroids: list[np.ndarray] = [x.mean(axis=0) if n else np.zeros(dim, np.float32)]
    parent = [-1]
    depth = [0]
    child_start = [0]
    child_count = [0]
    # queue of (node id, its branching, indices of the training points it received)
    queue: deque[tuple[int, int, np.ndarray]] = deque([(0, branching, np.arange(n))])
    while queue:
        node, b, idx = queue.popleft()
        if depth[node] >= max_depth or len(idx) < MIN_POINTS_PER_CHILD * b:
            continue
        cents, assign = _kmeans(x[idx], b, use_gpu)
        sizes = np.bincount(assign, minlength=b)
        alive = np.flatnonzero(sizes > 0)
        if len(alive) < 2:
            continue
        first = len(parent)
        child_start[node] = first
        child_count[node] = len(alive)
        order = np.argsort(assign, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        for j, c in enumerate(alive.tolist()):
            cid = first + j
            centroids.append(cents[c])
            parent.append(node)
            depth.append(depth[node] + 1)
            child_start.append(0)
            child_count.append(0)
            queue.append((cid, child_branching(b), idx[order[bounds[c] : bounds[c + 1]]]))
    cmat = np.ascontiguousarray(np.stack(centroids), dtype=np.float32)
    tree = Tree.from_centroids(cmat, child_start, child_count, parent, depth)
    rounds = REFINE_ROUNDS if refine_rounds is None else refine_rounds
    for _ in range(rounds if tree.trained else 0):
        tree = tree.recentered(x, tree.route_leaves(x))
    return tree
