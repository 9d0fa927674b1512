"""One contract suite for every DocumentStore: SqliteStore and RedisStore must both pass it."""

from __future__ import annotations

import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import (
    ChangedMeanwhile,
    CollectionExists,
    CollectionMissing,
    CollectionSpec,
    DocumentStore,
    OwnedByAnother,
    StoredRecord,
    StoreUnavailable,
)
from storage.redis import RedisStore
from storage.sqlite import SqliteStore
from storage.types import Change, RecordWrite, position_key

Opener = Callable[[], DocumentStore]
DIM = 4


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opener(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Opener]:
    """Opens a new handle on the *same* underlying database each call; closes them after."""
    opened: list[DocumentStore] = []
    if backend == "sqlite":
        path = tmp_path / "nested" / "store.sqlite3"  # parent does not exist yet

        def make() -> DocumentStore:
            return SqliteStore(path)
    else:
        url = request.getfixturevalue("redis_url")

        def make() -> DocumentStore:
            return RedisStore(url, prefix="test")

    def open_store() -> DocumentStore:
        s = make()
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Opener) -> DocumentStore:
    return opener()


def spec(name: str = "docs", **kw: object) -> CollectionSpec:
    base: dict[str, object] = dict(
        name=name,
        dim=DIM,
        metric="cosine",
        index_kind="curator",
        index_params={"branching": 8, "leaf_size": 64.0},
        created_at=1700000000.25,
    )
    base.update(kw)
    return CollectionSpec(**base)  # type: ignore[arg-type]


def vec(*xs: float) -> bytes:
    return struct.pack(f"<{DIM}f", *(list(xs) + [0.0] * DIM)[:DIM])


def rec(rid: str, **kw: object) -> StoredRecord:
    """A valid record, or with `kw` any field replaced (also by a wrongly typed value)."""
    owner = kw.get("owner", "alice")
    fields: dict[str, object] = dict(
        id=rid,
        vector=vec(float(len(rid)), 1.5),
        owner=owner,
        tenants=(owner,),
        payload=b"p",
        metadata={"k": rid},
    )
    fields.update(kw)
    return StoredRecord(**fields)  # type: ignore[arg-type]  # deliberately any field value


@pytest.fixture
def coll(store: DocumentStore) -> str:
    store.create_collection(spec("docs"))
    return "docs"


# -- collections ------------------------------------------------------------------------
def test_implements_protocol(store: DocumentStore) -> None:
    assert isinstance(store, DocumentStore)


def test_collection_lifecycle(store: DocumentStore) -> None:
    assert store.list_collections() == []
    assert store.get_collection("b") is None
    store.create_collection(spec("b", metric="l2", index_kind="hnsw", index_params={"m": 16}))
    store.create_collection(spec("a"))
    with pytest.raises(CollectionExists):
        store.create_collection(spec("a", dim=8))
    assert store.get_collection("a") == spec("a")  # the first spec survives the failed create
    got = store.get_collection("b")
    assert got == spec("b", metric="l2", index_kind="hnsw", index_params={"m": 16})
    assert [c.name for c in store.list_collections()] == ["a", "b"]
    assert store.delete_collection("a") is True
    assert store.delete_collection("a") is False
    assert store.get_collection("a") is None
    assert [c.name for c in store.list_collections()] == ["b"]


def test_missing_collection_raises_everywhere(store: DocumentStore) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put_records("nope", [rec("a")]),
        lambda: store.put_records("nope", []),
        lambda: store.get_records("nope", ["a"]),
        lambda: store.delete_records("nope", ["a"]),
        lambda: store.set_tenants("nope", {"a": ["x"]}),
        lambda: store.iter_records("nope"),  # raised by the call, not by next()
        lambda: store.count("nope"),
        lambda: store.size_bytes("nope"),
        lambda: store.put_blob("nope", "k", b"x"),
        lambda: store.get_blob("nope", "k"),
    ]
    for call in calls:
        with pytest.raises(CollectionMissing) as info:
            call()
        assert info.value.name == "nope"


