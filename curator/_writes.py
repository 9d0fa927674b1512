"""COMPILED KERNELS (numba), write side: one tenant's grant (with the split it may cause),
revoke (with the merge it may cause) and canonical build, each step's one implementation.

They work in place on the arrays of `curator.layout` (all tenants' rows and lists, owned by
`curator.store.TenantStore`) and never reallocate: a step that needs more room than there is
reports NEED_ROWS / NEED_IDS with the amount before it changes anything, and the store makes
the room (growing or compacting, in Python) and runs it again. Every step returns
(`layout.Step`, amount); the entry points at the end return the member's value instead,
which Python compares with `Step` as it is (boxing an enum member back into Python costs as
much as the rest of the call).

Every step takes (rows, ids, tenants, arena, t, ancestors, leaf, child_count, its argument,
τ), so that the store runs them all alike.

Canonical form (kept by every step, checked by the tests): a tenant's lists sit exactly at
the highest nodes n on each id's path with COUNT[n] <= τ, or at the GCT leaf when there is
no such node (lists at GCT leaves may exceed τ). Hence: a list's parent holds more than τ
ids; a grant that takes a list past τ above a GCT leaf splits it (its ids are re-placed
canonically below it); a revoke that takes an ancestor's count down to τ merges everything
below that ancestor into one list there.

Why compiled: a single-label grant or revoke is a dozen scalar reads and writes (binary
searches over the tenant's rows along the path), several times dearer interpreted, and a
remove() revokes for every tenant that sees the label.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from curator._kernels import find, list_row, lower_bound
from curator.layout import (
    CAP,
    COUNT,
    ENTRIES,
    FIRST,
    IDS_GARBAGE,
    IDS_USED,
    MIN_CAP,
    NODE,
    OFF,
    ROOM,
    ROW_WIDTH,
    Step,
)


@njit(nogil=True, cache=True)
def _grown(cap: int) -> int:
    """Capacity of a full list that takes one more id: 1/8 more (geometric: amortised O(1)
    appends; 1/8, not 1/2, because the reserve is index memory), at least MIN_CAP more."""
    return cap + max(cap // 8, MIN_CAP)


@njit(nogil=True, cache=True)
def _capacity(n: int) -> int:
    """Reserved slots for a list of n ids made in one go by a split or a merge: n + 1/8."""
    return max(MIN_CAP, n + n // 8)


@njit(nogil=True, cache=True)
def _free(ids: np.ndarray, arena: np.ndarray) -> int:
    """Free slots at the end of `ids`."""
    return ids.shape[0] - arena[IDS_USED]


@njit(nogil=True, cache=True)
def _alloc(arena: np.ndarray, n: int) -> int:
    """Offset of n fresh slots at the end of `ids` (the caller checked `_free`)."""
    off = arena[IDS_USED]
    arena[IDS_USED] = off + n
    return off


@njit(nogil=True, cache=True)
def _release(table: np.ndarray, arena: np.ndarray, r: int) -> None:
    """Drop row r's list (its slots become garbage; the row stays, as an internal node)."""
    arena[IDS_GARBAGE] += table[r, CAP]
    table[r, OFF] = 0
    table[r, CAP] = 0


@njit(nogil=True, cache=True)
def _count_above(
    table: np.ndarray, ancestors: np.ndarray, at: int, j: int, r: int, by: int
) -> None:
    """Add `by` to the counts of the rows of leaf `at`'s path above depth j, whose row is r
    (found again: they lie before r, in path order; cheaper than remembering them in a
    scratch array, which would be a heap allocation per call)."""
    lo = 0
    for u in range(j):
        lo = lower_bound(table, lo, r, ancestors[at, u])
        table[lo, COUNT] += by
        lo += 1


