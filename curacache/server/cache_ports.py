"""The semantic cache's ports, implemented over the service's own parts.

- `CollectionRepository`: every cache entry as a record of ONE internal vector collection
  (`cache::entries`; the colon keeps it out of reach of the public Collections/Vectors API,
  whose names are [A-Za-z0-9_.-]): tenants are the index's tenants, the category is an entry
  attribute, so one search covers all of a tenant's categories (DESIGN §5 step 5). Shared
  entries carry the reserved tenant "*" in their access list; a search also runs as "*" when
  any shared entry exists (DESIGN §2, cache.ports.EntryRepository).
  `adopt_legacy_collections` moves the entries of the earlier per-category collections
  (`cache:<category>`) into it at start-up.
- `RouterBackend`: the cache's Backend port over `curacache.llm.BackendRouter` (type
  translation only).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import numpy as np

from cache.types import (
    SHARED_TENANT,
    CacheEntry,
    Chunk,
    FinalResult,
    LookupRequest,
    ToolCall,
    ToolCallDelta,
)
from curacache.errors import AlreadyExists, InvalidArgument, NotFound
from curacache.llm.errors import UnknownModel
from curacache.llm.router import BackendRouter
from curacache.llm.types import Chunk as LlmChunk
from curacache.llm.types import GenerationRequest, Message
from curacache.server.collection import Collection, search_soon
from curacache.server.replica import Replica, make_token
from curacache.server.vectordb import VectorDB
from storage.base import DocumentStore
from storage.errors import StoreUnavailable
from storage.types import StoredRecord, position_key

COLLECTION_PREFIX = "cache:"
COLLECTION = "cache::entries"
_SCAN_BATCH = 1024


class CollectionRepository:
    """cache.ports.EntryRepository over one internal collection (created on first use)."""

    def __init__(
        self,
        *,
        db: VectorDB,
        dim: int,
        index_kind: str = "",
        index_params: Mapping[str, float] | None = None,
        name: str = COLLECTION,
    ) -> None:
        self._db = db
        self._name = name
        self._dim = dim
        self._index_kind = index_kind
        self._index_params = dict(index_params or {})
        self._collection: Collection | None = None

    @property
    def db(self) -> VectorDB:
        return self._db

    @property
    def name(self) -> str:
        return self._name

    def collection(self) -> Collection:
        """The collection, created on first use."""
        if self._collection is None:
            try:
                self._collection = self._db.get(self._name)
            except NotFound:  # first use of this category
                try:
                    self._db.create(
                        self._name,
                        dim=self._dim,
                        metric="cosine",
                        index_kind=self._index_kind,
                        params=self._index_params,
                    )
                except AlreadyExists:  # another replica created it first: load it now
                    self._db.open_existing(self._name)
                self._collection = self._db.get(self._name)
        return self._collection

    async def put(self, entry: CacheEntry, vector: np.ndarray) -> None:
        record = StoredRecord(
            id=entry.entry_id,
            vector=np.ascontiguousarray(vector, dtype="<f4").tobytes(),
            owner=entry.tenant,
            tenants=entry.access_list(),
            payload=entry.to_bytes(),
            metadata=entry.metadata(),
        )
        collection = self.collection()
        await asyncio.to_thread(collection.upsert, entry.tenant, [record], admin=True)

    async def get(self, entry_ids: Sequence[str]) -> dict[str, CacheEntry]:
        collection = self.collection()
        found = await asyncio.to_thread(
            self._db.store.get_records, collection.spec.name, list(entry_ids)
        )
        return {rid: CacheEntry.from_bytes(rec.payload) for rid, rec in found.items()}

    async def delete(self, entry_ids: Sequence[str]) -> int:
        if not entry_ids:
            return 0
        collection = self.collection()
        written = await asyncio.to_thread(
            collection.delete, SHARED_TENANT, list(entry_ids), admin=True
        )
        return written.records

    async def search(self, vector: np.ndarray, tenant: str, k: int) -> list[tuple[str, float]]:
        collection = self.collection()
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scopes = (tenant, SHARED_TENANT) if collection.visible_count(SHARED_TENANT) else (tenant,)
        best: dict[str, float] = {}
        for who in scopes:
            for hit in (await search_soon(collection, who, q, k, {}, with_payload=False))[0]:
                best[hit.id] = max(hit.score, best.get(hit.id, -1.0))
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    async def scan(self) -> AsyncIterator[CacheEntry]:
        collection = self.collection()
        batches = iter(self._db.store.iter_records(collection.spec.name, _SCAN_BATCH))
        while True:
            batch = await asyncio.to_thread(next, batches, None)
            if batch is None:
                return
            for rec in batch:
                yield CacheEntry.from_bytes(rec.payload)


def adopt_legacy_collections(db: VectorDB, repository: CollectionRepository) -> int:
    """Move the entries of the per-category collections of earlier versions (`cache:<category>`)
    into the one cache collection, then drop them; returns how many entries moved. Records keep
    their ids, owners, access lists and payloads, so nothing a client holds changes."""
    moved = 0
    for spec in db.list(internal=True):
        if not spec.name.startswith(COLLECTION_PREFIX) or spec.name == repository.name:
            continue
        target = repository.collection()
        for batch in db.store.iter_records(spec.name, _SCAN_BATCH):
            target.upsert(SHARED_TENANT, list(batch), admin=True)
            moved += len(batch)
        db.delete(spec.name)
    return moved


class StoreLeases:
    """`cache.ports.Leases` in the document store: shared by every replica of that store."""

    def __init__(self, store: DocumentStore, *, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s

    async def acquire(self, key: str) -> str | None:
        token = uuid.uuid4().hex
        taken = await asyncio.to_thread(self._store.try_lease, key, token, self._ttl_s)
        return token if taken else None

    async def release(self, key: str, token: str) -> None:
        await asyncio.to_thread(self._store.release_lease, key, token)


class StoreQuotaGuard:
    """`cache.ports.QuotaGuard` over the store: a lease per category, shared by every replica
    of the store, then this replica's tail caught up to the store's log head for the cache's
    collection, so its ledger counts every entry the store holds. Cost: a lease round trip
    and at most one tail poll per store (the miss path, which waited for a backend)."""

    def __init__(
        self,
        store: DocumentStore,
        replica: Replica,
        repository: CollectionRepository,
        *,
        ttl_s: float = 10.0,
        wait_s: float = 10.0,
        poll_s: float = 0.002,
    ) -> None:
        self._store = store
        self._replica = replica
        self._repository = repository
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._poll_s = poll_s
        # Stores of one category in this process queue here, not by polling the store's lease
        # (which only other processes then contend for).
        self._local: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @asynccontextmanager
    async def hold(self, category: str) -> AsyncIterator[None]:
        async with self._local[category], self._store_lease(category):
            yield

    @asynccontextmanager
    async def _store_lease(self, category: str) -> AsyncIterator[None]:
        key, token = f"quota:{self._repository.name}:{category}", uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while not await asyncio.to_thread(self._store.try_lease, key, token, self._ttl_s):
            if loop.time() > deadline:
                raise StoreUnavailable(f"cache quota of category {category!r}: busy elsewhere")
            await asyncio.sleep(self._poll_s)
        try:
            stream = self._store.stream_of(self._repository.collection().spec.name)
            head = (await asyncio.to_thread(self._store.log_heads, [stream]))[stream]
            caught_up = position_key(head) <= (0, 0) or await self._replica.wait_for(
                make_token(stream, head), max(deadline - loop.time(), 0.0)
            )
            if not caught_up:
                raise StoreUnavailable("cache quota: this replica is behind the change log")
            yield
        finally:
            await asyncio.to_thread(self._store.release_lease, key, token)


class RouterBackend:
    """cache.ports.Backend over the LLM router: requests and stream items translated."""

    def __init__(self, *, router: BackendRouter, default_model: str | None = None) -> None:
        self._router = router
        self._default_model = default_model or next(iter(router.models()), None)

    def load(self, model: str | None) -> float:
        """Load of the backend a miss would go to; 0 when none serves the model (then nothing
        is generated here, and lookups and stores need not adapt)."""
        try:
            return self._router.load(model)
        except UnknownModel:
            return 0.0

    async def stream(self, request: LookupRequest) -> AsyncIterator[Chunk | FinalResult]:
        model = request.model or self._default_model
        if not model:
            raise InvalidArgument("query.model", "is required (no default model is configured)")
        generation = GenerationRequest(
            model=model,
            messages=tuple(Message(role, content) for role, content in request.messages)
            if request.messages
            else None,
            prompt=request.prompt,
            params=_backend_params(request.params),
            stream=True,
        )
        async for item in self._router.stream(generation):
            if isinstance(item, LlmChunk):
                d = item.tool_call
                yield Chunk(
                    text=item.text,
                    tool_call=None
                    if d is None
                    else ToolCallDelta(d.index, d.id, d.name, d.arguments),
                )
            else:
                u = item.usage
                yield FinalResult(
                    text=item.text,
                    finish_reason=item.finish_reason or "stop",
                    tool_calls=tuple(ToolCall(c.id, c.name, c.arguments) for c in item.tool_calls),
                    usage={
                        "prompt_tokens": u.prompt_tokens,
                        "completion_tokens": u.completion_tokens,
                        "total_tokens": u.total_tokens,
                    },
                )


def _backend_params(params: Mapping[str, object]) -> dict[str, object]:
    return {k: _json_ready(v) for k, v in params.items() if v is not None}


def _json_ready(value: object) -> object:
    """The cache freezes params (read-only mappings, tuples); the wire needs dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_json_ready(v) for v in value]
    return value
