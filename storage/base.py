"""The DocumentStore port: the source of truth for collections, records and index snapshots.

Every method is blocking and thread-safe; the server calls them from worker threads. A
method that writes returns only once the write is durable (SQLite: committed with
synchronous=FULL; Redis: acknowledged by the server, which fsyncs per its AOF policy).
Batch writes are atomic: all records of a call land or none do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from storage.types import CollectionSpec, StoredRecord


@runtime_checkable
class DocumentStore(Protocol):
    # -- collections -------------------------------------------------------------------
    def create_collection(self, spec: CollectionSpec) -> None:
        """Persist a new collection; CollectionExists if the name is taken."""

    def get_collection(self, name: str) -> CollectionSpec | None: ...

    def list_collections(self) -> list[CollectionSpec]:
        """All collections, sorted by name."""

    def delete_collection(self, name: str) -> bool:
        """Drop the collection with every record and blob; False if it did not exist."""

    # -- records -----------------------------------------------------------------------
    def put_records(self, collection: str, records: Sequence[StoredRecord]) -> None:
        """Insert or replace records by id, atomically. CollectionMissing if absent."""

    def get_records(self, collection: str, ids: Iterable[str]) -> dict[str, StoredRecord]:
        """The records that exist among `ids`, keyed by id (missing ids are left out)."""

    def delete_records(self, collection: str, ids: Iterable[str]) -> int:
        """Delete atomically; returns how many existed."""

    def set_tenants(self, collection: str, tenants_by_id: Mapping[str, Sequence[str]]) -> None:
        """Replace the access lists of existing records, atomically (grant/revoke)."""

    def iter_records(self, collection: str, batch_size: int = 1024) -> Iterator[list[StoredRecord]]:
        """Every record of the collection, in batches (index rebuild at start-up)."""

    def count(self, collection: str) -> int: ...

    def size_bytes(self, collection: str) -> int:
        """Bytes of stored record data (ids, vectors, payloads, metadata, access lists)."""

    # -- opaque blobs (index snapshots: tree centroids etc.) -----------------------------
    def put_blob(self, collection: str, key: str, data: bytes) -> None: ...

    def get_blob(self, collection: str, key: str) -> bytes | None: ...

    # -- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        """Raise StoreUnavailable if the backing database cannot be reached."""

    def close(self) -> None: ...
