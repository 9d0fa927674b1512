"""COMPILED KERNELS (numba), read side: routing, search, and who sees a label. With
`curator._writes` (the write steps), `curator.signs` (the sign codes: encoding and the
estimate pass) and `curator._numeric` (their shared building blocks) the only modules in
`curator` that use numba.

Why compiled: an interpreted best-first loop costs several µs per expanded node (heap
push/pop plus a small numpy call per node); a search expands dozens of nodes and scores
~γ2·k candidates, so the hot path runs here over the flattened tree arrays instead.

All kernels are `njit(nogil=True, cache=True)`: searches release the GIL and run in parallel
threads; `cache=True` keeps the compile cost (a few seconds) out of every process start after
the first. fastmath: `curator._numeric.FASTMATH`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from curator import signs
from curator._numeric import FASTMATH as _FM
from curator._numeric import dot as _dot
from curator._numeric import dot_code as _dot_code
from curator.layout import CAP, COUNT, ENTRIES, FIRST, NODE, OFF


@njit(nogil=True, cache=True, fastmath=_FM)
def _scale_query(q: np.ndarray, lo: np.ndarray, step: np.ndarray, qs: np.ndarray) -> np.float32:
    """qs = q · step (elementwise), and returns q·lo: the query's side of every node key."""
    for j in range(q.shape[0]):
        qs[j] = q[j] * step[j]
    return _dot(q, lo)


@njit(nogil=True, cache=True, fastmath=_FM)
def _node_key(
    qs: np.ndarray, qlo: float | np.float32, codes: np.ndarray, cnorm: np.ndarray, c: int
) -> float:
    """||q - c||² - ||q||² for node c's quantized centroid: ||c||² - 2 (q·lo + qs·code)."""
    return cnorm[c] - 2.0 * (qlo + _dot_code(qs, codes[c]))


@njit(nogil=True, cache=True, fastmath=_FM)
def route(
    x: np.ndarray,
    codes: np.ndarray,
    lo: np.ndarray,
    step: np.ndarray,
    cnorm: np.ndarray,
    child_start: np.ndarray,
    child_count: np.ndarray,
    beam: int,
    leaf_out: np.ndarray,
) -> None:
    """leaf_out[i] = the GCT leaf of x[i], found by a beam search over the levels.

    Each level keeps the `beam` children (of all kept nodes) nearest in L2; a kept GCT leaf
    is a finished candidate; the nearest candidate leaf wins (its path is the tree's
    `ancestors[leaf]`). beam = 1 is the plain nearest-child-at-every-level routing; a wider
    beam lands far more vectors in their nearest leaf, for more recall at equal search cost
    (figures in bench/curator/README.md).
    ||x - c||² = ||x||² - 2 x·c + ||c||²; ||x||² is the same for every node and is dropped;
    x·c = x·lo + (x·step)·code for the quantized centroid (see `curator.tree`).
    `leaf_out` is (n,) int32; an untrained tree (root alone) routes everything to node 0.
    """
    max_fan = 1
    for node in range(child_count.shape[0]):
        max_fan = max(max_fan, child_count[node])
    cur = np.empty(beam, dtype=np.int32)
    cand_node = np.empty(beam * max_fan, dtype=np.int32)
    cand_key = np.empty(beam * max_fan, dtype=np.float32)
    xs = np.empty(x.shape[1], dtype=np.float32)
    for i in range(x.shape[0]):
        xlo = _scale_query(x[i], lo, step, xs)
        cur[0] = 0
        nc = 1
        best_leaf = 0
        best_key = np.inf
        while nc > 0:
            m = 0
            for b in range(nc):
                node = cur[b]
                for c in range(child_start[node], child_start[node] + child_count[node]):
                    cand_node[m] = c
                    cand_key[m] = _node_key(xs, xlo, codes, cnorm, c)
                    m += 1
            if m == 0:
                break
            order = np.argsort(cand_key[:m])
            nc = 0
            for j in range(min(beam, m)):
                c = cand_node[order[j]]
                if child_count[c] == 0:
                    if cand_key[order[j]] < best_key:
                        best_key = cand_key[order[j]]
                        best_leaf = c
                else:
                    cur[nc] = c
                    nc += 1
        leaf_out[i] = best_leaf
    return


