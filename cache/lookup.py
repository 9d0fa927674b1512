"""The lookup path (DESIGN §5), every step timed into Stats:
1. validate (LookupRequest does it on construction; the server resolved the tenant);
2. category: the caller's, else the one this exact prompt was stored under, else the
   classifier over the prompt embedding (confidence below the floor -> `default`);
3. exact fast path: get by the exact key (tenant scope, then shared scope);
4. break-even: a category whose semantic path does not pay for itself skips it (probing);
5. embed the query (unless the request carried an embedding), search ALL the tenant's
   entries (every category, plus shared ones) in one search, top `search_k`: the category
   sets policy, not a partition, so a paraphrase the classifier files elsewhere is found;
6. a hit needs similarity >= the effective threshold (load-adapted, calibrated) of the
   stricter of the lookup's and the entry's categories (strict categories stay strict), an
   unexpired entry visible to the tenant, and matching model, context and params
   fingerprints; otherwise the reason of the most similar failure is reported;
7. record the outcome (counters, rolling hit rate, ledger hits for eviction).
"""

from __future__ import annotations

from cache.bookkeeping import Bookkeeping
from cache.categories import Categories
from cache.fingerprint import Prepared
from cache.matching import below_threshold, why_not
from cache.options import CacheOptions
from cache.policy import CategoryPolicy
from cache.ports import Clock, EntryRepository
from cache.resolve import Resolver, ms
from cache.stats import CacheStats
from cache.types import SHARED_TENANT, CacheEntry, LookupRequest, LookupResult, Reason


