"""The store path (DESIGN §5): TTL checks, admission, then the write and the category's
quota and eviction as one step (across replicas when a `QuotaGuard` is shared).
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import nullcontext

from cache.admission import admit
from cache.bookkeeping import Bookkeeping
from cache.categories import Categories
from cache.errors import InvalidRequest
from cache.eviction import choose_victims
from cache.fingerprint import Prepared
from cache.options import CacheOptions
from cache.ports import Clock, EntryRepository, QuotaGuard
from cache.resolve import Resolver
from cache.stats import CacheStats
from cache.types import SHARED_TENANT, CachedResponse, CacheEntry, StoreReason, StoreResult


class StorePath:
    def __init__(
        self,
        *,
        repository: EntryRepository,
        clock: Clock,
        options: CacheOptions,
        categories: Categories,
        book: Bookkeeping,
        resolver: Resolver,
        stats: CacheStats,
        quota_guard: QuotaGuard | None,
    ) -> None:
        self._repo = repository
        self._clock = clock
        self._options = options
        self._categories = categories
        self._book = book
        self._resolver = resolver
        self._stats = stats
        self._quota_guard = quota_guard

    async def store(
        self,
        prep: Prepared,
        response: CachedResponse,
        *,
        ttl: float | None = None,
        shared: bool = False,
    ) -> StoreResult:
        """Admit and store `response` for a prepared request (see `SemanticCache.store`)."""
        req = prep.req
        category = await self._resolver.category(prep, {})
        policy = self._categories.policy(category)
        if ttl is not None:
            if (
                isinstance(ttl, bool)
                or not isinstance(ttl, (int, float))
                or not math.isfinite(ttl)
                or ttl <= 0
            ):
                raise InvalidRequest("ttl", "must be a positive number of seconds")
            if policy.max_ttl_s is not None and ttl > policy.max_ttl_s:
                raise InvalidRequest("ttl", f"above the category's max_ttl_s {policy.max_ttl_s}")
        verdict = admit(
            response=response,
            policy=policy,
            deterministic=prep.deterministic,
            no_store=req.no_store,
            max_bytes=self._options.max_response_bytes,
        )
        if not verdict.admitted:
            self._stats.refused(req.tenant, category, verdict.reason.value)
            return StoreResult(
                entry_id=None,
                category=category,
                stored=False,
                reason=verdict.reason,
                detail=verdict.detail,
            )
        vector = await self._resolver.vector(prep, {})
        now = self._clock.now()
        ttl_s = ttl if ttl is not None else self._categories.effective(category, req.model)[1]
        if req.max_ttl is not None:
            ttl_s = min(ttl_s, req.max_ttl)
        scope = SHARED_TENANT if shared else req.tenant
        entry = CacheEntry(
            entry_id=prep.exact_key(scope, category),
            category=category,
            tenant=req.tenant,
            shared=shared,
            prompt=prep.query,
            context_fp=prep.context_fp,
            model=prep.model,
            params_fp=prep.params_fp,
            core_params_fp=prep.core_fp,
            response_text=response.text,
            finish_reason=response.finish_reason,
            usage=response.usage,
            tool_calls=response.tool_calls,
            created_at=now,
            expires_at=now + float(ttl_s),
        )
        guard = self._quota_guard.hold(category) if self._quota_guard else nullcontext()
        async with guard:  # admission and eviction: one step across replicas
            await self._repo.put(entry, vector)
            self._book.remember(entry)
            victims = choose_victims(
                self._book.ledger(category), policy, tenant=req.tenant, now=now, keep=entry.entry_id
            )
            if victims:
                await self._repo.delete(victims)
                removed = self._book.remove(category, victims)
                for owner, n in Counter(m.tenant for m in removed).items():
                    self._stats.evicted(owner, category, n)
        self._stats.stored(req.tenant, category)
        return StoreResult(
            entry_id=entry.entry_id,
            category=category,
            stored=True,
            reason=StoreReason.STORED,
            expires_at=entry.expires_at,
        )
