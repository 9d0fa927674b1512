"""One tenant's sub-tree of the GCT: exact per-node counts plus shortlists in one arena.

For tenant t and GCT node n:

- `count[n]`: how many of t's ids sit in shortlists at or below n. Exact counts (not the
  paper's per-node Bloom filter) because they are delete-safe, cost 4 bytes per node, and
  give the merge rule for free (n's subtree fits one list iff count[n] <= τ).
- `sl_cap[n]` > 0 iff t has a list at n (empty lists are dropped). A node holding a list is
  a leaf of t's sub-tree, so the list's length is `count[n]`: no separate size array.
- the list itself is `pool[sl_off[n] : sl_off[n] + count[n]]` with `sl_cap[n]` reserved.
  One int32 arena per tenant (why: the compiled search reads every bucket straight from it,
  with no per-bucket Python object). A full list moves to the arena's end with 1.5×
  capacity (`grow`); the arena is compacted when its garbage exceeds a quarter of the live
  slots (compaction is O(live), paid for by the moves that made the garbage). `sl_off` is int32:
  an arena never reaches 2**31 slots (asserted in `_alloc`; the ids are labels < 2**31 and
  the arena holds at most ~4 slots per id).
- Bulk builds (`from_lists`: after training, on restore) give every list exactly its size
  and the arena 1/8 spare: memory is what the lists need, and the first grants that move a
  full list to the arena's end find room there instead of reallocating the arena.

Per node that is 12 bytes per tenant (count, sl_off, sl_cap).

Root-only tenants (every tenant with <= τ ids, and all tenants before the GCT is trained)
keep per-node arrays of length 1: small tenants cost O(their ids), not O(nodes). The arrays
grow to the GCT size on the first split below the root and shrink back when a merge brings
everything into the root list.

Canonical form (kept by every operation, checked by the tests): t's lists sit exactly at the
highest nodes n on each id's path with count[n] <= τ, or at the GCT leaf when there is no
such node (lists at GCT leaves may exceed τ = `max_sl_size`). So `build` can produce it in
bulk (after training) and gives the same lists as granting the ids one by one.
"""

from __future__ import annotations

import numpy as np

from curator import _kernels
from curator._arena import MAX_POOL, ArenaCounters
from curator.tree import Tree

MIN_CAP = 4  # smallest list capacity
_MIN_POOL = 16


