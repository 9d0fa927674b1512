"""Curator through the service: default kind, snapshot on shutdown, restart without retraining
gives identical results, and a snapshot older than the data is caught up from the store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from curacache.client import Client, Hit
from curacache.index.curator import CuratorAdapter
from tests.oracle import exact_top_k
from tests.server_harness import ThreadServer

DIM = 16
PARAMS = {"train_size": 300, "max_sl_size": 16, "branching": 8}
EXHAUSTIVE = {"gamma1": 64, "gamma2": 4096, "epsilon": 1e6}


def _clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((12, DIM)) * 4
    return (centers[rng.integers(0, 12, n)] + rng.standard_normal((n, DIM))).astype(np.float32)


def _searches(c: Client, queries: np.ndarray) -> dict[str, list[list[Hit]]]:
    return {t: c.search_batch("c", queries, t, k=10) for t in ("a", "b", "s")}


def test_curator_snapshot_restart_and_catch_up(
    start_server: Callable[..., ThreadServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = _clustered(900, 0)
    ids = [f"v{i}" for i in range(900)]
    queries = _clustered(8, 1)
    first = start_server(snapshot_interval_s=0)
    with Client(first.target) as c:
        info = c.create_collection("c", DIM, **PARAMS)
        assert info.index == "curator"  # the default kind
        c.upsert("c", ids[:400], vectors[:400], owner="a", tenants=["s"])
        c.upsert("c", ids[400:700], vectors[400:700], owner="b")
        c.grant("c", ids[400:450], "s", "b")
        before = _searches(c, queries)
    first.stop()  # graceful: snapshots the index

    second = start_server(snapshot_interval_s=0)
    assert second.server.db.get("c").loaded_from_snapshot
    with Client(second.target) as c:
        assert _searches(c, queries) == before
        # Changes the snapshot will not see: new, replaced, re-shared and deleted records.
        c.upsert("c", ids[700:], vectors[700:], owner="a")
        c.upsert("c", ids[:1], -vectors[:1], owner="a")
        c.revoke("c", ids[:100], "s", "a")
        c.grant("c", ids[450:460], "a", "b")
        c.delete("c", ids[600:650], "b")
    monkeypatch.setattr(second.server.db, "save_snapshots", lambda: 0)  # stop without one
    second.stop()

    third = start_server(snapshot_interval_s=0)
    assert third.server.db.get("c").loaded_from_snapshot
    vectors[0] = -vectors[0]
    visible = {
        "a": list(range(0, 400)) + list(range(450, 460)) + list(range(700, 900)),
        "b": list(range(400, 600)) + list(range(650, 700)),
        "s": list(range(100, 400)) + list(range(400, 450)),
    }
    with Client(third.target) as c:
        for tenant, rows in visible.items():
            everything = c.search("c", queries[0], tenant, k=len(rows) + 5, **EXHAUSTIVE)
            assert sorted(h.id for h in everything) == sorted(ids[i] for i in rows)
            for q in queries:
                expected = exact_top_k(vectors[rows], [ids[i] for i in rows], q, 10, "cosine")
                assert [h.id for h in c.search("c", q, tenant, k=10, **EXHAUSTIVE)] == [
                    i for i, _ in expected
                ]
        assert c.stats("c").record_count == 850


def test_growth_retrains_the_tree_in_the_background(
    start_server: Callable[..., ThreadServer],
) -> None:
    vectors = _clustered(1300, 2)
    ids = [f"v{i}" for i in range(1300)]
    running = start_server(snapshot_interval_s=0)
    with Client(running.target) as c:
        c.create_collection("c", DIM, **PARAMS)
        c.upsert(
            "c", ids[:300], vectors[:300], owner="a"
        )  # reaches train_size: trained in the background
        collection = running.server.db.get("c")
        assert collection.wait_for_background(timeout=120)
        assert isinstance(collection.index, CuratorAdapter)
        core = collection.index.core
        first_tree = core.tree
        assert core.trained and not core.retrain_due()
        c.upsert("c", ids[300:1100], vectors[300:1100], owner="a")
        assert core.tree is first_tree  # 1100 < 4 × 300: not yet
        c.upsert("c", ids[1100:], vectors[1100:], owner="a", tenants=["s"])
        assert collection.wait_for_background(timeout=120)
        assert core.tree is not first_tree and not core.retrain_due()
        for q in _clustered(5, 3):
            expected = exact_top_k(vectors, ids, q, 10, "cosine")
            assert [h.id for h in c.search("c", q, "a", k=10, **EXHAUSTIVE)] == [
                i for i, _ in expected
            ]
            everything = c.search("c", q, "s", k=300, **EXHAUSTIVE)
            assert sorted(h.id for h in everything) == sorted(ids[1100:])


def test_writes_do_not_wait_for_a_snapshot_being_stored(
    start_server: Callable[..., ThreadServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    vectors = _clustered(500, 3)
    ids = [f"v{i}" for i in range(500)]
    running = start_server(snapshot_interval_s=0)
    with Client(running.target) as c:
        c.create_collection("c", DIM, **PARAMS)
        c.upsert("c", ids[:400], vectors[:400], owner="a")
        collection = running.server.db.get("c")
        assert collection.wait_for_background(timeout=120)
        store = running.server.db.store
        storing, release = threading.Event(), threading.Event()
        put_blob = store.put_blob

        def slow_put_blob(*args: Any, **kwargs: Any) -> str:
            storing.set()
            assert release.wait(60)  # a large snapshot on a busy machine: seconds
            return put_blob(*args, **kwargs)

        monkeypatch.setattr(store, "put_blob", slow_put_blob)
        saver = ThreadPoolExecutor(1).submit(collection.save_snapshot)
        assert storing.wait(60)

        def write() -> None:  # its own client, with a deadline: a blocked write fails, not hangs
            with Client(running.target, timeout=20) as w:
                w.upsert("c", ids[400:], vectors[400:], owner="a")

        writer = ThreadPoolExecutor(1).submit(write)
        try:
            writer.result(timeout=40)  # before: DEADLINE_EXCEEDED behind the snapshot's write
        finally:
            release.set()
        assert saver.result(timeout=60) is True
    monkeypatch.setattr(running.server.db, "save_snapshots", lambda: 0)  # keep that snapshot
    running.stop()

    restarted = start_server(snapshot_interval_s=0)
    assert restarted.server.db.get("c").loaded_from_snapshot
    with Client(restarted.target) as c:  # caught up with the write the snapshot missed
        assert c.stats("c").record_count == 500
        q = vectors[450]
        expected = exact_top_k(vectors, ids, q, 10, "cosine")
        assert [h.id for h in c.search("c", q, "a", k=10, **EXHAUSTIVE)] == [i for i, _ in expected]