# -- records ----------------------------------------------------------------------------
def test_round_trip_is_bit_exact(store: DocumentStore, coll: str) -> None:
    nan = struct.pack("<I", 0x7FC00001)  # a NaN with payload bits must survive unchanged
    weird = StoredRecord(
        id="ид/🎉 x:{y}",
        vector=nan + struct.pack("<3f", -0.0, 1e-45, 3.4e38),
        owner="zoë",
        tenants=("zoë", "bob", "alice", "bob-2"),
        payload=b"\x00" + bytes(range(256)) + b"\x00",
        metadata={"ключ": "值 🎉", "": "", "nl": "a\nb\x00c", "q": '"}{'},
    )
    plain = StoredRecord(id="plain", vector=vec(1, 2, 3, 4), owner="o", tenants=("o",))
    store.put_records(coll, [weird, plain])
    got = store.get_records(coll, [weird.id, "absent", plain.id, weird.id])
    assert got == {weird.id: weird, plain.id: plain}
    assert got[weird.id].tenants == ("zoë", "bob", "alice", "bob-2")
    assert isinstance(got[weird.id].vector, bytes) and isinstance(got[plain.id].payload, bytes)
    assert store.get_records(coll, []) == {}
    assert store.count(coll) == 2


def test_replace_by_id(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec("a"), rec("b")])
    new = rec("a", owner="carol", payload=b"new", tenants=("carol", "dave"), metadata={})
    store.put_records(coll, [new])
    assert store.get_records(coll, ["a"]) == {"a": new}
    assert store.count(coll) == 2
    # the last occurrence of an id in one batch wins
    store.put_records(coll, [rec("c", payload=b"1"), rec("c", payload=b"2")])
    assert store.get_records(coll, ["c"])["c"].payload == b"2"
    assert store.count(coll) == 3


def test_delete_records_counts_existing_only(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec(f"r{i}") for i in range(5)])
    assert store.delete_records(coll, ["r0", "missing", "r3", "r0"]).deleted == 2
    assert store.delete_records(coll, ["r0", "missing"]).deleted == 0
    assert store.delete_records(coll, []).deleted == 0
    assert store.count(coll) == 3
    assert set(store.get_records(coll, [f"r{i}" for i in range(5)])) == {"r1", "r2", "r4"}


def test_set_tenants(store: DocumentStore, coll: str) -> None:
    a, b = rec("a", tenants=("alice",)), rec("b")
    store.put_records(coll, [a, b])
    before = store.size_bytes(coll)
    store.set_tenants(coll, {"a": ["alice", "zed", "bob"], "ghost": ["x"]})
    got = store.get_records(coll, ["a", "b", "ghost"])
    assert set(got) == {"a", "b"}  # set_tenants never creates records
    assert got["a"].tenants == ("alice", "zed", "bob")
    assert got["a"].vector == a.vector and got["a"].payload == a.payload
    assert got["a"].metadata == a.metadata and got["b"] == b
    assert store.size_bytes(coll) > before
    store.set_tenants(coll, {"a": ("alice",)})
    assert store.get_records(coll, ["a"])["a"] == a
    assert store.size_bytes(coll) == before


def test_iter_records_pages_everything_once(store: DocumentStore, coll: str) -> None:
    assert list(store.iter_records(coll, batch_size=10)) == []
    ids = [f"id-{i:05d}" for i in range(2500)]
    for i in range(0, 2500, 700):
        store.put_records(coll, [rec(x) for x in ids[i : i + 700]])
    batches = list(store.iter_records(coll, batch_size=1000))
    assert [len(b) for b in batches] == [1000, 1000, 500]
    seen = [r.id for b in batches for r in b]
    assert seen == sorted(ids)
    assert store.count(coll) == 2500
    assert batches[0][0] == rec(ids[0])


def test_iter_order_is_utf8_byte_order(store: DocumentStore, coll: str) -> None:
    ids = ["b", "a", "Z", "é", "ab", "a b", "~", "😀", "\u00ff", "日本"]
    store.put_records(coll, [rec(i) for i in ids])
    seen = [r.id for b in store.iter_records(coll, batch_size=3) for r in b]
    assert seen == sorted(ids, key=lambda s: s.encode("utf-8"))


def test_iter_records_while_writing(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec(f"a{i:04d}") for i in range(300)])
    seen: list[str] = []
    for n, batch in enumerate(store.iter_records(coll, batch_size=50)):
        seen += [r.id for r in batch]
        store.put_records(coll, [rec(f"z{n:04d}")])  # lands after the cursor
        store.delete_records(coll, [f"a{299 - n:04d}"])  # removes something not yet seen
    assert len(seen) == len(set(seen))
    assert all(f"a{i:04d}" in seen for i in range(300 - 6))
    assert sorted(seen) == seen


