"""The members of every GCT leaf, each at a stable slot: what tenants' leaf bitmaps index.

Why: a tenant's list at a GCT leaf (below the root) is a bitmap over that leaf's slots, not
an array of 4-byte ids (see `curator.tenants`). A list reaches a GCT leaf only when the
tenant holds more than τ ids under the leaf's parent, i.e. where it is dense; measured on the
300-subscriber arXiv bench, 533k of 850k (id, tenant) pairs sit in such lists, 2.0 MiB as ids
and ~0.15 MiB as bitmaps. The slot table itself costs 4 bytes per label once, not per tenant.

Layout: `blocks[leaf]` = (off, length, cap, holes): the leaf's slots are
`pool[off : off + length]` (label, or -1 for a hole) with `cap` reserved. A label keeps its
slot while it lives; a removed label leaves a hole that a later insert into the same leaf
reuses (tenant bitmaps have that bit clear by then: removal revokes first). A full block moves
to the arena's end with 1.25× capacity; slots are relative to the block, so moving changes no
bitmap. Growth 1.25× and compaction at 1/8 garbage (not 1.5× and 1/4): measured after the
73k-paper categories build, 1.5× / 1/4 left the arena at 1.8× the live slots (0.50 MiB; now
1.5×, 0.42 MiB). A label's slot is found by scanning its leaf's block (tens of labels;
cheaper than 4 bytes per label for a label -> slot map).

Built only for a trained tree (an untrained tree's one leaf is the root, whose lists stay ids).
"""

from __future__ import annotations

import numpy as np

from curator._arena import MAX_POOL, ArenaCounters

OFF, LEN, CAP, HOLES = 0, 1, 2, 3
_MIN_BLOCK = 8
_MIN_POOL = 64


class LeafMembers(ArenaCounters):
    """Per-GCT-leaf slot blocks in one arena (see the module docstring)."""

    __slots__ = ("blocks", "pool", "meta", "bitmap_node")

    def __init__(self, n_nodes: int, child_count: np.ndarray) -> None:
        self.blocks = np.zeros((n_nodes, 4), dtype=np.int32)
        self.pool = np.empty(0, dtype=np.int32)
        self.meta = np.zeros(2, dtype=np.int64)  # [used, garbage]
        # lists at these nodes are bitmaps: GCT leaves below the root of a trained tree
        self.bitmap_node = (child_count == 0) & (np.arange(n_nodes) > 0)

    @classmethod
    def build(cls, leaf: np.ndarray, child_count: np.ndarray) -> LeafMembers:
        """Blocks for every present label (`leaf[label]` >= 0), slots in label order, exact size."""
        self = cls(child_count.shape[0], child_count)
        if child_count.shape[0] == 1:
            return self  # untrained: no bitmap lists
        labels = np.flatnonzero(leaf >= 0)
        at = leaf[labels]
        order = np.argsort(at, kind="stable")
        sizes = np.bincount(at, minlength=child_count.shape[0])
        assert labels.size <= MAX_POOL, "member arena would exceed 2**31 slots"
        self.pool = labels[order].astype(np.int32)
        self.used = labels.size
        self.blocks[:, OFF] = np.cumsum(sizes) - sizes
        self.blocks[:, LEN] = sizes
        self.blocks[:, CAP] = sizes
        return self

    @property
    def active(self) -> bool:
        return self.blocks.shape[0] > 1

    def nbytes(self) -> tuple[int, int]:
        """(per-GCT-node arrays: O(nodes), like the tree; the slot arena incl. spare)."""
        return self.blocks.nbytes + self.bitmap_node.nbytes, self.pool.nbytes + self.meta.nbytes

    def slot(self, node: int, label: int) -> int:
        """`label`'s slot in leaf `node` (it must be there)."""
        off, n = self.blocks.item(node, OFF), self.blocks.item(node, LEN)
        hits = np.flatnonzero(self.pool[off : off + n] == label)
        if hits.size == 0:
            raise AssertionError(f"label {label} has no slot in leaf {node}")
        return int(hits[0])

    def slots(self, node: int, labels: np.ndarray) -> np.ndarray:
        """The slots of these labels (all in leaf `node`), int64."""
        off, n = self.blocks.item(node, OFF), self.blocks.item(node, LEN)
        block = self.pool[off : off + n]
        sorter = np.argsort(block, kind="stable")
        pos = np.searchsorted(block, labels, sorter=sorter)
        slots = sorter[np.minimum(pos, n - 1)] if n else np.zeros(len(labels), np.int64)
        if n == 0 or np.any(block[slots] != labels):
            raise AssertionError(f"labels without a slot in leaf {node}")
        return slots.astype(np.int64)

    def labels_at(self, node: int, slots: np.ndarray) -> np.ndarray:
        """The labels at these slots of leaf `node`."""
        return self.pool[self.blocks.item(node, OFF) + slots]

    def add(self, node: int, label: int) -> int:
        """Give `label` a slot in leaf `node` (reusing a hole if the block is full); the slot."""
        b = self.blocks
        off, n, cap, holes = (int(v) for v in b[node])
        if n == cap and holes:
            s = int(np.flatnonzero(self.pool[off : off + n] < 0)[0])
            self.pool[off + s] = label
            b[node, HOLES] = holes - 1
            return s
        if n == cap:
            off = self._regrow(b, node, OFF, CAP, n, max(_MIN_BLOCK, cap + cap // 4))
        self.pool[off + n] = label
        b[node, LEN] = n + 1
        return n

    def remove(self, node: int, label: int) -> None:
        """Free `label`'s slot in leaf `node` (a hole; the block's tail shrinks instead)."""
        s = self.slot(node, label)
        off, n = self.blocks.item(node, OFF), self.blocks.item(node, LEN)
        self.pool[off + s] = -1
        holes = self.blocks.item(node, HOLES) + 1
        while n > 0 and self.pool[off + n - 1] < 0:  # trailing holes shorten the block instead
            n -= 1
            holes -= 1
        self.blocks[node, LEN] = n
        self.blocks[node, HOLES] = holes

    def _alloc(self, n: int) -> int:
        if self.used + n > self.pool.shape[0]:
            if self.garbage > _MIN_POOL and 8 * self.garbage > self.used - self.garbage:
                self._compact(n)
            if self.used + n > self.pool.shape[0]:
                self._grow_pool(self.used + n, min_size=_MIN_POOL, what="member")
        o = self.used
        self.used += n
        return o

    def _compact(self, extra: int) -> None:
        """Copy the live blocks, in node order, into a fresh arena (+ extra, + 1/8 spare)."""
        nodes = np.flatnonzero(self.blocks[:, CAP])
        self._compact_slices(self.blocks, nodes, OFF, CAP, LEN, extra, min_size=_MIN_POOL, what="member", fill=-1)
