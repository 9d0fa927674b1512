"""`TenantStore`: every tenant's sub-tree of the GCT (exact per-node counts and shortlists) in
the four arrays of `curator.layout`, owned by the index, plus the tenant names.

The compiled write steps (`curator._writes`) change the arrays in place and never
reallocate; when one needs more room it says how much before changing anything, and the
store makes the room here and runs it again. This is the only place that grows, moves or
compacts: a tenant's row slice moves to the end of `rows` (1.5× room) when full; `rows` grows
1.25× or is compacted first when a quarter of it is garbage, and `ids` (most of the index
beyond the vectors) keeps garbage and spare each under 1/SLACK of what is live. Why one structure for all tenants: a remove() must ask every
tenant whether it sees the label, in one compiled call that gets all of them as arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from curator import _kernels, _writes
from curator.layout import (
    ARENA_WIDTH,
    CAP,
    COUNT,
    ENTRIES,
    FIRST,
    IDS_GARBAGE,
    IDS_USED,
    MIN_ROOM,
    NODE,
    OFF,
    ROOM,
    ROW_WIDTH,
    ROWS_GARBAGE,
    ROWS_USED,
    SLACK,
    TENANT_WIDTH,
    Step,
)
from curator.tree import Tree

MAX_IDS = 2**31 - 1  # list offsets are int32
_MIN_IDS = 64
_MIN_ROWS = 16


@dataclass(frozen=True, slots=True)
class TenantView:
    """One tenant's rows (a copy) and lists, as they are now: for tests and diagnostics."""

    rows: np.ndarray  # int32 (entries, ROW_WIDTH), sorted by NODE
    lists: dict[int, np.ndarray]  # node -> ids (copies, in list order)

    @property
    def size(self) -> int:
        """How many ids the tenant sees (its root row's count)."""
        return int(self.rows[0, COUNT]) if self.rows.shape[0] else 0

    def counts(self, n_nodes: int) -> np.ndarray:
        """Dense per-node counts (int32 (n_nodes,))."""
        out = np.zeros(n_nodes, dtype=np.int32)
        out[self.rows[:, NODE]] = self.rows[:, COUNT]
        return out


