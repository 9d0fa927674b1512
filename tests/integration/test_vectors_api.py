"""Create / upsert / get / search / grant / revoke / delete against a real server, both stores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from curacache.client import Client, Hit, NotFoundError, PermissionDeniedError
from tests.oracle import exact_top_k
from tests.server_harness import ThreadServer

DIM = 16


def _data(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"doc-{i}" for i in range(n)], rng.standard_normal((n, DIM)).astype(np.float32)


def _assert_matches(hits: list[Hit], expected: list[tuple[str, float]], metric: str) -> None:
    assert [h.id for h in hits] == [i for i, _ in expected]
    np.testing.assert_allclose(
        [h.score for h in hits], [s for _, s in expected], rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_search_matches_brute_force_per_tenant(client: Client, metric: str) -> None:
    ids, vectors = _data(300)
    client.create_collection("docs", DIM, metric=metric, index="flat")
    client.upsert("docs", ids[:150], vectors[:150], owner="alice")
    client.upsert("docs", ids[150:], vectors[150:], owner="bob", tenants=["carol"])
    queries = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    visible = {
        "alice": list(range(0, 150)),
        "bob": list(range(150, 300)),
        "carol": list(range(150, 300)),
    }
    for tenant, rows in visible.items():
        for q in queries:
            expected = exact_top_k(vectors[rows], [ids[i] for i in rows], q, 10, metric)
            _assert_matches(client.search("docs", q, tenant, k=10), expected, metric)
        batch = client.search_batch("docs", queries, tenant, k=7)
        for q, hits in zip(queries, batch):
            _assert_matches(
                hits, exact_top_k(vectors[rows], [ids[i] for i in rows], q, 7, metric), metric
            )
    assert client.search("docs", queries[0], "nobody") == []


def test_get_payload_metadata_and_visibility(client: Client) -> None:
    ids, vectors = _data(4)
    client.create_collection("docs", DIM)
    client.upsert(
        "docs",
        ids,
        vectors,
        owner="alice",
        tenants=[["bob"], [], [], []],
        payloads=[b"\x00bin", b"", b"p2", b"p3"],
        metadata=[{"lang": "fr"}, {}, {}, {"k": "v"}],
    )
    got = client.get("docs", ids, "alice", with_vectors=True)
    assert [r.id for r in got] == ids
    assert got[0].payload == b"\x00bin" and got[0].metadata == {"lang": "fr"}
    assert got[0].tenants == ("alice", "bob") and got[0].owner == "alice"
    np.testing.assert_array_equal(got[3].vector, vectors[3])
    assert [r.id for r in client.get("docs", ids, "bob")] == ["doc-0"]
    assert client.get("docs", ids, "bob")[0].vector is None
    assert client.get("docs", ["doc-9"], "alice") == []
    hits = client.search("docs", vectors[0], "bob", k=3, with_payload=True)
    assert [(h.id, h.payload, h.metadata) for h in hits] == [("doc-0", b"\x00bin", {"lang": "fr"})]


def test_grant_revoke_delete_change_what_tenants_see(client: Client) -> None:
    ids, vectors = _data(50)
    client.create_collection("docs", DIM, index="flat")
    client.upsert("docs", ids, vectors, owner="alice")
    q = vectors[7]
    assert client.search("docs", q, "bob") == []

    assert client.grant("docs", ids[:10], "bob", "alice") == 10
    assert client.grant("docs", ids[:10], "bob", "alice") == 0  # idempotent
    expected = exact_top_k(vectors[:10], ids[:10], q, 5, "cosine")
    _assert_matches(client.search("docs", q, "bob", k=5), expected, "cosine")

    with pytest.raises(PermissionDeniedError, match="owner"):
        client.revoke("docs", ids[:1], "bob", "bob")  # bob sees it but does not own it
    with pytest.raises(PermissionDeniedError):
        client.delete("docs", ids[:1], "bob")
    with pytest.raises(NotFoundError, match=r"ids\[0\]"):
        client.grant("docs", ["doc-40"], "carol", "bob")  # invisible to bob: not found

    assert client.revoke("docs", ids[:5], "bob", "alice") == 5
    expected = exact_top_k(vectors[5:10], ids[5:10], q, 5, "cosine")
    _assert_matches(client.search("docs", q, "bob", k=5), expected, "cosine")

    assert client.delete("docs", [*ids[5:8], "never-existed"], "alice") == 3
    assert client.get("docs", ids[5:8], "alice") == []
    expected = exact_top_k(vectors[8:10], ids[8:10], q, 5, "cosine")
    _assert_matches(client.search("docs", q, "bob", k=5), expected, "cosine")
    stats = client.stats("docs")
    assert stats.record_count == 47 and stats.tenant_count == 2
    assert stats.store_bytes > 0 and stats.index_memory_total_bytes > 0


def test_upsert_replaces_vector_payload_and_access(client: Client) -> None:
    ids, vectors = _data(20)
    client.create_collection("docs", DIM, index="flat")
    client.upsert("docs", ids, vectors, owner="alice", tenants=["bob"])
    new = -vectors[0]
    client.upsert("docs", ids[:1], new[None], owner="alice", payloads=[b"v2"])
    got = client.get("docs", ids[:1], "alice", with_vectors=True)[0]
    np.testing.assert_array_equal(got.vector, new)
    assert got.payload == b"v2" and got.tenants == ("alice",)
    assert client.get("docs", ids[:1], "bob") == []
    assert client.search("docs", new, "alice", k=1)[0].id == "doc-0"
    with pytest.raises(PermissionDeniedError, match=r"records\[0\]\.id"):
        client.upsert("docs", ids[1:2], vectors[1:2], owner="bob")
    assert client.stats("docs").record_count == 20


def test_collections_lifecycle(client: Client) -> None:
    info = client.create_collection("a", 8, metric="l2", index="flat")
    assert (info.name, info.dim, info.metric, info.index) == ("a", 8, "l2", "flat")
    client.create_collection("b", 4)
    assert [c.name for c in client.list_collections()] == ["a", "b"]
    assert client.get_collection("b").metric == "cosine"
    client.upsert("a", ["x"], np.ones((1, 8)), owner="t")
    client.delete_collection("a")
    with pytest.raises(NotFoundError):
        client.get_collection("a")
    client.create_collection("a", 8)
    assert client.search("a", np.ones(8), "t") == []
    assert client.health() == "SERVING"


def test_restart_restores_everything(
    start_server: Callable[..., ThreadServer], storage: str
) -> None:
    ids, vectors = _data(400, seed=3)
    first = start_server()
    with Client(first.target) as c:
        c.create_collection("docs", DIM, metric="l2", index="flat")
        c.upsert("docs", ids[:200], vectors[:200], owner="alice", tenants=["carol"])
        c.upsert("docs", ids[200:], vectors[200:], owner="bob", payloads=[b"b"] * 200)
        c.grant("docs", ids[200:210], "alice", "bob")
        c.revoke("docs", ids[:50], "carol", "alice")
        c.delete("docs", ids[390:], "bob")
        queries = np.random.default_rng(9).standard_normal((4, DIM)).astype(np.float32)
        before = {
            t: c.search_batch("docs", queries, t, k=10, with_payload=True)
            for t in ("alice", "bob", "carol")
        }
        stats_before = c.stats("docs")
    first.stop()
    second = start_server()
    with Client(second.target) as c:
        after = {
            t: c.search_batch("docs", queries, t, k=10, with_payload=True)
            for t in ("alice", "bob", "carol")
        }
        assert after == before
        stats = c.stats("docs")
        assert (
            (stats.record_count, stats.tenant_count)
            == (stats_before.record_count, stats_before.tenant_count)
            == (390, 3)
        )
        assert len(c.get("docs", ids, "carol")) == 150
