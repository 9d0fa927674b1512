"""The index's tenants: names <-> small ints (freed ints reused) -> `TenantTree`, and a compiled
view of every tenant's arrays, so that one compiled call answers which tenants see a label.

Why the view: the index keeps no label -> tenants map (see `curator.index`), so remove() and
access_of() ask every tenant. Asked one compiled call per tenant, that cost ~2 µs a tenant
(numba's dispatch and the Python around it): 684 µs per removed label at 300 tenants on the
arXiv bench. The view lists every tenant's (table, pool, meta) in three numba typed lists,
handed to `_kernels.seen_by` as three arguments, so a remove is one call whatever the number
of tenants (the work inside stays O(tenants), ~0.05 µs each).

Keeping it current: only the Python side ever reallocates a tenant's arrays (the compiled
grant hands such cases back to it), and the index calls `sync(t)` after every write that may
have done so for tenant t; `sync` compares the arrays it listed with the tenant's by identity.
The view holds references to what it lists, so a tenant's replaced arrays live until its
sync, i.e. until the end of the write that replaced them.

Built lazily, on the first `seen_by`: typed lists compile their methods on first use in a
process (~1 s, not cached on disk), which an index that never removes should not pay.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np

from curator import _kernels
from curator.members import LeafMembers
from curator.tenants import TenantTree

# numba's array struct in a typed list: meminfo, parent, nitems, itemsize, data, then shape
# and strides (ndim words each)
_ITEM_BYTES = (5 + 2 * 2) * 8 + 2 * (5 + 2 * 1) * 8


class TenantDirectory:
    """Tenants of one index: `ids` (name -> int), `names` / `trees` by int (None = free)."""

    __slots__ = ("ids", "names", "trees", "_free", "_view", "_listed", "_vacant")

    def __init__(self) -> None:
        # what the view lists for a free int: no rows, so the tenant sees nothing
        self._vacant = (np.zeros((1, 4), np.int32), np.zeros(0, np.int32), np.zeros(3, np.int64))
        self._clear()

    def _clear(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str | None] = []
        self.trees: list[TenantTree | None] = []
        self._free: list[int] = []
        self._view: tuple[object, object, object] | None = None  # typed lists: tables, pools, metas
        self._listed: list[tuple[object, ...]] = []  # per int: (tree, table, pool) the view lists

    def __len__(self) -> int:
        return len(self.ids)

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
        """Make the view list tenant t's current arrays (a no-op while nothing moved)."""
        if self._view is None:
            return
        tt = self.trees[t]
        arrays = self._vacant if tt is None else (tt.table, tt.pool, tt.meta)
        if t < len(self._listed):
            old = self._listed[t]
            if old[0] is tt and old[1] is arrays[0] and old[2] is arrays[1]:
                return
            self._listed[t] = (tt, arrays[0], arrays[1])
            for lst, a in zip(self._view, arrays):
                lst[t] = a  # type: ignore[index]
        else:
            assert t == len(self._listed), "tenant ints are handed out in order"
            self._listed.append((tt, arrays[0], arrays[1]))
            for lst, a in zip(self._view, arrays):
                lst.append(a)  # type: ignore[attr-defined]

    def seen_by(
        self, labels: list[int], ancestors: np.ndarray, leaf: np.ndarray, members: LeafMembers
    ) -> list[list[int]]:
        """For each label, the ints of the tenants that see it (one compiled call)."""
        if self._view is None:
            self._view = _kernels.array_lists()
            for t in range(len(self.trees)):
                self.sync(t)
        out = np.zeros((len(labels), len(self.trees)), dtype=np.bool_)
        arr = np.asarray(labels, dtype=np.int64)
        _kernels.seen_by(*self._view, ancestors, leaf, arr, members.blocks, members.pool, out)
        return [np.flatnonzero(row).tolist() for row in out]

    def nbytes(self) -> int:
        """The maps and lists (Python object sizes) and the view (numba's list items, estimated)."""
        maps = sys.getsizeof(self.ids) + sys.getsizeof(self.names) + sys.getsizeof(self.trees)
        maps += sys.getsizeof(self._free) + sum(sys.getsizeof(name) for name in self.ids)
        view = 0 if self._view is None else len(self._listed) * _ITEM_BYTES + sys.getsizeof(self._listed)
        return maps + view