class LookupPath:
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
        replicated: bool,
    ) -> None:
        """`replicated`: other processes store into the same repository (shared leases)."""
        self._repo = repository
        self._clock = clock
        self._options = options
        self._categories = categories
        self._book = book
        self._resolver = resolver
        self._stats = stats
        self._replicated = replicated

    async def lookup(self, req: LookupRequest) -> tuple[LookupResult, Prepared]:
        """The lookup's result, and the prepared request (for Generate to reuse)."""
        prep = await self._resolver.prepare(req)
        if req.no_cache:
            return LookupResult(
                hit=False,
                reason=Reason.NO_CACHE,
                category=req.category,
                detail="request marked no-cache",
            ), prep
        steps: dict[str, float] = {}
        category = await self._resolver.category(prep, steps)
        policy = self._categories.policy(category)
        if not policy.enabled:
            result = LookupResult(
                hit=False,
                reason=Reason.DISABLED,
                category=category,
                detail=f"caching is disabled for category {category!r}",
            )
            self._stats.lookup(req.tenant, category, result.reason, steps, None)
            return result, prep
        if not cacheable(prep, policy):
            result = LookupResult(
                hit=False,
                reason=Reason.NONDETERMINISTIC,
                category=category,
                detail="temperature > 0 without seed; the category does not cache sampled answers",
            )
            self._stats.lookup(req.tenant, category, result.reason, steps, None)
            return result, prep
        now = self._clock.now()
        threshold, _ = self._categories.effective(category, req.model)
        if req.min_similarity is not None:
            threshold = max(threshold, req.min_similarity)  # the caller may only be stricter
        t0 = self._clock.monotonic()
        exact, exact_failure = await self._exact(prep, category, policy, now)
        steps["exact"] = ms(self._clock.monotonic() - t0)
        if exact is not None:
            self._stats.lookup(req.tenant, category, exact.reason, steps, None)
            return exact, prep
        if self._stats.should_skip(category):
            result = exact_failure or LookupResult(
                hit=False,
                reason=Reason.BREAK_EVEN_SKIP,
                category=category,
                threshold=threshold,
                detail="semantic search skipped: this category's hit rate does not pay for its cost",
            )
            self._stats.lookup(req.tenant, category, Reason.BREAK_EVEN_SKIP, steps, None)
            return result, prep
        t0 = self._clock.monotonic()
        result = await self._semantic(prep, category, policy, threshold, now, steps, exact_failure)
        self._stats.lookup(
            req.tenant, category, result.reason, steps, ms(self._clock.monotonic() - t0)
        )
        return result, prep

    async def recheck_exact(self, prep: Prepared) -> LookupResult | None:
        """The exact path again for a prepared request whose lookup missed (see Generator)."""
        if prep.category is None or prep.req.no_cache:
            return None
        # With replicas (shared leases) ask the store: an equivalent leader on another replica
        # may have stored the answer before this process heard of it through the change log.
        hit, _ = await self._exact(
            prep,
            prep.category,
            self._categories.policy(prep.category),
            self._clock.now(),
            ask_store=self._replicated,
        )
        return hit

    async def _exact(
        self,
        prep: Prepared,
        category: str,
        policy: CategoryPolicy,
        now: float,
        *,
        ask_store: bool = False,
    ) -> tuple[LookupResult | None, LookupResult | None]:
        """(hit, None) or (None, why the exact candidate failed, if there was one)."""
        tenant = prep.req.tenant
        # Every entry this process holds is in the bookkeeping (restored at start, kept by each
        # store and removal, and by the change log for other replicas' writes), so a key it
        # does not know is a miss without a store round trip: the commonest lookup (a new
        # prompt) skips the store here.
        keys = [
            key
            for key in (prep.exact_key(tenant, category), prep.exact_key(SHARED_TENANT, category))
            if ask_store or self._book.knows(key)
        ]
        if not keys:
            return None, None
        found = await self._repo.get(keys)
        failure = None
        for key in keys:
            entry = found.get(key)
            if entry is None or not entry.visible_to(tenant) or entry.category != category:
                continue
            reason, detail = why_not(
                entry, prep, now, nondeterministic=policy.cache_nondeterministic
            )
            if reason is None:
                return self._hit(entry, prep, 1.0, None, Reason.EXACT, now), None
            failure = failure or LookupResult(
                hit=False,
                reason=reason,
                detail=detail,
                similarity=1.0,
                category=category,
                entry_id=entry.entry_id,
            )
        return None, failure

    async def _semantic(
        self,
        prep: Prepared,
        category: str,
        policy: CategoryPolicy,
        threshold: float,
        now: float,
        steps: dict[str, float],
        exact_failure: LookupResult | None,
    ) -> LookupResult:
        tenant = prep.req.tenant
        vector = await self._resolver.vector(prep, steps)
        t0 = self._clock.monotonic()
        found = await self._repo.search(vector, tenant, self._options.search_k)
        steps["search"] = ms(self._clock.monotonic() - t0)
        load = self._categories.load(prep.req.model)
        needs: dict[str, float] = {}  # category -> the threshold a hit in it needs here

        def need(entry_category: str | None) -> float:
            """The stricter of the lookup's and the entry's effective thresholds (an entry
            this process does not know yet is judged by its category once fetched)."""
            if entry_category is None or entry_category == category:
                return threshold
            if entry_category not in needs:
                needs[entry_category] = max(
                    threshold, self._categories.threshold(entry_category, load)
                )
            return needs[entry_category]

        book = self._book
        found = sorted(((i, _clamp(s)) for i, s in found), key=lambda pair: -pair[1])
        best = next(
            (s for i, s in found if (m := book.meta(i)) is not None and m.visible_to(tenant)), -1.0
        )
        # The share of lookups a threshold would serve.
        self._categories.feedback.observe(category, best)
        above = [(i, s) for i, s in found if s >= need(book.category_of(i))]
        if not above:
            if exact_failure is not None:
                return exact_failure
            return below_threshold(found, category, threshold, need, book.meta, tenant)
        t0 = self._clock.monotonic()
        entries = await self._repo.get([i for i, _ in above])
        steps["fetch"] = ms(self._clock.monotonic() - t0)
        failure = None
        for entry_id, similarity in above:
            entry = entries.get(entry_id)
            if entry is None or not entry.visible_to(tenant):
                continue  # deleted meanwhile, or a repository that over-shares: never served
            required = need(entry.category)
            entry_policy = self._categories.policies.get(entry.category, policy)
            if similarity < required or not entry_policy.enabled:
                continue
            reason, detail = why_not(
                entry,
                prep,
                now,
                nondeterministic=policy.cache_nondeterministic
                and entry_policy.cache_nondeterministic,
            )
            if reason is None:
                return self._hit(entry, prep, similarity, required, Reason.SEMANTIC, now)
            failure = failure or LookupResult(
                hit=False,
                reason=reason,
                detail=detail,
                similarity=similarity,
                threshold=required,
                category=category,
                entry_id=entry_id,
            )
        return (
            failure
            or exact_failure
            or LookupResult(
                hit=False,
                reason=Reason.BELOW_THRESHOLD,
                threshold=threshold,
                category=category,
                detail=f"no entry reaches threshold {threshold:.4f}",
            )
        )

    def _hit(
        self,
        entry: CacheEntry,
        prep: Prepared,
        similarity: float,
        threshold: float | None,
        reason: Reason,
        now: float,
    ) -> LookupResult:
        self._book.touch(entry.category, entry.entry_id, now)
        self._categories.feedback.hit(
            prep.req.tenant,
            entry.entry_id,
            entry.category,
            similarity if reason is Reason.SEMANTIC else None,
        )
        detail = (
            "same normalised prompt, context and parameters"
            if reason is Reason.EXACT
            else f"similarity {similarity:.4f} >= threshold {threshold:.4f}"
        )
        return LookupResult(
            hit=True,
            reason=reason,
            detail=detail,
            response=entry.response,
            similarity=similarity,
            threshold=threshold,
            category=entry.category,
            entry_id=entry.entry_id,
        )


def cacheable(prep: Prepared, policy: CategoryPolicy) -> bool:
    """A sampled request is neither served from nor stored in a category that does not
    cache sampled answers (admission refuses the same requests)."""
    return prep.deterministic or policy.cache_nondeterministic


def _clamp(similarity: float) -> float:
    return min(1.0, max(-1.0, float(similarity)))
