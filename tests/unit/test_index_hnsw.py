"""HnswIndex (PT-HNSW) against a numpy brute-force oracle: recall, visibility, mutations."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curacache.errors import InvalidArgument
from curacache.index import Index, resolve_params
from curacache.index.hnsw import HNSW, HnswIndex
from curacache.index.rwlock import RWLock
from tests.helpers import Model, assert_matches_oracle

DIM = 16
METRICS = ("ip", "l2")
EXACT = {"ef": 4096}  # ef >= graph size: small graphs are searched exhaustively


def lab(*xs: int) -> np.ndarray:
    return np.asarray(xs, dtype=np.int64)


def vecs(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32)


def make(metric: str, **kw: int) -> tuple[HnswIndex, Model]:
    return HnswIndex(dim=DIM, metric=metric, **kw), Model(metric)


def check_all(
    ix: HnswIndex,
    model: Model,
    tenants: list[str],
    rng: np.random.Generator,
    ks: tuple[int, ...] = (1, 5, 50),
) -> None:
    queries = vecs(rng, 4)
    for tenant in [*tenants, "nobody"]:
        assert ix.tenant_size(tenant) == len(model.visible(tenant))
        for k in ks:
            assert_matches_oracle(model, ix.search(tenant, queries, k, EXACT), tenant, queries, k)


# -- recall on larger data ---------------------------------------------------------------------


def _data(kind: str, rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    if kind == "random":
        return rng.standard_normal((n, dim)).astype(np.float32)
    centers = rng.standard_normal((20, dim)) * 4
    return (centers[rng.integers(0, 20, n)] + rng.standard_normal((n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_recall_at_10_overlapping_tenants(metric: str, kind: str) -> None:
    rng = np.random.default_rng(11)
    n, dim, k = 3000, 32, 10
    X = _data(kind, rng, n, dim)
    if metric == "ip":
        X /= np.linalg.norm(X, axis=1, keepdims=True)  # cosine arrives as ip over unit vectors
    tenants = ["t0", "t1", "t2", "t3"]
    member = rng.random((n, 4)) < 0.4  # each vector seen by ~1.6 tenants; some by none
    access = [[t for j, t in enumerate(tenants) if member[i, j]] for i in range(n)]
    labels = rng.permutation(n).astype(np.int64)
    ix = HnswIndex(dim=dim, metric=metric)
    for lo in range(0, n, 1000):
        ix.add(labels[lo : lo + 1000], X[lo : lo + 1000], access[lo : lo + 1000])
    Q = _data(kind, rng, 50, dim)
    hits = total = 0
    for j, tenant in enumerate(tenants):
        rows = np.flatnonzero(member[:, j])
        res = ix.search(tenant, Q, k, {"ef": 64})
        S = Q.astype(np.float64) @ X[rows].T.astype(np.float64)
        if metric == "l2":
            S = (Q.astype(np.float64) ** 2).sum(1)[:, None] - 2 * S + (X[rows] ** 2).sum(1)
        order = np.argsort(-S if metric == "ip" else S, axis=1)[:, :k]
        score_of = [dict(zip(labels[rows].tolist(), s.tolist())) for s in S]
        for qi in range(len(Q)):
            got = res.labels[qi].tolist()
            assert set(got) <= set(score_of[qi]), "a label the tenant cannot see"
            np.testing.assert_allclose(res.scores[qi], [score_of[qi][g] for g in got], atol=1e-4)
            hits += len(set(got) & set(labels[rows][order[qi]].tolist()))
            total += k
    assert hits / total >= 0.95, hits / total


# -- exact behaviour on small graphs -----------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_mutation_sequence_matches_oracle(metric: str) -> None:
    rng = np.random.default_rng(2)
    ix, model = make(metric)
    tenants = ["a", "b", "c"]

    def do(op: str, *args: object) -> None:
        getattr(ix, op)(*[lab(*a) if isinstance(a, list) else a for a in args])
        getattr(model, op)(*args)
        check_all(ix, model, tenants, rng)

    X = vecs(rng, 40)
    acc = [["a"]] * 20 + [["b", "c"]] * 20
    ix.add(lab(*range(40)), X, acc)
    model.add(list(range(40)), X, acc)
    check_all(ix, model, tenants, rng)
    do("grant", [0, 1, 2, 25], "b")
    do("grant", [0, 1, 999], "b")  # already-seen and absent labels are skipped
    do("revoke", [39, 20], "b")
    do("revoke", [3, 4, 5, 999], "b")  # not seen by b: no-op
    do("remove", [0, 25, 12345])  # shared labels go from every tenant; absent skipped
    do("grant", [39], "b")  # revoked then re-granted: revived in place
    do("revoke", list(range(40)), "a")  # a becomes empty -> behaves as unknown
    assert "a" not in ix._graphs  # its graph is freed
    do("grant", [3, 4], "a")


def test_add_present_label_raises_and_changes_nothing() -> None:
    rng = np.random.default_rng(4)
    ix, model = make("ip")
    X = vecs(rng, 3)
    ix.add(lab(1, 2, 3), X, [["a"]] * 3)
    model.add([1, 2, 3], X, [["a"]] * 3)
    before = ix.memory_bytes()
    with pytest.raises(ValueError):
        ix.add(lab(4, 2), vecs(rng, 2), [["a"], ["b"]])
    with pytest.raises(ValueError):
        ix.add(lab(5, 5), vecs(rng, 2), [["a"], ["a"]])
    assert len(ix) == 3 and ix.memory_bytes() == before
    check_all(ix, model, ["a", "b"], rng)


@pytest.mark.parametrize("metric", METRICS)
def test_removed_then_readded_with_new_vector(metric: str) -> None:
    """A label still marked deleted in a graph is revived with its new vector, not the old."""
    rng = np.random.default_rng(5)
    ix, model = make(metric)
    X = vecs(rng, 30)
    ix.add(lab(*range(30)), X, [["a", "b"]] * 30)
    model.add(list(range(30)), X, [["a", "b"]] * 30)
    ix.revoke(lab(7), "b")
    model.revoke([7], "b")
    ix.remove(lab(7, 8))
    model.remove([7, 8])
    assert {7, 8} <= ix._graphs["a"].dead and 7 in ix._graphs["b"].dead
    Y = -5 * vecs(rng, 2)  # far from the old vectors
    ix.add(lab(7, 8), Y, [["a", "b"], ["b"]])
    model.add([7, 8], Y, [["a", "b"], ["b"]])
    check_all(ix, model, ["a", "b"], rng, ks=(1, 3, 40))
    for t, want in (("a", 7), ("b", 7)):
        res = ix.search(t, Y[:1], 1, EXACT)  # its own new vector is the nearest
        assert res.labels[0, 0] == want


def test_deleted_slots_are_reused_and_stale_labels_forgotten() -> None:
    rng = np.random.default_rng(6)
    ix, model = make("l2")
    X = vecs(rng, 20)
    ix.add(lab(*range(20)), X, [["a"]] * 20)
    model.add(list(range(20)), X, [["a"]] * 20)
    g = ix._graphs["a"]
    ix.revoke(lab(*range(5)), "a")
    model.revoke(list(range(5)), "a")
    assert g.n_dead == 5 and g.idx.get_current_count() == 20
    Y = vecs(rng, 5)
    ix.add(lab(*range(100, 105)), Y, [["a"]] * 5)  # takes the 5 deleted slots over
    model.add(list(range(100, 105)), Y, [["a"]] * 5)
    assert g.n_dead == 0 and g.idx.get_current_count() == 20
    check_all(ix, model, ["a"], rng)
    # 0..4 are still listed as dead but their slots are gone: re-granting inserts them afresh
    ix.grant(lab(0, 1, 2), "a")
    model.grant([0, 1, 2], "a")
    assert g.idx.get_current_count() == 23 and g.idx.get_max_elements() >= 23
    check_all(ix, model, ["a"], rng)


def test_regrant_of_a_deleted_label_keeps_hnswlib_label_map_intact() -> None:
    """Re-inserting a still-deleted label with replace_deleted may land it in another slot,
    leaving its old slot with the same label; when that slot is reused, hnswlib drops the label
    from its map (mark_deleted then raises "Label not found"). Revival in place avoids it."""
    rng = np.random.default_rng(15)
    ix, model = make("l2")

    def do(op: str, keys: list[int]) -> None:
        if op == "add":
            Y = vecs(rng, len(keys))
            ix.add(lab(*keys), Y, [["a"]] * len(keys))
            model.add(keys, Y, [["a"]] * len(keys))
        else:
            getattr(ix, op)(lab(*keys), "a")
            getattr(model, op)(keys, "a")
        check_all(ix, model, ["a"], rng, ks=(1, 30))

    do("add", [50, *range(10)])
    do("revoke", list(range(10)))  # ten deleted slots; 50 keeps the graph alive
    do("grant", [0])  # revived in its own slot
    do("add", list(range(30, 40)))  # takes the nine other deleted slots over, plus one fresh
    do("revoke", [0])
    do("grant", [0, 1])
    assert set(ix._graphs["a"].idx.get_ids_list()) >= set(model.visible("a"))


def test_pruning_stale_dead_labels_keeps_the_truly_deleted_ones() -> None:
    rng = np.random.default_rng(16)
    ix, model = make("ip", ef_construction=32)

    def add(keys: list[int]) -> None:
        Y = vecs(rng, len(keys))
        ix.add(lab(*keys), Y, [["a"]] * len(keys))
        model.add(keys, Y, [["a"]] * len(keys))

    add(list(range(1650)))
    gone = list(range(500, 1650))
    ix.revoke(lab(*gone), "a")  # 1150 deleted slots next to 500 live: no rebuild
    model.revoke(gone, "a")
    g = ix._graphs["a"]
    add(list(range(2000, 3100)))  # takes 1100 slots over: the stale entries are pruned
    assert g.n_dead == 50 and len(g.dead) == 50
    ix.grant(lab(*gone[::-1]), "a")  # 50 revived in place, 1100 inserted afresh
    model.grant(gone, "a")
    assert g.n_dead == 0 and g.idx.get_current_count() == len(model.visible("a"))
    assert set(g.idx.get_ids_list()) == set(model.visible("a"))
    check_all(ix, model, ["a"], rng, ks=(10,))


@pytest.mark.parametrize("metric", METRICS)
def test_padding_and_unknown_tenant(metric: str) -> None:
    rng = np.random.default_rng(7)
    ix, _ = make(metric)
    pad = -np.inf if metric == "ip" else np.inf
    q = vecs(rng, 3)
    res = ix.search("ghost", q, 4, {})
    assert (res.labels == -1).all() and (res.scores == pad).all()
    ix.add(lab(7, 8, 9), vecs(rng, 3), [["a"], ["a"], ["a"]])
    ix.revoke(lab(9), "a")  # a deleted element must not count towards k
    res = ix.search("a", q, 5, {"ef": 1})
    assert res.labels.dtype == np.int64 and res.scores.dtype == np.float32
    assert (res.labels[:, 2:] == -1).all() and (res.scores[:, 2:] == pad).all()
    assert all(set(row[:2].tolist()) == {7, 8} for row in res.labels)
    assert ix.search("a", np.empty((0, DIM), np.float32), 3, {}).labels.shape == (0, 3)


@pytest.mark.parametrize("metric", METRICS)
def test_growth_many_deletes_and_rebuild(metric: str) -> None:
    rng = np.random.default_rng(8)
    ix, model = make(metric, ef_construction=64)
    n = 1500
    X = vecs(rng, n)
    for lo in range(0, n, 100):  # many small batches: the graph doubles several times
        ix.add(lab(*range(lo, lo + 100)), X[lo : lo + 100], [["a", "b"]] * 100)
        model.add(list(range(lo, lo + 100)), X[lo : lo + 100], [["a", "b"]] * 100)
    assert ix._graphs["a"].idx.get_max_elements() >= n
    gone = rng.permutation(n)[:1150].tolist()
    ix.revoke(lab(*gone), "a")  # > 3/4 deleted: a's graph is rebuilt from live labels
    model.revoke(gone, "a")
    assert ix._graphs["a"].idx.get_current_count() == n - 1150
    ix.revoke(lab(*gone[:1100]), "b")  # < 3/4: b keeps its deleted slots and still answers
    model.revoke(gone[:1100], "b")
    assert ix._graphs["b"].n_dead == 1100
    check_all(ix, model, ["a", "b"], rng, ks=(1, 10))


class _Failing:
    """Wraps an hnswlib index so knn_query always raises, as with an unreachable live set."""

    def __init__(self, idx: Any) -> None:  # an hnswlib.Index (hnswlib ships no types)
        self._idx = idx
        self.efs: list[int] = []

    def knn_query(self, q: np.ndarray, k: int, num_threads: int) -> None:
        self.efs.append(self._idx.ef)
        raise RuntimeError("Cannot return the results in a contiguous 2D array")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._idx, name)


@pytest.mark.parametrize("metric", METRICS)
def test_search_failure_retries_then_falls_back_to_exact(metric: str) -> None:
    rng = np.random.default_rng(9)
    ix, model = make(metric)
    X = vecs(rng, 300)
    acc = [["a"] if i % 3 else ["a", "b"] for i in range(300)]
    ix.add(lab(*range(300)), X, acc)
    model.add(list(range(300)), X, acc)
    ix.revoke(lab(*range(0, 300, 2)), "a")
    model.revoke(list(range(0, 300, 2)), "a")
    failing = ix._graphs["a"].idx = _Failing(ix._graphs["a"].idx)
    q = vecs(rng, 5)
    for k in (1, 10, 200):
        assert_matches_oracle(model, ix.search("a", q, k, {"ef": 16}), "a", q, k)
    assert failing.efs[:2] == [16, 256]  # retried with a larger ef before going exact
    assert_matches_oracle(model, ix.search("b", q, 7, {}), "b", q, 7)  # others unaffected


def test_memory_grows_with_data_and_returns_to_baseline() -> None:
    rng = np.random.default_rng(10)
    ix, _ = make("l2")
    base = ix.memory_bytes()
    assert set(base) == {"vectors", "tenant_vectors", "graph", "maps"}
    assert base["vectors"] == base["tenant_vectors"] == base["graph"] == 0
    ix.add(lab(*range(500)), vecs(rng, 500), [["a"]] * 500)
    one = ix.memory_bytes()
    ix.add(lab(*range(500, 2000)), vecs(rng, 1500), [["a", "b"], ["c"]] * 750)
    full = ix.memory_bytes()
    for key in base:
        assert base[key] <= one[key] < full[key], key
    assert full["vectors"] >= 2000 * DIM * 4
    assert full["tenant_vectors"] >= (500 + 1500 * 3 // 2) * DIM * 4  # one copy per tenant
    # the estimate is at least the serialised graph size (which holds no spare capacity)
    serialised = sum(g.idx.index_file_size() for g in ix._graphs.values())
    assert full["tenant_vectors"] + full["graph"] >= serialised
    ix.remove(lab(*range(2000)))
    end = ix.memory_bytes()
    assert end["vectors"] == end["tenant_vectors"] == end["graph"] == 0
    assert end["maps"] <= base["maps"] + 1024


@pytest.mark.parametrize("metric", METRICS)
def test_concurrent_searches_with_a_writer(metric: str) -> None:
    rng = np.random.default_rng(12)
    ix, model = make(metric)
    tenants = ["a", "b", "c"]
    X = vecs(rng, 200)
    ix.add(lab(*range(200)), X, [[tenants[i % 3]] for i in range(200)])
    model.add(list(range(200)), X, [[tenants[i % 3]] for i in range(200)])
    # As in the server: the owner's readers-writer lock is the only one (the index has none).
    lock = RWLock()
    errors: list[BaseException] = []
    done = threading.Event()
    started = threading.Barrier(4)
    queries = vecs(rng, 4)

    def reader(tenant: str) -> None:
        try:
            started.wait()
            for _ in range(5_000):
                if done.is_set():
                    break
                with lock.read():
                    res = ix.search(tenant, queries, 20, {"ef": 32})
                for row in res.labels:
                    hits = row[row >= 0].tolist()
                    assert len(set(hits)) == len(hits)
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            started.wait()
            wrng = np.random.default_rng(13)
            for step in range(100):
                new = 1000 + step
                v, acc = vecs(wrng, 1), [wrng.choice(tenants, 2, replace=False).tolist()]
                with lock.write():
                    ix.add(lab(new), v, acc)
                model.add([new], v, acc)
                some = wrng.integers(0, 1000 + step, 5).tolist()
                t = str(wrng.choice(tenants))
                with lock.write():
                    ix.grant(lab(*some), t)
                model.grant(some, t)
                with lock.write():
                    ix.revoke(lab(*some[:2]), "a")
                model.revoke(some[:2], "a")
                with lock.write():
                    ix.remove(lab(some[4]))
                model.remove([some[4]])
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    threads = [threading.Thread(target=reader, args=(t,)) for t in tenants]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    check_all(ix, model, tenants, rng)


# -- property ----------------------------------------------------------------------------------

TENANTS = ["t0", "t1", "t2"]
label_st = st.integers(0, 11)
op_st = st.one_of(
    st.tuples(
        st.just("add"), label_st, st.integers(0, 2**32 - 1), st.sets(st.sampled_from(TENANTS))
    ),
    st.tuples(st.just("grant"), st.lists(label_st, max_size=4), st.sampled_from(TENANTS)),
    st.tuples(st.just("revoke"), st.lists(label_st, max_size=4), st.sampled_from(TENANTS)),
    st.tuples(st.just("remove"), st.lists(label_st, max_size=4)),
)


@pytest.mark.parametrize("metric", METRICS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=40), qseed=st.integers(0, 2**32 - 1))
def test_random_op_sequences_match_oracle(
    metric: str, ops: list[tuple[Any, ...]], qseed: int
) -> None:
    ix, model = make(metric)
    for op in ops:
        if op[0] == "add":
            _, label, seed, access = op
            v = np.random.default_rng(seed).integers(-2, 3, (1, DIM)).astype(np.float32)
            if label in model.vecs:
                with pytest.raises(ValueError):
                    ix.add(lab(label), v, [sorted(access)])
            else:
                ix.add(lab(label), v, [sorted(access)])
                model.add([label], v, [sorted(access)])
        elif op[0] == "remove":
            ix.remove(lab(*op[1]))
            model.remove(op[1])
        else:
            getattr(ix, op[0])(lab(*op[1]), op[2])
            getattr(model, op[0])(op[1], op[2])
    queries = np.random.default_rng(qseed).integers(-2, 3, (3, DIM)).astype(np.float32)
    assert len(ix) == len(model.vecs)
    for tenant in [*TENANTS, "nobody"]:
        assert ix.tenant_size(tenant) == len(model.visible(tenant))
        for k in (1, 3, 12):
            res = ix.search(tenant, queries, k, {"ef": 1})  # small ef: only visibility holds
            visible = set(model.visible(tenant))
            assert all(set(row[row >= 0].tolist()) <= visible for row in res.labels)
            assert ((res.labels >= 0).sum(1) == min(k, len(visible))).all()
            assert_matches_oracle(model, ix.search(tenant, queries, k, EXACT), tenant, queries, k)


# -- kind and params ---------------------------------------------------------------------------


def test_kind_creates_index_with_params() -> None:
    assert HNSW.name == "hnsw" and set(HNSW.build_params) == {"M", "ef_construction"}
    assert set(HNSW.search_params) == {"ef"}
    ix = HNSW.create(dim=4, metric="l2", params={"M": 8, "ef_construction": 40})
    assert isinstance(ix, Index) and ix.kind == "hnsw" and ix.dim == 4 and ix.metric == "l2"
    assert (ix.m, ix.ef_construction) == (8, 40)
    ix.add(lab(0, 1), np.eye(2, 4, dtype=np.float32), [["a"], ["a"]])
    assert ix._graphs["a"].idx.M == 8 and ix._graphs["a"].idx.ef_construction == 40
    assert ix.snapshot() is None
    with pytest.raises(NotImplementedError):
        ix.restore(b"")
    default = HNSW.create(dim=4, metric="ip", params={})
    assert (default.m, default.ef_construction) == (16, 200)
    with pytest.raises(ValueError):
        HnswIndex(dim=4, metric="cosine")  # cosine is normalised ip upstream


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"M": 3}, "index_params.M"),
        ({"M": 129}, "index_params.M"),
        ({"M": 16.5}, "index_params.M"),
        ({"ef_construction": 7}, "index_params.ef_construction"),
        ({"ef_construction": 5000}, "index_params.ef_construction"),
        ({"ef": 10}, "index_params.ef"),  # a search param is not a build param
    ],
)
def test_build_params_rejected(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        HNSW.create(dim=4, metric="ip", params=params)
    assert e.value.field == field


def test_search_params_validation() -> None:
    assert resolve_params(HNSW.search_params, {}, field="search_params") == {"ef": 64}
    assert resolve_params(HNSW.search_params, {"ef": 32768}, field="search_params")["ef"] == 32768
    for bad in ({"ef": 0}, {"ef": 32769}, {"ef": 2.5}, {"nprobe": 4}):
        with pytest.raises(InvalidArgument) as e:
            resolve_params(HNSW.search_params, bad, field="search_params")
        assert e.value.field == f"search_params.{next(iter(bad))}"