@njit(nogil=True, cache=True)
def lower_bound(table: np.ndarray, lo: int, hi: int, node: int) -> int:
    """First row in [lo, hi) of a tenant's rows (sorted by NODE) with NODE >= `node`."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if table[mid, NODE] < node:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(nogil=True, cache=True)
def _heap_set(
    heap_key: np.ndarray, heap_row: np.ndarray, i: int, key: float | np.float32, row: int
) -> None:
    heap_key[i] = key
    heap_row[i] = row


@njit(nogil=True, cache=True, fastmath=_FM)
def traverse(
    qs: np.ndarray,
    qlo: float | np.float32,
    codes: np.ndarray,
    cnorm: np.ndarray,
    child_start: np.ndarray,
    child_count: np.ndarray,
    table: np.ndarray,
    entries: int,
    collect: int,
    keep: int,
    min_buckets: int,
    out_rows: np.ndarray,
) -> int:
    """Best-first search of one tenant's sub-tree; writes the chosen buckets' table rows,
    nearest first.

    `table[:entries]` is the tenant's rows (`curator.layout`: sorted by NODE, only nodes with
    COUNT > 0). A min-heap keyed by the L2 distance
    from the query to node centroids (||q||² dropped; the query enters as qs = q·step and
    qlo = q·lo, see `route`) is expanded from the root; a node's children are consecutive
    node ids, so the tenant's rows for them are one run found by a binary search (nodes where
    the tenant has nothing have no row and are never pushed); a row with a list (CAP > 0; its
    length is COUNT) becomes a bucket and is not descended. Expansion stops once the buckets
    hold `collect` (= γ1·γ2·k) ids and number γ1·`min_buckets` (= γ1·γ2). The buckets are
    then sorted by centroid distance and the nearest are kept until they hold `keep`
    (= γ2·k) ids and number `min_buckets` (the bucket that crosses both is kept whole).
    Returns how many rows were written to `out_rows`.

    Why a bucket count besides the ids: a fixed number of ids is a shrinking share of a large
    tenant, and its recall fell with its size; the number of a tenant's nearest buckets that
    hold its true neighbours hardly grows with the tenant (its sub-tree splits where its ids
    are dense, so its buckets stay local), so counting buckets keeps recall independent of
    tenant size (figures in bench/curator/README.md). A small tenant has few buckets, and
    the ids budget is the one that binds.
    """
    if entries <= 0 or table[0, NODE] != 0:
        return 0
    if table[0, CAP] > 0:
        out_rows[0] = 0
        return 1
    heap_key = np.empty(entries, dtype=np.float32)
    heap_row = np.empty(entries, dtype=np.int32)
    bucket_key = np.empty(entries, dtype=np.float32)
    bucket_row = np.empty(entries, dtype=np.int32)
    heap_key[0] = 0.0
    heap_row[0] = 0
    collect_buckets = min_buckets * collect / max(keep, 1)  # γ1·min_buckets
    hn = 1
    nb = 0
    collected = 0
    while hn > 0 and (collected < collect or nb < collect_buckets):
        key = heap_key[0]  # pop the minimum
        row = heap_row[0]
        hn -= 1
        if hn > 0:
            lk = heap_key[hn]
            lr = heap_row[hn]
            i = 0
            while True:
                c = 2 * i + 1
                if c >= hn:
                    break
                if c + 1 < hn and heap_key[c + 1] < heap_key[c]:
                    c += 1
                if heap_key[c] >= lk:
                    break
                _heap_set(heap_key, heap_row, i, heap_key[c], heap_row[c])
                i = c
            _heap_set(heap_key, heap_row, i, lk, lr)
        if table[row, CAP] > 0:
            bucket_key[nb] = key
            bucket_row[nb] = row
            nb += 1
            collected += table[row, COUNT]
            continue
        node = table[row, NODE]
        cs = child_start[node]
        ce = cs + child_count[node]
        r = lower_bound(table, row + 1, entries, cs)  # children have larger ids than node
        while r < entries and table[r, NODE] < ce:
            c = table[r, NODE]
            ck = np.float32(_node_key(qs, qlo, codes, cnorm, c))
            i = hn  # push (sift up)
            hn += 1
            while i > 0:
                p = (i - 1) // 2
                if heap_key[p] <= ck:
                    break
                _heap_set(heap_key, heap_row, i, heap_key[p], heap_row[p])
                i = p
            _heap_set(heap_key, heap_row, i, ck, r)
            r += 1
    order = np.argsort(bucket_key[:nb], kind="mergesort")
    total = 0
    m = 0
    for j in range(nb):
        row = bucket_row[order[j]]
        out_rows[m] = row
        m += 1
        total += table[row, COUNT]
        if total >= keep and m >= min_buckets:
            break
    return m


@njit(nogil=True, cache=True, fastmath=_FM)
def _offer(
    key: float | np.float32, lab: int, best_key: np.ndarray, best_lab: np.ndarray, filled: int
) -> int:
    """Insert (key, lab) into the sorted best-k arrays (smaller key is better; equal keys:
    smaller label first, so the result does not depend on the candidates' order, e.g. on the
    slot order of a leaf bitmap, which a snapshot restore renumbers); new fill."""
    kk = best_key.shape[0]
    if filled < kk:
        j = filled
        filled += 1
    elif key < best_key[kk - 1] or (key == best_key[kk - 1] and lab < best_lab[kk - 1]):
        j = kk - 1
    else:
        return filled
    while j > 0 and (best_key[j - 1] > key or (best_key[j - 1] == key and best_lab[j - 1] > lab)):
        best_key[j] = best_key[j - 1]
        best_lab[j] = best_lab[j - 1]
        j -= 1
    best_key[j] = key
    best_lab[j] = lab
    return filled


@njit(nogil=True, cache=True, fastmath=_FM)
def _score_into(
    q: np.ndarray,
    qn: float | np.float32,
    vectors: np.ndarray,
    norms: np.ndarray,
    cand: np.ndarray,
    is_ip: bool,
    best_key: np.ndarray,
    best_lab: np.ndarray,
    filled: int,
) -> int:
    """Offer every candidate row's exact key to the best-k arrays (`_offer`); new fill.
    Rows are scored four at a time: four independent row streams keep more cache misses in
    flight than one (figures in bench/curator/README.md)."""
    dots = np.empty(4, dtype=np.float32)
    n = cand.shape[0]
    d = q.shape[0]
    i = 0
    while i < n:
        g = min(4, n - i)
        if g == 4:
            r0, r1, r2, r3 = cand[i], cand[i + 1], cand[i + 2], cand[i + 3]
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            for j in range(d):
                qj = q[j]
                a0 += vectors[r0, j] * qj
                a1 += vectors[r1, j] * qj
                a2 += vectors[r2, j] * qj
                a3 += vectors[r3, j] * qj
            dots[0] = a0
            dots[1] = a1
            dots[2] = a2
            dots[3] = a3
        else:
            for u in range(g):
                dots[u] = _dot(vectors[cand[i + u]], q)
        for u in range(g):
            r = cand[i + u]
            if is_ip:
                key = np.float32(-dots[u])
            else:
                key = np.float32(max(norms[r] - 2.0 * dots[u] + qn, 0.0))
            filled = _offer(key, r, best_key, best_lab, filled)
        i += g
    return filled


@njit(nogil=True, cache=True, fastmath=_FM)
def score_topk(
    q: np.ndarray,
    vectors: np.ndarray,
    norms: np.ndarray,
    cand: np.ndarray,
    bound: np.ndarray,
    is_ip: bool,
    out_labels: np.ndarray,
    out_scores: np.ndarray,
) -> int:
    """Exact scores of the candidate rows; the best len(out_labels) of them, best first.

    ip: score = x·q (larger is better); l2: score = ||x||² - 2 x·q + ||q||² clamped at 0
    (smaller is better). `bound`, when not empty, is each candidate's optimistic key (-score
    for ip, the distance for l2; `signs.prune`), and the rows are scored in two passes: first
    the k with the best bounds, then only the others whose bound beats the k-th exact key the
    first pass found (the rest cannot enter the top k). Why: an exact score reads a whole
    row (~190 ns, memory-bound), and that k-th exact key is a tighter bar than the estimates'
    own; a bar tighter still (the running k-th, candidates sorted by bound) lost a true
    neighbour to an estimate's error now and then (figures in bench/curator/README.md).
    Returns how many output slots were filled.
    """
    kk = min(out_labels.shape[0], cand.shape[0])
    if kk <= 0:
        return 0
    qn = _dot(q, q)
    best_key = np.full(kk, np.inf, dtype=np.float32)
    best_lab = np.full(kk, -1, dtype=np.int64)
    if bound.shape[0] == 0:
        filled = _score_into(q, qn, vectors, norms, cand, is_ip, best_key, best_lab, 0)
    else:
        first = bound <= np.partition(bound, kk - 1)[kk - 1]  # at least kk of them
        filled = _score_into(q, qn, vectors, norms, cand[first], is_ip, best_key, best_lab, 0)
        rest = ~first & (bound <= best_key[kk - 1])
        filled = _score_into(q, qn, vectors, norms, cand[rest], is_ip, best_key, best_lab, filled)
    for j in range(filled):
        out_labels[j] = best_lab[j]
        out_scores[j] = -best_key[j] if is_ip else best_key[j]
    return filled


@njit(nogil=True, cache=True, fastmath=_FM)
def search(
    queries: np.ndarray,
    codes: np.ndarray,
    lo: np.ndarray,
    step: np.ndarray,
    cnorm: np.ndarray,
    child_start: np.ndarray,
    child_count: np.ndarray,
    table: np.ndarray,
    ids: np.ndarray,
    vectors: np.ndarray,
    norms: np.ndarray,
    sign_rows: np.ndarray,
    collect: int,
    keep: int,
    min_buckets: int,
    eps: float,
    is_ip: bool,
    out_labels: np.ndarray,
    out_scores: np.ndarray,
) -> None:
    """One tenant's top-k for every query row: traverse, gather the buckets, score exactly.

    `table` is the tenant's valid rows, `ids` the lists. The buckets' ids are copied into one
    candidate array (each id sits in exactly one of the tenant's lists, so there are no
    duplicates). Of more than k candidates, only those that may be among the top k by their
    sign codes are scored exactly (`signs.prune`, why: `curator.signs`), and of those only
    the ones an exact k-th key does not rule out (`score_topk`). Unfilled output slots are
    left as the caller initialised them.
    """
    entries = table.shape[0]
    buckets = np.empty(max(entries, 1), dtype=np.int32)
    qs = np.empty(queries.shape[1], dtype=np.float32)
    planes = np.empty((4, (queries.shape[1] + 63) // 64), dtype=np.uint64)  # code words
    no_bound = np.empty(0, dtype=np.float32)
    leaf_ip = np.empty(codes.shape[0], dtype=np.float32)
    leaf_stamp = np.full(codes.shape[0], -1, dtype=np.int64)
    for qi in range(queries.shape[0]):
        q = queries[qi]
        qlo = _scale_query(q, lo, step, qs)
        m = traverse(
            qs,
            qlo,
            codes,
            cnorm,
            child_start,
            child_count,
            table,
            entries,
            collect,
            keep,
            min_buckets,
            buckets,
        )
        total = 0
        for j in range(m):
            total += table[buckets[j], COUNT]
        cand = np.empty(total, dtype=np.int32)
        pos = 0
        for j in range(m):
            b = buckets[j]
            off, n = table[b, OFF], table[b, COUNT]
            cand[pos : pos + n] = ids[off : off + n]
            pos += n
        bound = no_bound
        if total > out_labels.shape[1]:
            cand, bound = signs.prune(
                q,
                qs,
                qlo,
                codes,
                sign_rows,
                cand,
                out_labels.shape[1],
                eps,
                is_ip,
                planes,
                leaf_ip,
                leaf_stamp,
                qi,
            )
        score_topk(q, vectors, norms, cand, bound, is_ip, out_labels[qi], out_scores[qi])


@njit(nogil=True, cache=True)
def find(ids: np.ndarray, off: int, n: int, label: int) -> int:
    """Position of `label` in ids[off : off + n] (where it occurs at most once), or -1.

    Why a sum and not a loop that returns at the hit: over a slice this vectorises (SIMD), an
    early exit does not (figures in bench/curator/README.md); a grant scans its list (up to τ
    ids) to recognise a label the tenant already sees.
    """
    seg = ids[off : off + n]
    p = 0
    for i in range(seg.shape[0]):
        p += (i + 1) * (seg[i] == label)
    return p - 1


@njit(nogil=True, cache=True)
def list_row(table: np.ndarray, entries: int, ancestors: np.ndarray, at: int) -> tuple[int, int]:
    """(row, path depth) of the tenant's one list on GCT leaf `at`'s path: the first path node
    whose row holds a list; (-1, -1) when a node on the way has no row (the tenant has nothing
    below it). Path nodes have increasing ids, so each lookup searches past the previous one."""
    lo = 0
    for j in range(ancestors.shape[1]):
        node = ancestors[at, j]
        if node < 0:
            return -1, -1
        r = lower_bound(table, lo, entries, node)
        if r >= entries or table[r, NODE] != node:
            return -1, -1
        if table[r, CAP] > 0:
            return r, j
        lo = r + 1
    return -1, -1


@njit(nogil=True, cache=True)
def has(
    table: np.ndarray, ids: np.ndarray, ancestors: np.ndarray, leaf: np.ndarray, label: int
) -> bool:
    """Does the tenant with these rows see `label`? In canonical form a seen label sits in the
    tenant's one list on its path, so this is O(height + that list's length). Why this and no
    label -> tenants map: see docs/architecture.md."""
    if label < 0 or label >= leaf.shape[0] or leaf[label] < 0:
        return False
    r, _ = list_row(table, table.shape[0], ancestors, leaf[label])
    return r >= 0 and find(ids, table[r, OFF], table[r, COUNT], label) >= 0


@njit(nogil=True, cache=True)
def seen_by(
    rows: np.ndarray,
    ids: np.ndarray,
    tenants: np.ndarray,
    ancestors: np.ndarray,
    leaf: np.ndarray,
    labels: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[i, t] = does tenant t see labels[i], for every tenant int t in one call (a free int
    has no rows and sees nothing)."""
    for t in range(tenants.shape[0]):
        first = tenants[t, FIRST]
        table = rows[first : first + tenants[t, ENTRIES]]
        for i in range(labels.shape[0]):
            out[i, t] = has(table, ids, ancestors, leaf, labels[i])
