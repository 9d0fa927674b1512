"""Two replicas (two VectorDBs on one store, as two server processes are) race two tenants'
upserts of the same new ids: the store checks ownership in the write's own atomic step, so
for every id exactly one tenant succeeds and the store's owner is that one. (With the owner
read first and written after, both could succeed and one would silently take over the
other's record.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curacache.errors import PermissionDenied
from curacache.server.vectordb import VectorDB
from storage.base import DocumentStore
from storage.redis import RedisStore
from storage.sqlite import SqliteStore
from storage.types import StoredRecord

DIM = 4
IDS = 60


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DocumentStore]]:
    opened: list[DocumentStore] = []
    for _ in range(2):
        if request.param == "sqlite":
            opened.append(SqliteStore(tmp_path / "store.sqlite3"))
        else:
            opened.append(RedisStore(request.getfixturevalue("redis_url")))
    yield opened
    for store in opened:
        store.close()


def test_racing_upserts_of_one_id_by_two_tenants_have_one_winner(
    stores: list[DocumentStore],
) -> None:
    replicas = [VectorDB(s) for s in stores]
    replicas[0].create("docs", dim=DIM, metric="l2", index_kind="flat", params={})
    vector = np.ones(DIM, dtype="<f4").tobytes()
    won: dict[str, list[str]] = {t: [] for t in ("alice", "mallory")}
    barrier = threading.Barrier(2)

    def race(db: VectorDB, tenant: str) -> None:
        collection = db.get("docs")
        for i in range(IDS):
            barrier.wait()
            try:
                collection.upsert(
                    tenant, [StoredRecord(f"r{i}", vector, tenant, (tenant,))], admin=False
                )
            except PermissionDenied:
                continue
            won[tenant].append(f"r{i}")

    threads = [
        threading.Thread(target=race, args=(db, tenant))
        for db, tenant in zip(replicas, ("alice", "mallory"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = set(won["alice"]) & set(won["mallory"])
    assert not both, f"both tenants were told they own {sorted(both)[:5]}"
    assert len(won["alice"]) + len(won["mallory"]) == IDS
    owners = stores[0].get_records("docs", [f"r{i}" for i in range(IDS)])
    for tenant, ids in won.items():
        assert all(owners[i].owner == tenant for i in ids)


def test_racing_grants_through_two_replicas_lose_none(stores: list[DocumentStore]) -> None:
    """Alice grants bob through one replica and carol through the other, the same records at
    the same moment: an access change is written only if the record is still as it was read
    (else read again), so neither grant overwrites the other."""
    replicas = [VectorDB(s) for s in stores]
    replicas[0].create("docs", dim=DIM, metric="l2", index_kind="flat", params={})
    vector = np.ones(DIM, dtype="<f4").tobytes()
    ids = [f"r{i}" for i in range(IDS)]
    replicas[0].get("docs").upsert(
        "alice", [StoredRecord(i, vector, "alice", ("alice",)) for i in ids], admin=False
    )
    barrier = threading.Barrier(2)

    def grant(db: VectorDB, to: str) -> None:
        collection = db.get("docs")
        for rid in ids:
            barrier.wait()
            collection.grant("alice", [rid], to, admin=False)

    threads = [
        threading.Thread(target=grant, args=(db, to)) for db, to in zip(replicas, ("bob", "carol"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = stores[0].get_records("docs", ids)
    lost = [rid for rid in ids if not {"bob", "carol"} <= set(records[rid].tenants)]
    assert not lost, f"grants lost on {lost[:5]}"
