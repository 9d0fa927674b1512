"""SqliteStore specifics the shared contract cannot express: pragmas, rollback, lock errors."""

from __future__ import annotations

import multiprocessing
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage import CollectionSpec, StoredRecord, StoreUnavailable
from storage.sqlite import SqliteStore


def rec(rid: str, payload: bytes = b"p") -> StoredRecord:
    return StoredRecord(
        id=rid, vector=struct.pack("<2f", 1, 2), owner="o", tenants=("o",), payload=payload
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "store.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(path, timeout=0.05)
    s.create_collection(CollectionSpec("c", 2, "l2", "flat"))
    yield s
    s.close()


def test_wal_and_full_sync(store: SqliteStore, path: Path) -> None:
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        raw.close()
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_leases_alone_commit_without_an_fsync_and_data_stays_durable(store: SqliteStore) -> None:
    statements: list[str] = []
    store._writer.set_trace_callback(statements.append)
    assert store.try_lease("miss:k", "one", 30.0)
    store.release_lease("miss:k", "one")
    store.put_records("c", [rec("r1")])
    store._writer.set_trace_callback(None)
    syncs = [s for s in statements if s.startswith("PRAGMA synchronous")]
    commits = [s for s in statements if s in ("COMMIT", "PRAGMA synchronous=NORMAL")]
    # each lease transaction ran under NORMAL and the writer went back to FULL after it
    assert syncs == ["PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"] * 2
    assert commits == ["PRAGMA synchronous=NORMAL", "COMMIT"] * 2 + ["COMMIT"]
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL for data


def test_failure_mid_batch_rolls_back(store: SqliteStore, path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON records WHEN NEW.id = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    raw.commit()
    raw.close()
    store.put_records("c", [rec("keep")])
    size = store.size_bytes("c")
    with pytest.raises(sqlite3.IntegrityError):
        store.put_records("c", [rec("a"), rec("keep", b"changed"), rec("boom"), rec("b")])
    assert store.get_records("c", ["a", "b", "keep"]) == {"keep": rec("keep")}
    assert store.count("c") == 1 and store.size_bytes("c") == size
    store.put_records("c", [rec("a")])  # the writer connection is usable again
    assert store.count("c") == 2


def test_locked_database_is_unavailable_then_recovers(store: SqliteStore, path: Path) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.put_records("c", [rec("a")])
        assert store.count("c") == 0  # WAL: reads still work meanwhile
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.put_records("c", [rec("a")])
    assert store.count("c") == 1


def test_not_a_database_is_unavailable(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"this is not an sqlite file" * 100)
    with pytest.raises(StoreUnavailable):
        SqliteStore(bogus)


def test_reader_pool_is_bounded_and_closed(store: SqliteStore) -> None:
    for _ in range(50):
        store.count("c")
    assert 1 <= len(store._idle) <= 8
    idle = list(store._idle)
    store.close()
    assert store._idle == []
    with pytest.raises(sqlite3.ProgrammingError):
        idle[0].execute("SELECT 1")


def test_abandoned_iterator_holds_no_lock(store: SqliteStore) -> None:
    store.put_records("c", [rec(f"r{i}") for i in range(10)])
    it = store.iter_records("c", batch_size=3)
    next(it)  # left suspended between pages: must not block writers or checkpoints
    store.put_records("c", [rec("later")])
    assert store.count("c") == 11


def _open_at_once(path: str, barrier: Any) -> None:
    barrier.wait()
    SqliteStore(path).close()


def test_processes_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """`serve --workers N` on a new data dir: N processes create the same file together."""
    ctx = multiprocessing.get_context("spawn")
    for attempt in range(6):  # the race is narrow: several fresh files
        path = str(tmp_path / f"new{attempt}" / "store.sqlite3")
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
