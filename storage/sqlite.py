"""SqliteStore: the embedded default DocumentStore (stdlib sqlite3, WAL, synchronous=FULL;
leases alone are committed without an fsync, see `_write`).

Concurrency: every write runs as one `BEGIN IMMEDIATE … COMMIT` on a single writer connection
guarded by a lock, so batches are atomic and durable before the call returns. Reads use a
small pool of separate connections; WAL lets them run while a write is in progress and they
always see the last committed state.

Change log: a `changes` table (seq, collection, op, ids JSON, at) written by the same
transaction as the data, so a change is logged if and only if it committed. Its one stream
is "" and a position is "<seq>-0". Other processes on the same file see new rows as soon as
they commit; replicas poll `read_changes` (an index range scan).

Record count and byte size are kept per collection by triggers, so `count` and `size_bytes`
are O(1) instead of a scan over megabytes of payloads.

Missing collections: every method that names a collection raises CollectionMissing when it
does not exist, reads included (get_records, delete_records, set_tenants, iter_records,
count, size_bytes, put_blob, get_blob); only get_collection (None) and delete_collection
(False) report absence by value.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from storage._codec import (
    EncodedRecord,
    check_name,
    decode_record,
    decode_spec,
    encode_record,
    encode_spec,
    encode_tenants,
    unique_ids,
)
from storage.errors import (
    ChangedMeanwhile,
    CollectionExists,
    CollectionMissing,
    OwnedByAnother,
    StoreUnavailable,
)
from storage.types import (
    Change,
    CollectionSpec,
    Deleted,
    RecordWrite,
    StoredRecord,
    one_outcome,
    position_key,
)

__all__ = ["SqliteStore"]

T = TypeVar("T")

# Rowid tables (not WITHOUT ROWID): rows carry vectors and payloads of kilobytes to a MiB,
# which SQLite advises against storing inside a clustered index; the UNIQUE index keeps
# (collection, id) lookups and keyset pagination index-only.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name     TEXT PRIMARY KEY,
    spec     TEXT NOT NULL,
    nrecords INTEGER NOT NULL DEFAULT 0,
    nbytes   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT NOT NULL,
    tenants    TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    nbytes     INTEGER NOT NULL,
    vector     BLOB NOT NULL,
    payload    BLOB NOT NULL,
    UNIQUE (collection, id)
);
CREATE TABLE IF NOT EXISTS blobs (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    data       BLOB NOT NULL,
    UNIQUE (collection, key)
);
CREATE TABLE IF NOT EXISTS leases (
    key     TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    op         TEXT NOT NULL,
    ids        TEXT NOT NULL,
    at         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS log_trimmed (
    stream TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS records_ai AFTER INSERT ON records BEGIN
    UPDATE collections SET nrecords = nrecords + 1, nbytes = nbytes + NEW.nbytes
    WHERE name = NEW.collection;
END;
CREATE TRIGGER IF NOT EXISTS records_ad AFTER DELETE ON records BEGIN
    UPDATE collections SET nrecords = nrecords - 1, nbytes = nbytes - OLD.nbytes
    WHERE name = OLD.collection;
END;
CREATE TRIGGER IF NOT EXISTS records_au AFTER UPDATE OF nbytes ON records BEGIN
    UPDATE collections SET nbytes = nbytes - OLD.nbytes + NEW.nbytes
    WHERE name = NEW.collection;
END;
"""

_COLS = "id, vector, owner, tenants, payload, metadata"
_UPSERT = (
    "INSERT INTO records (collection, id, owner, tenants, metadata, nbytes, vector, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET "
    "owner = excluded.owner, tenants = excluded.tenants, metadata = excluded.metadata, "
    "nbytes = excluded.nbytes, vector = excluded.vector, payload = excluded.payload"
)
_CHUNK = 500  # ids per IN (...) query, well under SQLite's bound-parameter limit
_MAX_IDLE_READERS = 8
_BLOB_PIECE = 1 << 20  # bytes per write of a blob (put_blob)


