"""Group commit (`Collection.upsert`): upserts that arrive while another is being written
queue up and are written together, in one store step with one log entry, by the next holder
of the writer lock; each caller still gets its own outcome. Checked on both real stores, with
the first write held in the store until the others have queued behind it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curacache.errors import PermissionDenied
from curacache.server.collection import Collection, Written
from curacache.server.vectordb import VectorDB
from storage.base import DocumentStore
from storage.errors import StoreUnavailable
from storage.redis import RedisStore
from storage.sqlite import SqliteStore
from storage.types import RecordWrite, StoredRecord

DIM = 4
FOLLOWERS = 6


class HeldStore:
    """The real store, except that `put_many` records each group's size, holds the first
    group until `release` is set, and raises `fail` (when set) instead of writing."""

    def __init__(self, inner: DocumentStore) -> None:
        self._inner = inner
        self.groups: list[int] = []
        self.release = threading.Event()
        self.fail: Exception | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put_many(self, collection: str, writes: Sequence[RecordWrite]) -> list[str | Exception]:
        self.groups.append(len(writes))
        if len(self.groups) == 1:
            assert self.release.wait(60)
        if self.fail is not None:
            raise self.fail
        return self._inner.put_many(collection, writes)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HeldStore]:
    if request.param == "sqlite":
        inner: DocumentStore = SqliteStore(tmp_path / "store.sqlite3")
    else:
        inner = RedisStore(request.getfixturevalue("redis_url"))
    yield HeldStore(inner)
    inner.close()


def _record(i: int, owner: str) -> StoredRecord:
    vector = np.zeros(DIM, dtype="<f4")
    vector[i % DIM], vector[(i + 1) % DIM] = 1.0, float(i)
    return StoredRecord(f"r{i}", vector.tobytes(), owner, (owner,))


def _held_then_queued(
    store: HeldStore, collection: Collection, writes: list[tuple[str, int]]
) -> list[Written | Exception]:
    """Upsert `writes` (tenant, record number), each in a thread of its own: the first is held
    in the store until all the others have queued behind it, then everything goes. Returns
    each write's outcome, in order."""
    outcomes: list[Written | Exception] = [Exception("not run")] * len(writes)

    def upsert(k: int) -> None:
        tenant, i = writes[k]
        try:
            outcomes[k] = collection.upsert(tenant, [_record(i, tenant)], admin=False)
        except Exception as exc:
            outcomes[k] = exc

    threads = [threading.Thread(target=upsert, args=(k,)) for k in range(len(writes))]
    threads[0].start()
    while not store.groups:  # the first write is in the store now, holding the writer lock
        time.sleep(0.01)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 60
    while len(collection._queued) < len(writes) - 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    store.release.set()
    for t in threads:
        t.join()
    return outcomes


def test_queued_upserts_are_written_as_one_group_each_with_its_own_outcome(
    store: HeldStore,
) -> None:
    db = VectorDB(store)  # a DocumentStore by delegation
    db.create("docs", dim=DIM, metric="l2", index_kind="flat", params={})
    collection = db.get("docs")
    stream = store.stream_of("docs")
    heads = store.log_heads([stream])
    # mallory's r0 is alice's by the time it is written: refused, and only it
    writes = [("alice", i) for i in range(FOLLOWERS)] + [("mallory", 0)]
    first, *landed, refused = _held_then_queued(store, collection, writes)

    assert store.groups == [1, len(writes) - 1]
    assert isinstance(first, Written)
    assert isinstance(refused, PermissionDenied) and "r0" in str(refused)
    assert all(isinstance(o, Written) and o.records == 1 for o in landed)
    positions = {o.position for o in landed if isinstance(o, Written)}
    assert len(positions) == 1  # one log entry for the whole group
    first_change, group_change = store.read_changes(heads)  # in queue order: any order
    assert first_change.ids == ("r0",) and first_change.position == first.position
    assert sorted(group_change.ids) == sorted(f"r{i}" for i in range(1, FOLLOWERS))
    assert {group_change.position} == positions
    # every record is in the store as its writer sent it, and in the index
    found = store.get_records("docs", [f"r{i}" for i in range(FOLLOWERS)])
    assert {rid: r.owner for rid, r in found.items()} == {
        f"r{i}": "alice" for i in range(FOLLOWERS)
    }
    for i in range(FOLLOWERS):
        query = np.frombuffer(_record(i, "alice").vector, dtype="<f4").reshape(1, DIM)
        hits = collection.search("alice", query, 1, {}, with_payload=False)
        assert [h.id for h in hits[0]] == [f"r{i}"]
    assert collection.stats().record_count == FOLLOWERS


def test_a_group_the_store_fails_fails_every_caller_in_it_and_no_later_one(
    store: HeldStore,
) -> None:
    db = VectorDB(store)
    db.create("docs", dim=DIM, metric="l2", index_kind="flat", params={})
    collection = db.get("docs")
    store.fail = StoreUnavailable("redis: down for the test")
    outcomes = _held_then_queued(store, collection, [("alice", i) for i in range(FOLLOWERS)])
    assert store.groups == [1, FOLLOWERS - 1]
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert store.get_records("docs", [f"r{i}" for i in range(FOLLOWERS)]) == {}
    assert collection.stats().record_count == 0
    store.fail = None  # the next group is written as usual
    assert collection.upsert("alice", [_record(9, "alice")], admin=False).position
    assert collection.stats().record_count == 1
