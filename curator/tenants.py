"""One tenant's sub-tree of the GCT: a sparse table of exact per-node counts, and shortlists
in one arena.

For tenant t, `table` holds one row per GCT node n where t has anything (count[n] > 0), rows
sorted by node id, columns (NODE, COUNT, OFF, CAP):

- COUNT: how many of t's ids sit in shortlists at or below n. Exact counts (not the paper's
  per-node Bloom filter) because they are delete-safe and give the merge rule for free (n's
  subtree fits one list iff count[n] <= τ).
- CAP > 0 iff t has a list at n (empty lists are dropped). A node holding a list is a leaf of
  t's sub-tree, so the list's length is COUNT: no separate size column.
- the list itself is `pool[OFF : OFF + COUNT]` with CAP slots reserved. One int32 arena per
  tenant (why: the compiled search reads every bucket straight from it, with no per-bucket
  Python object). A full list moves to the arena's end with 1.5× capacity (`grow`); the
  arena is compacted when its garbage exceeds a quarter of the live slots (compaction is
  O(live), paid for by the moves that made the garbage). OFF is int32: an arena never
  reaches 2**31 slots (asserted in `_alloc`; the ids are labels < 2**31 and the arena holds
  at most ~4 slots per id).
- A list at a GCT leaf other than the root is a bitmap instead: CAP uint32 words at OFF over
  the leaf's member slots (`curator.members`; bit s = the label in slot s), COUNT bits set.
  Such a list only exists where the tenant holds more than τ ids under the leaf's parent, so
  it is dense there: 533k of the 850k (id, tenant) pairs of the 300-subscriber arXiv bench
  sit in leaf lists, 2.0 MiB as ids and ~0.15 MiB as bitmaps. Which kind a list is follows
  from its node, so nothing records it.
- Bulk builds (`from_lists`: after training, on restore) give every list exactly its size
  and the arena 1/8 spare: memory is what the lists need, and the first grants that move a
  full list to the arena's end find room there instead of reallocating the arena.

Why a sparse table (rows only where count > 0) and not dense per-node arrays: a tenant's
memory is then O(nodes it touches), not O(GCT nodes). Measured on the 300-subscriber arXiv
bench (1,409 GCT nodes): the 132 split tenants touch 17,260 (tenant, node) pairs in all, so
dense arrays (12 bytes × 1,409 per split tenant, 2.13 MiB) were a fifth of the index, and a
GCT grown to 10k nodes would make them 120 KB per tenant. Lookups are binary searches over
the tenant's rows; a node's children are consecutive ids, so their rows are one consecutive
run (the search expands a node with one binary search).

`meta` = [used, garbage, entries] (int64): the arena counters (`curator._arena`) and the
number of valid table rows (the table keeps spare rows for inserts; it grows by half).

Canonical form (kept by every operation, checked by the tests): t's lists sit exactly at the
highest nodes n on each id's path with count[n] <= τ, or at the GCT leaf when there is no
such node (lists at GCT leaves may exceed τ = `max_sl_size`). So `build` can produce it in
bulk (after training) and gives the same lists as granting the ids one by one.
"""

from __future__ import annotations

import numpy as np

from curator import _kernels
from curator._arena import MAX_POOL, ArenaCounters
from curator.members import LeafMembers
from curator.tree import Tree

