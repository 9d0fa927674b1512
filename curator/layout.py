"""The layouts of the tenants' structure: named columns, arena counters, step results and the
capacity policy, shared by the compiled kernels (`curator._kernels`) and the Python that owns
the arrays (`curator.store`). Diagram and rationale: docs/architecture.md.

All tenants live in four arrays owned by the index's `TenantStore`:

- `rows` int32 (R, ROW_WIDTH): one row per (tenant, GCT node) where the tenant has ids at or
  below the node. A tenant's rows are one slice of `rows`, sorted by node; a row with a list
  (CAP > 0) is a leaf of the tenant's sub-tree and its list is `ids[OFF : OFF + COUNT]`.
- `ids` int32 (P,): every shortlist, each a slice with CAP slots reserved.
- `tenants` int64 (T, TENANT_WIDTH): where tenant t's rows are (FIRST, ROOM) and how many of
  them are valid (ENTRIES). A free tenant int has ROOM 0.
- `arena` int64 (ARENA_WIDTH,): high-water marks and garbage of `rows` and `ids` (a slice
  that outgrows its room moves to the array's end and leaves garbage; compaction reclaims it).
"""

from __future__ import annotations

from enum import IntEnum

# columns of `rows`
NODE, COUNT, OFF, CAP = 0, 1, 2, 3
ROW_WIDTH = 4
# columns of `tenants`
FIRST, ROOM, ENTRIES = 0, 1, 2
TENANT_WIDTH = 3
# entries of `arena`
ROWS_USED, ROWS_GARBAGE, IDS_USED, IDS_GARBAGE = 0, 1, 2, 3
ARENA_WIDTH = 4

MIN_CAP = 4  # smallest list capacity; a full list grows by max(1/8, MIN_CAP) slots
MIN_ROOM = 4  # smallest row slice of a tenant
# The list arena's slack, as a fraction 1/SLACK of what is live: garbage before compaction,
# spare after it, and growth. Why this tight: the lists are most of the index beyond the
# vectors (with many tenants sharing each vector), and compaction is one O(live) copy.
SLACK = 16


class Step(IntEnum):
    """What a compiled write step reports (with an amount for the NEED_* results)."""

    DONE = 0  # applied
    NOOP = 1  # nothing to do (already seen, not seen, absent label): nothing changed
    NEED_ROWS = 2  # the tenant's row slice must hold `amount` rows: nothing changed, retry
    NEED_IDS = 3  # `ids` must have `amount` free slots at its end: nothing changed, retry
