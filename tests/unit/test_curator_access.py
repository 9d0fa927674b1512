"""Compact curator state: the tree's ancestors table, exact-capacity bulk lists, snapshot
checks, and who-sees-what across reallocations and reused tenant ints."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from curator import CuratorIndex
from tests.helpers import check_arenas, clustered


def test_tree_ancestors_are_the_parent_chains_and_route_agrees() -> None:
    rng = np.random.default_rng(1)
    x = clustered(rng, 800, 8, 10)
    index = CuratorIndex(
        dim=8, metric="l2", max_sl_size=4, branching=8, max_depth=4, train_size=800
    )
    index.add(np.arange(800), x, [["a"]] * 800)
    tree = index.tree
    assert tree.trained and tree.ancestors.shape == (tree.n_nodes, tree.height + 1)
    for node in range(tree.n_nodes):
        chain, a = [], node
        while a >= 0:
            chain.append(a)
            a = int(tree.parent[a])
        row = tree.ancestors[node]
        assert row[: len(chain)].tolist() == chain[::-1] and np.all(row[len(chain) :] == -1)
    leaves = tree.route_leaves(x)
    assert np.all(tree.child_count[leaves] == 0)
    assert np.array_equal(tree.route(x), tree.ancestors[leaves])
    assert np.array_equal(index.leaves()[:800], leaves)
    assert index.path_of(10**6).tolist() == [-1] * (tree.height + 1)


def test_bulk_build_has_exact_capacities() -> None:
    rng = np.random.default_rng(2)
    x = clustered(rng, 900, 8, 10)
    index = CuratorIndex(
        dim=8, metric="l2", max_sl_size=8, branching=8, max_depth=4, train_size=900
    )
    access = [["a"] + (["b"] if i % 3 == 0 else []) + (["c"] if i < 5 else []) for i in range(900)]
    index.add(np.arange(900), x, access)  # trains: every tenant rebuilt in bulk
    store = index.store
    for name in ("a", "b", "c"):
        tt = index.tenant_view(name)
        assert tt is not None and tt.rows.dtype == np.int32
        lists = tt.rows[tt.rows[:, 3] > 0]
        assert np.array_equal(lists[:, 3], lists[:, 1])  # exact after a build: capacity = size
    used = int(store.arena[2])
    assert (
        used == 900 + 300 + 5
        and store.arena[3] == 0
        and used <= store.ids.shape[0] <= used + max(64, used // 8)
    )
    check_arenas(index)
    index.grant(np.arange(1, 900, 3), "b")  # moves full lists, splits, grows the arena
    index.revoke(np.arange(0, 900, 3), "b")
    check_arenas(index)
    assert sorted(index.access_of(1)) == ["a", "b", "c"] and index.access_of(0) == ["a", "c"]
    b = index.canonical_view(np.arange(1, 900, 3).astype(np.int32))
    have = index.tenant_view("b")
    assert have is not None and np.array_equal(have.rows[:, :2], b.rows[:, :2])


def test_snapshot_of_an_older_version_is_rejected() -> None:
    rng = np.random.default_rng(3)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=4, train_size=10_000)
    index.add(np.arange(20), clustered(rng, 20, 8, 2), [["a"]] * 20)
    with np.load(io.BytesIO(index.snapshot()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["version"] = 1
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    with pytest.raises(ValueError, match="supported version"):
        CuratorIndex(dim=8, metric="l2").restore(buf.getvalue())
    copy = CuratorIndex(dim=8, metric="l2")
    copy.restore(index.snapshot())
    assert copy.access_of(5) == ["a"] and len(copy) == 20


def test_snapshot_with_tenant_labels_out_of_order_is_rejected_and_nothing_changes() -> None:
    rng = np.random.default_rng(4)
    index = CuratorIndex(
        dim=8, metric="l2", max_sl_size=4, branching=8, max_depth=3, train_size=300
    )
    index.add(np.arange(300), clustered(rng, 300, 8, 6), [["a"]] * 300)
    with np.load(io.BytesIO(index.snapshot()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays["t_ids"].size > 2
    arrays["t_ids"] = arrays["t_ids"][::-1].copy()  # same labels, not ascending
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    target = CuratorIndex(dim=8, metric="l2")
    target.add(np.array([7]), np.ones((1, 8), np.float32), [["keep"]])
    with pytest.raises(ValueError, match="not ascending"):
        target.restore(buf.getvalue())
    assert target.access_of(7) == ["keep"] and len(target) == 1  # checked before anything changed


def test_equal_scores_are_ordered_by_label_whatever_the_insertion_order() -> None:
    index = CuratorIndex(dim=4, metric="ip", train_size=10**6)
    index.add(np.array([5, 3, 9, 1]), np.ones((4, 4), np.float32), [["t"]] * 4)
    labels, scores = index.search("t", np.ones((1, 4), np.float32), 4)
    assert labels[0].tolist() == [1, 3, 5, 9] and np.all(scores == 4.0)
    assert index.search("t", np.ones((1, 4), np.float32), 2)[0][0].tolist() == [1, 3]


def test_who_sees_a_label_follows_reallocations_and_reused_tenant_ints() -> None:
    """remove()/access_of() ask every tenant in one compiled call over the store's arrays: the
    answers follow the arrays as they are reallocated and compacted, and a freed tenant int
    sees nothing until it is reused."""
    rng = np.random.default_rng(3)
    x = clustered(rng, 400, 8, 6)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=8, branching=4, train_size=300)
    index.add(np.arange(300), x[:300], [["a", "b"] if i % 50 == 0 else ["a"] for i in range(300)])
    assert index.trained
    assert index.access_of(50) == ["a", "b"] and index.access_of(4) == ["a"]  # the view is built
    rows, ids = index.store.rows, index.store.ids
    for label in range(1, 300, 3):  # b grows from 6 ids: the arrays are reallocated on the way
        index.grant(np.array([label], dtype=np.int64), "b")
    assert index.store.rows is not rows and index.store.ids is not ids
    check_arenas(index)
    assert index.access_of(1) == ["a", "b"] and index.access_of(5) == ["a"]
    index.revoke(np.arange(300), "b")  # b is dropped: its int is free, and sees nothing
    assert index.tenant_view("b") is None and index.access_of(50) == ["a"]
    index.grant(np.array([5]), "c")  # c takes b's int
    assert index.access_of(5) == ["a", "c"] and index.access_of(50) == ["a"]
    index.remove(np.array([5]))
    assert index.tenants() == ["a"] and index.access_of(5) == []
    index.remove(np.arange(300))  # every tenant gone: the store starts over
    assert index.tenants() == [] and len(index) == 0
    index.add(np.array([7]), x[7:8], [["z"]])
    assert index.access_of(7) == ["z"]
