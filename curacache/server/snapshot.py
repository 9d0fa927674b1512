"""Index snapshot blobs: a JSON header (the collection's id map) followed by the index's bytes.

The header lets a restart restore the index without retraining and then catch up from the
store, which stays the source of truth: records written, replaced, re-shared or deleted after
the snapshot are found by comparing the header's entries (label, owner, access, vector crc)
with the store's records.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

SNAPSHOT_KEY = "index.snapshot"
_MAGIC = b"CCSNAP1\x00"
_LEN = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class SnapshotEntry:
    label: int
    owner: str
    tenants: tuple[str, ...]
    crc: int  # crc32 of the vector bytes: a replaced vector is re-added on catch-up


def encode(index_kind: str, entries: dict[str, SnapshotEntry], index_bytes: bytes) -> bytes:
    header = json.dumps(
        {
            "kind": index_kind,
            "entries": {rid: [e.label, e.owner, e.tenants, e.crc] for rid, e in entries.items()},
        },
        separators=(",", ":"),
    ).encode()
    return _MAGIC + _LEN.pack(len(header)) + header + index_bytes


def decode(blob: bytes, index_kind: str) -> tuple[dict[str, SnapshotEntry], bytes] | None:
    """Entries and index bytes, or None when the blob is not a snapshot of this index kind."""
    if not blob.startswith(_MAGIC):
        return None
    start = len(_MAGIC) + _LEN.size
    (size,) = _LEN.unpack_from(blob, len(_MAGIC))
    header = json.loads(blob[start : start + size])
    if header.get("kind") != index_kind:
        return None
    entries = {
        rid: SnapshotEntry(label, owner, tuple(tenants), crc)
        for rid, (label, owner, tenants, crc) in header["entries"].items()
    }
    return entries, blob[start + size :]
