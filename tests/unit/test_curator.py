"""CuratorIndex (curator/) and the `curator` IndexKind: exactness, splits/merges, recall against
an exact oracle on synthetic and real (arXiv) data, memory, snapshots, concurrency."""

from __future__ import annotations

import gzip
import itertools
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from curacache.errors import InvalidArgument
from curacache.index import Index, SearchResult
from curacache.index.curator import CURATOR, CuratorAdapter
from curacache.index.rwlock import RWLock
from curator import CuratorIndex
from tests.helpers import (
    Model,
    assert_exact,
    check_arenas,
    check_structure,
    clustered,
    lists_of,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HUGE = 1e6


def small_trained(
    rng: np.random.Generator, *, metric: str = "l2", n: int = 600, tau: int = 4
) -> tuple[CuratorIndex, Model, np.ndarray]:
    """An index whose tree is trained on `n` clustered 8-d vectors seen only by 'anchor'."""
    x = clustered(rng, n, 8, 10)
    index = CuratorIndex(
        dim=8, metric=metric, max_sl_size=tau, branching=8, max_depth=4, train_size=n
    )
    model = Model(metric)
    labels = list(range(n))
    index.add(np.arange(n), x, [["anchor"]] * n)
    model.add(labels, x, [["anchor"]] * n)
    assert index.trained and index.tree.height >= 2
    return index, model, x


def recall_at_10(
    index: CuratorIndex, model: Model, queries: list[tuple[str, np.ndarray]], **gammas: float
) -> float:
    hits = total = 0
    for tenant, q in queries:
        want = set(model.ranked(tenant, q)[0][:10].tolist())
        got = set(index.search(tenant, q[None], 10, **gammas)[0][0].tolist())
        hits += len(want & got)
        total += len(want)
    return hits / total


# -- exactness before training, errors, padding ------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_untrained_index_is_exact(metric: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    index = CuratorIndex(dim=16, metric=metric, max_sl_size=8)
    model = Model(metric)
    access = [["a"] if i % 3 else ["a", "b"] for i in range(300)]
    index.add(np.arange(300), x, access)
    model.add(list(range(300)), x, access)
    assert not index.trained
    check_structure(index, model)  # root lists far over τ are fine: the root is a GCT leaf
    q = rng.standard_normal((5, 16)).astype(np.float32)
    for tenant in ("a", "b"):
        labels, scores = index.search(tenant, q, 7)  # default γ
        for i in range(5):
            assert_exact(model, tenant, q[i], labels[i], scores[i], 7)


def test_add_errors_apply_nothing_and_searches_pad() -> None:
    index = CuratorIndex(dim=4, metric="ip")
    index.add(np.array([0, 1]), np.eye(4, dtype=np.float32)[:2], [["a"], ["a"]])
    with pytest.raises(ValueError):
        index.add(np.array([2, 1]), np.eye(4, dtype=np.float32)[:2], [["a"], ["b"]])
    with pytest.raises(ValueError):
        index.add(np.array([3, 3]), np.eye(4, dtype=np.float32)[:2], [["a"], ["a"]])
    assert index.labels().tolist() == [0, 1] and index.tenants() == ["a"]
    labels, scores = index.search("a", np.ones((2, 4), np.float32), 4)
    assert labels.shape == (2, 4) and labels[:, 2:].tolist() == [[-1, -1]] * 2
    assert np.all(scores[:, 2:] == -np.inf) and np.all(np.isfinite(scores[:, :2]))
    labels, scores = index.search("nobody", np.ones((1, 4), np.float32), 3)
    assert labels.tolist() == [[-1, -1, -1]] and np.all(scores == -np.inf)
    l2 = CuratorIndex(dim=4, metric="l2")
    assert np.all(l2.search("a", np.ones((1, 4), np.float32), 2)[1] == np.inf)


def test_grant_revoke_remove_skip_no_ops() -> None:
    rng = np.random.default_rng(2)
    index, model, _ = small_trained(rng, n=200)
    before = lists_of(index.tenant_view("anchor"))
    index.grant(np.array([0, 0, 5, 999, 10**6]), "anchor")  # already seen / absent
    index.revoke(np.array([1, 999]), "nobody")
    index.remove(np.array([999, 10**6]))
    after = lists_of(index.tenant_view("anchor"))
    assert {n: v.tolist() for n, v in before.items()} == {n: v.tolist() for n, v in after.items()}
    index.grant(np.array([3, 3, 4]), "b")
    index.grant(np.array([3]), "b")
    model.grant([3, 4], "b")
    index.revoke(np.array([4, 4, 7]), "b")
    model.revoke([4], "b")
    check_structure(index, model)
    assert index.access_of(3) == ["anchor", "b"] and index.access_of(4) == ["anchor"]


# -- splits and merges -------------------------------------------------------------------------


def test_revokes_merge_a_split_subtree_back_into_one_list() -> None:
    rng = np.random.default_rng(3)
    index, model, _x = small_trained(rng, tau=4)
    tree = index.tree
    under: dict[int, list[int]] = {}
    for i in range(600):
        under.setdefault(int(index.path_of(i)[1]), []).append(i)
    child, other = sorted(under, key=lambda c: -len(under[c]))[:2]
    ids, others = under[child][:40], under[other][:5]
    for i in ids + others:  # one at a time: the grant path with its splits
        index.grant(np.array([i]), "t")
    model.grant(ids + others, "t")
    check_structure(index, model)
    tt = index.tenant_view("t")
    assert tt is not None and 1 < tt.rows.shape[0] < tree.n_nodes  # sparse: touched nodes only
    assert any(tree.depth[n] >= 2 for n in lists_of(tt)), "40 ids under one root child must split"
    # down to 4 under `child` (the root still holds 4 + 5 > τ): one merged list at `child`
    index.revoke(np.array(ids[4:]), "t")
    model.revoke(ids[4:], "t")
    check_structure(index, model)
    lists = lists_of(index.tenant_view("t"))
    assert sorted(lists[child].tolist()) == sorted(ids[:4])
    assert all(tree.parent[n] != child for n in lists)
    assert all(tree.depth[n] == 2 for n in lists if n != child)  # `other` (5 > τ) stays split
    # 4 + 1 left: `other`'s last id merges up to `other`; then 4 in all: one root list, and
    # the table holds the root's row alone
    index.revoke(np.array(others[1:]), "t")
    model.revoke(others[1:], "t")
    check_structure(index, model)
    assert set(lists_of(index.tenant_view("t"))) == {child, other}
    index.revoke(np.array(ids[3:4]), "t")
    model.revoke(ids[3:4], "t")
    check_structure(index, model)
    tt = index.tenant_view("t")
    assert tt is not None and list(lists_of(tt)) == [0] and tt.rows.shape[0] == 1
    index.revoke(np.array(ids[:3] + others[:1]), "t")
    assert index.tenant_view("t") is None and index.tenants() == ["anchor"]


def test_sequential_grants_equal_the_canonical_bulk_build() -> None:
    rng = np.random.default_rng(4)
    index, _model, _ = small_trained(rng, tau=8)
    ids = rng.choice(600, 250, replace=False)
    for i in ids.tolist():
        index.grant(np.array([i]), "t")
    built = index.canonical_view(np.sort(ids).astype(np.int32))
    have = index.tenant_view("t")
    assert have is not None and np.array_equal(have.rows[:, :2], built.rows[:, :2])
    assert {n: sorted(v.tolist()) for n, v in lists_of(have).items()} == {
        n: sorted(v.tolist()) for n, v in lists_of(built).items()
    }


# -- recall against the exact oracle -----------------------------------------------------------


def test_recall_on_clustered_synthetic_data() -> None:
    rng = np.random.default_rng(5)
    n, dim, n_tenants = 20_000, 64, 30
    x = clustered(rng, n, dim, 50, spread=1.5)
    # skewed, overlapping access: tenant j sees a vector with probability ~ 0.5 / (1 + j/3)
    p = 0.5 / (1 + np.arange(n_tenants) / 3)
    seen = rng.random((n, n_tenants)) < p
    seen[np.arange(n), rng.integers(0, n_tenants, n)] = True  # every vector has an owner
    access = [[f"t{j}" for j in np.flatnonzero(row)] for row in seen]
    index = CuratorIndex(dim=dim, metric="l2", train_size=5000)
    for s in range(0, n, 2500):
        index.add(np.arange(s, s + 2500), x[s : s + 2500], access[s : s + 2500])
    model = Model("l2")
    model.add(list(range(n)), x, access)
    assert index.trained and index.tree.n_nodes > 100
    big = index.tenant_view("t0")
    assert big is not None and big.size > 5000 and len(lists_of(big)) > 20
    q = clustered(rng, 150, dim, 50, spread=1.5)
    queries = [(f"t{i % n_tenants}", q[i]) for i in range(150)] + [("t0", q[i]) for i in range(50)]
    r = recall_at_10(index, model, queries)
    assert r >= 0.90, r
    # γ2 is the recall knob: a tiny budget must lose recall (the search really is approximate)
    assert recall_at_10(index, model, queries[-50:], gamma1=1, gamma2=1) < r


@pytest.mark.skipif(
    not (DATA / "arxiv_papers.minilm.f16.npy").exists(), reason="shared arXiv data not present"
)
def test_recall_on_an_arxiv_slice() -> None:
    n, n_q = 15_000, 300
    x = np.load(DATA / "arxiv_papers.minilm.f16.npy", mmap_mode="r")[: n + n_q].astype(np.float32)
    with gzip.open(DATA / "arxiv_papers.jsonl.gz", "rt") as f:
        cats = [json.loads(line)["categories"] for line in itertools.islice(f, n + n_q)]
    cats = [c.split() if isinstance(c, str) else list(c) for c in cats]
    index = CuratorIndex(dim=384, metric="ip", train_size=5000)  # cosine arrives as ip on unit rows
    for s in range(0, n, 5000):
        index.add(np.arange(s, s + 5000), x[s : s + 5000], cats[s : s + 5000])
    model = Model("ip")
    model.add(list(range(n)), x[:n], cats[:n])
    assert index.trained
    tenants = set(index.tenants())
    queries = [
        (c, x[n + i]) for i in range(n_q) for c in cats[n + i] if c in tenants
    ]  # data-proportional
    assert recall_at_10(index, model, queries) >= 0.90


# -- memory, snapshots, concurrency ------------------------------------------------------------


def test_deleting_everything_returns_memory_to_the_empty_baseline() -> None:
    rng = np.random.default_rng(6)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=8, branching=8, train_size=500)
    base = {k: v for k, v in index.memory_bytes().items() if k != "tree"}
    x = clustered(rng, 1500, 8, 10)
    index.add(np.arange(1500), x, [["a", "b"] if i % 2 else ["c"] for i in range(1500)])
    index.grant(np.arange(0, 1500, 3), "d")
    full = index.memory_bytes()
    assert index.trained and all(full[k] >= base[k] for k in base)
    assert full["vectors"] >= 1500 * 8 * 4 and full["shortlists"] > 0 and full["tenant_counts"] > 0
    index.revoke(np.arange(1500), "d")
    index.remove(np.arange(0, 1500, 2))
    half = index.memory_bytes()
    assert half["shortlists"] < full["shortlists"]
    index.remove(np.arange(1500))
    assert {k: v for k, v in index.memory_bytes().items() if k != "tree"} == base
    assert len(index) == 0 and index.tenants() == [] and index.labels().size == 0


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_snapshot_restore_gives_identical_results(metric: str) -> None:
    rng = np.random.default_rng(7)
    index, _model, x = small_trained(rng, metric=metric, n=800, tau=6)
    for j, t in enumerate(("a", "b", "c")):
        index.grant(np.arange(j, 800, 3 + j), t)
    index.revoke(np.arange(0, 800, 7), "a")
    index.remove(np.arange(0, 800, 11))
    index.add(np.array([900]), x[:1], [["a", "z"]])
    blob = index.snapshot()
    copy = CuratorIndex(dim=8, metric=metric)  # default params: the snapshot's own win
    copy.restore(blob)
    assert copy.max_sl_size == 6 and copy.trained and np.array_equal(copy.labels(), index.labels())
    check_arenas(copy)
    q = rng.standard_normal((20, 8)).astype(np.float32)
    for tenant in ("a", "b", "c", "z", "anchor", "nobody"):
        for g2 in (1, 4, HUGE):
            want = index.search(tenant, q, 10, gamma2=g2)
            got = copy.search(tenant, q, 10, gamma2=g2)
            assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    for idx in (index, copy):  # both keep working identically after the restore
        idx.revoke(np.arange(0, 800, 2), "b")
        idx.add(np.array([901]), x[1:2], [["b"]])
        idx.grant(np.array([901]), "c")  # the compiled single-label grant on restored arrays
    assert np.array_equal(index.search("b", q, 10)[0], copy.search("b", q, 10)[0])
    assert copy.snapshot() == index.snapshot()
    with pytest.raises(ValueError):
        CuratorIndex(dim=9, metric=metric).restore(blob)
    with pytest.raises(ValueError):
        copy.restore(b"not a snapshot")


