"""FlatIndex against a numpy brute-force oracle, plus the params validator and the registry."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curacache.errors import InvalidArgument
from curacache.index import (
    DEFAULT_INDEX_KIND,
    INDEX_KINDS,
    Index,
    Param,
    get_kind,
    resolve_params,
)
from curacache.index.flat import FLAT, FlatIndex, FlatKind
from curacache.index.rwlock import RWLock
from tests.helpers import Model, assert_matches_oracle

DIM = 16
METRICS = ("ip", "l2")


def check_all(
    ix: FlatIndex,
    model: Model,
    tenants: list[str],
    rng: np.random.Generator,
    ks: tuple[int, ...] = (1, 5, 50),
) -> None:
    queries = rng.standard_normal((4, DIM)).astype(np.float32)
    for tenant in [*tenants, "nobody"]:
        assert ix.tenant_size(tenant) == len(model.visible(tenant))
        for k in ks:
            assert_matches_oracle(model, ix.search(tenant, queries, k, {}), tenant, queries, k)


def vecs(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, DIM)).astype(np.float32)


def lab(*xs: int) -> np.ndarray:
    return np.asarray(xs, dtype=np.int64)


def make(metric: str) -> tuple[FlatIndex, Model]:
    return FlatIndex(dim=DIM, metric=metric, use_gpu=False), Model(metric)


# -- behaviour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
def test_random_overlapping_tenants_match_oracle(metric: str) -> None:
    rng = np.random.default_rng(1)
    ix, model = make(metric)
    tenants = [f"t{i}" for i in range(5)]
    n = 300
    labels = rng.permutation(10_000)[:n].astype(np.int64)
    X = vecs(rng, n)
    access = [
        [tenants[i % 5], *rng.choice(tenants, size=rng.integers(0, 3), replace=False).tolist()]
        for i in range(n)
    ]
    for lo in range(0, n, 70):  # several batches
        ix.add(labels[lo : lo + 70], X[lo : lo + 70], access[lo : lo + 70])
        model.add(labels[lo : lo + 70].tolist(), X[lo : lo + 70], access[lo : lo + 70])
    assert len(ix) == n
    check_all(ix, model, tenants, rng, ks=(1, 10, 100, 400))


@pytest.mark.parametrize("metric", METRICS)
def test_mutation_sequence_matches_oracle(metric: str) -> None:
    rng = np.random.default_rng(2)
    ix, model = make(metric)
    tenants = ["a", "b", "c"]

    def do(op: str, *args: object) -> None:
        getattr(ix, op)(*[lab(*a) if isinstance(a, list) else a for a in args])
        getattr(model, op)(*args)
        check_all(ix, model, tenants, rng)

    X = vecs(rng, 20)
    ix.add(lab(*range(20)), X, [["a"]] * 10 + [["b", "c"]] * 10)
    model.add(list(range(20)), X, [["a"]] * 10 + [["b", "c"]] * 10)
    check_all(ix, model, tenants, rng)
    do("grant", [0, 1, 2, 15], "b")
    do("grant", [0, 1, 999], "b")  # already-seen and absent labels are skipped
    do("revoke", [19], "b")  # the last row of b's matrix
    do("revoke", [10], "c")  # the first row of c's matrix (swap-with-last)
    do("revoke", [3, 4, 5, 999], "b")  # not seen by b: no-op
    do("remove", [0, 15, 12345])  # shared labels go from every tenant; absent skipped
    do("revoke", list(range(20)), "a")  # a becomes empty -> behaves as unknown
    assert ix.tenant_size("a") == 0 and "a" not in ix._tenants  # its matrix is freed
    do("grant", [3, 4], "a")  # labels a revoked are still in the store: re-grantable
    # re-adding a removed label with a new vector
    v = vecs(rng, 1)
    ix.add(lab(0), v, [["c"]])
    model.add([0], v, [["c"]])
    check_all(ix, model, tenants, rng)


def test_store_reuses_freed_slots() -> None:
    rng = np.random.default_rng(3)
    ix, model = make("l2")
    X = vecs(rng, 10)
    ix.add(lab(*range(10)), X, [["a"]] * 10)
    model.add(list(range(10)), X, [["a"]] * 10)
    top = ix._store.top
    ix.remove(lab(2, 7))
    model.remove([2, 7])
    Y = vecs(rng, 3)
    ix.add(lab(2, 70, 71), Y, [["a"], ["a", "b"], ["b"]])
    model.add([2, 70, 71], Y, [["a"], ["a", "b"], ["b"]])
    # two freed slots reused, one fresh slot appended
    assert ix._store.top == top + 1 and ix._store.free == []
    # grant copies from the store: reused slots must hold the new vectors
    everything = [0, 1, 2, 3, 4, 5, 6, 8, 9, 70, 71]
    ix.grant(lab(*everything), "c")
    model.grant(everything, "c")
    check_all(ix, model, ["a", "b", "c"], rng)


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
def test_padding_and_unknown_tenant(metric: str) -> None:
    rng = np.random.default_rng(5)
    ix, _ = make(metric)
    pad = -np.inf if metric == "ip" else np.inf
    q = vecs(rng, 3)
    res = ix.search("ghost", q, 4, {})
    assert (res.labels == -1).all() and (res.scores == pad).all()
    ix.add(lab(7, 8), vecs(rng, 2), [["a"], ["a"]])
    res = ix.search("a", q, 5, {})
    assert (res.labels[:, 2:] == -1).all() and (res.scores[:, 2:] == pad).all()
    assert set(res.labels[:, :2].ravel().tolist()) == {7, 8}
    assert (ix.search("ghost", q, 4, {}).labels == -1).all()
    empty = ix.search("a", np.empty((0, DIM), np.float32), 3, {})
    assert empty.labels.shape == (0, 3)


def test_label_with_no_tenant_is_kept_and_grantable() -> None:
    rng = np.random.default_rng(6)
    ix, model = make("ip")
    X = vecs(rng, 2)
    ix.add(lab(1, 2), X, [[], ["a"]])
    model.add([1, 2], X, [[], ["a"]])
    check_all(ix, model, ["a", "b"], rng)
    ix.grant(lab(1), "b")
    model.grant([1], "b")
    check_all(ix, model, ["a", "b"], rng)


@pytest.mark.parametrize("metric", METRICS)
def test_grow_and_shrink_tenant_matrix(metric: str) -> None:
    rng = np.random.default_rng(7)
    ix, model = make(metric)
    n = 1000
    X = vecs(rng, n)
    acc = [["a"] if i % 2 else ["a", "b"] for i in range(n)]
    order = rng.permutation(n).tolist()  # unsorted insertion: slots != labels
    ix.add(lab(*order), X, acc)
    model.add(order, X, acc)
    cap = len(ix._tenants["a"].labels)
    assert cap >= n
    gone = rng.permutation(n)[:980].tolist()
    ix.remove(lab(*gone))
    model.remove(gone)
    assert len(ix._tenants["a"].labels) < cap // 4
    assert len(ix._store.mat) < n // 4
    check_all(ix, model, ["a", "b"], rng)
    # the compacted store still maps every label to its own vector
    left = sorted(model.vecs)
    ix.grant(lab(*left), "c")
    model.grant(left, "c")
    Y = vecs(rng, 50)
    ix.add(lab(*range(n, n + 50)), Y, [["c"]] * 50)
    model.add(list(range(n, n + 50)), Y, [["c"]] * 50)
    check_all(ix, model, ["a", "b", "c"], rng)


def test_memory_returns_to_baseline() -> None:
    rng = np.random.default_rng(8)
    ix, _ = make("l2")
    base = ix.memory_bytes()
    assert set(base) == {"vectors", "tenant_vectors", "labels", "maps"}
    n = 2000
    ix.add(lab(*range(n)), vecs(rng, n), [["a", "b"], ["c"]] * (n // 2))
    full = ix.memory_bytes()
    assert full["vectors"] >= n * DIM * 4
    # one row per (vector, tenant): 3n/2 rows across tenants
    assert full["tenant_vectors"] >= 3 * n // 2 * DIM * 4
    assert full["labels"] >= 3 * n // 2 * 8
    assert full["maps"] > base["maps"]
    ix.grant(lab(*range(0, n, 2)), "c")
    ix.revoke(lab(*range(0, n, 4)), "a")
    ix.remove(lab(*range(0, n, 2)))
    ix.remove(lab(*range(1, n, 2)))
    end = ix.memory_bytes()
    assert end["vectors"] == end["tenant_vectors"] == end["labels"] == 0
    assert end["maps"] <= base["maps"] + 1024


@pytest.mark.parametrize("metric", METRICS)
def test_concurrent_searches_with_a_writer(metric: str) -> None:
    rng = np.random.default_rng(9)
    ix, model = make(metric)
    tenants = ["a", "b", "c"]
    X = vecs(rng, 200)
    ix.add(lab(*range(200)), X, [[tenants[i % 3]] for i in range(200)])
    model.add(list(range(200)), X, [[tenants[i % 3]] for i in range(200)])
    ever = set(range(200))
    # As in the server: the owner's readers-writer lock is the only one (the index has none).
    lock = RWLock()
    errors: list[BaseException] = []
    started = threading.Barrier(5)
    done = threading.Event()
    queries = vecs(rng, 8)

    def reader(tenant: str) -> None:
        try:
            started.wait()
            # bounded so a starved writer fails the lock tests, not hangs this one
            for _ in range(20_000):
                if done.is_set():
                    break
                with lock.read():
                    res = ix.search(tenant, queries, 20, {})
                for row in res.labels:
                    hits = row[row >= 0].tolist()
                    assert len(set(hits)) == len(hits) and set(hits) <= ever
        except BaseException as e:
            errors.append(e)

    def writer() -> None:
        try:
            started.wait()
            wrng = np.random.default_rng(10)
            for step in range(150):
                new = 1000 + step
                v = vecs(wrng, 1)
                acc = [wrng.choice(tenants, 2, replace=False).tolist()]
                ever.add(new)
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

    threads = [threading.Thread(target=reader, args=(t,)) for t in (*tenants, "a")]
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
            # small integer coordinates: exact arithmetic and plenty of exact ties
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
    qrng = np.random.default_rng(qseed)
    queries = qrng.integers(-2, 3, (3, DIM)).astype(np.float32)
    assert len(ix) == len(model.vecs)
    for tenant in [*TENANTS, "nobody"]:
        assert ix.tenant_size(tenant) == len(model.visible(tenant))
        for k in (1, 3, 12):
            assert_matches_oracle(model, ix.search(tenant, queries, k, {}), tenant, queries, k)


# -- kind, registry, params ----------------------------------------------------------------------


def test_flat_kind_and_registry() -> None:
    assert INDEX_KINDS["flat"] is FLAT
    assert DEFAULT_INDEX_KIND in INDEX_KINDS
    assert get_kind("flat", field="collection.index_kind") is FLAT
    assert FLAT.name == "flat" and dict(FLAT.build_params) == {} and dict(FLAT.search_params) == {}
    ix = FlatKind(use_gpu=False).create(dim=4, metric="l2", params={})
    assert isinstance(ix, Index) and ix.kind == "flat" and ix.dim == 4 and ix.metric == "l2"
    assert not ix.uses_gpu
    assert ix.snapshot() is None
    with pytest.raises(InvalidArgument) as e:
        FLAT.create(dim=4, metric="ip", params={"ef": 3})
    assert e.value.field == "index_params.ef"
    with pytest.raises(ValueError):
        FlatIndex(dim=4, metric="cosine", use_gpu=False)  # cosine is normalised ip upstream


def test_get_kind_unknown_names_field_and_choices() -> None:
    with pytest.raises(InvalidArgument) as e:
        get_kind("annoy", field="collection.index_kind")
    assert e.value.field == "collection.index_kind"
    assert "annoy" in str(e.value) and "flat" in str(e.value)


SPECS = {
    "gamma": Param(default=128, low=1, high=4096, integer=True),
    "ratio": Param(default=0.5, low=0.0, high=1.0),
}


def test_resolve_params_defaults_and_overrides() -> None:
    assert resolve_params(SPECS, {}, field="p") == {"gamma": 128, "ratio": 0.5}
    assert resolve_params(SPECS, {"gamma": 64.0, "ratio": 1}, field="p") == {
        "gamma": 64,
        "ratio": 1.0,
    }
    assert resolve_params({}, {}, field="p") == {}


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        ({"gama": 3}, "search_params.gama", "accepted: gamma, ratio"),
        ({"gamma": 0}, "search_params.gamma", "must be in [1, 4096]"),
        ({"gamma": 5000}, "search_params.gamma", "must be in"),
        ({"gamma": 2.5}, "search_params.gamma", "integer"),
        ({"ratio": float("nan")}, "search_params.ratio", "must be in"),
        ({"ratio": -0.1}, "search_params.ratio", "must be in"),
    ],
)
def test_resolve_params_rejects(given: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        resolve_params(SPECS, given, field="search_params")
    assert e.value.field == field and words in str(e.value)


def test_resolve_params_no_params_accepted() -> None:
    with pytest.raises(InvalidArgument) as e:
        resolve_params(FLAT.search_params, {"nprobe": 1}, field="search_params")
    assert e.value.field == "search_params.nprobe" and "none" in str(e.value)