@njit(nogil=True, cache=True)
def _plan(
    vals: np.ndarray,
    leaf: np.ndarray,
    ancestors: np.ndarray,
    child_count: np.ndarray,
    d0: int,
    tau: int,
    exact: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The canonical rows for the ids `vals`, which all pass one node at depth d0 - 1 (or d0 =
    0: the root), from depth d0 down: `new` (k, ROW_WIDTH) rows in node order (NODE, COUNT,
    CAP; CAP = 0 for an internal node, OFF unset) and `vals` reordered list by list, in row
    order. Lists get exactly their size (`exact`: a bulk build costs only what it holds), or
    1/8 spare (a split, whose lists are still growing)."""
    n = vals.shape[0]
    at = leaf[vals]
    list_of = np.empty(n, dtype=np.int32)  # the node whose list gets vals[i]
    most = min(
        max(n, 1) * (ancestors.shape[1] - d0), child_count.shape[0]
    )  # a row per node at most
    new = np.zeros((most, ROW_WIDTH), dtype=np.int32)
    k = 0
    active = np.arange(n)
    d = d0
    while active.shape[0] > 0:
        nodes = np.empty(active.shape[0], dtype=np.int32)
        for i in range(active.shape[0]):
            nodes[i] = ancestors[at[active[i]], d]
        order = np.argsort(nodes, kind="mergesort")
        keep = np.empty(active.shape[0], dtype=np.int64)
        kept = 0
        a = 0
        while a < order.shape[0]:  # one group of equal nodes: one new row
            node = nodes[order[a]]
            b = a
            while b < order.shape[0] and nodes[order[b]] == node:
                b += 1
            is_list = b - a <= tau or child_count[node] == 0
            new[k, NODE] = node
            new[k, COUNT] = b - a
            new[k, CAP] = (b - a if exact else _capacity(b - a)) if is_list else 0
            k += 1
            for u in range(a, b):
                if is_list:
                    list_of[active[order[u]]] = node
                else:
                    keep[kept] = active[order[u]]
                    kept += 1
            a = b
        active = keep[:kept]
        d += 1
    new = new[:k]
    return new[np.argsort(new[:, NODE])], vals[np.argsort(list_of, kind="mergesort")]


@njit(nogil=True, cache=True)
def _place(
    table: np.ndarray,
    ids: np.ndarray,
    arena: np.ndarray,
    entries: int,
    new: np.ndarray,
    vals: np.ndarray,
) -> int:
    """Give the planned rows `new` their lists (filled from `vals`, list by list) and merge
    them into the tenant's `entries` sorted rows (the caller checked the room; the tenant has
    no row at any of their nodes). Returns the new number of rows."""
    pos = 0
    for j in range(new.shape[0]):
        if new[j, CAP] > 0:
            n = new[j, COUNT]
            off = _alloc(arena, new[j, CAP])
            ids[off : off + n] = vals[pos : pos + n]
            new[j, OFF] = off
            pos += n
    i, j, w = entries - 1, new.shape[0] - 1, entries + new.shape[0] - 1
    while j >= 0:  # merge from the back, in place
        if i >= 0 and table[i, NODE] > new[j, NODE]:
            table[w] = table[i]
            i -= 1
        else:
            table[w] = new[j]
            j -= 1
        w -= 1
    return entries + new.shape[0]


@njit(nogil=True, cache=True)
def _planned_room(
    tenants: np.ndarray, ids: np.ndarray, arena: np.ndarray, t: int, new: np.ndarray
) -> tuple[Step, int]:
    """NEED_ROWS / NEED_IDS when tenant t's rows or the id arena cannot take the plan, else DONE."""
    rows_needed = tenants[t, ENTRIES] + new.shape[0]
    if rows_needed > tenants[t, ROOM]:
        return Step.NEED_ROWS, rows_needed
    ids_needed = 0
    for j in range(new.shape[0]):
        ids_needed += new[j, CAP]
    if ids_needed > _free(ids, arena):
        return Step.NEED_IDS, ids_needed
    return Step.DONE, 0


@njit(nogil=True, cache=True)
def _build(
    rows: np.ndarray,
    ids: np.ndarray,
    tenants: np.ndarray,
    arena: np.ndarray,
    t: int,
    ancestors: np.ndarray,
    leaf: np.ndarray,
    child_count: np.ndarray,
    vals: np.ndarray,
    tau: int,
) -> tuple[Step, int]:
    """Tenant t (no rows yet) sees exactly `vals` (distinct live labels): its canonical rows and
    lists in one go, as granting them one by one would leave them (up to the order in a list)."""
    if vals.shape[0] == 0:
        return Step.NOOP, 0
    new, ordered = _plan(vals, leaf, ancestors, child_count, 0, tau, True)
    step, amount = _planned_room(tenants, ids, arena, t, new)
    if step != Step.DONE:
        return step, amount
    first = tenants[t, FIRST]
    tenants[t, ENTRIES] = _place(
        rows[first : first + tenants[t, ROOM]], ids, arena, 0, new, ordered
    )
    return Step.DONE, 0


