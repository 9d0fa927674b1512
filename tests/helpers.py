"""What several test modules share (no tests of its own): the label-level reference `Model`
with its exact-search checks for the index kinds, and Curator's structure checks.

`check_structure` re-derives, independently of curator's code paths, everything the design
promises about a tenant's sub-tree: each accessible (id, tenant) in exactly one shortlist of
that tenant, on the id's path; lists <= τ except at GCT leaves; exact counts; the canonical
placement (merges happened); a consistent arena; current sign codes.
"""

from __future__ import annotations

import itertools

import numpy as np

from curacache.index import SearchResult
from curator import CuratorIndex, TenantView
from curator.layout import ENTRIES, FIRST, IDS_GARBAGE, IDS_USED, ROOM, ROWS_GARBAGE, ROWS_USED


class Model:
    """Reference state: label -> vector and label -> tenants, searched exactly by numpy
    (float64)."""

    def __init__(self, metric: str) -> None:
        self.metric = metric
        self.vecs: dict[int, np.ndarray] = {}
        self.access: dict[int, set[str]] = {}

    def add(self, labels: list[int], vecs: np.ndarray, access: list[list[str]]) -> None:
        for label, v, a in zip(labels, vecs, access):
            assert label not in self.vecs, f"test bug: label {label} added twice"
            self.vecs[label] = np.array(v, dtype=np.float32)
            self.access[label] = set(a)

    def grant(self, labels: list[int], tenant: str) -> None:
        for label in labels:
            if label in self.access:
                self.access[label].add(tenant)

    def revoke(self, labels: list[int], tenant: str) -> None:
        for label in labels:
            if label in self.access:
                self.access[label].discard(tenant)

    def remove(self, labels: list[int]) -> None:
        for label in labels:
            self.vecs.pop(label, None)
            self.access.pop(label, None)

    def visible(self, tenant: str) -> list[int]:
        return sorted(label for label, a in self.access.items() if tenant in a)

    def tenants(self) -> set[str]:
        return {t for a in self.access.values() for t in a}

    def ranked(self, tenant: str, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels, raw scores) of everything `tenant` sees, best first; ties by smaller label."""
        labels = np.asarray(self.visible(tenant), dtype=np.int64)
        if labels.size == 0:
            return labels, np.empty(0)
        x = np.stack([self.vecs[label] for label in labels]).astype(np.float64)
        q64 = q.astype(np.float64)
        if self.metric == "ip":
            s = x @ q64
            order = np.argsort(-s, kind="stable")
        else:
            s = ((x - q64) ** 2).sum(axis=1)
            order = np.argsort(s, kind="stable")
        return labels[order], s[order]

    def scores(self, tenant: str, q: np.ndarray) -> dict[int, float]:
        """label -> raw score of everything `tenant` sees."""
        labels, s = self.ranked(tenant, q)
        return dict(zip(labels.tolist(), s.tolist()))

    def topk(self, tenant: str, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The best k (label, score), best first; ties broken by smaller label."""
        labels, s = self.ranked(tenant, q)
        return list(zip(labels[:k].tolist(), s[:k].tolist()))


def assert_exact(
    model: Model, tenant: str, q: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int
) -> None:
    """`labels`/`scores` (one row) are the exact top-k up to float32 rounding near ties."""
    want_l, want_s = model.ranked(tenant, q)
    n = min(k, len(want_l))
    assert np.all(labels[n:] == -1)
    assert np.all(np.isinf(scores[n:]))
    got = labels[:n]
    assert np.all(got >= 0), (got, want_l[:n])
    np.testing.assert_allclose(scores[:n], want_s[:n], rtol=1e-4, atol=1e-4)
    if n < len(want_s):  # labels can only differ among (near-)ties at the k-th score
        boundary = want_s[n - 1]
        firm = set(want_l[:n][np.abs(want_s[:n] - boundary) > 1e-4].tolist())
        assert firm <= set(got.tolist())
    else:
        assert set(got.tolist()) == set(want_l.tolist())


def assert_matches_oracle(
    model: Model, res: SearchResult, tenant: str, queries: np.ndarray, k: int
) -> None:
    nq = len(queries)
    assert res.labels.shape == (nq, k) and res.labels.dtype == np.int64
    assert res.scores.shape == (nq, k) and res.scores.dtype == np.float32
    pad = -np.inf if model.metric == "ip" else np.inf
    for qi in range(nq):
        truth = model.scores(tenant, queries[qi])
        expected = model.topk(tenant, queries[qi], k)
        m = len(expected)
        labels, scores = res.labels[qi], res.scores[qi]
        # padding
        assert (labels[m:] == -1).all() and (scores[m:] == pad).all()
        got = labels[:m].tolist()
        assert -1 not in got and len(set(got)) == m
        # never a label the tenant cannot see
        assert set(got) <= set(truth), f"{tenant} got invisible labels {set(got) - set(truth)}"
        if m == 0:
            continue
        scale = max(1.0, max(abs(s) for s in truth.values()))
        tol = 1e-5 * scale
        # reported scores are the true scores of the reported labels, best first
        true_of_got = np.array([truth[label] for label in got])
        np.testing.assert_allclose(scores[:m], true_of_got, rtol=0, atol=tol)
        steps = np.diff(true_of_got) * (-1 if model.metric == "ip" else 1)
        assert (steps >= -tol).all(), "results not ordered best first"
        # same label set as the oracle, except labels tied with the boundary score
        np.testing.assert_allclose(true_of_got, [s for _, s in expected], rtol=0, atol=tol)
        boundary = expected[-1][1]
        for label in set(got) ^ {label for label, _ in expected}:
            assert abs(truth[label] - boundary) < tol, f"label {label} differs beyond a tie"


