"""One collection: the store (source of truth) and the in-memory index kept in step.

Writers are serialised by `_writer`; each write reaches the store first (durable) and is then
applied to the index under the write side of `_rw`, so a search (read side) never sees a
half-applied write and never maps a label to an id that was reassigned under it. `_rw` is
the one lock a search takes: the index relies on it (see `curacache.index.base`).

Replicas: other server processes write the same store; their changes reach this one through
the store's change log (`curacache.server.replica`), applied by `apply_changes`, which re-reads
the changed ids from the store under `_writer`. Because a local write also holds `_writer`
from its store write to its index update, and every change is re-read after it, the index
converges on the store whatever the interleaving. Checks that must agree across replicas
(ownership, visibility for delete and access changes) read the store, not the index; the
owner condition of upsert and delete is checked by the store in the write's atomic step. A
Retrainable index retrains in a background thread, taking `_rw` only to read its sample and
to install the result. The paths through here: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from curacache.errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from curacache.index.base import Index, Retrainable
from curacache.index.registry import get_kind
from curacache.index.rwlock import RWLock
from curacache.server import snapshot
from storage.base import DocumentStore
from storage.errors import ChangedMeanwhile, OwnedByAnother
from storage.types import CollectionSpec, RecordWrite, StoredRecord

log = logging.getLogger("curacache.server")

# How often a grant or revoke reads again when another replica changed its records meanwhile.
_ACCESS_ATTEMPTS = 8
# At most this many of its own upsert groups a collection remembers for the tail to skip (a
# process whose tail does not run, or runs late, re-reads the older ones: harmless).
_WRITTEN_HERE_KEPT = 4096


@dataclass(slots=True)
class _Entry:
    label: int
    owner: str
    tenants: tuple[str, ...]
    crc: int  # crc32 of the vector bytes, for snapshot catch-up


@dataclass(slots=True)
class _QueuedUpsert:
    """An upsert waiting for its group (`Collection.upsert`); `outcome` as `put_many` gives it."""

    write: RecordWrite
    outcome: str | Exception = ""
    done: bool = False


class Written(NamedTuple):
    """What a write did: how many records it changed and its change-log position."""

    records: int
    position: str


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    payload: bytes = b""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CollectionStats:
    record_count: int
    tenant_count: int
    index_memory: dict[str, int]
    store_bytes: int


class Collection:
    def __init__(self, spec: CollectionSpec, index: Index, store: DocumentStore) -> None:
        self.spec = spec
        self._index = index
        self._store = store
        self._entries: dict[str, _Entry] = {}
        self._label_ids: list[str | None] = []
        self._free: list[int] = []
        self._tenant_records: Counter[str] = Counter()
        self._writer = threading.Lock()
        self._queue_lock = threading.Lock()  # guards _queued (taken without _writer)
        self._queued: list[_QueuedUpsert] = []
        # Log positions of upsert groups written and applied here that the tail has not
        # passed yet (guarded by _writer).
        self._written_here: dict[str, bool] = {}
        self._snapshot_lock = threading.Lock()
        self._rw = RWLock()
        self._dropped = False
        self._writes_since_snapshot = 0
        self._retrainer: threading.Thread | None = None
        self.loaded_from_snapshot = False

    @property
    def index(self) -> Index:
        """The in-memory index (diagnostics and tests; writes go through the collection)."""
        return self._index

    # -- life cycle ----------------------------------------------------------------------
    def load(self, batch_size: int = 4096, *, use_snapshot: bool = True) -> bool:
        """Build the index at start-up: from its snapshot when there is a usable one, then
        caught up from the store; else from the store alone. True if a snapshot was used."""
        with self._writer:
            restored = use_snapshot and self._restore_snapshot()
            if restored:
                self._sync_with_store(batch_size)
            else:
                for batch in self._store.iter_records(self.spec.name, batch_size):
                    with self._rw.write():
                        self._apply_add(batch)
            self.loaded_from_snapshot = restored
            self._maybe_retrain()
            return restored

    def resync(self, batch_size: int = 4096) -> list[str]:
        """Bring the whole index in line with the store (the change log that would have told
        this replica what changed was trimmed before it read it); returns every id looked
        at: those in the store and those removed here."""
        with self._writer:
            if self._dropped:
                return []
            ids = self._sync_with_store(batch_size)
            self._maybe_retrain()
            return ids

    def _sync_with_store(self, batch_size: int) -> list[str]:
        """Re-add what changed and remove what is gone, batch by batch (caller holds _writer)."""
        seen: set[str] = set()
        for batch in self._store.iter_records(self.spec.name, batch_size):
            with self._rw.write():
                self._apply_add(self._catch_up(batch, seen))
        gone = [rid for rid in self._entries if rid not in seen]
        with self._rw.write():
            self._apply_remove(gone)
        return [*seen, *gone]

    def save_snapshot(self) -> bool:
        """Persist the index (if its kind snapshots) so a restart need not retrain it.

        The state is captured under the locks; encoding it and the store write (hundreds of
        ms for a large collection, seconds on a busy machine) happen after they are released,
        so writes never wait for them. Whatever is written meanwhile, a restore catches the
        snapshot up with the store (`_catch_up`)."""
        with self._snapshot_lock:  # one at a time: an older snapshot never lands last
            with self._writer:
                if self._dropped or self._writes_since_snapshot == 0:
                    return False
                with self._rw.read():  # a background retrain may be installing
                    index_bytes = self._index.snapshot()
                if index_bytes is None:
                    return False
                entries = {
                    rid: snapshot.SnapshotEntry(e.label, e.owner, e.tenants, e.crc)
                    for rid, e in self._entries.items()
                }
                self._writes_since_snapshot = 0
            blob = snapshot.encode(self.spec.index_kind, entries, index_bytes)
            try:
                self._store.put_blob(self.spec.name, snapshot.SNAPSHOT_KEY, blob)
            except Exception:
                with self._writer:
                    if self._dropped:  # deleted meanwhile: nothing left to snapshot
                        return False
                    self._writes_since_snapshot += 1  # not saved: the next round tries again
                raise
            return True

    def _restore_snapshot(self) -> bool:
        blob = self._store.get_blob(self.spec.name, snapshot.SNAPSHOT_KEY)
        decoded = snapshot.decode(blob, self.spec.index_kind) if blob else None
        if decoded is None:
            return False
        entries, index_bytes = decoded
        with self._rw.write():
            self._index.restore(index_bytes)
            size = 1 + max((e.label for e in entries.values()), default=-1)
            self._label_ids = [None] * size
            for rid, e in entries.items():
                self._label_ids[e.label] = rid
                self._entries[rid] = _Entry(e.label, e.owner, e.tenants, e.crc)
                self._tenant_records.update(e.tenants)
            self._free = [label for label in range(size) if self._label_ids[label] is None]
        return True

    def _catch_up(self, records: Sequence[StoredRecord], seen: set[str]) -> list[StoredRecord]:
        """Bring restored entries in line with the store; returns the records to (re-)add."""
        to_add = []
        access: dict[str, tuple[str, ...]] = {}
        for rec in records:
            seen.add(rec.id)
            entry = self._entries.get(rec.id)
            if entry is None:
                to_add.append(rec)
            elif entry.crc != zlib.crc32(rec.vector) or entry.owner != rec.owner:
                self._apply_remove([rec.id])
                to_add.append(rec)
            elif entry.tenants != rec.tenants:
                access[rec.id] = rec.tenants
        self._apply_access(access)
        return to_add

    def apply_changes(self, changes: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Apply changes logged by another replica or this one, as (position, ids): re-read
        the ids from the store and bring the index in line (idempotent). An upsert group this
        process wrote is skipped: it went into the index with the write, under this same lock
        (`_write_queued`), and whatever changed its records since comes later in the log. Why:
        re-reading its own writes was ~15% of a writing replica's CPU per single-record
        upsert (bench/replication/README.md)."""
        with self._writer:
            if self._dropped:
                return
            ids = list(
                dict.fromkeys(
                    rid
                    for position, changed in changes
                    if not self._written_here.pop(position, False)
                    for rid in changed
                )
            )
            if not ids:
                return
            found = self._store.get_records(self.spec.name, ids)
            with self._rw.write():
                self._apply_remove([r for r in ids if r not in found and r in self._entries])
                self._apply_add(self._catch_up(list(found.values()), set()))
            self._maybe_retrain()

    def forget(self) -> None:
        """Another replica dropped the collection: refuse further use, leave the store alone."""
        with self._writer:
            self._dropped = True

    def drop(self) -> None:
        """Delete from the store, then refuse further use (a failed store delete changes nothing)."""
        with self._writer:
            self._check_live()
            self._store.delete_collection(self.spec.name)
            self._dropped = True

    # -- writes --------------------------------------------------------------------------
    def upsert(self, tenant: str, records: Sequence[StoredRecord], *, admin: bool) -> Written:
        """Insert, or replace records `tenant` owns (any, for an admin); owner = tenant.

        Group commit: the upsert is queued, and whichever caller holds the writer lock next
        writes every queued upsert in one store step (`DocumentStore.put_many`: one
        transaction and fsync, or one script) and applies them to the index in order; each
        caller gets its own outcome. Why: one durable commit per upsert under the writer lock
        (~1-2 ms of fsync) held a collection to ~500 single-record upserts/s
        (bench/replication/README.md)."""
        mine = _QueuedUpsert(RecordWrite(records, None if admin else tenant))
        with self._queue_lock:
            self._queued.append(mine)
        with self._writer:
            if not mine.done:  # else an earlier holder of the lock wrote it with its group
                self._write_queued()
        outcome = mine.outcome
        if isinstance(outcome, OwnedByAnother):
            i = next(i for i, r in enumerate(records) if r.id == outcome.record_id)
            raise PermissionDenied(
                f"records[{i}].id: {outcome.record_id!r} is owned by another tenant"
            )
        if isinstance(outcome, Exception):
            raise outcome
        return Written(len(records), outcome)

    def _write_queued(self) -> None:
        """Write every queued upsert as one group, then the index (caller holds `_writer`).
        Ownership is checked by the store, per upsert, in the write's atomic step: another
        replica may be writing the same ids at this moment."""
        with self._queue_lock:
            group, self._queued = self._queued, []
        outcomes: list[str | Exception] = [Unavailable("the write was interrupted")] * len(group)
        try:
            self._check_live()
            outcomes = self._store.put_many(self.spec.name, [q.write for q in group])
            landed = [
                r for q, o in zip(group, outcomes) if isinstance(o, str) for r in q.write.records
            ]
            latest = list({r.id: r for r in landed}.values())  # the last of repeated ids wins
            with self._rw.write():
                self._apply_remove([r.id for r in latest if r.id in self._entries])
                self._apply_add(latest)
            position = next((o for o in outcomes if isinstance(o, str) and o), "")
            if position:  # the tail need not re-read it (apply_changes)
                self._written_here[position] = True
                if len(self._written_here) > _WRITTEN_HERE_KEPT:  # no tail: forget the oldest
                    del self._written_here[next(iter(self._written_here))]
            self._maybe_retrain()
        except Exception as exc:  # nothing, or not all, of it reached the index: all fail
            outcomes = [exc] * len(group)
        finally:  # every caller of the group gets an outcome, whatever happened
            for q, outcome in zip(group, outcomes, strict=True):
                q.outcome, q.done = outcome, True

    def delete(self, tenant: str, ids: Sequence[str], *, admin: bool) -> Written:
        """Delete what `tenant` owns; ids it cannot see (or that do not exist) are ignored."""
        with self._writer:
            self._check_live()
            targets = []
            found = self._store.get_records(self.spec.name, ids)
            for i, rid in enumerate(ids):
                rec = found.get(rid)
                if rec is None or not (admin or tenant in rec.tenants):
                    continue
                if rec.owner != tenant and not admin:
                    raise PermissionDenied(f"ids[{i}]: only the owner may delete {rid!r}")
                targets.append(rid)
            if not targets:
                return Written(0, "")
            try:  # the owner again, atomically: the record may have changed hands since
                deleted = self._store.delete_records(
                    self.spec.name, targets, owner=None if admin else tenant
                )
            except OwnedByAnother as exc:
                i = ids.index(exc.record_id)
                raise PermissionDenied(
                    f"ids[{i}]: only the owner may delete {exc.record_id!r}"
                ) from None
            with self._rw.write():
                self._apply_remove([r for r in dict.fromkeys(targets) if r in self._entries])
            return Written(deleted.deleted, deleted.position)

    def grant(self, tenant: str, ids: Sequence[str], to_tenant: str, *, admin: bool) -> Written:
        return self._change_access(tenant, ids, to_tenant, grant=True, admin=admin)

    def revoke(self, tenant: str, ids: Sequence[str], from_tenant: str, *, admin: bool) -> Written:
        return self._change_access(tenant, ids, from_tenant, grant=False, admin=admin)

    def _change_access(
        self, tenant: str, ids: Sequence[str], other: str, *, grant: bool, admin: bool
    ) -> Written:
        """Read the records, decide, and write only if they are still as read (the store checks
        in the write's atomic step); another replica's change in between means read again."""
        with self._writer:
            self._check_live()
            for _ in range(_ACCESS_ATTEMPTS):
                found = self._store.get_records(self.spec.name, ids)
                changes = self._access_changes(found, tenant, ids, other, grant=grant, admin=admin)
                if not changes:
                    return Written(0, "")
                expected = {rid: (found[rid].owner, found[rid].tenants) for rid in changes}
                try:
                    position = self._store.set_tenants(self.spec.name, changes, expected=expected)
                except ChangedMeanwhile:
                    continue
                with self._rw.write():
                    self._apply_access(changes)
                return Written(len(changes), position)
        raise Unavailable(f"records of {self.spec.name!r} keep changing meanwhile; try again")

    @staticmethod
    def _access_changes(
        found: Mapping[str, StoredRecord],
        tenant: str,
        ids: Sequence[str],
        other: str,
        *,
        grant: bool,
        admin: bool,
    ) -> dict[str, tuple[str, ...]]:
        changes: dict[str, tuple[str, ...]] = {}
        for i, rid in enumerate(ids):
            entry = found.get(rid)
            if entry is None or not (admin or tenant in entry.tenants):
                raise NotFound(f"ids[{i}]: record {rid!r} not found")
            if entry.owner != tenant and not admin:
                raise PermissionDenied(f"ids[{i}]: only the owner may change access to {rid!r}")
            if grant and other not in entry.tenants:
                changes[rid] = (*entry.tenants, other)
            elif not grant and other == entry.owner:
                raise InvalidArgument(
                    "from_tenant", f"cannot revoke the owner of {rid!r}; delete it"
                )
            elif not grant and other in entry.tenants:
                changes[rid] = tuple(t for t in entry.tenants if t != other)
        return changes

    # -- reads ---------------------------------------------------------------------------
    def get(
        self, tenant: str, ids: Sequence[str], *, with_vectors: bool
    ) -> tuple[list[StoredRecord], list[str]]:
        """Records `tenant` can see, in request order, and the ids it cannot."""
        self._check_live()
        found = self._store.get_records(self.spec.name, ids)
        records, missing = [], []
        for rid in ids:
            rec = found.get(rid)
            if rec is None or tenant not in rec.tenants:
                missing.append(rid)
            else:
                records.append(rec if with_vectors else _without_vector(rec))
        return records, missing

    def search(
        self,
        tenant: str,
        queries: np.ndarray,
        k: int,
        params: Mapping[str, float],
        *,
        with_payload: bool,
    ) -> list[list[Hit]]:
        self._check_live()
        if self.spec.metric == "cosine":
            queries = _unit_rows(queries)
        with self._rw.read():
            rows = self._search_rows(tenant, queries, k, params)
        return self._hits(tenant, rows, with_payload)

    def search_if_free(
        self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]
    ) -> list[list[Hit]] | None:
        """`search` without payloads, only if no write holds or awaits the lock now (else
        None): the event loop may search itself this way and never waits behind a write."""
        self._check_live()
        if self.spec.metric == "cosine":
            queries = _unit_rows(queries)
        if not self._rw.try_acquire_read():
            return None
        try:
            rows = self._search_rows(tenant, queries, k, params)
        finally:
            self._rw.release_read()
        return self._hits(tenant, rows, with_payload=False)

    def _search_rows(
        self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]
    ) -> list[list[tuple[str, float]]]:
        """(id, index score) per query; the caller holds the read side of `_rw`."""
        result = self._index.search(tenant, queries, k, params)
        return [
            [
                (self._label_ids[label], float(score))
                for label, score in zip(labels, scores)
                if label >= 0
            ]
            for labels, scores in zip(result.labels.tolist(), result.scores.tolist())
        ]

    def _hits(
        self, tenant: str, rows: list[list[tuple[str, float]]], with_payload: bool
    ) -> list[list[Hit]]:
        if self.spec.metric == "l2":
            rows = [[(rid, float(np.sqrt(max(s, 0.0)))) for rid, s in row] for row in rows]
        if not with_payload:
            return [[Hit(rid, score) for rid, score in row] for row in rows]
        found = self._store.get_records(self.spec.name, {rid for row in rows for rid, _ in row})
        # A record deleted or revoked after the index answered is dropped, never leaked.
        return [
            [
                Hit(rid, score, rec.payload, rec.metadata)
                for rid, score in row
                if (rec := found.get(rid)) is not None and tenant in rec.tenants
            ]
            for row in rows
        ]

    def visible_count(self, tenant: str) -> int:
        """How many records `tenant` can see (a dict read: no lock needed under the GIL)."""
        return self._tenant_records.get(tenant, 0)

    def stats(self, tenants: Iterable[str] | None = None) -> CollectionStats:
        """The whole collection's figures, or with `tenants` (a tenant-scoped caller) only
        theirs: records any of them can see, how many of them hold any, and no sizes (those
        are everyone's)."""
        self._check_live()
        if tenants is not None:
            scope = frozenset(tenants)
            with self._rw.read():
                present = [t for t in scope if self._tenant_records.get(t, 0) > 0]
                if len(present) <= 1:
                    records = sum(self._tenant_records[t] for t in present)
                else:  # a record shared by two of them counts once
                    records = sum(
                        1 for e in self._entries.values() if not scope.isdisjoint(e.tenants)
                    )
            return CollectionStats(records, len(present), {}, 0)
        with self._rw.read():
            records, n_tenants = len(self._entries), len(self._tenant_records)
            memory = self._index.memory_bytes()
        return CollectionStats(records, n_tenants, memory, self._store.size_bytes(self.spec.name))

    # -- background maintenance ----------------------------------------------------------
    def _maybe_retrain(self) -> None:
        """Start retraining in a background thread when the index asks for it (one at a time).

        Why a thread: the index learns its new structure without holding its lock, so searches
        and writes go on meanwhile; only the final install is exclusive."""
        index = self._index
        if not isinstance(index, Retrainable) or not index.retrain_due():
            return
        if self._retrainer is not None and self._retrainer.is_alive():
            return
        self._retrainer = threading.Thread(
            target=self._retrain, name=f"retrain:{self.spec.name}", daemon=True
        )
        self._retrainer.start()

    def _retrain(self) -> None:
        try:
            installed = self._index.retrain(self._rw)  # type: ignore[attr-defined]
        except Exception:  # a failed retrain leaves the old structure serving; nothing is lost
            log.exception("collection %s: background retraining failed", self.spec.name)
            return
        if installed:
            with self._writer:
                self._writes_since_snapshot += 1  # the next snapshot carries the new structure
            log.info(
                "collection %s: index retrained on %d records", self.spec.name, len(self._entries)
            )

    def wait_for_background(self, timeout: float | None = None) -> bool:
        """Wait for a running background retrain; True when none is left running."""
        worker = self._retrainer
        if worker is not None:
            worker.join(timeout)
        return worker is None or not worker.is_alive()

    # -- internals (callers hold the write lock) ----------------------------------------
    def _check_live(self) -> None:
        if self._dropped:
            raise NotFound(f"collection {self.spec.name!r} does not exist")

    def _apply_add(self, records: Sequence[StoredRecord]) -> None:
        if not records:
            return
        vectors = np.frombuffer(b"".join(r.vector for r in records), dtype="<f4")
        vectors = vectors.reshape(len(records), self.spec.dim).astype(np.float32)
        if self.spec.metric == "cosine":
            vectors = _unit_rows(vectors)
        labels = np.fromiter((self._allocate(r.id) for r in records), np.int64, len(records))
        self._writes_since_snapshot += len(records)
        self._index.add(labels, vectors, [r.tenants for r in records])
        for rec, label in zip(records, labels.tolist()):
            self._entries[rec.id] = _Entry(label, rec.owner, rec.tenants, zlib.crc32(rec.vector))
            self._tenant_records.update(rec.tenants)

    def _apply_access(self, tenants_by_id: Mapping[str, tuple[str, ...]]) -> None:
        """Set the access lists of the entries present (others arrive by the log), batching
        the index's grants and revokes per tenant."""
        grants: defaultdict[str, list[int]] = defaultdict(list)
        revokes: defaultdict[str, list[int]] = defaultdict(list)
        for rid, tenants in tenants_by_id.items():
            entry = self._entries.get(rid)
            if entry is None or entry.tenants == tenants:
                continue
            for tenant in set(tenants) - set(entry.tenants):
                grants[tenant].append(entry.label)
            for tenant in set(entry.tenants) - set(tenants):
                revokes[tenant].append(entry.label)
            self._tenant_records.update(tenants)
            self._tenant_records.subtract(entry.tenants)
            entry.tenants = tenants
            self._writes_since_snapshot += 1
        for tenant, labels in grants.items():
            self._index.grant(np.array(labels, dtype=np.int64), tenant)
        for tenant, labels in revokes.items():
            self._index.revoke(np.array(labels, dtype=np.int64), tenant)
        self._tenant_records += Counter()  # drop tenants whose count fell to zero

    def _apply_remove(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        entries = [self._entries.pop(rid) for rid in ids]
        self._writes_since_snapshot += len(entries)
        self._index.remove(np.fromiter((e.label for e in entries), np.int64, len(entries)))
        for entry in entries:
            self._label_ids[entry.label] = None
            self._free.append(entry.label)
            self._tenant_records.subtract(entry.tenants)
        for name in {t for e in entries for t in e.tenants}:
            if self._tenant_records[name] <= 0:
                del self._tenant_records[name]

    def _allocate(self, rid: str) -> int:
        if self._free:
            label = self._free.pop()
            self._label_ids[label] = rid
            return label
        self._label_ids.append(rid)
        return len(self._label_ids) - 1


async def search_soon(
    collection: Collection,
    tenant: str,
    queries: np.ndarray,
    k: int,
    params: Mapping[str, float],
    *,
    with_payload: bool,
) -> list[list[Hit]]:
    """Search from the event loop. A bounded search (the kind says so) of one query without
    payloads runs right here when the lock is free: it costs about as much as handing it to a
    worker thread and back (profiled: the hop was ~15% of a cache lookup's server CPU).
    Anything else, or a write in the way, goes to a thread, so the loop never waits."""
    bounded = get_kind(collection.spec.index_kind, field="index.kind").bounded_search
    if bounded and not with_payload and len(queries) == 1:
        hits = collection.search_if_free(tenant, queries, k, params)
        if hits is not None:
            return hits
    return await asyncio.to_thread(
        collection.search, tenant, queries, k, params, with_payload=with_payload
    )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.where(norms == 0, 1, norms), dtype=np.float32)


def _without_vector(rec: StoredRecord) -> StoredRecord:
    return StoredRecord(rec.id, b"", rec.owner, rec.tenants, rec.payload, rec.metadata)
