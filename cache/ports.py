"""The ports: the small Protocols the cache needs from the outside world.

`cache` never constructs any of these; the server (the one composition root) wires them to
the vector collections + document store, the embedder and the LLM backend client, and tests
wire them to the in-memory fakes in `cache.testing`. Keeping them this narrow is what lets
the whole cache policy be unit-tested without I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

import numpy as np

from cache.types import CacheEntry, Chunk, FinalResult, LookupRequest


@runtime_checkable
class Clock(Protocol):
    """Injectable time, so TTL, LRU and step-timing tests need no sleep."""

    def now(self) -> float:
        """Wall-clock seconds since the epoch: created_at, expires_at, last_hit_at."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock: step timings and backend latency."""


@runtime_checkable
class Embedder(Protocol):
    """Text -> unit vectors (cosine). Concurrent calls may be batched by the implementation."""

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 array of unit-norm rows."""


@runtime_checkable
class EntryRepository(Protocol):
    """Every cache entry, of every category: an internal vector collection plus its documents.

    The category is an attribute of the entry (it sets policy, not a partition: DESIGN §5),
    so one search covers all of a tenant's entries. Server implementation (DESIGN §2): one
    collection (`dim` = embedder dim, metric cosine), tenants as the index's tenants. An entry
    is a record with id = `entry.entry_id`, vector, owner = `entry.tenant`, tenants =
    `entry.access_list()` (the owner, plus the reserved tenant `cache.types.SHARED_TENANT` =
    "*" when `entry.shared`), payload = `entry.to_bytes()` and metadata = `entry.metadata()`.
    Shared visibility: `search` also runs as "*" (when shared entries exist) and merges the
    two top-k lists by similarity (deduplicating ids).
    The service re-checks `entry.visible_to(tenant)` on everything it fetches, so a
    repository bug cannot leak another tenant's private entry.
    """

    async def put(self, entry: CacheEntry, vector: np.ndarray) -> None:
        """Insert or replace (same entry_id) the entry; durable in the store before it returns."""

    async def get(self, entry_ids: Sequence[str]) -> dict[str, CacheEntry]:
        """The entries that exist, by id (no visibility filter: the caller checks)."""

    async def delete(self, entry_ids: Sequence[str]) -> int:
        """Remove from index and store; returns how many existed. Absent ids are skipped."""

    async def search(self, vector: np.ndarray, tenant: str, k: int) -> list[tuple[str, float]]:
        """Up to k (entry_id, cosine similarity) best first, over the entries `tenant` may see:
        its private ones and the shared ones. `vector` is a unit float32 row."""

    def scan(self) -> AsyncIterator[CacheEntry]:
        """Every entry (start-up rebuild of the service's bookkeeping)."""


@runtime_checkable
class Backend(Protocol):
    """The OpenAI-compatible LLM backend client (routes by model itself)."""

    def load(self, model: str | None) -> float:
        """Current load L in [0, 1] of the backend serving `model` (None: the default)."""

    def stream(self, request: LookupRequest) -> AsyncIterator[Chunk | FinalResult]:
        """Generate for `request` (prompt or messages, model, params): text chunks, then exactly
        one FinalResult (finish_reason, usage; `text` may be "" when chunks carried it).
        Errors (HTTP 4xx/5xx, dropped stream, timeout) are raised, never yielded as text."""


@runtime_checkable
class Leases(Protocol):
    """Who leads a miss across processes (DESIGN §6): replicas of one store share the leases,
    so equivalent concurrent misses on different replicas still make one backend call.
    Within a process `cache.singleflight` already joins them; this is the step beyond it."""

    async def acquire(self, key: str) -> str | None:
        """A holder token if this process now leads `key`, None while another one does.
        A lease lapses by itself after a bounded time (a leader that died frees it)."""

    async def release(self, key: str, token: str) -> None:
        """Give the lease back (a no-op once it has lapsed or passed to another holder)."""


@runtime_checkable
class QuotaGuard(Protocol):
    """Makes a category's admission and eviction one step across replicas (DESIGN §6: quota
    counts are the store's). Without it each replica counts the entries it knows and two of
    them may each admit an entry at the quota."""

    def hold(self, category: str) -> AbstractAsyncContextManager[None]:
        """Exclusive across the replicas of one store while held. On entry the entries this
        process knows (those `SemanticCache.observe` was told of) are caught up with the
        store, so the ledger's counts are the store's and no other replica changes them."""


@runtime_checkable
class Classifier(Protocol):
    """Prompt embedding -> (category, confidence in [0, 1]). Cheap and synchronous
    (a linear model over the embedding); the service falls back to `default` under its floor."""

    def classify(self, vector: np.ndarray) -> tuple[str, float]: ...