def _log(
    conn: sqlite3.Connection, collection: str, op: str, ids: Sequence[str] = (), note: str = ""
) -> str:
    """Append a change inside the caller's transaction; returns its position. A note travels
    as the last element of the ids array (read_changes takes it off again)."""
    listed = [*ids, note] if op == "note" else list(ids)
    cur = conn.execute(
        "INSERT INTO changes (collection, op, ids, at) VALUES (?, ?, ?, ?)",
        (collection, op, json.dumps(listed, ensure_ascii=False), time.time()),
    )
    return f"{cur.lastrowid}-0"


def _change(seq: int, collection: str, op: str, ids_json: str) -> Change:
    ids = json.loads(ids_json)
    if op == "note":
        return Change("", f"{seq}-0", collection, op, tuple(ids[:-1]), ids[-1])
    return Change("", f"{seq}-0", collection, op, tuple(ids))


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"sqlite: {exc}")


class SqliteStore:
    """DocumentStore on one SQLite file; safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        """Open (creating file and parent directory) the database at `path`.

        `timeout` is how long a statement waits on a lock held by another process before
        failing with StoreUnavailable. Raises StoreUnavailable if the file cannot be opened.
        """
        self._path = Path(path)
        self._timeout = timeout
        self._closed = False
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"sqlite: cannot create {self._path.parent}: {exc}") from exc
        try:
            self._writer = self._connect()
        except sqlite3.DatabaseError as exc:
            raise _unavailable(exc) from exc
        try:
            self._prepare_file()
        except sqlite3.DatabaseError as exc:  # locked, unreadable, or not a database at all
            self._writer.close()
            raise _unavailable(exc) from exc

    def _prepare_file(self) -> None:
        """WAL mode and the schema. Several processes opening a new file at once (`serve
        --workers N`) contend for it, and SQLite answers the switch to WAL with "database is
        locked" at once rather than through the busy timeout: retry within `timeout`."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._writer.execute("PRAGMA journal_mode=WAL").fetchone()
                self._writer.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- connections ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("sqlite: store is closed")

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection, inside one read transaction (a consistent snapshot)."""
        self._check_open()
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        clean = False
        try:
            if conn is None:
                conn = self._connect()
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
            clean = True
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc
        finally:
            if conn is not None:
                self._release(conn, clean)

    def _release(self, conn: sqlite3.Connection, clean: bool) -> None:
        if not clean and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                clean = False
            else:
                clean = True
        with self._pool_lock:
            keep = clean and not self._closed and len(self._idle) < _MAX_IDLE_READERS
            if keep:
                self._idle.append(conn)
        if not keep:
            conn.close()

    def _write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        """Run `fn` in one IMMEDIATE transaction on the writer; commit or roll back.

        `durable=False` commits without waiting for the disk (WAL with synchronous=NORMAL:
        atomic, and never corrupts the file, but a power loss may roll it back). For leases
        only: they coordinate live processes and mean nothing after a crash, and the fsync of a
        durable commit (~1-2 ms here) sat on every miss's path to the backend."""
        with self._write_lock:
            self._check_open()
            conn = self._writer
            if not durable:
                conn.execute("PRAGMA synchronous=NORMAL")  # not allowed inside a transaction
            try:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    raise _unavailable(exc) from exc
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                    return result
                except BaseException as exc:
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.OperationalError):
                        raise _unavailable(exc) from exc
                    raise
            finally:
                if not durable:
                    conn.execute("PRAGMA synchronous=FULL")

    @staticmethod
    def _require(conn: sqlite3.Connection, name: str) -> tuple[int, int]:
        row = conn.execute(
            "SELECT nrecords, nbytes FROM collections WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise CollectionMissing(name)
        return row[0], row[1]

    # -- collections ---------------------------------------------------------------------
    def create_collection(self, spec: CollectionSpec) -> str:
        text = encode_spec(spec)

        def op(conn: sqlite3.Connection) -> str:
            try:
                conn.execute(
                    "INSERT INTO collections (name, spec) VALUES (?, ?)", (spec.name, text)
                )
            except sqlite3.IntegrityError:
                raise CollectionExists(spec.name) from None
            return _log(conn, spec.name, "create")

        return self._write(op)

    def get_collection(self, name: str) -> CollectionSpec | None:
        with self._reader() as conn:
            row = conn.execute("SELECT spec FROM collections WHERE name = ?", (name,)).fetchone()
        return None if row is None else decode_spec(row[0])

    def list_collections(self) -> list[CollectionSpec]:
        with self._reader() as conn:
            rows = conn.execute("SELECT spec FROM collections ORDER BY name").fetchall()
        return [decode_spec(r[0]) for r in rows]

    def delete_collection(self, name: str) -> bool:
        def op(conn: sqlite3.Connection) -> bool:
            # Drop the collection row first so the per-row triggers have nothing to update.
            if conn.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount == 0:
                return False
            conn.execute("DELETE FROM records WHERE collection = ?", (name,))
            conn.execute("DELETE FROM blobs WHERE collection = ?", (name,))
            _log(conn, name, "drop")
            return True

        return self._write(op)

    # -- records -------------------------------------------------------------------------
    def put_records(
        self, collection: str, records: Sequence[StoredRecord], *, owner: str | None = None
    ) -> str:
        return one_outcome(self.put_many(collection, [RecordWrite(records, owner)]))

    def put_many(self, collection: str, writes: Sequence[RecordWrite]) -> list[str | Exception]:
        outcomes: list[str | Exception] = [""] * len(writes)
        valid: list[tuple[int, list[EncodedRecord], str | None]] = []
        for k, write in enumerate(writes):  # validate everything before writing
            try:
                valid.append((k, [encode_record(r) for r in write.records], write.owner))
            except (TypeError, ValueError) as exc:
                outcomes[k] = exc

        def op(conn: sqlite3.Connection) -> tuple[list[int], str]:
            self._require(conn, collection)
            landed: list[int] = []
            ids: dict[str, None] = {}
            for k, encoded, owner in valid:
                if not encoded:
                    continue
                if owner is not None:
                    try:
                        self._check_owner(conn, collection, [e.id for e in encoded], owner)
                    except OwnedByAnother as exc:  # this write only; the group goes on
                        outcomes[k] = exc
                        continue
                conn.executemany(
                    _UPSERT,
                    [
                        (
                            collection,
                            e.id,
                            e.owner,
                            e.tenants,
                            e.metadata,
                            e.nbytes,
                            e.vector,
                            e.payload,
                        )
                        for e in encoded
                    ],
                )
                landed.append(k)
                ids.update(dict.fromkeys(e.id for e in encoded))
            return landed, _log(conn, collection, "put", list(ids)) if ids else ""

        landed, position = self._write(op)
        for k in landed:
            outcomes[k] = position
        return outcomes

    def get_records(self, collection: str, ids: Iterable[str]) -> dict[str, StoredRecord]:
        wanted = unique_ids(ids)
        found: dict[str, StoredRecord] = {}
        with self._reader() as conn:
            self._require(conn, collection)
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT {_COLS} FROM records WHERE collection = ? AND id IN ({marks})",
                    (collection, *chunk),
                ):
                    found[row[0]] = decode_record(*row)
        return {i: found[i] for i in wanted if i in found}

    @staticmethod
    def _check_owner(
        conn: sqlite3.Connection, collection: str, ids: Sequence[str], owner: str
    ) -> None:
        """OwnedByAnother if one of `ids` exists with another owner (in the write's transaction,
        so the check and the write are one step)."""
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            row = conn.execute(
                f"SELECT id FROM records WHERE collection = ? AND id IN ({marks}) AND owner != ?"
                " LIMIT 1",
                (collection, *chunk, owner),
            ).fetchone()
            if row is not None:
                raise OwnedByAnother(collection, row[0])

    def delete_records(
        self, collection: str, ids: Iterable[str], *, owner: str | None = None
    ) -> Deleted:
        wanted = unique_ids(ids)

        def op(conn: sqlite3.Connection) -> Deleted:
            self._require(conn, collection)
            if owner is not None:
                self._check_owner(conn, collection, wanted, owner)
            deleted = 0
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                deleted += conn.execute(
                    f"DELETE FROM records WHERE collection = ? AND id IN ({marks})",
                    (collection, *chunk),
                ).rowcount
            return Deleted(deleted, _log(conn, collection, "delete", wanted) if deleted else "")

        return self._write(op)

    def set_tenants(
        self,
        collection: str,
        tenants_by_id: Mapping[str, Sequence[str]],
        *,
        expected: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    ) -> str:
        """Replace access lists; ids that do not exist are ignored (unless `expected`)."""
        wanted = (
            {rid: (o, encode_tenants(t, f"expected[{rid!r}]")) for rid, (o, t) in expected.items()}
            if expected is not None
            else None
        )
        rows: list[tuple[str, int, str, str]] = []
        for rid, tenants in tenants_by_id.items():
            if not isinstance(rid, str):
                raise TypeError(f"ids must be str, got {type(rid).__name__}")
            text = encode_tenants(tenants, f"record {rid!r}: tenants")
            rows.append((text, len(text.encode("utf-8")), collection, rid))

        def op(conn: sqlite3.Connection) -> str:
            self._require(conn, collection)
            if not rows:
                return ""
            if wanted is not None:  # the condition, in the write's own transaction
                for _, _, _, rid in rows:
                    now = conn.execute(
                        "SELECT owner, tenants FROM records WHERE collection = ? AND id = ?",
                        (collection, rid),
                    ).fetchone()
                    if now is None or tuple(now) != wanted.get(rid):
                        raise ChangedMeanwhile(collection, rid)
            conn.executemany(
                "UPDATE records SET tenants = ?, nbytes = nbytes - length(CAST(tenants AS BLOB)) + ?"
                " WHERE collection = ? AND id = ?",
                rows,
            )
            return _log(conn, collection, "access", [r[3] for r in rows])

        return self._write(op)

    def iter_records(self, collection: str, batch_size: int = 1024) -> Iterator[list[StoredRecord]]:
        """Batches in ascending id order (UTF-8 byte order), paged by id so writes may go on.

        CollectionMissing is raised by this call itself, not on the first `next()`.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        with self._reader() as conn:
            self._require(conn, collection)
        return self._pages(collection, batch_size)

    def _pages(self, collection: str, batch_size: int) -> Iterator[list[StoredRecord]]:
        base = f"SELECT {_COLS} FROM records WHERE collection = ?"
        after: str | None = None  # keyset cursor: the last id returned
        while True:
            with self._reader() as conn:
                args: tuple[str | int, ...]
                if after is None:
                    sql, args = f"{base} ORDER BY id LIMIT ?", (collection, batch_size)
                else:
                    sql, args = (
                        f"{base} AND id > ? ORDER BY id LIMIT ?",
                        (collection, after, batch_size),
                    )
                rows = conn.execute(sql, args).fetchall()
            if not rows:
                return
            yield [decode_record(*r) for r in rows]
            if len(rows) < batch_size:
                return
            after = rows[-1][0]

    def count(self, collection: str) -> int:
        with self._reader() as conn:
            return self._require(conn, collection)[0]

    def size_bytes(self, collection: str) -> int:
        """UTF-8 bytes of id, owner, tenants and metadata JSON plus vector and payload bytes."""
        with self._reader() as conn:
            return self._require(conn, collection)[1]

    # -- blobs ---------------------------------------------------------------------------
    def put_blob(self, collection: str, key: str, data: bytes, *, announce: bool = False) -> str:
        check_name(key, "blob key")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        value = memoryview(data).cast("B")

        def op(conn: sqlite3.Connection) -> str:
            self._require(conn, collection)
            # Written in pieces into a zeroblob: bound whole, a blob of tens of MB (an index
            # snapshot) left as much again in the process's RSS for good (bench/load/README.md,
            # "The first snapshot's RSS step").
            conn.execute(
                "INSERT INTO blobs (collection, key, data) VALUES (?, ?, zeroblob(?)) "
                "ON CONFLICT (collection, key) DO UPDATE SET data = excluded.data",
                (collection, key, len(value)),
            )
            (rowid,) = conn.execute(
                "SELECT rowid FROM blobs WHERE collection = ? AND key = ?", (collection, key)
            ).fetchone()
            with conn.blobopen("blobs", "data", rowid) as blob:
                for start in range(0, len(value), _BLOB_PIECE):
                    blob.write(value[start : start + _BLOB_PIECE])
            return _log(conn, collection, "blob", [key]) if announce else ""

        return self._write(op)

    def get_blob(self, collection: str, key: str) -> bytes | None:
        with self._reader() as conn:
            self._require(conn, collection)
            row = conn.execute(
                "SELECT data FROM blobs WHERE collection = ? AND key = ?", (collection, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def announce(self, collection: str, ids: Sequence[str], note: str) -> str:
        wanted = unique_ids(ids)

        def op(conn: sqlite3.Connection) -> str:
            self._require(conn, collection)
            return _log(conn, collection, "note", wanted, note)

        return self._write(op)

    # -- change log ----------------------------------------------------------------------
    def stream_of(self, collection: str) -> str:
        return ""

    def log_heads(self, streams: Iterable[str]) -> dict[str, str]:
        with self._reader() as conn:
            row = conn.execute("SELECT max(seq) FROM changes").fetchone()
        return dict.fromkeys(streams, f"{row[0] or 0}-0")

    def read_changes(self, cursors: Mapping[str, str], limit: int = 1024) -> list[Change]:
        """Changes after the cursor; a cursor older than the newest trimmed change gets a
        "reset" change (at that position) first: the changes in between are gone."""
        if "" not in cursors:
            return []
        after = position_key(cursors[""])[0]
        with self._reader() as conn:
            mark = conn.execute("SELECT seq FROM log_trimmed WHERE stream = ''").fetchone()
            rows = conn.execute(
                "SELECT seq, collection, op, ids FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        reset = [Change("", f"{mark[0]}-0", "", "reset")] if mark and mark[0] > after else []
        return reset + [_change(seq, c, op, ids) for seq, c, op, ids in rows]

    def trim_log(self, older_than_s: float) -> int:
        """Drop changes older than the cutoff and mark the newest one dropped (log_trimmed)."""
        cutoff = time.time() - older_than_s

        def op(conn: sqlite3.Connection) -> int:
            (last,) = conn.execute(
                "SELECT max(seq) FROM changes WHERE at < ?", (cutoff,)
            ).fetchone()
            if last is None:
                return 0
            conn.execute(
                "INSERT INTO log_trimmed (stream, seq) VALUES ('', ?) "
                "ON CONFLICT (stream) DO UPDATE SET seq = max(seq, excluded.seq)",
                (last,),
            )
            return int(conn.execute("DELETE FROM changes WHERE seq <= ?", (last,)).rowcount)

        return self._write(op)

    # -- leases ----------------------------------------------------------------------------
    def try_lease(self, key: str, holder: str, ttl_s: float) -> bool:
        now = time.time()

        def op(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT INTO leases (key, holder, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, "
                "expires = excluded.expires WHERE leases.expires <= ?",
                (key, holder, now + ttl_s, now),
            )
            row = conn.execute("SELECT holder FROM leases WHERE key = ?", (key,)).fetchone()
            return bool(row is not None and row[0] == holder)

        return self._write(op, durable=False)

    def release_lease(self, key: str, holder: str) -> None:
        self._write(
            lambda conn: conn.execute(
                "DELETE FROM leases WHERE key = ? AND holder = ?", (key, holder)
            ),
            durable=False,
        )

    # -- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        with self._reader() as conn:
            conn.execute("SELECT count(*) FROM collections").fetchone()

    def close(self) -> None:
        """Close every connection; later calls raise StoreUnavailable. Idempotent."""
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._writer.close()
        with self._pool_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __repr__(self) -> str:
        return f"SqliteStore({str(self._path)!r})"
