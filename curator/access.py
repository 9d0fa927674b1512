"""The access map of a CuratorIndex: label -> the tenant ints that see it.

Why it exists at all (the tenants' shortlists hold the same pairs): remove() must revoke from
exactly the tenants that see a label, and grant/revoke must recognise no-ops, without
searching every tenant's sub-tree.

Why this layout: per (label, tenant) pair one small int in one arena, per label an offset and
a length — no Python object per label. The previous list of per-label tuples cost ~8 bytes
per pair plus ~48 per label (10.3 MiB on the 300-tenant arXiv workload, ~700k pairs); this
costs 2 bytes per pair plus 8 per label slot.

- `pool` holds the slices; its dtype is uint16 while every tenant int fits (< 65535) and is
  widened once to int32 when one does not (tenant ints are small and reused, so this is rare).
- `off[label]`, `size[label]` (int32): label's slice is `pool[off : off + size]`. No capacity
  array: a slice always has exactly its size; adding a tenant appends in place when the slice
  ends the arena, otherwise the slice moves to the arena's end (a copy of its few tenant
  ints; the old slots become garbage). Garbage is compacted away once it exceeds a quarter
  of the live pairs, so the arena stays within ~1.25× of them (+ growth spare) and every
  operation is amortised O(share degree). `off` is int32: the arena never reaches 2**31 slots (asserted).
"""

from __future__ import annotations

import numpy as np

from curator import _kernels
from curator._arena import MAX_POOL, ArenaCounters

_NARROW_MAX = np.iinfo(np.uint16).max
_MIN_POOL = 64