def test_size_bytes_tracks_data(store: DocumentStore, coll: str) -> None:
    assert store.size_bytes(coll) == 0
    store.put_records(coll, [rec("a", payload=b"x" * 10)])
    one = store.size_bytes(coll)
    assert one > 10 + 4 * DIM
    store.put_records(coll, [rec("a", payload=b"x" * 10)])  # identical replace: no change
    assert store.size_bytes(coll) == one
    store.put_records(coll, [rec("a", payload=b"x" * 110)])  # exactly 100 more bytes
    assert store.size_bytes(coll) == one + 100
    store.put_records(coll, [rec("b", payload=b"x" * 10)])
    assert store.size_bytes(coll) > one + 100
    store.put_blob(coll, "snapshot", b"y" * 1000)  # blobs are not record data
    store.delete_records(coll, ["a", "b"])
    assert store.size_bytes(coll) == 0
    assert store.count(coll) == 0


def test_blobs(store: DocumentStore, coll: str) -> None:
    assert store.get_blob(coll, "centroids") is None
    data = bytes(range(256)) * 10_000 + b"\x00"  # 2.4 MiB: SQLite writes it in 1 MiB pieces
    store.put_blob(coll, "centroids", data)
    store.put_blob(coll, "tree/meta", b"")
    assert store.get_blob(coll, "centroids") == data
    assert store.get_blob(coll, "tree/meta") == b""
    store.put_blob(coll, "centroids", b"v2")
    assert store.get_blob(coll, "centroids") == b"v2"
    assert store.count(coll) == 0


def test_delete_collection_removes_everything(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec(f"r{i}") for i in range(1500)])
    store.put_blob(coll, "c", b"blob")
    assert store.delete_collection(coll) is True
    with pytest.raises(CollectionMissing):
        store.count(coll)
    store.create_collection(spec(coll, dim=8))
    assert store.get_collection(coll) == spec(coll, dim=8)
    assert store.count(coll) == 0 and store.size_bytes(coll) == 0
    assert store.get_records(coll, ["r0", "r1499"]) == {}
    assert store.get_blob(coll, "c") is None
    assert list(store.iter_records(coll)) == []


def test_collections_are_isolated(store: DocumentStore) -> None:
    store.create_collection(spec("one"))
    store.create_collection(spec("one2"))  # a prefix of another name must not leak
    store.put_records("one", [rec("x", payload=b"1"), rec("y")])
    store.put_records("one2", [rec("x", payload=b"2")])
    store.put_blob("one", "k", b"b1")
    store.put_blob("one2", "k", b"b2")
    assert store.get_records("one", ["x"])["x"].payload == b"1"
    assert store.get_records("one2", ["x", "y"]) == {"x": rec("x", payload=b"2")}
    assert store.delete_records("one2", ["y"]).deleted == 0
    assert store.delete_records("one2", ["x"]).deleted == 1
    assert store.count("one") == 2 and store.get_blob("one2", "k") == b"b2"
    assert store.delete_collection("one") is True
    assert store.get_blob("one2", "k") == b"b2" and store.count("one2") == 0


# -- atomicity --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        rec("bad", vector="not bytes"),
        rec("bad", vector=[1.0, 2.0, 3.0, 4.0]),
        rec("bad", payload="text"),
        rec("bad", metadata={"k": 1}),
        rec("bad", tenants="alice"),
        rec("bad", owner=None),
        rec("bad\ud800"),  # lone surrogate: not storable as UTF-8
        "not a record",
    ],
    ids=[
        "vector-str",
        "vector-list",
        "payload-str",
        "meta-int",
        "tenants-str",
        "owner-none",
        "id-surrogate",
        "not-a-record",
    ],
)
def test_invalid_batch_writes_nothing(store: DocumentStore, coll: str, bad: object) -> None:
    old = rec("keep", payload=b"old")
    store.put_records(coll, [old])
    size = store.size_bytes(coll)
    batch = [rec("new1"), rec("keep", payload=b"changed"), bad, rec("new2")]
    with pytest.raises((TypeError, ValueError)):
        store.put_records(coll, batch)  # type: ignore[arg-type]
    assert store.get_records(coll, ["new1", "new2", "keep", "bad"]) == {"keep": old}
    assert store.count(coll) == 1 and store.size_bytes(coll) == size