@njit(nogil=True, cache=True)
def _grant(
    rows: np.ndarray,
    ids: np.ndarray,
    tenants: np.ndarray,
    arena: np.ndarray,
    t: int,
    ancestors: np.ndarray,
    leaf: np.ndarray,
    child_count: np.ndarray,
    label: int,
    tau: int,
) -> tuple[Step, int]:
    """Tenant t sees `label` from now on (NOOP if it is absent or already seen).

    Walks the label's path from the root to the tenant's list on it (append; a full list
    grows by 1/8, in place when it ends the arena, else moved to the arena's end; a list that
    passes τ above a GCT leaf is split), or to the first node where the tenant has nothing (a
    new row there, with the list {label}); then counts the id on every node passed.
    """
    if label < 0 or label >= leaf.shape[0] or leaf[label] < 0:
        return Step.NOOP, 0
    at = leaf[label]
    first, room, entries = tenants[t, FIRST], tenants[t, ROOM], tenants[t, ENTRIES]
    table = rows[first : first + room]
    lo = 0
    for j in range(ancestors.shape[1]):
        node = ancestors[at, j]
        r = lower_bound(table, lo, entries, node)
        if r < entries and table[r, NODE] == node and table[r, CAP] == 0:
            lo = r + 1  # an internal node of the tenant's sub-tree: descend
            continue
        if r < entries and table[r, NODE] == node:
            return _append(
                table, ids, tenants, arena, ancestors, leaf, child_count, t, label, tau, at, j, r
            )
        if entries == room:  # nothing here: a new row at r with the list {label}
            return Step.NEED_ROWS, entries + 1
        if _free(ids, arena) < MIN_CAP:
            return Step.NEED_IDS, MIN_CAP
        new = np.zeros((1, ROW_WIDTH), dtype=np.int32)
        new[0, NODE] = node
        new[0, COUNT] = 1
        new[0, CAP] = MIN_CAP
        tenants[t, ENTRIES] = _place(
            table, ids, arena, entries, new, np.full(1, label, dtype=np.int32)
        )
        _count_above(table, ancestors, at, j, r, 1)  # rows above r did not move
        return Step.DONE, 0
    return (
        Step.NOOP,
        0,
    )  # not reached: a path ends at a GCT leaf, which holds a list if it has a row


@njit(nogil=True, cache=True)
def _append(
    table: np.ndarray,
    ids: np.ndarray,
    tenants: np.ndarray,
    arena: np.ndarray,
    ancestors: np.ndarray,
    leaf: np.ndarray,
    child_count: np.ndarray,
    t: int,
    label: int,
    tau: int,
    at: int,
    j: int,
    r: int,
) -> tuple[Step, int]:
    """`grant` at row r (depth j), the tenant's list on the label's path."""
    node, n, off, cap = table[r, NODE], table[r, COUNT], table[r, OFF], table[r, CAP]
    if find(ids, off, n, label) >= 0:
        return Step.NOOP, 0
    if n + 1 > tau and child_count[node] > 0:  # split: re-place the ids one level down
        vals = np.empty(n + 1, dtype=np.int32)
        vals[:n] = ids[off : off + n]
        vals[n] = label
        new, ordered = _plan(vals, leaf, ancestors, child_count, j + 1, tau, False)
        step, amount = _planned_room(tenants, ids, arena, t, new)
        if step != Step.DONE:
            return step, amount
        _release(table, arena, r)
        table[r, COUNT] += 1
        _count_above(table, ancestors, at, j, r, 1)
        tenants[t, ENTRIES] = _place(table, ids, arena, tenants[t, ENTRIES], new, ordered)
        return Step.DONE, 0
    if n == cap:
        grown = _grown(cap)
        if off + cap == arena[IDS_USED] and off + grown <= ids.shape[0]:
            arena[IDS_USED] += grown - cap  # the list ends the arena: grow in place
        elif _free(ids, arena) < grown:
            return Step.NEED_IDS, grown
        else:
            moved = _alloc(arena, grown)
            ids[moved : moved + n] = ids[off : off + n]
            arena[IDS_GARBAGE] += cap
            off = moved
            table[r, OFF] = off
        table[r, CAP] = grown
    ids[off + n] = label
    table[r, COUNT] += 1
    _count_above(table, ancestors, at, j, r, 1)
    return Step.DONE, 0


