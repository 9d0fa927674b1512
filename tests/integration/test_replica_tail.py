"""The change-log tail (`Replica.run`) polls in a thread of its own: it applies another
writer's change, retries a poll that failed with the cursors kept where they were (so the
change is applied once the store answers again), and its thread ends when run() is
cancelled; it re-reads only what other processes wrote. On a real SQLite store shared by two VectorDBs, as two server processes share it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from curacache.server.replica import Replica, make_token
from curacache.server.vectordb import VectorDB
from storage.errors import StoreUnavailable
from storage.sqlite import SqliteStore
from storage.types import Change, StoredRecord

DIM = 4


class FailingReads:
    """The real store, except that the first `failures` reads that find changes fail."""

    def __init__(self, inner: SqliteStore, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def read_changes(self, cursors: Mapping[str, str], limit: int = 1024) -> list[Change]:
        changes = self._inner.read_changes(cursors, limit)
        if changes and self.failures:
            self.failures -= 1
            raise StoreUnavailable("sqlite: failing for the test")
        return changes


def _tails() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "change-log-tail"}


async def test_the_tail_applies_retries_a_failed_poll_and_ends_when_cancelled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite3"
    writer = VectorDB(SqliteStore(path))
    writer.create("docs", dim=DIM, metric="l2", index_kind="flat", params={})
    store = FailingReads(SqliteStore(path), failures=2)
    db = VectorDB(store)  # a DocumentStore by delegation
    replica = Replica(db)
    replica.begin()
    db.load()
    before = _tails()
    task = asyncio.create_task(replica.run())
    try:
        vector = np.array([1.0, 2.0, 3.0, 4.0], dtype="<f4")
        written = writer.get("docs").upsert(
            "t", [StoredRecord("r0", vector.tobytes(), "t", ("t",))], admin=False
        )
        token = make_token(writer.store.stream_of("docs"), written.position)
        assert await replica.wait_for(token, 60)
        assert store.failures == 0  # both failed polls came first, then the change landed
        hits = db.get("docs").search("t", vector.reshape(1, DIM), 1, {}, with_payload=False)
        assert [h.id for h in hits[0]] == ["r0"]
        assert len(_tails() - before) == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    deadline = time.monotonic() + 30
    while _tails() - before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not _tails() - before, "the tail's thread outlived run()"
    writer.store.close()
    store.close()


class CountingReads:
    """The real store, counting `get_records` calls (the tail's re-reads)."""

    def __init__(self, inner: SqliteStore) -> None:
        self._inner = inner
        self.reads: list[tuple[str, ...]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get_records(self, collection: str, ids: Any) -> Any:
        self.reads.append(tuple(ids))
        return self._inner.get_records(collection, ids)


async def test_the_tail_skips_upserts_its_own_process_wrote_and_applies_the_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite3"
    other = VectorDB(SqliteStore(path))
    other.create("docs", dim=DIM, metric="l2", index_kind="flat", params={})
    store = CountingReads(SqliteStore(path))
    db = VectorDB(store)
    replica = Replica(db)
    replica.begin()
    db.load()
    vectors = np.eye(DIM, dtype="<f4")

    def record(i: int) -> StoredRecord:
        return StoredRecord(f"r{i}", vectors[i].tobytes(), "t", ("t",))

    own = db.get("docs").upsert("t", [record(0)], admin=False)
    theirs = other.get("docs").upsert("t", [record(1)], admin=False)
    again = db.get("docs").upsert("t", [record(2)], admin=False)
    while await replica.poll_once():
        pass
    assert store.reads == [("r1",)]  # only the other process's write was re-read
    stream = store.stream_of("docs")
    for written in (own, theirs, again):
        assert await replica.wait_for(make_token(stream, written.position), 0)
    collection = db.get("docs")
    for i in range(3):
        hits = collection.search("t", vectors[i : i + 1], 1, {}, with_payload=False)
        assert [h.id for h in hits[0]] == [f"r{i}"]
    other.store.close()
    store.close()
