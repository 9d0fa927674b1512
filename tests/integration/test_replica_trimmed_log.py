"""A replica that fell behind the log's retention (paused, or cut off from the store while
the others trimmed the log) notices the gap and re-reads from the store what it missed,
instead of silently serving a stale index. Both stores; the tail is polled by hand so the
trim falls exactly inside the gap."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from curacache.server.replica import Replica, make_token
from curacache.server.vectordb import VectorDB
from storage.base import DocumentStore
from storage.redis import RedisStore
from storage.sqlite import SqliteStore
from storage.types import StoredRecord

DIM = 4


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis_cluster", marks=pytest.mark.redis),
    ]
)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DocumentStore]]:
    opened: list[DocumentStore] = []
    for _ in range(2):
        if request.param == "sqlite":
            opened.append(SqliteStore(tmp_path / "store.sqlite3"))
        else:
            opened.append(RedisStore(request.getfixturevalue(f"{request.param}_url")))
    yield opened
    for store in opened:
        store.close()


def _replica(store: DocumentStore) -> tuple[VectorDB, Replica]:
    db = VectorDB(store)
    replica = Replica(db)
    replica.begin()
    db.load()
    return db, replica


def _records(ids: list[str], seed: int) -> list[StoredRecord]:
    vectors = np.random.default_rng(seed).standard_normal((len(ids), DIM)).astype("<f4")
    return [StoredRecord(i, v.tobytes(), "alice", ("alice",)) for i, v in zip(ids, vectors)]


def _ids(db: VectorDB, name: str) -> set[str]:
    q = np.ones((1, DIM), dtype=np.float32)
    return {h.id for h in db.get(name).search("alice", q, 100, {}, with_payload=False)[0]}


async def _drain(replica: Replica) -> None:
    while await replica.poll_once():
        pass


async def test_a_replica_behind_a_trimmed_log_resyncs_from_the_store(
    stores: list[DocumentStore],
) -> None:
    a, tail_a = _replica(stores[0])
    b, tail_b = _replica(stores[1])
    a.create("docs", dim=DIM, metric="cosine", index_kind="flat", params={})
    a.create("gone", dim=DIM, metric="cosine", index_kind="flat", params={})
    a.get("docs").upsert("alice", _records(["r0", "r1"], 0), admin=False)
    await _drain(tail_b)
    assert _ids(b, "docs") == {"r0", "r1"} and b.find("gone") is not None

    # B stops tailing; meanwhile A writes, creates, drops, and the log is trimmed.
    a.get("docs").upsert("alice", _records(["r2", "r3"], 1), admin=False)
    a.get("docs").delete("alice", ["r0"], admin=False)
    a.get("docs").upsert("alice", _records(["r1"], 2), admin=False)  # r1 moves
    a.create("new", dim=DIM, metric="cosine", index_kind="flat", params={})
    a.get("new").upsert("alice", _records(["n0"], 3), admin=False)
    a.delete("gone")
    assert a.store.trim_log(-60.0) > 0  # a cutoff in the future: the whole log goes
    last = a.get("docs").upsert("alice", _records(["r4"], 4), admin=False)  # after the gap

    await _drain(tail_b)
    assert _ids(b, "docs") == {"r1", "r2", "r3", "r4"}
    moved = _records(["r1"], 2)[0].vector
    q = np.frombuffer(moved, dtype="<f4").reshape(1, DIM)
    assert b.get("docs").search("alice", q, 1, {}, with_payload=False)[0][0].id == "r1"
    assert _ids(b, "new") == {"n0"}
    assert b.find("gone") is None
    stream = b.store.stream_of("docs")
    assert await tail_b.wait_for(make_token(stream, last.position), 5.0)
    # the tail goes on normally after the gap
    a.get("docs").upsert("alice", _records(["r5"], 5), admin=False)
    await _drain(tail_b)
    assert "r5" in _ids(b, "docs")
    await _drain(tail_a)