class AccessMap(ArenaCounters):
    """Per-label tenant slices in one arena (see the module docstring)."""

    __slots__ = ("slices", "off", "size", "pool", "meta")

    def __init__(self, cap: int = 0) -> None:
        self._set_slices(np.zeros((cap, 2), dtype=np.int32))
        self.pool = np.empty(0, dtype=np.uint16)
        self.meta = np.zeros(2, dtype=np.int64)  # [used, garbage] (see curator._arena)

    def _set_slices(self, slices: np.ndarray) -> None:
        """`slices` is (cap, 2) int32: columns off, size (views kept as attributes); one array
        so the compiled grant takes one argument for both, and one cache line per label."""
        self.slices = slices
        self.off, self.size = slices[:, 0], slices[:, 1]

    @property
    def pairs(self) -> int:
        """Number of (label, tenant) pairs stored."""
        return self.used - self.garbage

    def nbytes(self) -> int:
        return self.slices.nbytes + self.pool.nbytes + self.meta.nbytes

    def resize(self, cap: int) -> None:
        """New label capacity; rows cut off must be empty."""
        keep = min(cap, self.slices.shape[0])
        new = np.zeros((cap, 2), dtype=np.int32)
        new[:keep] = self.slices[:keep]
        self._set_slices(new)

    def tenants(self, label: int) -> list[int]:
        """Tenant ints that see `label` (in no particular order)."""
        n = self.size.item(label)
        if not n:
            return []
        o = self.off.item(label)
        return self.pool[o : o + n].tolist()

    # -- writes ---------------------------------------------------------------------------------

    def set(self, label: int, tenants: list[int]) -> None:
        """Give a label with no tenants yet this (duplicate-free) tenant list."""
        n = len(tenants)
        if n:
            self.fit(max(tenants))
            o = self._alloc(n)
            self.pool[o : o + n] = tenants
            self.off[label] = o
            self.size[label] = n

    def add(self, label: int, t: int) -> bool:
        """Add tenant `t` to label's slice; False (nothing changed) if it is already there.

        The common case runs compiled (`_kernels.access_add`); arena growth runs here.
        """
        if t < _NARROW_MAX or self.pool.dtype != np.uint16:
            r = _kernels.access_add(self.slices, self.pool, self.meta, label, t)
            if r < 2:
                return r == 1
        n = self.size.item(label)
        o = self.off.item(label)
        if n and t in self.pool[o : o + n].tolist():
            return False
        self.fit(t)
        if n and o + n == self.used and self.used < self.pool.shape[0]:
            self.used += 1  # the slice ends the arena: extend in place
        else:
            old = self.pool[o : o + n].copy() if n else None
            self.garbage += n
            self.size[label] = 0  # so a compaction inside _alloc skips it
            o = self._alloc(n + 1)
            if n:
                self.pool[o : o + n] = old
            self.off[label] = o
        self.pool[o + n] = t
        self.size[label] = n + 1
        return True

    def discard(self, label: int, t: int) -> None:
        """Remove tenant `t` (present) from label's slice: swap with the last, shorten."""
        n = self.size.item(label)
        o = self.off.item(label)
        view = self.pool[o : o + n]
        j = view.tolist().index(t)
        view[j] = view[n - 1]
        self.size[label] = n - 1
        self._freed(1)

    def clear(self, label: int) -> None:
        """Drop every tenant of `label`."""
        n = self.size.item(label)
        self.size[label] = 0
        self.off[label] = 0
        self._freed(n)

    # -- arena ----------------------------------------------------------------------------------

    def fit(self, t: int) -> None:
        """Make the arena's dtype able to hold tenant int `t` (widen once from uint16)."""
        if t >= _NARROW_MAX and self.pool.dtype == np.uint16:
            self.pool = self.pool.astype(np.int32)

    def _freed(self, n: int) -> None:
        self.garbage += n
        if self.garbage == self.used:
            self.pool = np.empty(0, dtype=self.pool.dtype)
            self.used = self.garbage = 0
        elif self.garbage > _MIN_POOL and 4 * self.garbage > self.used - self.garbage:
            self._compact(0)

    def _alloc(self, n: int) -> int:
        if self.used + n > self.pool.shape[0]:
            if self.garbage > _MIN_POOL and 4 * self.garbage > self.used - self.garbage:
                self._compact(n)
            if self.used + n > self.pool.shape[0]:
                self._grow_pool(self.used + n, min_size=_MIN_POOL, what="access")
        o = self.used
        self.used += n
        return o

    def _compact(self, extra: int) -> None:
        """Copy the live slices, in label order, into a fresh arena (+ extra, + 1/8 spare)."""
        labels = np.flatnonzero(self.size)
        sizes = self.size[labels].astype(np.int64)
        live = int(sizes.sum())
        new_off = np.cumsum(sizes) - sizes
        src = np.repeat(self.off[labels].astype(np.int64) - new_off, sizes) + np.arange(live)
        size = max(_MIN_POOL, live + extra + (live + extra) // 8)
        assert size <= MAX_POOL, "access arena would exceed 2**31 slots"
        pool = np.empty(size, dtype=self.pool.dtype)
        pool[:live] = self.pool[src]
        self.off[labels] = new_off
        self.pool, self.used, self.garbage = pool, live, 0

    # -- bulk -----------------------------------------------------------------------------------

    @classmethod
    def from_pairs(cls, cap: int, labels: np.ndarray, tenants: np.ndarray) -> AccessMap:
        """An exact-size map of these (label, tenant) pairs (no duplicates) over `cap` labels."""
        self = cls(cap)
        order = np.argsort(labels, kind="stable")
        sizes = np.bincount(labels, minlength=cap)[:cap]
        self.size[:] = sizes
        self.off[:] = np.cumsum(sizes) - sizes
        n = int(sizes.sum())
        assert n <= MAX_POOL, "access arena would exceed 2**31 slots"
        dtype = np.uint16 if n == 0 or int(tenants.max()) < _NARROW_MAX else np.int32
        self.pool = tenants[order].astype(dtype)
        self.used = n
        return self

    def to_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64, tenants int64) of every stored pair, grouped by label."""
        labels = np.flatnonzero(self.size)
        sizes = self.size[labels].astype(np.int64)
        starts = np.cumsum(sizes) - sizes
        src = np.repeat(self.off[labels].astype(np.int64) - starts, sizes) + np.arange(int(sizes.sum()))
        return np.repeat(labels, sizes), self.pool[src].astype(np.int64)