def test_invalid_set_tenants_changes_nothing(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec("a"), rec("b")])
    with pytest.raises(TypeError):
        store.set_tenants(coll, {"a": ["alice", "x"], "b": [1]})  # type: ignore[list-item]
    assert store.get_records(coll, ["a"])["a"].tenants == ("alice",)


# -- concurrency, persistence, lifecycle ------------------------------------------------
def test_concurrent_writers_and_readers(store: DocumentStore, coll: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            start.wait()
            for n in range(25):
                batch = [rec(f"t{t}-{n}-{i}", payload=bytes([t]) * (n + 1)) for i in range(8)]
                store.put_records(coll, batch)
                got = store.get_records(coll, [r.id for r in batch])
                assert got == {r.id: r for r in batch}
                store.put_records(coll, [rec("shared", payload=bytes([t]))])  # contended id
                if n % 5 == 0:
                    store.delete_records(coll, [f"t{t}-{n}-0"])
                    assert store.count(coll) >= 1
                    sum(len(b) for b in store.iter_records(coll, batch_size=64))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    expected = 8 * 25 * 8 - 8 * 5 + 1
    ids = [r.id for b in store.iter_records(coll, batch_size=333) for r in b]
    assert len(ids) == len(set(ids)) == expected == store.count(coll)
    # the byte counter stayed consistent under contention: deleting everything zeroes it
    assert store.delete_records(coll, ids).deleted == expected
    assert store.size_bytes(coll) == 0


def test_persists_across_reopen(opener: Opener) -> None:
    first = opener()
    first.create_collection(spec("p"))
    records = [rec(f"r{i}", payload=bytes([i]) * i) for i in range(50)]
    first.put_records("p", records)
    first.set_tenants("p", {"r1": ["alice", "bob"]})
    first.put_blob("p", "centroids", b"\x00\x01")
    size = first.size_bytes("p")
    first.close()
    second = opener()
    assert second.get_collection("p") == spec("p")
    got = second.get_records("p", [r.id for r in records])
    assert got["r1"].tenants == ("alice", "bob")
    assert got["r7"] == records[7] and len(got) == 50
    assert second.get_blob("p", "centroids") == b"\x00\x01"
    assert second.count("p") == 50 and second.size_bytes("p") == size


def test_ping_and_closed_store(opener: Opener) -> None:
    s = opener()
    s.ping()
    s.create_collection(spec("c"))
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreUnavailable):
        s.ping()
    with pytest.raises(StoreUnavailable):
        s.put_records("c", [rec("a")])
    with pytest.raises(StoreUnavailable):
        s.get_collection("c")


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_unreachable_backend_is_store_unavailable(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")  # a file where a directory should be: fails even as root
        with pytest.raises(StoreUnavailable):
            SqliteStore(blocker / "sub" / "store.sqlite3")
        with pytest.raises(StoreUnavailable):
            SqliteStore(tmp_path)  # a directory is not a database file
        return
    s = RedisStore(f"redis://127.0.0.1:{_closed_port()}/0")
    try:
        checks: list[Callable[[], object]] = [
            s.ping,
            lambda: s.create_collection(spec("c")),
            lambda: s.put_records("c", [rec("a")]),
            lambda: s.get_records("c", ["a"]),
            s.list_collections,
            lambda: s.iter_records("c"),
        ]
        for call in checks:
            with pytest.raises(StoreUnavailable):
                call()
    finally:
        s.close()


# -- property: arbitrary text and bytes round-trip ---------------------------------------
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
_records = st.lists(
    st.builds(
        StoredRecord,
        id=_text,
        vector=st.binary(min_size=4 * DIM, max_size=4 * DIM),
        owner=_text,
        tenants=st.lists(_text, max_size=4).map(tuple),
        payload=st.binary(max_size=64),
        metadata=st.dictionaries(_text, _text, max_size=4),
    ),
    max_size=12,
    unique_by=lambda r: r.id,
)
_counter = itertools.count()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=_records)
def test_property_round_trip(store: DocumentStore, records: list[StoredRecord]) -> None:
    name = f"prop{next(_counter)}"
    store.create_collection(spec(name))
    store.put_records(name, records)
    assert store.get_records(name, [r.id for r in records]) == {r.id: r for r in records}
    seen = [r for b in store.iter_records(name, batch_size=5) for r in b]
    assert seen == sorted(records, key=lambda r: r.id.encode("utf-8"))
    assert store.delete_records(name, [r.id for r in records]).deleted == len(records)
    assert store.size_bytes(name) == 0
    store.delete_collection(name)