def grow(cap: int) -> int:
    """Capacity of a full list that takes one more id: 1.5× (geometric, so appends stay
    amortised O(1); measured: doubling left 2.85× the live ids reserved after an incremental
    build of the 300-tenant arXiv workload, together with garbage up to the live size)."""
    return max(cap + cap // 2, MIN_CAP)


def capacity(n: int) -> int:
    """Reserved slots for a list of n ids built by a split or merge: n + 1/4 spare, >= 4."""
    return max(MIN_CAP, n + n // 4)


class TenantTree(ArenaCounters):
    """Counts and shortlists of one tenant over one GCT (rebuilt when the GCT changes)."""

    __slots__ = ("nodes", "count", "sl_off", "sl_cap", "pool", "meta")

    def __init__(self, n_nodes: int = 1) -> None:
        self._set_nodes(np.zeros((n_nodes, 3), dtype=np.int32))
        self.pool = np.empty(0, dtype=np.int32)
        self.meta = np.zeros(2, dtype=np.int64)  # [used, garbage] (see curator._arena)

    def _set_nodes(self, nodes: np.ndarray) -> None:
        """`nodes` is (n_nodes, 3) int32: columns count, sl_off, sl_cap (views kept as
        attributes). Why one array: the compiled grant takes it as one argument (numba's
        dispatch costs ~0.1 µs per array argument, a noticeable share of a ~4 µs grant), and a
        node's three numbers share a cache line (a grant touches every node on its path)."""
        self.nodes = nodes
        self.count, self.sl_off, self.sl_cap = nodes[:, 0], nodes[:, 1], nodes[:, 2]

    @property
    def size(self) -> int:
        """Number of ids the tenant sees."""
        return self.count.item(0)

    @property
    def sl_size(self) -> np.ndarray:
        """Per-node list lengths (derived: count where a list exists, else 0; a copy)."""
        return np.where(self.sl_cap > 0, self.count, 0).astype(np.int32)

    def nbytes(self) -> tuple[int, int]:
        """(per-node arrays, arena incl. spare capacity)."""
        return self.nodes.nbytes + self.meta.nbytes, self.pool.nbytes

    def ids(self, node: int) -> np.ndarray:
        """The tenant's shortlist at `node` (a view; empty if none)."""
        if node >= self.sl_cap.shape[0] or self.sl_cap[node] == 0:
            return np.empty(0, dtype=np.int32)
        off = int(self.sl_off[node])
        return self.pool[off : off + int(self.count[node])]

    def list_nodes(self) -> np.ndarray:
        """Nodes where the tenant has a shortlist, ascending."""
        return np.flatnonzero(self.sl_cap).astype(np.int32)

    # -- arena ----------------------------------------------------------------------------------

    def _alloc(self, cap: int) -> int:
        self._reserve(cap)
        off = self.used
        self.used += cap
        return off

    def _reserve(self, cap: int) -> None:
        """Make room for `cap` more slots at the arena's end (compact, or grow the arena)."""
        if self.used + cap > self.pool.shape[0]:
            live = self.used - self.garbage
            if 4 * self.garbage > live:  # GARBAGE_SHARE: keep garbage under ~1/4 of live
                self._compact(extra=cap)
            if self.used + cap > self.pool.shape[0]:
                self._grow_pool(self.used + cap, min_size=_MIN_POOL, what="tenant")

    def _release(self, node: int) -> None:
        self.garbage += int(self.sl_cap[node])
        self.sl_cap[node] = 0
        self.sl_off[node] = 0
        if self.garbage == self.used:  # nothing live: give the arena back
            self.pool = np.empty(0, dtype=np.int32)
            self.used = self.garbage = 0

    def _place(self, node: int, ids: np.ndarray) -> None:
        """Store `ids` as node's (new) list; the caller sets count[node] = len(ids)."""
        cap = capacity(len(ids))
        off = self._alloc(cap)
        self.pool[off : off + len(ids)] = ids
        self.sl_off[node] = off
        self.sl_cap[node] = cap

    def _compact(self, extra: int = 0) -> None:
        """Copy the live lists, in node order, into a fresh arena sized for them (+ extra, + 1/8)."""
        nodes = np.flatnonzero(self.sl_cap)
        caps = self.sl_cap[nodes].astype(np.int64)
        live = int(caps.sum())
        size = max(_MIN_POOL, live + extra + (live + extra) // 8)
        assert size <= MAX_POOL, "tenant arena would exceed 2**31 slots"
        pool = np.empty(size, dtype=np.int32)
        offs = np.concatenate(([0], np.cumsum(caps)[:-1])) if nodes.size else caps
        for node, off in zip(nodes.tolist(), offs.tolist()):
            src = int(self.sl_off[node])
            n = int(self.count[node])
            pool[off : off + n] = self.pool[src : src + n]
            self.sl_off[node] = off
        self.pool, self.used, self.garbage = pool, live, 0

    def _resize_nodes(self, n_nodes: int) -> None:
        """Switch between root-only (length 1) and full-tree per-node arrays."""
        new = np.zeros((n_nodes, 3), dtype=np.int32)
        m = min(n_nodes, self.nodes.shape[0])
        new[:m] = self.nodes[:m]
        self._set_nodes(new)

    # -- grant path -----------------------------------------------------------------------------

    def grant(self, label: int, tree: Tree, leaf: np.ndarray, tau: int) -> None:
        """Insert `label` (not yet seen by this tenant) along its root->leaf path.

        At a node with a list: append (split if it now exceeds τ and the node is no GCT leaf).
        At a node where the tenant has nothing: start a list {label} there. Otherwise descend.
        Every node passed gets its count incremented. `leaf` maps labels to GCT leaves (a
        split pushes ids down along `tree.ancestors[leaf[id]]`).

        The common cases (append, moving a full list to the arena's end, start a list) run
        compiled (`_kernels.grant_fast`); when the arena lacks room it is grown here and the
        kernel retried; splits run the interpreted path below.
        """
        at = leaf.item(label)
        for _ in range(2):  # second try after reserving the room the first one asked for
            need = _kernels.grant_fast(self.nodes, self.pool, self.meta, tree.ancestors, at, label, tau, MIN_CAP)
            if need < 0:
                return
            if need == 0:
                break
            self._reserve(need)
        count, caps = self.count, self.sl_cap
        for node in tree.ancestors[at].tolist():
            if node < 0:
                break
            c = count.item(node)
            count[node] = c + 1
            cap = caps.item(node)
            if cap:  # t's list is here and holds c ids
                off = self.sl_off.item(node)
                if c == cap:
                    grown = grow(cap)
                    if off + cap == self.used and off + grown <= self.pool.shape[0]:
                        self.used += grown - cap  # last list in the arena: grow in place
                    else:
                        old = self.pool[off : off + c].copy()
                        self.garbage += cap
                        caps[node] = 0  # so a compaction inside _alloc skips it
                        off = self._alloc(grown)
                        self.pool[off : off + c] = old
                        self.sl_off[node] = off
                    caps[node] = grown
                self.pool[off + c] = label
                if c + 1 > tau and tree.child_count.item(node) > 0:
                    self._split(node, tree, leaf, tau)
                return
            if c == 0:
                self._place(node, np.array([label], dtype=np.int32))
                return
        raise AssertionError("grant walked past a GCT leaf: tenant structure is corrupt")

    def _split(self, node: int, tree: Tree, leaf: np.ndarray, tau: int) -> None:
        """Push each id of `node`'s list one level down along its own path; drop the list."""
        if self.count.shape[0] < tree.n_nodes:
            self._resize_nodes(tree.n_nodes)
        ids = self.ids(node).copy()
        self._release(node)
        kids = tree.ancestors[leaf[ids], tree.depth[node] + 1]
        order = np.argsort(kids, kind="stable")
        ids, kids = ids[order], kids[order]
        uniq, starts = np.unique(kids, return_index=True)
        ends = np.append(starts[1:], len(kids))
        for child, a, b in zip(uniq.tolist(), starts.tolist(), ends.tolist()):
            self._place(child, ids[a:b])
            self.count[child] = b - a
            if b - a > tau and tree.child_count[child] > 0:
                self._split(child, tree, leaf, tau)

    # -- revoke path ----------------------------------------------------------------------------

    def revoke(self, label: int, path: list[int], tree: Tree, tau: int) -> None:
        """Remove `label` (seen by this tenant) from its one list on `path`, then merge upward.

        Merge rule: while the parent P's children together hold <= τ ids (count[P] <= τ) and
        none of them has a deeper sub-tree, their lists become one list at P.
        """
        caps = self.sl_cap
        m = caps.shape[0]
        depth = -1
        for j, node in enumerate(path):
            if node < 0 or node >= m:
                break
            if caps.item(node):
                depth = j
                break
        if depth < 0:
            raise AssertionError("revoke: the tenant has no list on the label's path")
        node = path[depth]
        off, n = self.sl_off.item(node), self.count.item(node)
        hits = np.flatnonzero(self.pool[off : off + n] == label)
        if hits.size == 0:
            raise AssertionError("revoke: label missing from the tenant's list on its path")
        self.pool[off + int(hits[0])] = self.pool[off + n - 1]
        self.count[path[: depth + 1]] -= 1
        cap = caps.item(node)
        if n == 1:
            self._release(node)
        elif cap > MIN_CAP and n - 1 <= cap // 4:
            caps[node] = cap // 2  # the tail becomes garbage until the next compaction
            self.garbage += cap - cap // 2
        self._merge_up(int(tree.parent[node]), tree, tau)
        if self.count.shape[0] > 1 and self.sl_cap[0] > 0:
            self._resize_nodes(1)  # everything is back in the root list
        if self.garbage > _MIN_POOL and 5 * self.garbage > self.used:  # garbage > live / 4
            self._compact()

    def _merge_up(self, p: int, tree: Tree, tau: int) -> None:
        count, caps = self.count, self.sl_cap
        while p >= 0 and count[p] <= tau:
            total = int(count[p])
            if total > 0:
                cs = int(tree.child_start[p])
                kids = cs + np.flatnonzero(count[cs : cs + tree.child_count[p]])
                if np.any(caps[kids] == 0):
                    return  # a child has a deeper sub-tree: blocked (never in canonical form)
                parts = np.concatenate([self.ids(c) for c in kids.tolist()])
                for c in kids.tolist():
                    self._release(c)
                count[kids] = 0
                self._place(p, parts)
            p = int(tree.parent[p])

    # -- bulk build and export ------------------------------------------------------------------

    @classmethod
    def from_lists(cls, count: np.ndarray, nodes: np.ndarray, offsets: np.ndarray, ids: np.ndarray) -> TenantTree:
        """A tenant with these counts and lists (list j = ids[offsets[j]:offsets[j + 1]]).

        Exact capacities (cap = size): the bulk result costs only what it holds; a later grant
        to a full list moves it to the arena's end with 1.5× capacity (amortised O(1)).
        The arena keeps 1/8 spare for those first moves (see the module docstring).
        """
        n_nodes = 1 if int(count[0]) == 0 or (nodes.size == 1 and nodes[0] == 0) else count.shape[0]
        self = cls(n_nodes)
        self.count[:] = count[:n_nodes]
        sizes = np.diff(offsets)
        total = int(offsets[-1] - offsets[0]) if sizes.size else 0
        if total:
            size = max(_MIN_POOL, total + total // 8)
            assert size <= MAX_POOL, "tenant arena would exceed 2**31 slots"
            self.pool = np.empty(size, dtype=np.int32)
            self.pool[:total] = ids[int(offsets[0]) : int(offsets[-1])]
        self.used = total
        self.sl_off[nodes] = (offsets[:-1] - offsets[0]).astype(np.int32)
        self.sl_cap[nodes] = sizes.astype(np.int32)
        return self

    @classmethod
    def build(cls, labels: np.ndarray, tree: Tree, leaf: np.ndarray, tau: int) -> TenantTree:
        """The canonical structure for `labels` in one pass per GCT depth (after (re)training).

        `leaf` maps every label to its GCT leaf. Same lists as granting the labels one by
        one, up to the order inside each list.
        """
        labels = np.asarray(labels, dtype=np.int32)
        anc = tree.ancestors[leaf[labels]]  # (n, height + 1) paths of these labels
        count = np.zeros(tree.n_nodes, dtype=np.int32)
        active = np.arange(labels.shape[0])
        got_ids: list[np.ndarray] = []
        got_at: list[np.ndarray] = []
        d = 0
        while active.size:
            nodes = anc[active, d]
            per_node = np.bincount(nodes, minlength=tree.n_nodes).astype(np.int32)
            count += per_node
            stop = (per_node[nodes] <= tau) | (tree.child_count[nodes] == 0)
            got_ids.append(labels[active[stop]])
            got_at.append(nodes[stop])
            active = active[~stop]
            d += 1
        ids = np.concatenate(got_ids) if got_ids else np.empty(0, np.int32)
        at = np.concatenate(got_at) if got_at else np.empty(0, np.int32)
        order = np.argsort(at, kind="stable")
        ids, at = ids[order], at[order]
        nodes, starts = np.unique(at, return_index=True)
        offsets = np.append(starts, len(at)).astype(np.int64)
        return cls.from_lists(count, nodes.astype(np.int32), offsets, ids)

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(list nodes int32 ascending, offsets int64 (len + 1), concatenated ids int32)."""
        nodes = self.list_nodes()
        parts = [self.ids(int(n)) for n in nodes.tolist()]
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        ids = np.concatenate(parts).astype(np.int32) if parts else np.empty(0, np.int32)
        return nodes, offsets, ids
