"""RedisStore: the production DocumentStore on Redis, standalone or Cluster (redis-py, sync).

Key layout (every key of a collection shares the hash tag `{name}`, so one slot holds it):

    {prefix}:collections            hash   name -> CollectionSpec JSON (the registry, for listing)
    {prefix}:{{prefix}:collections}:registry-log
                                    stream create/drop changes (same slot as the registry)
    {prefix}:{{prefix}:collections}:registry-trimmed
                                    string newest registry-log position trimmed away
    {prefix}:{name}:spec            string CollectionSpec JSON: the collection exists
    {prefix}:{name}:log             stream the collection's change log
    {prefix}:{name}:trimmed         string newest log position trimmed away (see trim_log)
    {prefix}:{name}:r:{id}          hash   v vector, o owner, t tenants JSON, p payload,
                                           m metadata JSON, n stored bytes of the record
    {prefix}:{name}:ids             zset   every id at score 0 (lexicographic paging, ZCARD)
    {prefix}:{name}:bytes           string running total of `n` (O(1) size_bytes)
    {prefix}:{name}:b:{key}         string blob
    {prefix}:{name}:blobs           set    blob keys (so delete_collection finds them)

Writes are small Lua scripts (`storage._redis_scripts`): each one checks the collection's
`spec` key, writes, updates the byte counter and appends to the collection's log stream
(XADD) in one atomic step, so a batch lands whole, never lands in a deleted collection, and
is logged if and only if it landed. Every key a script touches shares one hash slot, so the same scripts run on Redis
Cluster (the client routes them by KEYS[1]; MOVED/ASK are followed by redis-py). Lua cannot
roll back, so records are fully validated in Python before the script is sent.

Creating and dropping a collection touch two slots (the registry's and the collection's) and
so are two atomic steps, ordered so that a failure between them never leaves records that a
later collection of the same name would inherit, and so that a replica that reads the
registry's log finds the collection writable: create writes `spec` (SET NX: the name's claim)
before the registry entry and its log; drop deletes `spec` and the data before the registry
entry.

Missing collections: like SqliteStore, every method naming a collection raises
CollectionMissing when it does not exist; get_collection/delete_collection return None/False.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, cast

import redis
from redis import exceptions as rexc
from redis.cluster import RedisCluster

from storage import _redis_scripts as lua
from storage._codec import (
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
from storage.redis_connect import connect
from storage.types import (
    Change,
    CollectionSpec,
    Deleted,
    RecordWrite,
    StoredRecord,
    one_outcome,
    position_key,
)

__all__ = ["RedisStore"]


# Server replies that mean "not now" rather than "bad request".
_TRANSIENT_REPLIES = (
    "MISCONF",
    "OOM",
    "LOADING",
    "BUSY",
    "READONLY",
    "NOREPLICAS",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
)


# Replies that mean "this slot is served elsewhere now" (after a failover or resharding).
_REROUTE_REPLIES = ("MOVED", "ASK", "READONLY", "CLUSTERDOWN", "TRYAGAIN")


@contextmanager
def _mapped() -> Iterator[None]:
    """Translate redis-py failures that mean 'Redis is unavailable' to StoreUnavailable."""
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError) as exc:  # incl. BusyLoadingError
        raise StoreUnavailable(f"redis: {exc}") from exc
    except (rexc.ClusterError, rexc.SlotNotCoveredError) as exc:  # failover in progress
        raise StoreUnavailable(f"redis: {exc}") from exc
    except rexc.ResponseError as exc:
        if str(exc).startswith(_TRANSIENT_REPLIES):
            raise StoreUnavailable(f"redis: {exc}") from exc
        raise


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dumps_ids(ids: Sequence[str]) -> str:
    return json.dumps(list(ids), ensure_ascii=False, separators=(",", ":"))


def _check_tag_safe(text: str, what: str) -> str:
    check_name(text, what)
    if "{" in text or "}" in text:
        raise ValueError(f"{what} must not contain '{{' or '}}' (they delimit the hash tag)")
    return text


class RedisStore:
    """DocumentStore on Redis or Redis Cluster; thread-safe (redis-py's connection pool is)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "cc",
        client: redis.Redis | RedisCluster | None = None,
        socket_timeout: float = 30.0,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        """Connect lazily to `url` (see `storage.redis_connect.connect`: standalone, a
        comma-separated or cluster-enabled node list, or Sentinel); ping() checks reachability.

        `client` replaces the URL (any redis.Redis or RedisCluster); it must use
        decode_responses=False and is not closed by close(). `socket_timeout` bounds a single
        command, sized for large batches and delete_collection on big collections.

        `wait_replicas` > 0: every write is followed, on the same connection to the same
        master, by `WAIT wait_replicas wait_timeout_ms`, and acknowledged only if that many
        replicas have it (else StoreUnavailable: the write may or may not survive a
        failover). Redis replicates asynchronously, so this is what makes "acknowledged
        means kept" hold when a master dies and its replica is promoted.
        """
        if wait_replicas < 0 or wait_timeout_ms < 0:
            raise ValueError("wait_replicas and wait_timeout_ms must be >= 0")
        self._wait_replicas = wait_replicas
        self._wait_timeout_ms = wait_timeout_ms
        self._url = url
        self._prefix = _check_tag_safe(prefix, "prefix")
        self._registry = f"{prefix}:collections".encode()
        self._registry_log = f"{prefix}:{{{prefix}:collections}}:registry-log".encode()
        self._registry_trimmed = f"{prefix}:{{{prefix}:collections}}:registry-trimmed".encode()
        self._owns_client = client is None
        if client is None:
            client = connect(url, socket_timeout=socket_timeout)
        if client.get_encoder().decode_responses:
            raise ValueError("RedisStore needs a client with decode_responses=False")
        self._r: Any = client
        self._closed = False
        self._put_many = client.register_script(lua.PUT_MANY)
        self._delete = client.register_script(lua.DELETE)
        self._set_tenants = client.register_script(lua.SET_TENANTS)
        self._put_blob = client.register_script(lua.PUT_BLOB)
        self._release_lease = client.register_script(lua.RELEASE_LEASE)
        self._drop = client.register_script(lua.DROP)
        self._register = client.register_script(lua.REGISTER)
        self._unregister = client.register_script(lua.UNREGISTER)
        self._trim = client.register_script(lua.TRIM)
        self._announce = client.register_script(lua.ANNOUNCE)

    @property
    def is_cluster(self) -> bool:
        return isinstance(self._r, RedisCluster)

    # -- helpers -------------------------------------------------------------------------
    def _base(self, collection: str) -> bytes:
        _check_tag_safe(collection, "collection name")
        return f"{self._prefix}:{{{collection}}}:".encode()

    def _client(self) -> Any:
        if self._closed:
            raise StoreUnavailable("redis: store is closed")
        return self._r

    def _write(self, key: bytes, enqueue: Callable[[Any], Any]) -> Any:
        """Run one write (`enqueue(client)`), then WAIT for replicas when configured.

        WAIT counts the replicas that have this connection's writes, so it must follow the
        write on the same connection: a pipeline on the master that owns `key`."""
        client = self._client()
        if not self._wait_replicas:
            with _mapped():
                return enqueue(client)
        node = client.get_node_from_key(key).redis_connection if self.is_cluster else client
        pipe = node.pipeline(transaction=False)
        enqueue(pipe)
        pipe.execute_command("WAIT", self._wait_replicas, self._wait_timeout_ms)
        try:
            with _mapped():
                result, acked = pipe.execute()
        except (StoreUnavailable, rexc.ResponseError) as exc:
            # This pipeline went around the cluster client's routing, so a failover (dead
            # master, MOVED, READONLY) must refresh its slot map by hand before a retry.
            if self.is_cluster:
                with suppress(rexc.RedisError):
                    client.nodes_manager.initialize()
            if isinstance(exc, StoreUnavailable) or str(exc).startswith(_REROUTE_REPLIES):
                raise StoreUnavailable(f"redis: {exc}") from exc
            raise
        if int(acked) < self._wait_replicas:
            raise StoreUnavailable(
                f"redis: write reached {acked} of {self._wait_replicas} replicas within "
                f"{self._wait_timeout_ms} ms; it may not survive a failover"
            )
        return result

    def _script(
        self, script: Any, collection: str, ids: Sequence[str], args: list[Any]
    ) -> tuple[int, str]:
        base = self._base(collection)
        keys = [base + b"spec", base + b"log"]
        logged = _dumps_ids(ids)
        result = self._write(
            keys[0], lambda c: script(keys=keys, args=[base, logged, *args], client=c)
        )
        if result == lua.MISSING:
            raise CollectionMissing(collection)
        count, position = result
        if count == lua.OWNED_BY_ANOTHER:
            raise OwnedByAnother(collection, _text(position))
        if count == lua.CHANGED_MEANWHILE:
            raise ChangedMeanwhile(collection, _text(position))
        return int(count), _text(position)

    def _with_exists(self, collection: str, *commands: tuple[str, bytes]) -> list[Any]:
        """Run EXISTS(spec) plus read commands in one MULTI; CollectionMissing if absent."""
        base = self._base(collection)
        pipe = self._client().pipeline(transaction=True)
        pipe.exists(base + b"spec")
        for cmd, suffix in commands:
            getattr(pipe, cmd)(base + suffix)
        with _mapped():
            exists, *rest = pipe.execute()
        if not exists:
            raise CollectionMissing(collection)
        return cast(list[Any], rest)

    @staticmethod
    def _decode(rid: str, h: dict[bytes, bytes]) -> StoredRecord:
        return decode_record(rid, h[b"v"], h[b"o"].decode(), h[b"t"], h[b"p"], h[b"m"])

    # -- collections ---------------------------------------------------------------------
    def create_collection(self, spec: CollectionSpec) -> str:
        text = encode_spec(spec)
        spec_key = self._base(spec.name) + b"spec"
        # `spec` first: once the registry (and its log, which replicas tail) names the
        # collection, it is already writable. A crash between the two steps leaves `spec`
        # alone: the name then reads as missing but is refused by create (CollectionExists)
        # until delete_collection clears it.
        if not self._write(spec_key, lambda c: c.set(spec_key, text, nx=True)):
            raise CollectionExists(spec.name)
        keys = [self._registry, self._registry_log]
        position = self._write(
            keys[0], lambda c: self._register(keys=keys, args=[spec.name, text], client=c)
        )
        if position == lua.MISSING:
            raise CollectionExists(spec.name)
        return _text(position)

    def get_collection(self, name: str) -> CollectionSpec | None:
        with _mapped():
            raw = self._client().hget(self._registry, name)
        return None if raw is None else decode_spec(raw)

    def list_collections(self) -> list[CollectionSpec]:
        with _mapped():
            raw = self._client().hgetall(self._registry)
        return [decode_spec(v) for _, v in sorted(raw.items())]

    def delete_collection(self, name: str) -> bool:
        """Two atomic steps (data, then registry); the first blocks the collection's Redis
        node for roughly 1 µs per record while it runs."""
        base = self._base(name)
        keys = [base + b"spec", base + b"log"]
        self._write(keys[0], lambda c: self._drop(keys=keys, args=[base], client=c))
        registry = [self._registry, self._registry_log]
        return bool(
            self._write(
                registry[0], lambda c: self._unregister(keys=registry, args=[name], client=c)
            )
        )

    # -- records -------------------------------------------------------------------------
    def put_records(
        self, collection: str, records: Sequence[StoredRecord], *, owner: str | None = None
    ) -> str:
        return one_outcome(self.put_many(collection, [RecordWrite(records, owner)]))

    def put_many(self, collection: str, writes: Sequence[RecordWrite]) -> list[str | Exception]:
        outcomes: list[str | Exception | None] = [None] * len(writes)
        args: list[Any] = []
        sent: list[int] = []
        for k, write in enumerate(writes):  # validate everything before anything is sent
            try:
                encoded = [encode_record(r) for r in write.records]
            except (TypeError, ValueError) as exc:
                outcomes[k] = exc
                continue
            args += [write.owner or "", len(encoded)]
            for e in encoded:
                args += [e.id, e.vector, e.owner, e.tenants, e.payload, e.metadata, e.nbytes]
            sent.append(k)
        base = self._base(collection)
        keys = [base + b"spec", base + b"log"]
        result = self._write(
            keys[0], lambda c: self._put_many(keys=keys, args=[base, *args], client=c)
        )
        if result == lua.MISSING:
            raise CollectionMissing(collection)
        refused, position = result
        for k, why in zip(sent, refused, strict=True):
            if why == 0:
                outcomes[k] = _text(position) if writes[k].records else ""
            else:
                outcomes[k] = OwnedByAnother(collection, _text(why))
        return cast(list[str | Exception], outcomes)

    def get_records(self, collection: str, ids: Iterable[str]) -> dict[str, StoredRecord]:
        wanted = unique_ids(ids)
        hashes = self._with_exists(collection, *(("hgetall", b"r:" + i.encode()) for i in wanted))
        return {i: self._decode(i, h) for i, h in zip(wanted, hashes) if h}

    def delete_records(
        self, collection: str, ids: Iterable[str], *, owner: str | None = None
    ) -> Deleted:
        wanted = list(unique_ids(ids))
        return Deleted(*self._script(self._delete, collection, wanted, [owner or "", *wanted]))

    def set_tenants(
        self,
        collection: str,
        tenants_by_id: Mapping[str, Sequence[str]],
        *,
        expected: Mapping[str, tuple[str, Sequence[str]]] | None = None,
    ) -> str:
        """Replace access lists; ids that do not exist are ignored (unless `expected`)."""
        args: list[str] = ["1" if expected is not None else "0"]
        for rid, tenants in tenants_by_id.items():
            if not isinstance(rid, str):
                raise TypeError(f"ids must be str, got {type(rid).__name__}")
            owner, before = expected[rid] if expected is not None else ("", ())
            args += [
                rid,
                encode_tenants(tenants, f"record {rid!r}: tenants"),
                owner,
                encode_tenants(before, f"expected[{rid!r}]"),
            ]
        return self._script(self._set_tenants, collection, list(tenants_by_id), args)[1]

    def iter_records(self, collection: str, batch_size: int = 1024) -> Iterator[list[StoredRecord]]:
        """Batches in ascending id order (UTF-8 byte order), paged by id so writes may go on.

        CollectionMissing is raised by this call itself, not on the first `next()`.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._with_exists(collection)
        return self._pages(collection, batch_size)

    def _pages(self, collection: str, batch_size: int) -> Iterator[list[StoredRecord]]:
        base = self._base(collection)
        lower = b"-"
        while True:
            client = self._client()
            with _mapped():
                # The client is made with decode_responses=False: members come back as bytes.
                ids = cast(
                    list[bytes],
                    client.zrangebylex(base + b"ids", lower, b"+", start=0, num=batch_size),
                )
                if not ids:
                    return
                pipe = client.pipeline(transaction=False)
                for i in ids:
                    pipe.hgetall(base + b"r:" + i)
                hashes = pipe.execute()
            # A record deleted between the two round trips is simply skipped.
            batch = [self._decode(i.decode(), h) for i, h in zip(ids, hashes) if h]
            if batch:
                yield batch
            if len(ids) < batch_size:
                return
            lower = b"(" + ids[-1]

    def count(self, collection: str) -> int:
        return int(self._with_exists(collection, ("zcard", b"ids"))[0])

    def size_bytes(self, collection: str) -> int:
        """UTF-8 bytes of id, owner, tenants and metadata JSON plus vector and payload bytes."""
        raw = self._with_exists(collection, ("get", b"bytes"))[0]
        return int(raw or 0)

    # -- blobs ---------------------------------------------------------------------------
    def put_blob(self, collection: str, key: str, data: bytes, *, announce: bool = False) -> str:
        check_name(key, "blob key")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"blob data must be bytes, got {type(data).__name__}")
        _, position = self._script(
            self._put_blob, collection, [key], [key, bytes(data), b"1" if announce else b"0"]
        )
        return position

    def get_blob(self, collection: str, key: str) -> bytes | None:
        raw = self._with_exists(collection, ("get", b"b:" + key.encode()))[0]
        return None if raw is None else bytes(raw)

    def announce(self, collection: str, ids: Sequence[str], note: str) -> str:
        wanted = list(unique_ids(ids))
        return self._script(self._announce, collection, wanted, [note.encode()])[1]

    # -- change log ----------------------------------------------------------------------
    def stream_of(self, collection: str) -> str:
        self._base(collection)
        return collection

    def _stream_key(self, stream: str) -> bytes:
        return self._registry_log if stream == "" else self._base(stream) + b"log"

    def log_heads(self, streams: Iterable[str]) -> dict[str, str]:
        names = list(streams)
        pipe = self._client().pipeline(transaction=False)
        for name in names:
            pipe.xrevrange(self._stream_key(name), count=1)
        with _mapped():
            tails = pipe.execute()
        return {n: _text(t[0][0]) if t else "0-0" for n, t in zip(names, tails, strict=True)}

    def _trimmed_key(self, stream: str) -> bytes:
        return self._registry_trimmed if stream == "" else self._base(stream) + b"trimmed"

    def read_changes(self, cursors: Mapping[str, str], limit: int = 1024) -> list[Change]:
        """One pipelined XRANGE per stream (a single XREAD cannot span Cluster slots), with
        the stream's trimmed mark: a cursor older than it gets a "reset" change first."""
        names = list(cursors)
        pipe = self._client().pipeline(transaction=False)
        for name in names:
            pipe.get(self._trimmed_key(name))
            pipe.xrange(self._stream_key(name), min=b"(" + cursors[name].encode(), count=limit)
        with _mapped():
            replies = pipe.execute()
        changes = []
        for i, name in enumerate(names):
            trimmed, entries = replies[2 * i], replies[2 * i + 1]
            if trimmed is not None and position_key(cursors[name]) < position_key(_text(trimmed)):
                changes.append(Change(name, _text(trimmed), name, "reset"))
            for entry_id, fields in entries:
                op = _text(fields[b"op"])
                if name == "":
                    changes.append(Change("", _text(entry_id), _text(fields[b"collection"]), op))
                else:
                    ids = tuple(json.loads(fields[b"ids"]))
                    note = _text(fields.get(b"note", b""))
                    changes.append(Change(name, _text(entry_id), name, op, ids, note))
        return changes

    def trim_log(self, older_than_s: float) -> int:
        """XTRIM MINID on every stream (stream ids start with their append time in ms), each
        with its trimmed mark in one script: one stream at a time, each in its own slot."""
        cutoff = f"{int((time.time() - older_than_s) * 1000)}-0"
        trimmed = 0
        for name in ["", *(s.name for s in self.list_collections())]:
            keys = [self._stream_key(name), self._trimmed_key(name)]
            with _mapped():
                trimmed += int(self._trim(keys=keys, args=[cutoff], client=self._client()))
        return trimmed

    # -- leases ----------------------------------------------------------------------------
    # Not WAITed for: a lease lost in a failover costs at most one duplicate backend call.
    def try_lease(self, key: str, holder: str, ttl_s: float) -> bool:
        with _mapped():
            taken = self._client().set(
                self._lease_key(key), holder.encode(), nx=True, px=max(1, int(ttl_s * 1000))
            )
        return bool(taken)

    def release_lease(self, key: str, holder: str) -> None:
        client = self._client()
        with _mapped():
            self._release_lease(keys=[self._lease_key(key)], args=[holder.encode()], client=client)

    def _lease_key(self, key: str) -> bytes:
        return f"{self._prefix}:lease:".encode() + key.encode()

    # -- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        with _mapped():
            self._client().ping()

    def close(self) -> None:
        """Release connections (only of a client this store created). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self._r.close()

    def __repr__(self) -> str:
        return f"RedisStore({self._url!r}, prefix={self._prefix!r})"