def test_owner_conditioned_writes_change_nothing_when_another_owns_a_record(
    store: DocumentStore, coll: str
) -> None:
    store.put_records(coll, [rec("bobs", owner="bob")])
    with pytest.raises(OwnedByAnother) as put:
        store.put_records(coll, [rec("new"), rec("bobs", payload=b"mine")], owner="alice")
    assert put.value.record_id == "bobs"
    assert store.get_records(coll, ["new", "bobs"]) == {"bobs": rec("bobs", owner="bob")}
    with pytest.raises(OwnedByAnother):
        store.delete_records(coll, ["bobs"], owner="alice")
    assert store.count(coll) == 1
    # the owner itself, and a write without the condition, go through
    assert store.put_records(coll, [rec("bobs", owner="bob", payload=b"2")], owner="bob")
    assert store.put_records(coll, [rec("new")], owner="alice")  # absent ids are anyone's
    with pytest.raises(OwnedByAnother):
        store.delete_records(coll, ["bobs", "new"], owner="bob")
    assert store.delete_records(coll, ["bobs"], owner="bob").deleted == 1


def test_conditional_access_changes_write_nothing_when_a_record_changed(
    store: DocumentStore, coll: str
) -> None:
    store.put_records(coll, [rec("a"), rec("b")])
    now = {"a": ("alice", ("alice",)), "b": ("alice", ("alice",))}
    assert store.set_tenants(coll, {"a": ("alice", "bob")}, expected=now)
    with pytest.raises(ChangedMeanwhile) as stale:  # "a" is no longer as expected
        store.set_tenants(coll, {"b": ("alice", "x"), "a": ("alice", "carol")}, expected=now)
    assert stale.value.record_id == "a"
    found = store.get_records(coll, ["a", "b"])
    assert found["a"].tenants == ("alice", "bob") and found["b"].tenants == ("alice",)
    with pytest.raises(ChangedMeanwhile):  # a missing record is not as expected either
        store.set_tenants(coll, {"ghost": ("alice",)}, expected={"ghost": ("alice", ("alice",))})
    with pytest.raises(ChangedMeanwhile):  # nor one with another owner
        store.set_tenants(coll, {"b": ("alice", "x")}, expected={"b": ("bob", ("alice",))})


# -- group commit: several callers' writes in one step (put_many) -------------------------
def test_a_group_lands_whole_under_one_log_entry(store: DocumentStore, coll: str) -> None:
    cursors = store.log_heads([store.stream_of(coll)])
    outcomes = store.put_many(
        coll,
        [
            RecordWrite([rec("a"), rec("b")], owner="alice"),
            RecordWrite([rec("c", owner="carol")]),  # no owner condition
            RecordWrite([]),
            RecordWrite([rec("a", payload=b"2"), rec("d")], owner="alice"),  # "a" again
        ],
    )
    position = outcomes[0]
    assert isinstance(position, str) and position
    assert outcomes == [position, position, "", position]
    changes = _all_changes(store, dict(cursors))
    assert [(c.op, c.ids, c.position) for c in changes] == [("put", ("a", "b", "c", "d"), position)]
    assert store.count(coll) == 4
    assert store.get_records(coll, ["a"])["a"] == rec("a", payload=b"2")  # the later write wins


def test_a_refused_write_fails_alone_and_is_not_logged(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec("bobs", owner="bob")])
    cursors = store.log_heads([store.stream_of(coll)])
    refused, invalid, landed, late = store.put_many(
        coll,
        [
            RecordWrite([rec("new"), rec("bobs", payload=b"mine")], owner="alice"),
            RecordWrite([rec("bad", vector="not bytes")]),
            RecordWrite([rec("x", owner="carol")], owner="carol"),
            RecordWrite([rec("x", owner="dave")], owner="dave"),  # carol's by then
        ],
    )
    assert isinstance(refused, OwnedByAnother) and refused.record_id == "bobs"
    assert isinstance(invalid, TypeError)
    assert isinstance(late, OwnedByAnother) and late.record_id == "x"
    assert isinstance(landed, str) and landed
    changes = _all_changes(store, dict(cursors))
    assert [(c.ids, c.position) for c in changes] == [(("x",), landed)]
    assert store.get_records(coll, ["new", "bobs", "bad", "x"]) == {
        "bobs": rec("bobs", owner="bob"),
        "x": rec("x", owner="carol"),
    }
    assert store.count(coll) == 2