def lists_of(view: TenantView | None) -> dict[int, np.ndarray]:
    """A tenant's shortlists by node (`tenant_view` answers None for an unknown tenant)."""
    assert view is not None, "the tenant has no structure"
    return view.lists


def check_structure(index: CuratorIndex, model: Model) -> None:
    """Every design invariant of every tenant's sub-tree, against the model's access map."""
    tree = index.tree
    tau = index.max_sl_size
    assert set(index.tenants()) == model.tenants()
    assert sorted(index.labels().tolist()) == sorted(model.vecs)
    for tenant in model.tenants():
        tt = index.tenant_view(tenant)
        assert tt is not None
        lists = lists_of(tt)
        full_count = np.zeros(tree.n_nodes, dtype=np.int64)
        seen: list[int] = []
        for node, ids in lists.items():
            assert ids.size > 0, "empty lists must be dropped"
            assert ids.size <= tau or tree.child_count[node] == 0, "list over τ above a GCT leaf"
            seen.extend(ids.tolist())
            for label in ids.tolist():  # the list sits on the id's path
                path = index.path_of(label)
                assert path[tree.depth[node]] == node
            a = node
            while a >= 0:  # exact counts: every ancestor (and the node) counts the list
                full_count[a] += ids.size
                a = tree.parent[a]
        assert sorted(seen) == model.visible(tenant), "each accessible id in exactly one list"
        assert np.array_equal(tt.counts(tree.n_nodes), full_count)
        rows = tt.rows  # sparse: a row exactly where the count is positive, in node order
        assert np.array_equal(rows[:, 0], np.flatnonzero(full_count)) and np.all(rows[:, 1] > 0)
        for node in lists:  # canonical placement: splits and merges both happened
            parent = tree.parent[node]
            assert parent < 0 or full_count[parent] > tau, f"list at {node} should have merged up"
            assert full_count[node] <= tau or tree.child_count[node] == 0
        internal = (full_count > 0) & ~np.isin(np.arange(tree.n_nodes), list(lists))
        assert np.all(tree.child_count[internal] > 0), "a GCT leaf with ids but no list"
    check_arenas(index)
    check_sign_codes(index, model)
    for name in (
        "nobody",
        *[t for t in ("t0", "t1", "t2", "t3", "anchor") if t not in model.tenants()],
    ):
        assert index.tenant_view(name) is None
    # who sees a label: what remove() asks, every tenant in one compiled call
    for label in list(model.vecs)[:40]:
        assert index.access_of(label) == sorted(model.access[label])


def check_arenas(index: CuratorIndex) -> None:
    """The tenants' row slices, and all lists' reservations, lie below their arrays'
    high-water marks and are pairwise disjoint; counters agree with what is live."""
    store = index.store
    row_spans, list_spans = [], []
    for t, _ in store.live():
        first, room, entries = (int(v) for v in store.tenants[t, [FIRST, ROOM, ENTRIES]])
        assert entries <= room
        row_spans.append((first, first + room))
        for _, count, off, cap in store.table(t).tolist():
            assert count <= cap or cap == 0
            if cap:
                list_spans.append((off, off + cap))
    for spans, used, garbage in (
        (row_spans, ROWS_USED, ROWS_GARBAGE),
        (list_spans, IDS_USED, IDS_GARBAGE),
    ):
        spans.sort()
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            assert a1 <= b0
        assert not spans or spans[-1][1] <= store.arena[used]
        assert store.arena[used] - store.arena[garbage] == sum(b - a for a, b in spans)
    assert (
        store.arena[ROWS_USED] <= store.rows.shape[0]
        and store.arena[IDS_USED] <= store.ids.shape[0]
    )


def clustered(
    rng: np.random.Generator, n: int, dim: int, n_clusters: int, spread: float = 1.0
) -> np.ndarray:
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32) * 3
    return (
        centers[rng.integers(0, n_clusters, n)] + spread * rng.standard_normal((n, dim))
    ).astype(np.float32)


def check_sign_codes(index: CuratorIndex, model: Model) -> None:
    """Every live label's sign code is its vector's, relative to its current GCT leaf's
    centroid (`curator.signs`, re-derived here in numpy): writes, retraining and restores all
    keep them current."""
    live = index.labels()
    if live.size == 0:
        return
    codes, factors = index.sign_codes(live)
    r = (
        np.stack([model.vecs[x] for x in live.tolist()])
        - index.tree.centroids[index.leaves()[live]]
    )
    dim = r.shape[1]
    bits = np.zeros((r.shape[0], codes.shape[1] * 64), dtype=np.bool_)
    bits[:, :dim] = r >= 0
    want = np.packbits(bits, axis=1, bitorder="little").view("<u8")
    assert np.array_equal(codes, want), "a stale sign code"
    l1, sq = np.abs(r).sum(axis=1), (r.astype(np.float64) ** 2).sum(axis=1)
    a = l1 / np.sqrt(dim * sq)
    error = np.sqrt(sq * (1 - a * a)) / a / np.sqrt(max(dim - 1, 1))
    np.testing.assert_allclose(factors, np.stack([sq / l1, error], axis=1), rtol=1e-4, atol=1e-6)