class TenantStore:
    """Tenants by name and by int (freed ints reused), and their rows and lists."""

    __slots__ = ("_free", "arena", "ids", "index_of", "names", "rows", "tenants")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """No tenants, and every array back to empty."""
        self.index_of: dict[str, int] = {}
        self.names: list[str | None] = []
        self._free: list[int] = []
        self.tenants = np.zeros((0, TENANT_WIDTH), dtype=np.int64)
        self._clear_lists()

    def _clear_lists(self) -> None:
        self.rows = np.zeros((0, ROW_WIDTH), dtype=np.int32)
        self.ids = np.empty(0, dtype=np.int32)
        self.arena = np.zeros(ARENA_WIDTH, dtype=np.int64)
        self.tenants[:] = 0

    # -- tenants --------------------------------------------------------------------------------

    def live(self) -> Iterator[tuple[int, str]]:
        """(int, name) of every tenant, by int."""
        for t, name in enumerate(self.names):
            if name is not None:
                yield t, name

    def add(self, name: str) -> int:
        """Register a tenant with nothing yet (`name` absent); its int (a freed one if any)."""
        if self._free:
            t = self._free.pop()
            self.names[t] = name
        else:
            t = len(self.names)
            self.names.append(name)
            if t == self.tenants.shape[0]:
                self.tenants = np.concatenate(
                    [self.tenants, np.zeros((max(4, t // 2), TENANT_WIDTH), np.int64)]
                )
        self.index_of[name] = t
        return t

    def drop(self, t: int) -> None:
        """Forget tenant t and its rows (garbage now); its int is reused. The last one gone
        gives every array back."""
        name = self.names[t]
        assert name is not None
        del self.index_of[name]
        self.names[t] = None
        self._free.append(t)
        self.arena[ROWS_GARBAGE] += self.tenants[t, ROOM]
        self.tenants[t] = 0
        if not self.index_of:
            self.clear()

    def table(self, t: int) -> np.ndarray:
        """Tenant t's valid rows (a view)."""
        first = int(self.tenants[t, FIRST])
        return self.rows[first : first + int(self.tenants[t, ENTRIES])]

    def size(self, t: int) -> int:
        """How many ids tenant t sees (its root row's count; the root is node 0)."""
        tenants = self.tenants
        return self.rows.item(tenants.item(t, FIRST), COUNT) if tenants.item(t, ENTRIES) else 0

    def view(self, t: int) -> TenantView:
        rows = self.table(t).copy()
        lists = {int(n): self.ids[o : o + c].copy() for n, c, o, cap in rows.tolist() if cap > 0}
        return TenantView(rows, lists)

    def labels(self, t: int) -> np.ndarray:
        """Every id tenant t sees (int32, ascending)."""
        rows = self.table(t)
        parts = [self.ids[o : o + c] for _, c, o, cap in rows.tolist() if cap > 0]
        return np.sort(np.concatenate(parts)) if parts else np.empty(0, np.int32)

    def nbytes(self) -> dict[str, int]:
        """Allocated bytes (spare included): rows and counters, lists, the name maps (estimate)."""
        names = sys.getsizeof(self.index_of) + sys.getsizeof(self.names) + sys.getsizeof(self._free)
        names += sum(sys.getsizeof(name) for name in self.index_of)
        return {
            "tenant_counts": self.rows.nbytes + self.tenants.nbytes + self.arena.nbytes,
            "shortlists": self.ids.nbytes,
            "tenant_map": names,
        }

    # -- the write steps ------------------------------------------------------------------------

    def grant(self, t: int, label: int, tree: Tree, leaf: np.ndarray, tau: int) -> bool:
        """Tenant t sees `label` (`_writes.grant`); False if it is absent or already seen."""
        return self._run(_writes.grant, t, tree, leaf, label, tau) == Step.DONE

    def revoke(self, t: int, label: int, tree: Tree, leaf: np.ndarray, tau: int) -> bool:
        """Tenant t stops seeing `label` (`_writes.revoke`); False if it did not see it."""
        if self._run(_writes.revoke, t, tree, leaf, label, tau) != Step.DONE:
            return False
        room, entries = self.tenants.item(t, ROOM), self.tenants.item(t, ENTRIES)
        if room > MIN_ROOM and entries <= room // 4:  # give back spare rows (garbage now)
            self.tenants[t, ROOM] = max(MIN_ROOM, 2 * entries)
            self.arena[ROWS_GARBAGE] += room - max(MIN_ROOM, 2 * entries)
        garbage = self.arena.item(IDS_GARBAGE)
        if garbage > _MIN_IDS and (SLACK + 1) * garbage > self.arena.item(
            IDS_USED
        ):  # > live / SLACK
            self._compact_ids(0)
        return True

    def build(self, t: int, labels: np.ndarray, tree: Tree, leaf: np.ndarray, tau: int) -> None:
        """Tenant t (no rows) sees exactly these distinct live labels, in canonical form."""
        self._run(_writes.build, t, tree, leaf, np.ascontiguousarray(labels, dtype=np.int32), tau)

    def _run(
        self,
        step_of: Callable[..., tuple[int, int]],
        t: int,
        tree: Tree,
        leaf: np.ndarray,
        arg: object,
        tau: int,
    ) -> int:
        """Run a compiled write step for tenant t, making the room it asks for until it has
        it; DONE or NOOP (a `Step` value)."""
        while True:
            step, amount = step_of(
                self.rows,
                self.ids,
                self.tenants,
                self.arena,
                t,
                tree.ancestors,
                leaf,
                tree.child_count,
                arg,
                tau,
            )
            if step == Step.DONE or step == Step.NOOP:
                return step
            self._make_room(t, step, amount)

    def rebuild(
        self, labels_of: list[tuple[int, np.ndarray]], tree: Tree, leaf: np.ndarray, tau: int
    ) -> None:
        """Every listed tenant rebuilt from its labels (after the GCT changed); arrays anew."""
        self._clear_lists()
        total = sum(len(labels) for _, labels in labels_of)
        self._reserve_ids(total + total // SLACK)  # the lists get exactly their size
        for t, labels in labels_of:
            self.build(t, labels, tree, leaf, tau)

    def seen_by(self, labels: list[int], tree: Tree, leaf: np.ndarray) -> list[list[int]]:
        """For each label, the ints of the tenants that see it (one compiled call)."""
        out = np.zeros((len(labels), self.tenants.shape[0]), dtype=np.bool_)
        arr = np.asarray(labels, dtype=np.int64)
        _kernels.seen_by(self.rows, self.ids, self.tenants, tree.ancestors, leaf, arr, out)
        return [np.flatnonzero(row).tolist() for row in out]

    # -- room -----------------------------------------------------------------------------------

    def _make_room(self, t: int, step: int, amount: int) -> None:
        if step == Step.NEED_ROWS:
            self._move_rows(t, max(int(amount), MIN_ROOM, int(self.tenants[t, ROOM]) * 3 // 2))
        else:
            self._reserve_ids(int(amount))

    def _move_rows(self, t: int, room: int) -> None:
        """Move tenant t's rows to the end of `rows` with `room` rows reserved."""
        used, garbage = int(self.arena[ROWS_USED]), int(self.arena[ROWS_GARBAGE])
        if used + room > self.rows.shape[0]:
            if 4 * garbage > used - garbage:
                self._compact_rows(room)
            if int(self.arena[ROWS_USED]) + room > self.rows.shape[0]:
                need = int(self.arena[ROWS_USED]) + room
                rows = np.zeros(
                    (max(_MIN_ROWS, need, self.rows.shape[0] * 5 // 4), ROW_WIDTH), np.int32
                )
                rows[: self.arena[ROWS_USED]] = self.rows[: self.arena[ROWS_USED]]
                self.rows = rows
        old = self.table(t).copy()
        at = int(self.arena[ROWS_USED])
        self.rows[at : at + old.shape[0]] = old
        self.arena[ROWS_GARBAGE] += self.tenants[t, ROOM]
        self.arena[ROWS_USED] = at + room
        self.tenants[t, FIRST] = at
        self.tenants[t, ROOM] = room

    def _compact_rows(self, extra: int) -> None:
        """Copy every tenant's row slice (its room whole), by int, into a fresh `rows`."""
        rooms = self.tenants[:, ROOM]
        live = int(rooms.sum())
        rows = np.zeros((max(_MIN_ROWS, live + extra + (live + extra) // 8), ROW_WIDTH), np.int32)
        at = 0
        for t in np.flatnonzero(rooms).tolist():
            first, room = int(self.tenants[t, FIRST]), int(rooms[t])
            rows[at : at + room] = self.rows[first : first + room]
            self.tenants[t, FIRST] = at
            at += room
        self.rows = rows
        self.arena[ROWS_USED], self.arena[ROWS_GARBAGE] = live, 0

    def _reserve_ids(self, n: int) -> None:
        """At least n free slots at the end of `ids` (compacting first when garbage is over
        1/SLACK of what is live, else growing by 1/SLACK at least)."""
        used, garbage = int(self.arena[IDS_USED]), int(self.arena[IDS_GARBAGE])
        if used + n <= self.ids.shape[0]:
            return
        if SLACK * garbage > used - garbage:
            self._compact_ids(n)
        used = int(self.arena[IDS_USED])
        if used + n > self.ids.shape[0]:
            size = max(_MIN_IDS, used + n, self.ids.shape[0] + self.ids.shape[0] // SLACK)
            assert size <= MAX_IDS, "the list arena would exceed 2**31 slots"
            ids = np.empty(size, dtype=np.int32)
            ids[:used] = self.ids[:used]
            self.ids = ids

    def _compact_ids(self, extra: int) -> None:
        """Copy every list (its reservation kept) into a fresh `ids` sized for them, + extra,
        + 1/SLACK spare; lists are laid out tenant by tenant, in row order."""
        rows = np.concatenate(
            [self.rows[:0]] + [self.table(t) for t in range(self.tenants.shape[0])]
        )
        lists = np.flatnonzero(rows[:, CAP])
        caps, counts, offs = (
            rows[lists, CAP].astype(np.int64),
            rows[lists, COUNT].astype(np.int64),
            rows[lists, OFF],
        )
        live = int(caps.sum())
        size = max(_MIN_IDS, live + extra + (live + extra) // SLACK)
        assert size <= MAX_IDS, "the list arena would exceed 2**31 slots"
        new_offs = np.cumsum(caps) - caps
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        ids = np.empty(size, dtype=np.int32)
        ids[np.repeat(new_offs, counts) + within] = self.ids[np.repeat(offs, counts) + within]
        rows[lists, OFF] = new_offs
        at = 0
        for t in range(self.tenants.shape[0]):  # write the new offsets back, tenant by tenant
            first, entries = int(self.tenants[t, FIRST]), int(self.tenants[t, ENTRIES])
            self.rows[first : first + entries] = rows[at : at + entries]
            at += entries
        self.ids = ids
        self.arena[IDS_USED], self.arena[IDS_GARBAGE] = live, 0