def test_concurrent_searches_while_one_writer_changes_and_retrains() -> None:
    """Under the port's contract (its owner's one readers-writer lock: searches read, writes
    write, a retrain takes it only to read its sample and to install), parallel searches never
    see a half-applied write or a half-installed tree."""
    rng = np.random.default_rng(8)
    x = clustered(rng, 3000, 16, 12)
    adapter = CURATOR.create(dim=16, metric="l2", params={"max_sl_size": 8, "train_size": 1000})
    index, lock = adapter.core, RWLock()
    index.add(np.arange(500), x[:500], [["a"]] * 500)
    ever_b: set[int] = set()  # labels "b" was ever granted: the only ones it may see
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader(seed: int) -> None:
        r = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with lock.read():
                    labels, _ = index.search("b", x[r.integers(0, 3000, 2)], 5)
                assert set(labels[labels >= 0].tolist()) <= ever_b
                with lock.read():
                    index.search("a", x[r.integers(0, 3000, 1)], 5, gamma2=2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    try:
        for s in range(500, 3000, 250):  # crosses train_size: training happens mid-way
            batch = np.arange(s, s + 250)
            ever_b.update(batch[::2].tolist())
            with lock.write():
                index.add(
                    batch, x[s : s + 250], [["a", "b"] if i % 2 == 0 else ["a"] for i in batch]
                )
                index.revoke(batch[::4], "b")
                index.remove(batch[::10])
            if adapter.retrain_due():
                assert adapter.retrain(lock)
        adapter.retrain(lock)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert index.trained
    model = Model("l2")
    for label in index.labels().tolist():
        model.add([label], x[label : label + 1], [index.access_of(label)])
    check_structure(index, model)


# -- the IndexKind adapter ---------------------------------------------------------------------


def test_curator_kind_validates_params_and_satisfies_the_index_port() -> None:
    assert CURATOR.name == "curator"
    assert CURATOR.build_params["max_sl_size"].default == 256
    assert CURATOR.search_params["gamma2"].default == 128
    with pytest.raises(InvalidArgument):
        CURATOR.create(dim=4, metric="ip", params={"max_sl_size": 4})
    with pytest.raises(InvalidArgument):
        CURATOR.create(dim=4, metric="ip", params={"bogus": 1})
    index = CURATOR.create(dim=4, metric="l2", params={"max_sl_size": 16.0, "train_size": 64.0})
    assert isinstance(index, CuratorAdapter) and isinstance(index, Index)
    assert index.core.max_sl_size == 16 and index.core.train_size == 64 and index.kind == "curator"
    index.add(np.array([0, 1, 2]), np.eye(4, dtype=np.float32)[:3], [["a"], ["a", "b"], ["b"]])
    res = index.search("a", np.eye(4, dtype=np.float32)[:1], 3, {"gamma1": 2.0, "gamma2": 128.0})
    assert isinstance(res, SearchResult)
    assert (
        res.labels.tolist() == [[0, 1, -1]]
        and res.scores[0, 0] == 0.0
        and res.scores[0, 2] == np.inf
    )
    assert set(index.memory_bytes()) >= {
        "vectors",
        "norms",
        "paths",
        "tree",
        "tenant_counts",
        "shortlists",
    }
    blob = index.snapshot()
    other = CURATOR.create(dim=4, metric="l2", params={})
    other.restore(blob)
    assert other.labels().tolist() == [0, 1, 2]


def test_label_capacity_grows_geometrically_not_to_a_power_of_two() -> None:
    index = CuratorIndex(dim=4, metric="ip", train_size=10**6)  # stays untrained: rows only
    rng = np.random.default_rng(0)
    n = 5000
    for start in range(0, n, 100):
        labels = np.arange(start, start + 100, dtype=np.int64)
        index.add(labels, rng.normal(size=(100, 4)).astype(np.float32), [["t"]] * 100)
    cap = index.memory_bytes()["paths"] // 4
    assert n <= cap <= n + n // 2  # the next power of two would be 8192
    index.add(
        np.array([20_000]), np.ones((1, 4), np.float32), [["t"]]
    )  # a jump: exactly what it needs
    assert index.memory_bytes()["paths"] // 4 == 20_001
    restored = CuratorIndex(dim=4, metric="ip")
    restored.restore(index.snapshot())
    assert restored.memory_bytes()["paths"] // 4 <= 20_001


def test_inner_product_index_keeps_no_norms_and_l2_scores_use_them() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    access = [["t"]] * 300
    ip = CuratorIndex(dim=8, metric="ip", train_size=100, max_sl_size=8)
    l2 = CuratorIndex(dim=8, metric="l2", train_size=100, max_sl_size=8)
    for index in (ip, l2):
        index.add(np.arange(300), x, access)
    assert ip.memory_bytes()["norms"] == 0 and l2.memory_bytes()["norms"] >= 300 * 4
    q = x[:5] + 0.01
    _, d2 = l2.search("t", q, 3, gamma2=4096, epsilon=HUGE)
    exact = np.sort(((q[:, None, :] - x[None]) ** 2).sum(-1), axis=1)[:, :3]
    np.testing.assert_allclose(d2, exact, rtol=1e-4, atol=1e-4)
    for index in (ip, l2):
        again = CuratorIndex(dim=8, metric=index.metric)
        again.restore(index.snapshot())
        assert np.array_equal(again.search("t", q, 3)[0], index.search("t", q, 3)[0])


def test_quantized_centroids_stay_within_half_a_step_and_norms_match_the_codes() -> None:
    from curator.tree import Tree, quantize

    rng = np.random.default_rng(1)
    c = rng.normal(size=(50, 16)).astype(np.float32)
    c[:, 3] = 0.25  # a constant dimension
    codes, lo, step = quantize(c)
    deq = lo + step * codes.astype(np.float32)
    assert codes.dtype == np.uint8 and np.all(np.abs(deq - c) <= step / 2 + 1e-6)
    assert np.allclose(deq[:, 3], 0.25)
    tree = Tree.from_centroids(
        c,
        np.r_[1, np.zeros(49)],
        np.r_[49, np.zeros(49)],
        np.r_[-1, np.zeros(49)],
        np.r_[0, np.ones(49)],
    )
    np.testing.assert_allclose(tree.cnorm, (tree.centroids**2).sum(1), rtol=1e-5)
    # routing scores the dequantized centroids: the leaf is the nearest of them
    x = rng.normal(size=(200, 16)).astype(np.float32)
    near = ((x[:, None, :] - tree.centroids[None, 1:]) ** 2).sum(-1).argmin(1) + 1
    assert np.array_equal(tree.route_leaves(x, beam=1), near)
