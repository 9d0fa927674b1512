"""A replica applies the change log after the fact: a logged drop may reach it after the
same name was created again (by this process or another). Checked at the VectorDB + Replica
level on a real SQLite store, with the tail polled by hand so the order is the test's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curacache.server.replica import Replica
from curacache.server.vectordb import VectorDB
from storage.sqlite import SqliteStore

DIM = 4


def _db(path: Path) -> tuple[VectorDB, Replica]:
    db = VectorDB(SqliteStore(path))
    replica = Replica(db)
    replica.begin()
    db.load()
    return db, replica


def _create(db: VectorDB, name: str) -> None:
    db.create(name, dim=DIM, metric="cosine", index_kind="flat", params={})


async def test_a_drop_applied_after_the_name_was_made_again_keeps_the_new_collection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite3"
    a, tail_a = _db(path)
    b, tail_b = _db(path)
    try:
        await _check(a, tail_a, b, tail_b)
    finally:
        a.store.close()
        b.store.close()


async def _check(a: VectorDB, tail_a: Replica, b: VectorDB, tail_b: Replica) -> None:
    _create(a, "docs")
    await tail_b.poll_once()
    assert b.find("docs") is not None
    first = b.find("docs")

    a.delete("docs")
    _create(a, "docs")  # made again before either replica applied the drop
    created_again = a.find("docs")
    await tail_a.poll_once()  # A: its own drop, then its own create
    await tail_b.poll_once()  # B: drop of the old one, create of the new one

    assert a.find("docs") is created_again
    new_b = b.find("docs")
    assert new_b is not None and new_b is not first
    assert created_again is not None and new_b.spec.created_at == created_again.spec.created_at
    q = np.ones((1, DIM), dtype=np.float32)
    assert a.get("docs").search("t", q, 1, {}, with_payload=False) == [[]]
