from curacache.server import snapshot
from curacache.server.snapshot import SnapshotEntry


def test_round_trip_keeps_entries_and_index_bytes() -> None:
    entries = {"a": SnapshotEntry(0, "t", ("t", "u"), 123), "é/b": SnapshotEntry(5, "u", ("u",), 0)}
    blob = snapshot.encode("curator", entries, b"\x00index\xff")
    assert snapshot.decode(blob, "curator") == (entries, b"\x00index\xff")


def test_other_kind_or_foreign_blob_is_ignored() -> None:
    blob = snapshot.encode("curator", {}, b"x")
    assert snapshot.decode(blob, "hnsw") is None
    assert snapshot.decode(b"not a snapshot", "curator") is None
