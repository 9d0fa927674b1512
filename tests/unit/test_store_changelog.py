"""The change log of every DocumentStore: one entry per write, in the write's atomic step."""

from __future__ import annotations

import threading

from storage import DocumentStore
from storage.types import position_key
from tests.unit.test_store_contract import (  # noqa: F401  (fixtures)
    Opener,
    backend,
    opener,
    rec,
    spec,
    store,
)


def _all_changes(store: DocumentStore, cursors: dict[str, str]) -> list:
    out = []
    while batch := store.read_changes(cursors, limit=7):
        for change in batch:
            cursors[change.stream] = change.position
        out += batch
    return out


def test_every_write_is_logged_with_its_position(store: DocumentStore) -> None:
    start = store.log_heads(["", store.stream_of("docs")])
    created = store.create_collection(spec("docs"))
    put = store.put_records("docs", [rec("a"), rec("b"), rec("a", payload=b"2")])
    access = store.set_tenants("docs", {"a": ("alice", "bob"), "ghost": ("alice",)})
    deleted = store.delete_records("docs", ["b", "nope"])
    assert deleted.deleted == 1
    cursors = dict(start)
    changes = _all_changes(store, cursors)
    got = [(c.collection, c.op, c.ids) for c in changes]
    assert got == [
        ("docs", "create", ()),
        ("docs", "put", ("a", "b")),
        ("docs", "access", ("a", "ghost")),
        ("docs", "delete", ("b", "nope")),
    ]
    assert store.delete_collection("docs")
    assert [(c.collection, c.op) for c in _all_changes(store, cursors)] == [("docs", "drop")]
    positions = {c.position for c in changes}
    assert {created, put, access, deleted.position} <= positions
    # positions grow within a stream
    for stream in {c.stream for c in changes}:
        keys = [position_key(c.position) for c in changes if c.stream == stream]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_writes_that_change_nothing_log_nothing(store: DocumentStore) -> None:
    store.create_collection(spec("docs"))
    heads = store.log_heads([store.stream_of("docs")])
    assert store.put_records("docs", []) == ""
    assert store.delete_records("docs", ["nope"]) == (0, "")
    assert store.put_blob("docs", "snap", b"x") is None
    assert store.read_changes(heads) == []


def test_a_second_handle_sees_the_first_ones_changes(opener: Opener) -> None:
    a, b = opener(), opener()
    a.create_collection(spec("docs"))
    stream = b.stream_of("docs")
    cursors = b.log_heads([stream])
    position = a.put_records("docs", [rec("x")])
    changes = b.read_changes(cursors)
    assert [(c.position, c.ids) for c in changes] == [(position, ("x",))]


def test_concurrent_writers_get_distinct_ordered_positions(store: DocumentStore) -> None:
    store.create_collection(spec("docs"))
    stream = store.stream_of("docs")
    start = store.log_heads([stream])
    positions: list[str] = []
    lock = threading.Lock()

    def write(t: int) -> None:
        for n in range(20):
            p = store.put_records("docs", [rec(f"t{t}-{n}")])
            with lock:
                positions.append(p)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    logged = [c.position for c in _all_changes(store, dict(start)) if c.op == "put"]
    assert sorted(positions, key=position_key) == logged


def test_trim_log_drops_old_entries_only(store: DocumentStore) -> None:
    start = store.log_heads(["", store.stream_of("docs")])
    store.create_collection(spec("docs"))
    store.put_records("docs", [rec("a")])
    assert store.trim_log(3600.0) == 0
    assert len(_all_changes(store, dict(start))) >= 2
    assert store.trim_log(-60.0) >= 2  # a cutoff in the future: everything is old
    assert _all_changes(store, dict(start)) == []
    assert store.get_records("docs", ["a"])  # the data stays
