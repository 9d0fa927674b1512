"""The index's tenants: names <-> small ints (freed ints reused) -> `TenantTree`, and an address
table of every tenant's arrays, so that one compiled call answers which tenants see a label.

Why the address table: the index keeps no label -> tenants map (see `curator.index`), so
remove() and access_of() ask every tenant. Asked one compiled call per tenant, that cost
~2 µs a tenant (numba's dispatch and the Python around it): 684 µs per removed label at 300
tenants on the arXiv bench. Handing numba all tenants' arrays in one call needs them in one
argument. Numba typed lists of arrays do that but cost ~77 ns per tenant to read (reference
counting per array) and ~0.7 s of compilation in every new process (their methods are not
cached on disk); an int64 table of addresses costs ~4 ns per tenant (measured: one call over
300 tenants asking nothing, 23 µs with typed lists, 1.1 µs with addresses) and nothing at
start. What remains is the asking itself: ~50 µs per label at 300 tenants, mostly cache
misses on the tenants' tables.

Row t of `addr` = (table address, table rows, pool address, pool length, meta address) of
tenant t (`_kernels.DIR_*` columns); a free int lists empty arrays (no rows: sees nothing).

Memory safety: the directory keeps a reference to every array whose address it lists
(`_held`), replaced only together with the row, so an address never outlives its array.
Only the Python side ever reallocates a tenant's arrays (the compiled grant and revoke hand
such cases back to it), and the index calls `sync(t)` after every write that may have done so
for tenant t; `sync` compares the held arrays with the tenant's by identity. A missed sync
would leave the row pointing at the tenant's previous (still held, so still valid) arrays:
stale answers, never a dangling read; and it would keep those arrays alive, which the tests
check does not happen.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np

from curator import _kernels
from curator.members import LeafMembers
from curator.tenants import TenantTree

_MIN_ROWS = 4


def _address(a: np.ndarray, dtype: type, ndim: int) -> int:
    """Data address of an array the compiled side may read as C-contiguous `dtype` (checked)."""
    if a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous:
        raise AssertionError(f"tenant array is {a.dtype} {a.ndim}-d, contiguous={a.flags.c_contiguous}")
    return int(a.ctypes.data)


class TenantDirectory:
    """Tenants of one index: `ids` (name -> int), `names` / `trees` by int (None = free)."""

    __slots__ = ("ids", "names", "trees", "addr", "_free", "_held", "_vacant")

    def __init__(self) -> None:
        # what a free int lists: one all-zero row (entries 0), so the tenant sees nothing
        self._vacant = (np.zeros((1, 4), np.int32), np.zeros(0, np.int32), np.zeros(3, np.int64))
        self._clear()

    def _clear(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str | None] = []
        self.trees: list[TenantTree | None] = []
        self._free: list[int] = []
        # row t: tenant t's arrays (see the module docstring; read by `_kernels.seen_by`)
        self.addr = np.zeros((_MIN_ROWS, 5), dtype=np.int64)
        self._held: list[tuple[object, ...]] = []  # per int: (tree, table, pool, meta) addr lists

    def live(self) -> Iterator[tuple[int, str, TenantTree]]:
        """(int, name, tree) of every tenant, by int."""
        for t, tt in enumerate(self.trees):
            if tt is not None:
                yield t, str(self.names[t]), tt

    def add(self, name: str, tt: TenantTree) -> int:
        """Register a new tenant (`name` absent); its int (a freed one if any)."""
        if self._free:
            t = self._free.pop()
            self.names[t], self.trees[t] = name, tt
        else:
            t = len(self.trees)
            self.names.append(name)
            self.trees.append(tt)
        self.ids[name] = t
        self.sync(t)
        return t

    def replace(self, t: int, tt: TenantTree) -> None:
        """Give tenant t a new structure (after the GCT changed)."""
        self.trees[t] = tt
        self.sync(t)

    def drop(self, t: int) -> None:
        """Forget tenant t; its int is reused. The last one gone resets the ints."""
        name = self.names[t]
        assert name is not None
        del self.ids[name]
        self.names[t] = self.trees[t] = None
        self._free.append(t)
        if not self.ids:
            self._clear()
        else:
            self.sync(t)

    def sync(self, t: int) -> None:
        """Make row t list tenant t's current arrays (a no-op while nothing moved)."""
        tt = self.trees[t]
        table, pool, meta = self._vacant if tt is None else (tt.table, tt.pool, tt.meta)
        if t < len(self._held):
            old = self._held[t]
            if old[0] is tt and old[1] is table and old[2] is pool and old[3] is meta:
                return
        else:
            assert t == len(self._held), "tenant ints are handed out in order"
            self._held.append(())
            if t == self.addr.shape[0]:
                self.addr = np.concatenate([self.addr, np.zeros_like(self.addr)])
        row = self.addr[t]
        row[_kernels.DIR_TABLE], row[_kernels.DIR_ROWS] = _address(table, np.int32, 2), table.shape[0]
        row[_kernels.DIR_POOL], row[_kernels.DIR_POOL_LEN] = _address(pool, np.int32, 1), pool.shape[0]
        row[_kernels.DIR_META] = _address(meta, np.int64, 1)
        self._held[t] = (tt, table, pool, meta)

    def seen_by(
        self, labels: list[int], ancestors: np.ndarray, leaf: np.ndarray, members: LeafMembers
    ) -> list[list[int]]:
        """For each label, the ints of the tenants that see it (one compiled call)."""
        out = np.zeros((len(labels), len(self._held)), dtype=np.bool_)
        arr = np.asarray(labels, dtype=np.int64)
        _kernels.seen_by(self.addr, ancestors, leaf, arr, members.blocks, members.pool, out)
        return [np.flatnonzero(row).tolist() for row in out]

    def nbytes(self) -> int:
        """The maps and lists (Python object sizes) and the address table."""
        maps = sys.getsizeof(self.ids) + sys.getsizeof(self.names) + sys.getsizeof(self.trees)
        maps += sys.getsizeof(self._free) + sum(sys.getsizeof(name) for name in self.ids)
        return maps + sys.getsizeof(self._held) + self.addr.nbytes