MIN_CAP = 4  # smallest list capacity
_MIN_POOL = 16
_MIN_ROWS = 4
NODE, COUNT, OFF, CAP = 0, 1, 2, 3  # table columns


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

    __slots__ = ("table", "pool", "meta", "members")

    def __init__(self, members: LeafMembers, rows: int = _MIN_ROWS) -> None:
        self.members = members  # the index's slot table (shared, replaced with the GCT)
        self.table = np.zeros((max(rows, 1), 4), dtype=np.int32)
        self.pool = np.empty(0, dtype=np.int32)
        self.meta = np.zeros(3, dtype=np.int64)  # [used, garbage, entries]

    # -- reading --------------------------------------------------------------------------------

    @property
    def entries(self) -> int:
        """Number of valid table rows (nodes where the tenant has anything)."""
        return self.meta.item(2)

    @property
    def size(self) -> int:
        """Number of ids the tenant sees (the root's count)."""
        t = self.table
        return t.item(0, COUNT) if self.entries and t.item(0, NODE) == 0 else 0

    def rows(self) -> np.ndarray:
        """The valid table rows (a view: NODE, COUNT, OFF, CAP)."""
        return self.table[: self.entries]

    def counts(self, n_nodes: int) -> np.ndarray:
        """Dense per-node counts (int32 (n_nodes,), a new array; for tests and snapshots)."""
        out = np.zeros(n_nodes, dtype=np.int32)
        r = self.rows()
        out[r[:, NODE]] = r[:, COUNT]
        return out

    def nbytes(self) -> tuple[int, int]:
        """(count table incl. spare rows + counters, arena incl. spare capacity)."""
        return self.table.nbytes + self.meta.nbytes, self.pool.nbytes

    def _find(self, node: int) -> int:
        """Row index of `node`, or -1 when the tenant has nothing there."""
        col = self.table[: self.entries, NODE]
        i = int(np.searchsorted(col, node))
        return i if i < col.shape[0] and col.item(i) == node else -1

    def _ids_at(self, i: int) -> np.ndarray:
        """Row i's list as ids (a view of an id list; decoded, a new array, for a bitmap)."""
        node, off = self.table.item(i, NODE), self.table.item(i, OFF)
        if self.members.bitmap_node[node]:
            words = self.pool[off : off + self.table.item(i, CAP)].view(np.uint8)
            slots = np.flatnonzero(np.unpackbits(words, bitorder="little"))  # little-endian words
            return self.members.labels_at(node, slots)
        return self.pool[off : off + self.table.item(i, COUNT)]

    def _encode(self, node: int, ids: np.ndarray) -> np.ndarray:
        """What row `node` stores for these ids: the ids, or (a leaf list) bitmap words."""
        if not self.members.bitmap_node[node]:
            return ids
        slots = self.members.slots(node, np.asarray(ids))
        bits = np.zeros(32 * (int(slots.max()) // 32 + 1), dtype=bool)
        bits[slots] = True
        return np.packbits(bits, bitorder="little").view(np.int32)

    def ids(self, node: int) -> np.ndarray:
        """The tenant's shortlist at `node` (a view, or decoded for a leaf bitmap; empty if none)."""
        i = self._find(node)
        if i < 0 or self.table.item(i, CAP) == 0:
            return np.empty(0, dtype=np.int32)
        return self._ids_at(i)

    def list_nodes(self) -> np.ndarray:
        """Nodes where the tenant has a shortlist, ascending."""
        r = self.rows()
        return r[r[:, CAP] > 0, NODE].astype(np.int32)

    def list_spans(self) -> list[tuple[int, int, int, int]]:
        """(node, off, cap, size) of every list, for tests and diagnostics."""
        r = self.rows()
        return [(int(n), int(o), int(c), int(s)) for n, s, o, c in r[r[:, CAP] > 0].tolist()]

    # -- table rows -----------------------------------------------------------------------------

    def _insert(self, node: int) -> int:
        """A new all-zero row for `node` (absent), kept in node order; its index."""
        n = self.entries
        if n == self.table.shape[0]:
            self._resize_table(max(_MIN_ROWS, n + n // 2))
        i = int(np.searchsorted(self.table[:n, NODE], node))
        self.table[i + 1 : n + 1] = self.table[i:n]  # numpy copies overlapping slices safely
        self.table[i] = (node, 0, 0, 0)
        self.meta[2] = n + 1
        return i

    def _delete(self, i: int) -> None:
        n = self.entries
        self.table[i : n - 1] = self.table[i + 1 : n]
        self.meta[2] = n - 1
        self._shrink_table()

    def _shrink_table(self) -> None:
        """Halve the spare rows once at most a quarter of the table is used."""
        rows, n = self.table.shape[0], self.entries
        if rows > _MIN_ROWS and n <= rows // 4:
            self._resize_table(max(_MIN_ROWS, n * 2))

    def _resize_table(self, rows: int) -> None:
        new = np.zeros((rows, 4), dtype=np.int32)
        n = self.entries
        new[:n] = self.table[:n]
        self.table = new

    def _bump(self, nodes: list[int]) -> None:
        """Count one more id at these nodes (their rows exist)."""
        for node in nodes:
            i = self._find(node)
            self.table[i, COUNT] += 1

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

    def _release(self, i: int) -> None:
        """Drop row i's list (its count stays; the caller fixes it)."""
        self.garbage += self.table.item(i, CAP)
        self.table[i, CAP] = 0
        self.table[i, OFF] = 0
        self._give_back_if_empty()

    def _give_back_if_empty(self) -> None:
        if self.used and self.garbage == self.used:  # nothing live: give the arena back
            self.pool = np.empty(0, dtype=np.int32)
            self.used = self.garbage = 0

    def _place(self, node: int, ids: np.ndarray) -> None:
        """Store `ids` as node's (new) list and set its count to len(ids) (row created if absent)."""
        stored = self._encode(node, ids)
        cap = len(stored) if stored is not ids else capacity(len(ids))
        off = self._alloc(cap)  # may compact: row indices stay, offsets move
        i = self._find(node)
        if i < 0:
            i = self._insert(node)
        self.pool[off : off + len(stored)] = stored
        self.table[i, COUNT] = len(ids)
        self.table[i, OFF] = off
        self.table[i, CAP] = cap

    def _compact(self, extra: int = 0) -> None:
        """Copy the live lists, in node order, into a fresh arena sized for them (+ extra, + 1/8).
        Whole reservations are copied: a leaf bitmap's words are all live."""
        rows = np.flatnonzero(self.rows()[:, CAP])
        self._compact_slices(self.table, rows, OFF, CAP, CAP, extra, min_size=_MIN_POOL, what="tenant")

    # -- grant path -----------------------------------------------------------------------------

    def has(self, label: int, tree: Tree, leaf: np.ndarray) -> bool:
        """Does the tenant see `label` (a live label, or any int: absent ones are not seen)?"""
        m = self.members
        args = (self.table, self.pool, self.meta, tree.ancestors, leaf, label, m.blocks, m.pool)
        return bool(_kernels.tenant_has(*args))

    def grant(self, label: int, tree: Tree, leaf: np.ndarray, tau: int) -> bool:
        """Insert live `label` along its root->leaf path; False (nothing changed) if the
        tenant already sees it.

        At a node with a list: append (split if it now exceeds τ and the node is no GCT leaf).
        At a node where the tenant has nothing: start a list {label} there. Otherwise descend.
        Every node passed gets its count incremented. `leaf` maps labels to GCT leaves (a
        split pushes ids down along `tree.ancestors[leaf[id]]`).

        The common cases (append, moving a full list to the arena's end, start a list) run
        compiled (`_kernels.grant_fast`); when the arena or the table lacks room it is grown
        here and the kernel retried; splits run the interpreted path below.
        """
        at = leaf.item(label)
        m = self.members
        while True:
            need = _kernels.grant_fast(
                self.table, self.pool, self.meta, tree.ancestors, at, label, tau, MIN_CAP, m.blocks, m.pool
            )
            if need < 0:
                return need == -1  # -2: already seen
            if need > 0:
                self._reserve(need)
            elif self.entries == self.table.shape[0]:
                self._resize_table(self.entries + self.entries // 2 + 1)
            else:
                break
        path: list[int] = []
        for node in tree.ancestors[at].tolist():
            if node < 0:
                break
            path.append(node)
            i = self._find(node)
            if i < 0:  # nothing here yet: start a list
                self._place(node, np.array([label], dtype=np.int32))
                self._bump(path[:-1])
                return True
            if self.table.item(i, CAP):  # t's list is here
                assert not m.bitmap_node[node], "the compiled path appends to leaf bitmaps"
                self._append(i, label)
                self._bump(path)
                i = self._find(node)
                if self.table.item(i, COUNT) > tau and tree.child_count.item(node) > 0:
                    self._split(node, tree, leaf, tau)
                return True
        raise AssertionError("grant walked past a GCT leaf: tenant structure is corrupt")

    def _append(self, i: int, label: int) -> None:
        """Append to row i's list (count not yet incremented), growing its capacity if full."""
        c, cap, off = self.table.item(i, COUNT), self.table.item(i, CAP), self.table.item(i, OFF)
        if c == cap:
            off = self._regrow(self.table, i, OFF, CAP, c, grow(cap))
        self.pool[off + c] = label

    def _split(self, node: int, tree: Tree, leaf: np.ndarray, tau: int) -> None:
        """Push each id of `node`'s list one level down along its own path; drop the list."""
        i = self._find(node)
        ids = self._ids_at(i).copy()
        self._release(i)
        kids = tree.ancestors[leaf[ids], tree.depth[node] + 1]
        order = np.argsort(kids, kind="stable")
        ids, kids = ids[order], kids[order]
        uniq, starts = np.unique(kids, return_index=True)
        ends = np.append(starts[1:], len(kids))
        for child, a, b in zip(uniq.tolist(), starts.tolist(), ends.tolist()):
            self._place(child, ids[a:b])
            if b - a > tau and tree.child_count[child] > 0:
                self._split(child, tree, leaf, tau)

    # -- revoke path ----------------------------------------------------------------------------

    def revoke(self, label: int, tree: Tree, leaf: np.ndarray, tau: int) -> bool:
        """Remove `label` from the tenant's one list on its path, then merge upward; False
        (nothing changed) if the tenant does not see it (or `label` is absent).

        Merge rule: while the parent P's children together hold <= τ ids (count[P] <= τ) and
        none of them has a deeper sub-tree, their lists become one list at P. The removal and
        the counts run compiled (`_kernels.revoke_fast`), merges and compaction here.
        """
        m = self.members
        merge_at = _kernels.revoke_fast(
            self.table, self.pool, self.meta, tree.ancestors, leaf, label, tau, MIN_CAP, m.blocks, m.pool
        )
        if merge_at == -2:
            return False
        if merge_at >= 0:
            self._merge_up(merge_at, tree, tau)
        self._give_back_if_empty()
        if self.garbage > _MIN_POOL and 5 * self.garbage > self.used:  # garbage > live / 4
            self._compact()
        self._shrink_table()
        return True

    def _merge_up(self, p: int, tree: Tree, tau: int) -> None:
        while p >= 0:
            i = self._find(p)
            if i >= 0:
                total = self.table.item(i, COUNT)
                if total > tau:
                    return
                cs = int(tree.child_start[p])
                col = self.table[: self.entries, NODE]
                a, b = np.searchsorted(col, [cs, cs + int(tree.child_count[p])]).tolist()
                if a < b:  # p's children with ids: rows a..b-1
                    kids = self.table[a:b]
                    if np.any(kids[:, CAP] == 0):
                        return  # a child has a deeper sub-tree: blocked (never in canonical form)
                    parts = np.concatenate([self._ids_at(r) for r in range(a, b)])
                    nodes = kids[:, NODE].tolist()
                    for r in range(a, b):
                        self._release(r)
                    for node in nodes:
                        self._delete(self._find(node))
                    self._place(p, parts)
            p = int(tree.parent[p])

    # -- bulk build and export ------------------------------------------------------------------

    @classmethod
    def from_lists(
        cls,
        members: LeafMembers,
        nodes: np.ndarray,
        counts: np.ndarray,
        list_nodes: np.ndarray,
        offsets: np.ndarray,
        ids: np.ndarray,
    ) -> TenantTree:
        """A tenant with these counts (at ascending `nodes`, all > 0) and lists (list j at
        `list_nodes[j]` = ids[offsets[j]:offsets[j + 1]]; every list node among `nodes`).

        Exact capacities (cap = size, or a leaf bitmap's words): the bulk result costs only
        what it holds; a later grant to a full list moves it to the arena's end with 1.5×
        capacity (amortised O(1)). The arena keeps 1/8 spare for those first moves.
        """
        self = cls(members, max(_MIN_ROWS, nodes.shape[0]))
        k = nodes.shape[0]
        self.table[:k, NODE] = nodes
        self.table[:k, COUNT] = counts
        self.meta[2] = k
        rows = np.searchsorted(nodes, list_nodes)
        if list_nodes.size and not np.array_equal(nodes[np.minimum(rows, k - 1)], list_nodes):
            raise ValueError("tenant lists at nodes without a count")
        base = int(offsets[0]) if offsets.size else 0
        parts = [ids[int(a) : int(b)] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
        leafy = members.bitmap_node[list_nodes] if list_nodes.size else np.zeros(0, bool)
        if leafy.any():  # leaf lists become bitmaps (few lists: a loop is fine)
            parts = [self._encode(int(n), p) if b else p for n, p, b in zip(list_nodes.tolist(), parts, leafy)]
            sizes = np.array([len(p) for p in parts], dtype=np.int64)
            flat = np.concatenate(parts) if parts else np.empty(0, np.int32)
        else:
            sizes = np.diff(offsets).astype(np.int64)
            flat = ids[base : int(offsets[-1])] if offsets.size else np.empty(0, np.int32)
        total = int(sizes.sum())
        if total:
            size = max(_MIN_POOL, total + total // 8)
            assert size <= MAX_POOL, "tenant arena would exceed 2**31 slots"
            self.pool = np.empty(size, dtype=np.int32)
            self.pool[:total] = flat
        self.used = total
        self.table[rows, OFF] = (np.cumsum(sizes) - sizes).astype(np.int32)
        self.table[rows, CAP] = sizes.astype(np.int32)
        return self

    @classmethod
    def build(cls, labels: np.ndarray, tree: Tree, leaf: np.ndarray, tau: int, members: LeafMembers) -> TenantTree:
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
        list_nodes, starts = np.unique(at, return_index=True)
        offsets = np.append(starts, len(at)).astype(np.int64)
        touched = np.flatnonzero(count).astype(np.int32)
        return cls.from_lists(members, touched, count[touched], list_nodes.astype(np.int32), offsets, ids)

    def export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(list nodes int32 ascending, offsets int64 (len + 1), concatenated ids int32, each
        list sorted: canonical, as the order inside a list carries no meaning)."""
        r = self.rows()
        rows = np.flatnonzero(r[:, CAP])
        parts = [np.sort(self._ids_at(int(i))) for i in rows.tolist()]
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        ids = np.concatenate(parts).astype(np.int32) if parts else np.empty(0, np.int32)
        return r[rows, NODE].astype(np.int32), offsets, ids