def test_a_group_where_nothing_lands_logs_nothing(store: DocumentStore, coll: str) -> None:
    store.put_records(coll, [rec("bobs", owner="bob")])
    cursors = store.log_heads([store.stream_of(coll)])
    empty, refused = store.put_many(
        coll, [RecordWrite([]), RecordWrite([rec("bobs")], owner="alice")]
    )
    assert empty == "" and isinstance(refused, OwnedByAnother)
    assert _all_changes(store, dict(cursors)) == []
    assert store.put_many(coll, []) == []


def test_a_missing_collection_fails_the_whole_group(store: DocumentStore) -> None:
    with pytest.raises(CollectionMissing):
        store.put_many("nope", [RecordWrite([rec("a")]), RecordWrite([rec("b")], owner="x")])


# -- change log: one entry per write, in the write's atomic step ----------------------------
def _all_changes(store: DocumentStore, cursors: dict[str, str]) -> list[Change]:
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


def test_an_announced_note_reaches_the_log_and_changes_no_data(store: DocumentStore) -> None:
    store.create_collection(spec("docs"))
    store.put_records("docs", [rec("a")])
    heads = store.log_heads([store.stream_of("docs")])
    position = store.announce("docs", ["a", "ghost"], '{"hits": 1}')
    changes = store.read_changes(heads)
    assert [(c.op, c.ids, c.note, c.position) for c in changes] == [
        ("note", ("a", "ghost"), '{"hits": 1}', position)
    ]
    assert store.get_records("docs", ["a"]) == {"a": rec("a")}
    with pytest.raises(CollectionMissing):
        store.announce("nope", ["a"], "x")


def test_writes_that_change_nothing_log_nothing(store: DocumentStore) -> None:
    store.create_collection(spec("docs"))
    heads = store.log_heads([store.stream_of("docs")])
    assert store.put_records("docs", []) == ""
    assert store.delete_records("docs", ["nope"]) == (0, "")
    store.put_blob("docs", "snap", b"x")  # blobs are not logged
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
    head = store.log_heads(["", store.stream_of("docs")])
    assert store.trim_log(-60.0) >= 2  # a cutoff in the future: everything is old
    assert store.get_records("docs", ["a"])  # the data stays
    # A cursor already past what was trimmed misses nothing: no reset.
    assert store.read_changes(head) == []
    # An older one is told that it missed changes, once, at the newest trimmed position.
    resets = _all_changes(store, dict(start))
    assert [c.op for c in resets] == ["reset"] * len(resets) and resets
    assert {(c.stream, c.position) for c in resets} <= set(head.items())
    assert store.stream_of("docs") in {c.stream for c in resets}
    later = store.put_records("docs", [rec("b")])
    after_gap = _all_changes(store, dict(start))
    assert [c.op for c in after_gap][-1] == "put" and after_gap[-1].position == later


def test_a_lease_has_one_holder_across_handles_until_released_or_lapsed(opener: Opener) -> None:
    a, b = opener(), opener()
    assert a.try_lease("miss:k", "one", 30.0)
    assert not b.try_lease("miss:k", "two", 30.0)  # held: the other replica waits
    assert not a.try_lease("miss:k", "one-again", 30.0)
    b.release_lease("miss:k", "two")  # not its lease: nothing happens
    assert not b.try_lease("miss:k", "two", 30.0)
    a.release_lease("miss:k", "one")
    assert b.try_lease("miss:k", "two", 0.05)  # free again
    assert b.try_lease("other", "x", 30.0)  # keys are independent
    deadline = time.monotonic() + 10.0
    while not a.try_lease("miss:k", "three", 30.0):  # "two"'s 50 ms lapse
        assert time.monotonic() < deadline, "a lapsed lease was never given up"
        time.sleep(0.02)
    b.release_lease("miss:k", "two")  # a late release must not free "three"'s lease
    assert not b.try_lease("miss:k", "four", 30.0)