@njit(nogil=True, cache=True)
def _revoke(
    rows: np.ndarray,
    ids: np.ndarray,
    tenants: np.ndarray,
    arena: np.ndarray,
    t: int,
    ancestors: np.ndarray,
    leaf: np.ndarray,
    label: int,
    tau: int,
) -> tuple[Step, int]:
    """Tenant t stops seeing `label` (NOOP if it does not see it).

    The id leaves the tenant's one list on its path (swapped with the last id) and every node
    on the way counts one less. Then, if an ancestor's count fell to τ, everything below the
    highest such ancestor becomes one list there (`_merge`); else an emptied list goes with
    its row, and a list at most a quarter full gives back half its capacity (garbage until
    the next compaction).
    """
    if label < 0 or label >= leaf.shape[0] or leaf[label] < 0:
        return Step.NOOP, 0
    at = leaf[label]
    first, entries = tenants[t, FIRST], tenants[t, ENTRIES]
    table = rows[first : first + entries]
    r, j = list_row(table, entries, ancestors, at)
    if r < 0:
        return Step.NOOP, 0
    off, n, cap = table[r, OFF], table[r, COUNT], table[r, CAP]
    u = find(ids, off, n, label)
    if u < 0:
        return Step.NOOP, 0
    target = -1  # the row that merges: the highest on the path whose count falls to τ
    lo = 0
    for a in range(j):  # in canonical form only when the list's parent holds exactly τ + 1
        lo = lower_bound(table, lo, r, ancestors[at, a])
        if table[lo, COUNT] - 1 <= tau:
            target = lo
            if _free(ids, arena) < _capacity(table[lo, COUNT] - 1):
                return Step.NEED_IDS, _capacity(table[lo, COUNT] - 1)
            break
        lo += 1
    ids[off + u] = ids[off + n - 1]
    table[r, COUNT] -= 1
    _count_above(table, ancestors, at, j, r, -1)
    if target >= 0:
        tenants[t, ENTRIES] = _merge(table, ids, arena, ancestors, entries, target)
    elif n == 1:  # emptied: the row goes (count 0; its parent still holds > τ ids)
        _release(table, arena, r)
        for u in range(r, entries - 1):
            table[u] = table[u + 1]
        tenants[t, ENTRIES] = entries - 1
    elif cap > MIN_CAP and n - 1 <= cap // 4:
        table[r, CAP] = cap // 2
        arena[IDS_GARBAGE] += cap - cap // 2
    return Step.DONE, 0


@njit(nogil=True, cache=True)
def _merge(
    table: np.ndarray,
    ids: np.ndarray,
    arena: np.ndarray,
    ancestors: np.ndarray,
    entries: int,
    m: int,
) -> int:
    """Row m's node takes every id of its sub-tree into one new list (room checked by the
    caller); the rows below it go. Returns the new number of rows."""
    node = table[m, NODE]
    depth = 0
    while ancestors[node, depth] != node:
        depth += 1
    cap = _capacity(table[m, COUNT])
    dst = _alloc(arena, cap)
    pos = 0
    w = m + 1
    for r in range(m + 1, entries):  # the sub-tree's nodes have larger ids than `node`
        if ancestors[table[r, NODE], depth] == node:
            n = table[r, COUNT] if table[r, CAP] > 0 else 0
            ids[dst + pos : dst + pos + n] = ids[table[r, OFF] : table[r, OFF] + n]
            pos += n
            _release(table, arena, r)
        else:
            table[w] = table[r]
            w += 1
    table[m, OFF] = dst
    table[m, CAP] = cap
    return w


# The entry points: (step value, amount) for `TenantStore`, which passes the same arguments to each.


@njit(nogil=True, cache=True)
def build(rows, ids, tenants, arena, t, ancestors, leaf, child_count, vals, tau):
    step, amount = _build(rows, ids, tenants, arena, t, ancestors, leaf, child_count, vals, tau)
    return step.value, amount


@njit(nogil=True, cache=True)
def grant(rows, ids, tenants, arena, t, ancestors, leaf, child_count, label, tau):
    step, amount = _grant(rows, ids, tenants, arena, t, ancestors, leaf, child_count, label, tau)
    return step.value, amount


@njit(nogil=True, cache=True)
def revoke(rows, ids, tenants, arena, t, ancestors, leaf, child_count, label, tau):
    step, amount = _revoke(
        rows, ids, tenants, arena, t, ancestors, leaf, label, tau
    )  # a merge needs no fan-out
    return step.value, amount
