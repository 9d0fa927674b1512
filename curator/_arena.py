"""What the two id arenas of `curator` share (tenant shortlists, and the GCT leaves' member
slots).

Both keep variable-length int slices in one flat `pool` array, described by the rows of a
table (offset and capacity columns): a slice that outgrows its room moves to the arena's end
and leaves garbage behind, which a compaction reclaims. `used` (the high-water mark) and
`garbage` live in the int64 `meta` array (first two entries) so that the compiled fast paths
in `curator._kernels` can update them in place.
"""

from __future__ import annotations

import numpy as np

MAX_POOL = 2**31 - 1  # slice offsets are int32


class ArenaCounters:
    """Mixin: `used` / `garbage` views of `meta`, and geometric growth of `pool`."""

    __slots__ = ()
    meta: np.ndarray
    pool: np.ndarray

    @property
    def used(self) -> int:
        """Arena high-water mark."""
        return self.meta.item(0)

    @used.setter
    def used(self, v: int) -> None:
        self.meta[0] = v

    @property
    def garbage(self) -> int:
        """Slots below `used` that no slice owns any more."""
        return self.meta.item(1)

    @garbage.setter
    def garbage(self, v: int) -> None:
        self.meta[1] = v

    def _alloc(self, n: int) -> int:  # each arena: reserve (compacting or growing), then bump
        raise NotImplementedError

    def _regrow(self, table: np.ndarray, row: int, off_col: int, cap_col: int, keep: int, grown: int) -> int:
        """Give the slice of `table[row]` (offset and capacity in columns off_col, cap_col)
        `grown` slots, keeping its first `keep`: in place when it ends the arena and the arena
        has room, else moved to the arena's end (its old slots become garbage). Its offset."""
        off, cap = table.item(row, off_col), table.item(row, cap_col)
        if off + cap == self.used and off + grown <= self.pool.shape[0]:
            self.used += grown - cap
        else:
            old = self.pool[off : off + keep].copy()
            self.garbage += cap
            table[row, cap_col] = 0  # so a compaction inside _alloc skips it
            off = self._alloc(grown)
            self.pool[off : off + keep] = old
            table[row, off_col] = off
        table[row, cap_col] = grown
        return off

    def _compact_slices(
        self, table: np.ndarray, rows: np.ndarray, off_col: int, cap_col: int, copy_col: int, extra: int, *,
        min_size: int, what: str, fill: int | None = None,
    ) -> None:
        """Copy the slices of these `table` rows (their first `copy_col` slots each), in row
        order, into a fresh arena sized for their capacities (+ extra, + 1/8 spare; filled
        with `fill`, or left uninitialised), and point the rows at their new offsets."""
        caps = table[rows, cap_col].astype(np.int64)
        live = int(caps.sum())
        size = max(min_size, live + extra + (live + extra) // 8)
        assert size <= MAX_POOL, f"{what} arena would exceed 2**31 slots"
        pool = np.empty(size, dtype=self.pool.dtype) if fill is None else np.full(size, fill, self.pool.dtype)
        offs = np.concatenate(([0], np.cumsum(caps)[:-1])) if rows.size else caps
        for row, off in zip(rows.tolist(), offs.tolist()):
            src, n = table.item(row, off_col), table.item(row, copy_col)
            pool[off : off + n] = self.pool[src : src + n]
            table[row, off_col] = off
        self.pool, self.used, self.garbage = pool, live, 0

    def _grow_pool(self, need: int, *, min_size: int, what: str) -> None:
        """Reallocate `pool` (same dtype, live prefix copied) to at least `need` slots, growing
        by a quarter at least: geometric, so appends stay amortised O(1). Why not 1.5x: the
        spare is index memory (arXiv bench, 89 category tenants: shortlists 0.84 -> 0.77 MiB);
        an arena reallocation is one memcpy, so copying each slot ~4 times instead of ~2 is
        cheap."""
        size = max(min_size, need, self.pool.shape[0] * 5 // 4)
        assert size <= MAX_POOL, f"{what} arena would exceed 2**31 slots"
        pool = np.empty(size, dtype=self.pool.dtype)
        pool[: self.used] = self.pool[: self.used]
        self.pool = pool
