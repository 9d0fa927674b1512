"""Redis Cluster: the store on 3 masters + 3 replicas, and two servers replicating through it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curacache.client import Client
from storage.errors import StoreUnavailable
from storage.redis import RedisStore
from storage.types import CollectionSpec, StoredRecord
from tests.redis_cluster import RedisCluster
from tests.server_harness import ThreadServer, make_config, write_through_failover

pytestmark = pytest.mark.redis
DIM = 8


def record(rid: str) -> StoredRecord:
    vector = np.full(DIM, float(len(rid)), dtype="<f4").tobytes()
    return StoredRecord(rid, vector, "alice", ("alice",))


def test_the_store_detects_and_uses_the_cluster(redis_cluster_url: str) -> None:
    first_node = redis_cluster_url.split(",")[0]  # one node is enough to discover the rest
    for url in (redis_cluster_url, first_node):
        store = RedisStore(url)
        try:
            assert store.is_cluster
        finally:
            store.close()
    store = RedisStore(redis_cluster_url)
    try:
        names = [f"c{i}" for i in range(12)]  # spread over the three masters' slots
        heads = store.log_heads(["", *names])
        for name in names:
            store.create_collection(CollectionSpec(name, DIM, "l2", "flat"))
            store.put_records(name, [record("a"), record("bb")])
            assert store.delete_records(name, ["a"]).deleted == 1
        assert [s.name for s in store.list_collections()] == sorted(names)
        changes = store.read_changes(heads)
        assert sum(c.op == "create" for c in changes) == 12
        assert sum(c.op == "put" for c in changes) == 12
        assert store.get_records("c3", ["a", "bb"]).keys() == {"bb"}
        assert all(store.delete_collection(n) for n in names)
        assert store.list_collections() == []
    finally:
        store.close()


@pytest.fixture
def cluster_servers(redis_cluster_url: str, tmp_path: Path) -> Iterator[list[ThreadServer]]:
    servers = [
        ThreadServer(make_config("redis", tmp_path / str(i), redis_cluster_url)) for i in range(2)
    ]
    yield servers
    for server in servers:
        server.stop()


def test_two_servers_replicate_through_the_cluster(cluster_servers: list[ThreadServer]) -> None:
    a, b = cluster_servers
    data = np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32)
    with Client(a.target) as ca, Client(b.target) as cb:
        for name in ("one", "two", "three"):  # different slots, different masters
            ca.create_collection(name, DIM, index="flat")
            ca.upsert(name, [f"r{i}" for i in range(30)], data, owner="alice")
            hits = cb.search(name, data[4], "alice", k=1, min_log_position=ca.log_position(name))
            assert [h.id for h in hits] == ["r4"]
            assert cb.delete(name, ["r4"], "alice") == 1
            hits = ca.search(name, data[4], "alice", k=1, min_log_position=cb.log_position(name))
            assert [h.id for h in hits] != ["r4"]
        stored = ca.store("cluster question", "cluster answer", "t1", model="m")
        deadline = time.monotonic() + 20
        while not cb.lookup("cluster question", "t1", model="m").hit:
            assert time.monotonic() < deadline, "cache entry not replicated"
            time.sleep(0.02)
        assert stored.stored


def test_master_failover_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """With WAIT for one replica, every acknowledged write survives killing its master: writes
    fail (StoreUnavailable) while the replica is promoted and until the promoted master has a
    replica again (here: the killed node, restarted, rejoins as one), then resume by
    themselves."""
    cluster = RedisCluster(tmp_path / "cluster")
    store = RedisStore(cluster.url, wait_replicas=1, wait_timeout_ms=500, socket_timeout=2.0)
    try:
        store.create_collection(CollectionSpec("docs", DIM, "l2", "flat"))
        master = next(n for n in cluster.nodes if n.port == _owner_port(store, "docs"))
        acked: list[str] = []
        failed = 0
        killed_at = None
        recovered_at = None
        deadline = time.monotonic() + 60
        i = 0
        while recovered_at is None or len(acked) < 400:
            assert time.monotonic() < deadline, f"writes did not resume ({failed} failed)"
            if i == 200:
                master.kill()
                killed_at = time.monotonic()
            try:
                store.put_records("docs", [record(f"r{i}")])
                acked.append(f"r{i}")
                if killed_at is not None and recovered_at is None:
                    recovered_at = time.monotonic()
            except StoreUnavailable:
                failed += 1
                if failed == 20:  # an operator (or supervisor) restarts the dead node
                    master.start()
                time.sleep(0.05)
            i += 1
        found = store.get_records("docs", acked)
        assert len(found) == len(acked), f"lost {len(acked) - len(found)} acknowledged writes"
        assert failed > 0  # the failover was seen
        assert killed_at is not None and recovered_at is not None
    finally:
        store.close()
        cluster.stop()


def test_the_service_rides_out_a_master_failover_without_losing_an_acknowledged_write(
    tmp_path: Path,
) -> None:
    """The same through a server: upserts get UNAVAILABLE while the master of their collection
    is failed over, then succeed again by themselves; every acknowledged one is still there,
    and the servers' log tails recovered too (a second server still replicates). UNAVAILABLE
    is not "not written" (a write whose WAIT timed out is kept): retrying an upsert is safe."""
    cluster = RedisCluster(tmp_path / "cluster")
    settings = {"storage.redis_wait_replicas": 1}
    servers = [
        ThreadServer(make_config("redis", tmp_path / str(i), cluster.url, **settings))
        for i in range(2)
    ]
    try:
        with Client(servers[0].target, timeout=10) as c, Client(servers[1].target) as other:
            c.create_collection("docs", DIM, index="flat")
            probe = RedisStore(cluster.url)
            try:
                master = next(n for n in cluster.nodes if n.port == _owner_port(probe, "docs"))
            finally:
                probe.close()
            vector = np.ones((1, DIM), dtype=np.float32)
            acked, failed = write_through_failover(
                c,
                "docs",
                vector,
                kill=master.kill,
                restart=master.start,
                kill_at=150,
                enough=300,
                budget_s=90,
            )
            assert failed > 0  # the failover was seen
            found = {r.id for r in c.get("docs", acked, "alice")}
            assert len(found) == len(acked), f"lost {len(acked) - len(found)} acknowledged writes"
            # A write that got UNAVAILABLE may still have been applied (its WAIT timed out):
            # the store holds at least the acknowledged ones, and both servers converge on it.
            token = c.log_position("docs")
            assert other.search("docs", vector[0], "alice", k=1, min_log_position=token)
            deadline = time.monotonic() + 30
            while other.stats("docs").record_count != c.stats("docs").record_count:
                assert time.monotonic() < deadline, "the two servers did not converge"
                time.sleep(0.05)
            assert c.stats("docs").record_count >= len(acked)
    finally:
        for server in servers:
            server.stop()
        cluster.stop()


def _owner_port(store: RedisStore, collection: str) -> int:
    node = store._client().get_node_from_key(f"cc:{{{collection}}}:spec")
    return int(node.port)
