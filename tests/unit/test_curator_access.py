"""Compact curator state: the leaves' member slots, the tree's ancestors table, exact-capacity
bulk lists and the snapshot version bump."""

from __future__ import annotations

import gc
import io
import json
import weakref

import numpy as np
import pytest

from curator import CuratorIndex, TenantTree
from curator.members import LeafMembers
from tests.unit.test_curator_helpers import clustered


def test_leaf_members_keep_slots_stable_and_reuse_holes_through_moves_and_compaction() -> None:
    rng = np.random.default_rng(0)
    child_count = np.array([3, 0, 0, 0], dtype=np.int32)  # root + three GCT leaves
    members = LeafMembers(4, child_count)
    assert members.bitmap_node.tolist() == [False, True, True, True]
    model: dict[int, dict[int, int]] = {1: {}, 2: {}, 3: {}}  # leaf -> label -> slot
    next_label = 0
    for _ in range(3000):
        node = int(rng.integers(1, 4))
        if rng.random() < 0.6 or not model[node]:
            slot = members.add(node, next_label)
            assert slot not in model[node].values()  # a live label's slot is never handed out
            model[node][next_label] = slot
            next_label += 1
        else:
            label = int(rng.choice(sorted(model[node])))
            members.remove(node, label)
            del model[node][label]
        for leaf, slots in model.items():  # every live label keeps the slot it was given
            if slots:
                labels = np.array(sorted(slots), dtype=np.int64)
                assert members.slots(leaf, labels).tolist() == [slots[x] for x in labels.tolist()]
                assert members.labels_at(leaf, members.slots(leaf, labels)).tolist() == labels.tolist()
    assert members.used <= members.pool.shape[0]
    assert members.garbage <= max(64, members.used // 8 + 8)
    live = int(members.blocks[:, 1].sum()) - int(members.blocks[:, 3].sum())
    assert live == sum(len(v) for v in model.values())


def test_tree_ancestors_are_the_parent_chains_and_route_agrees() -> None:
    rng = np.random.default_rng(1)
    x = clustered(rng, 800, 8, 10)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=4, branching=8, max_depth=4, train_size=800)
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


def test_bulk_build_has_exact_capacities_and_int32_offsets() -> None:
    rng = np.random.default_rng(2)
    x = clustered(rng, 900, 8, 10)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=8, branching=8, max_depth=4, train_size=900)
    access = [["a"] + (["b"] if i % 3 == 0 else []) + (["c"] if i < 5 else []) for i in range(900)]
    index.add(np.arange(900), x, access)
    kinds: set[bool] = set()
    for name in ("a", "b", "c"):
        tt = index.tenant_tree(name)
        assert tt is not None and tt.table.dtype == np.int32
        bitmap = index.leaf_members.bitmap_node
        for node, _, cap, size in tt.list_spans():  # exact after a build: ids, or just the words needed
            if bitmap[node]:
                top = int(index.leaf_members.slots(node, np.sort(tt.ids(node))).max())
                assert cap == top // 32 + 1
            else:
                assert cap == size
        spans = tt.list_spans()
        kinds.update(bool(bitmap[n]) for n, *_ in spans)
        assert tt.used == sum(c for _, _, c, _ in spans) <= tt.pool.shape[0] <= tt.used + max(16, tt.used // 8)
        assert tt.entries == tt.table.shape[0] or tt.table.shape[0] == 4  # exact rows after a build
    assert kinds == {True, False}  # leaf bitmaps ("a", "b") and an id list (c's root list) were built
    index.grant(np.arange(1, 900, 3), "b")  # moves full lists, splits, grows the arena
    index.revoke(np.arange(0, 900, 3), "b")
    assert sorted(index.access_of(1)) == ["a", "b", "c"] and index.access_of(0) == ["a", "c"]
    b = TenantTree.build(np.arange(1, 900, 3).astype(np.int32), index.tree, index.leaves(), 8, index.leaf_members)
    have = index.tenant_tree("b")
    assert have is not None and np.array_equal(have.rows()[:, :2], b.rows()[:, :2])


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


def test_snapshot_with_tenant_rows_out_of_node_order_is_rejected_and_nothing_changes() -> None:
    rng = np.random.default_rng(4)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=4, branching=8, max_depth=3, train_size=300)
    index.add(np.arange(300), clustered(rng, 300, 8, 6), [["a"]] * 300)
    with np.load(io.BytesIO(index.snapshot()), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays["e_nodes"].size > 2
    arrays["e_nodes"] = arrays["e_nodes"][::-1].copy()  # same nodes, not ascending
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    target = CuratorIndex(dim=8, metric="l2")
    target.add(np.array([7]), np.ones((1, 8), np.float32), [["keep"]])
    with pytest.raises(ValueError, match="tenant counts are inconsistent"):
        target.restore(buf.getvalue())
    assert target.access_of(7) == ["keep"] and len(target) == 1  # checked before anything changed


def test_equal_scores_are_ordered_by_label_whatever_the_insertion_order() -> None:
    index = CuratorIndex(dim=4, metric="ip", train_size=10**6)
    index.add(np.array([5, 3, 9, 1]), np.ones((4, 4), np.float32), [["t"]] * 4)
    labels, scores = index.search("t", np.ones((1, 4), np.float32), 4)
    assert labels[0].tolist() == [1, 3, 5, 9] and np.all(scores == 4.0)
    assert index.search("t", np.ones((1, 4), np.float32), 2)[0][0].tolist() == [1, 3]


def test_directory_view_follows_reallocations_and_reused_tenant_ints() -> None:
    """remove()/access_of() ask every tenant through the directory's compiled view of their
    arrays: it must list each tenant's current arrays (and nothing for a freed int), and must
    not keep replaced arrays alive past the write that replaced them."""
    rng = np.random.default_rng(3)
    x = clustered(rng, 400, 8, 6)
    index = CuratorIndex(dim=8, metric="l2", max_sl_size=8, branching=4, train_size=300)
    index.add(np.arange(300), x[:300], [["a", "b"] if i % 50 == 0 else ["a"] for i in range(300)])
    assert index.trained
    assert index.access_of(50) == ["a", "b"] and index.access_of(4) == ["a"]  # the view is built
    tt = index.tenant_tree("b")
    assert tt is not None
    old = weakref.ref(tt.pool)
    for label in range(1, 300, 3):  # b grows from 6 ids: its arena is reallocated on the way
        index.grant(np.array([label], dtype=np.int64), "b")
        if tt.pool is not old():
            break
    assert tt.pool is not old()
    gc.collect()
    assert old() is None, "the view still holds b's replaced arena"
    assert index.access_of(1) == ["a", "b"] and index.access_of(5) == ["a"]
    index.revoke(np.arange(300), "b")  # b is dropped: its int is free, and sees nothing
    assert index.tenant_tree("b") is None and index.access_of(50) == ["a"]
    index.grant(np.array([5]), "c")  # c takes b's int
    assert index.access_of(5) == ["a", "c"] and index.access_of(50) == ["a"]
    index.remove(np.array([5]))
    assert index.tenants() == ["a"] and index.access_of(5) == []
    index.remove(np.arange(300))  # every tenant gone: the directory starts over
    assert index.tenants() == [] and len(index) == 0
    index.add(np.array([7]), x[7:8], [["z"]])
    assert index.access_of(7) == ["z"]
