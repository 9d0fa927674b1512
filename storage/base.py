"""The DocumentStore port: the source of truth for collections, records and index snapshots.

Every method is blocking and thread-safe; the server calls them from worker threads. A
method that writes returns only once the write is durable (SQLite: committed with
synchronous=FULL; Redis: acknowledged by the server, which fsyncs per its AOF policy).
Batch writes are atomic: all records of a call land or none do.

Change log: every write of collections, records or access lists appends a `Change` to the
store's log in the same atomic step as the data, and returns its log position. The log is one
or more streams (SQLite: one; Redis: one per collection, in the collection's hash slot, plus
one for the registry) so that the append never spans Redis Cluster slots. Replicas tail it
with `read_changes`. Blobs (index snapshots) are per-replica optimisations and are not logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from storage.types import Change, CollectionSpec, Deleted, RecordWrite, StoredRecord


@runtime_checkable
class DocumentStore(Protocol):
    # -- collections -------------------------------------------------------------------
    def create_collection(self, spec: CollectionSpec) -> str:
        """Persist a new collection; CollectionExists if the name is taken. Returns the log
        position of the "create" change."""

    def get_collection(self, name: str) -> CollectionSpec | None: ...

    def list_collections(self) -> list[CollectionSpec]:
        """All collections, sorted by name."""

    def delete_collection(self, name: str) -> bool:
        """Drop the collection with every record and blob; False if it did not exist."""

    # -- records -----------------------------------------------------------------------
    def put_records(
        self, collection: str, records: Sequence[StoredRecord], *, owner: str | None = None
    ) -> str:
        """Insert or replace records by id, atomically. CollectionMissing if absent.
        Returns the log position ("" when `records` is empty: nothing was written).
        With `owner`: only if none of the ids exists with another owner, checked in the same
        atomic step as the write (else OwnedByAnother, and nothing is written)."""

    def put_many(self, collection: str, writes: Sequence[RecordWrite]) -> list[str | Exception]:
        """Several callers' `put_records` as one group commit: one atomic step, one durable
        commit (SQLite: one transaction and fsync; Redis: one script and WAIT) and one log
        entry naming every id that landed. Each write is validated and owner-checked on its
        own, in order (a write sees the earlier ones of its group): one that fails is left
        out and its place in the result holds its error (OwnedByAnother, TypeError,
        ValueError); every other place holds the group's log position ("" for an empty
        write). Errors of the whole step raise (CollectionMissing, StoreUnavailable),
        and then nothing was written."""

    def get_records(self, collection: str, ids: Iterable[str]) -> dict[str, StoredRecord]:
        """The records that exist among `ids`, keyed by id (missing ids are left out)."""

    def delete_records(
        self, collection: str, ids: Iterable[str], *, owner: str | None = None
    ) -> Deleted:
        """Delete atomically; returns how many existed and the log position ("" if none).
        With `owner`: as for put_records, only if no id exists with another owner."""

    def set_tenants(
        self,
        collection: str,
        tenants_by_id: Mapping[str, Sequence[str]],
        *,
        expected: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    ) -> str:
        """Replace the access lists of existing records, atomically (grant/revoke); returns
        the log position ("" when there was nothing to change). With `expected` (id -> the
        owner and access list the caller decided on): only if every id still has them,
        checked in the write's atomic step (else ChangedMeanwhile, and nothing is written)."""

    def iter_records(self, collection: str, batch_size: int = 1024) -> Iterator[list[StoredRecord]]:
        """Every record of the collection, in batches (index rebuild at start-up)."""

    def count(self, collection: str) -> int: ...

    def size_bytes(self, collection: str) -> int:
        """Bytes of stored record data (ids, vectors, payloads, metadata, access lists)."""

    # -- opaque blobs (index snapshots: tree centroids etc.) -----------------------------
    def put_blob(self, collection: str, key: str, data: bytes, *, announce: bool = False) -> str:
        """Store an opaque value. `announce` also logs the write (op "blob", ids = [key]) and
        returns its position, so replicas reload it (settings every replica must share, such
        as the cache's policies); index snapshots are not announced (each replica makes its
        own). Unannounced writes return ""."""

    def get_blob(self, collection: str, key: str) -> bytes | None: ...

    def announce(self, collection: str, ids: Sequence[str], note: str) -> str:
        """Append a "note" change about `ids` to the collection's log without changing data:
        a fact one replica shares with the others (the cache's hit times). Returns its
        position; CollectionMissing if absent."""

    # -- change log ----------------------------------------------------------------------
    def stream_of(self, collection: str) -> str:
        """The log stream that carries `collection`'s record changes ("" is the registry's,
        which carries create/drop; SQLite has only that one)."""

    def log_heads(self, streams: Iterable[str]) -> dict[str, str]:
        """The newest position of each stream ("0-0" when empty): where a replica that has
        just loaded the store's state starts tailing."""

    def read_changes(self, cursors: Mapping[str, str], limit: int = 1024) -> list[Change]:
        """Changes after each stream's cursor position, oldest first within a stream. When
        changes after a cursor have been trimmed away, the stream's first change is a
        "reset" (position: the newest trimmed one; collection: the stream's, "" for the
        registry's or SQLite's one): what it carried must be re-read from the store."""

    def trim_log(self, older_than_s: float) -> int:
        """Drop log entries older than `older_than_s` seconds, remembering the newest position
        dropped per stream (so `read_changes` can report a gap); returns how many went."""

    # -- leases (one holder at a time across processes: the cache's cross-replica
    # single-flight, DESIGN §6) -------------------------------------------------------------
    def try_lease(self, key: str, holder: str, ttl_s: float) -> bool:
        """Take `key` for `holder` for `ttl_s` seconds if nobody holds it (or its holder's
        time ran out); False while another holder has it."""

    def release_lease(self, key: str, holder: str) -> None:
        """Give `key` back, only if `holder` still holds it (never another's lease)."""

    # -- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        """Raise StoreUnavailable if the backing database cannot be reached."""

    def close(self) -> None: ...
