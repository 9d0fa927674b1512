"""SemanticCache: the orchestrator of the category-aware semantic cache (DESIGN §5).

Lookup path, every step timed into Stats:
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

Ports are injected; the service keeps only bookkeeping in memory (ledger, routes, recent
hits for feedback, calibration), all of it rebuilt or harmlessly reset by `restore()`.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import replace

import numpy as np

from cache.admission import admit, utf8_size
from cache.calibration import FeedbackBook
from cache.errors import EntryNotFound, InvalidPolicy, InvalidRequest, NotPermitted
from cache.eviction import choose_victims
from cache.fingerprint import Prepared, entry_route_key, normalise_prompt
from cache.generate import Generator
from cache.ledger import EntryMeta, Ledger, select
from cache.matching import below_threshold, why_not
from cache.options import CacheOptions, CategoryStats
from cache.policy import CategoryPolicy, effective
from cache.ports import (
    Backend,
    Classifier,
    Clock,
    Embedder,
    EntryRepository,
    Leases,
    QuotaGuard,
)
from cache.stats import CacheStats
from cache.types import (
    SHARED_TENANT,
    CachedResponse,
    CacheEntry,
    Chunk,
    FinalResult,
    LookupRequest,
    LookupResult,
    Reason,
    StoreReason,
    StoreResult,
    ToolCall,
)

DEFAULT_CATEGORY = "default"
_PREPARE_INLINE_BYTES = 16 << 10
_CATEGORY_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")


class SemanticCache:
    def __init__(
        self,
        *,
        repository: EntryRepository,
        embedder: Embedder,
        classifier: Classifier | None,
        backend: Backend,
        clock: Clock,
        policies: Mapping[str, CategoryPolicy],
        confidence_floor: float = 0.5,
        options: CacheOptions = CacheOptions(),
        leases: Leases | None = None,
        quota_guard: QuotaGuard | None = None,
    ) -> None:
        """`leases`: shared by the replicas of one store so that equivalent misses on
        different replicas make one backend call (None: this process alone). `quota_guard`:
        likewise, so that replicas together keep each category's quotas (None: alone)."""
        if DEFAULT_CATEGORY not in policies:
            raise InvalidPolicy("policies", f"must include {DEFAULT_CATEGORY!r}")
        for name, policy in policies.items():
            _check_category_name(name)
            if not isinstance(policy, CategoryPolicy):
                raise InvalidPolicy(name, "not a CategoryPolicy")
        if not 0.0 <= confidence_floor <= 1.0:
            raise InvalidRequest("confidence_floor", "must be in [0, 1]")
        if options.search_k < 1 or options.replay_chunk_chars < 1:
            raise InvalidRequest("options", "search_k and replay_chunk_chars must be positive")
        if options.max_prompt_bytes < 1 or options.max_response_bytes < 1:
            raise InvalidRequest(
                "options", "max_prompt_bytes and max_response_bytes must be positive"
            )
        for name in ("label_band", "agreement_similarity", "verify_hits"):
            if not 0.0 <= getattr(options, name) <= 1.0:
                raise InvalidRequest(f"options.{name}", "must be in [0, 1]")
        self._repo = repository
        self._replicated = leases is not None
        self._quota_guard = quota_guard
        self._embedder = embedder
        self._classifier = classifier
        self._backend = backend
        self._clock = clock
        self._policies = dict(policies)
        self._floor = confidence_floor
        self._options = options
        self._ledgers: dict[str, Ledger] = {}  # TTL, quota and eviction stay per category
        self._where: dict[str, str] = {}  # entry id -> its category (the entry's policy)
        # Hits not yet shared with other replicas: entry id -> (last hit, how many).
        self._unshared_hits: dict[str, tuple[float, int]] = {}
        self._routes: dict[str, str] = {}  # route key -> category (exact repeats skip classify)
        self._feedback = FeedbackBook(
            recent=options.recent_hits,
            window=options.calibration_window,
            min_feedback=options.min_feedback,
            prior=options.calibration_prior,
        )
        self._stats = CacheStats(config=options.break_even)
        self._rng = random.Random(options.seed)
        self._generator = Generator(
            lookup=self._lookup,
            recheck=self._recheck_exact,
            store=lambda prep, response, shared: self._store_prepared(
                prep, response, shared=shared
            ),
            shareable=self._shareable,
            label=self._self_label,
            verify=self._verify,
            record_latency=self._stats.backend_latency,
            backend=backend,
            clock=clock,
            chunk_chars=options.replay_chunk_chars,
            leases=leases,
            lease_poll_s=options.lease_poll_s,
        )

    # ---------------------------------------------------------------- start-up and sweeping

    async def restore(self) -> int:
        """Rebuild the in-memory bookkeeping from the repository's `scan()`; call at start-up
        before serving. Returns the number of entries found."""
        self._ledgers, self._where, self._routes = {}, {}, {}
        count = 0
        async for entry in self._repo.scan():
            self._remember(entry.category, self._ledger(entry.category), entry)
            count += 1
        return count

    def observe(self, present: Iterable[CacheEntry], gone: Iterable[str]) -> None:
        """Another server (a replica of the same store) stored or removed these entries: keep
        the bookkeeping as `restore` would have it. Hits arrive separately (`observe_hits`)."""
        for entry in present:
            self._remember(entry.category, self._ledger(entry.category), entry)
        for entry_id in gone:
            category = self._where.get(entry_id)
            if category is not None:
                self._forget(category, self._ledger(category).remove([entry_id]))

    def drain_hits(self) -> dict[str, tuple[float, int]]:
        """The hits served here since the last call, entry id -> (last hit, count): what the
        server shares with the other replicas so their eviction order counts them too."""
        hits, self._unshared_hits = self._unshared_hits, {}
        return hits

    def observe_hits(self, hits: Mapping[str, tuple[float, int]]) -> None:
        """Another replica served these hits: fold them into LRU/LFU order (entries this
        process does not know, or no longer, are skipped)."""
        for entry_id, (last, count) in hits.items():
            meta = self._meta(entry_id)
            if meta is not None:
                meta.hits += count
                meta.last_hit_at = max(meta.last_hit_at or last, last)

    async def sweep_expired(self) -> int:
        """Delete expired entries from index and store (run periodically by the server).
        Expired entries are never served even before the sweep: every read checks expiry."""
        now = self._clock.now()
        total = 0
        for category, ledger in list(self._ledgers.items()):
            ids = ledger.expired(now)
            if ids:
                await self._repo.delete(ids)
                removed = ledger.remove(ids)
                self._forget(category, removed)
                for tenant, n in Counter(m.tenant for m in removed).items():
                    self._stats.expired(tenant, category, n)
                total += len(ids)
        return total

    # ---------------------------------------------------------------- lookup / store / generate

    async def lookup(self, req: LookupRequest) -> LookupResult:
        result, _ = await self._lookup(req)
        return result

    async def store(
        self,
        req: LookupRequest,
        response: CachedResponse,
        *,
        ttl: float | None = None,
        shared: bool = False,
    ) -> StoreResult:
        """Store `response` for `req` (admission applies). `shared` entries are visible to every
        tenant: the server must allow it only for admin keys (otherwise any tenant could plant
        answers for all). `ttl` overrides the category's effective TTL, up to max_ttl_s."""
        if not isinstance(response, CachedResponse):
            raise InvalidRequest("response", "must be a CachedResponse")
        if not isinstance(shared, bool):
            raise InvalidRequest("shared", "must be a boolean")
        if (size := utf8_size(response.text)) > self._options.max_response_bytes:
            raise InvalidRequest(
                "response.text",
                f"{size} bytes, above the limit of "
                f"{self._options.max_response_bytes} (max_response_bytes)",
            )
        prep = await self._prepare(req)
        return await self._store_prepared(prep, response, ttl=ttl, shared=shared)

    def generate(
        self, req: LookupRequest, *, shared: bool = False
    ) -> AsyncIterator[LookupResult | Chunk | FinalResult]:
        """The lookup's LookupResult, then chunks, then one FinalResult (`cached` says hit or not).
        Backend errors propagate and nothing is stored; equivalent concurrent misses share one
        backend call. `shared`: a generated response is stored as a shared entry (same rule as
        `store(shared=True)`)."""
        if not isinstance(shared, bool):
            raise InvalidRequest("shared", "must be a boolean")
        return self._generator.run(req, shared=shared)

    async def _lookup(self, req: LookupRequest) -> tuple[LookupResult, Prepared]:
        prep = await self._prepare(req)
        if req.no_cache:
            return LookupResult(
                hit=False,
                reason=Reason.NO_CACHE,
                category=req.category,
                detail="request marked no-cache",
            ), prep
        steps: dict[str, float] = {}
        category = await self._resolve_category(prep, steps)
        policy = self._policy(category)
        if not policy.enabled:
            result = LookupResult(
                hit=False,
                reason=Reason.DISABLED,
                category=category,
                detail=f"caching is disabled for category {category!r}",
            )
            self._stats.lookup(req.tenant, category, result.reason, steps, None)
            return result, prep
        if not self._cacheable(prep, policy):
            result = LookupResult(
                hit=False,
                reason=Reason.NONDETERMINISTIC,
                category=category,
                detail="temperature > 0 without seed; the category does not cache sampled answers",
            )
            self._stats.lookup(req.tenant, category, result.reason, steps, None)
            return result, prep
        now = self._clock.now()
        threshold, _ = self._effective(category, req.model)
        if req.min_similarity is not None:
            threshold = max(threshold, req.min_similarity)  # the caller may only be stricter
        t0 = self._clock.monotonic()
        exact, exact_failure = await self._exact(prep, category, policy, now)
        steps["exact"] = _ms(self._clock.monotonic() - t0)
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
            req.tenant, category, result.reason, steps, _ms(self._clock.monotonic() - t0)
        )
        return result, prep

    async def _recheck_exact(self, prep: Prepared) -> LookupResult | None:
        """The exact path again for a prepared request whose lookup missed (see Generator)."""
        if prep.category is None or prep.req.no_cache:
            return None
        # With replicas (shared leases) ask the store: an equivalent leader on another replica
        # may have stored the answer before this process heard of it through the change log.
        hit, _ = await self._exact(
            prep,
            prep.category,
            self._policy(prep.category),
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
        # Every entry this process holds is in `_where` (restored at start, kept by each store
        # and removal, and by the change log for other replicas' writes), so a key it does not
        # know is a miss without a store round trip: the commonest lookup (a new prompt) skips
        # the store here.
        keys = [
            key
            for key in (prep.exact_key(tenant, category), prep.exact_key(SHARED_TENANT, category))
            if ask_store or key in self._where
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
        vector = await self._vector(prep, steps)
        t0 = self._clock.monotonic()
        found = await self._repo.search(vector, tenant, self._options.search_k)
        steps["search"] = _ms(self._clock.monotonic() - t0)
        load = self._load(prep.req.model)
        needs: dict[str, float] = {}  # category -> the threshold a hit in it needs here

        def need(entry_category: str | None) -> float:
            """The stricter of the lookup's and the entry's effective thresholds (an entry
            this process does not know yet is judged by its category once fetched)."""
            if entry_category is None or entry_category == category:
                return threshold
            if entry_category not in needs:
                needs[entry_category] = max(threshold, self._threshold(entry_category, load))
            return needs[entry_category]

        found = sorted(((i, _clamp(s)) for i, s in found), key=lambda pair: -pair[1])
        best = next(
            (s for i, s in found if (m := self._meta(i)) is not None and m.visible_to(tenant)), -1.0
        )
        self._feedback.observe(category, best)  # the share of lookups a threshold would serve
        above = [(i, s) for i, s in found if s >= need(self._where.get(i))]
        if not above:
            if exact_failure is not None:
                return exact_failure
            return below_threshold(found, category, threshold, need, self._meta, tenant)
        t0 = self._clock.monotonic()
        entries = await self._repo.get([i for i, _ in above])
        steps["fetch"] = _ms(self._clock.monotonic() - t0)
        failure = None
        for entry_id, similarity in above:
            entry = entries.get(entry_id)
            if entry is None or not entry.visible_to(tenant):
                continue  # deleted meanwhile, or a repository that over-shares: never served
            required = need(entry.category)
            entry_policy = self._policies.get(entry.category, policy)
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
        self._ledger(entry.category).touch(entry.entry_id, now)
        _, count = self._unshared_hits.get(entry.entry_id, (now, 0))
        self._unshared_hits[entry.entry_id] = (now, count + 1)
        self._feedback.hit(
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

    async def _store_prepared(
        self,
        prep: Prepared,
        response: CachedResponse,
        *,
        ttl: float | None = None,
        shared: bool = False,
    ) -> StoreResult:
        req = prep.req
        category = await self._resolve_category(prep, {})
        policy = self._policy(category)
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
        vector = await self._vector(prep, {})
        now = self._clock.now()
        ttl_s = ttl if ttl is not None else self._effective(category, req.model)[1]
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
            repo = self._repo
            await repo.put(entry, vector)
            ledger = self._ledger(category)
            self._remember(category, ledger, entry)
            victims = choose_victims(
                ledger, policy, tenant=req.tenant, now=now, keep=entry.entry_id
            )
            if victims:
                await repo.delete(victims)
                removed = ledger.remove(victims)
                self._forget(category, removed)
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

    # ---------------------------------------------------------------- management

    async def invalidate(
        self,
        *,
        entry_ids: Sequence[str] | None = None,
        category: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Delete entries by ids, by category, by owner tenant, or a combination (all given
        filters apply). With `tenant` set (a tenant's own call) naming another tenant's entry
        raises NotPermitted. Returns how many entries were removed."""
        if entry_ids is None and category is None and tenant is None:
            raise InvalidRequest("entry_ids", "name entry ids, a category or a tenant")
        categories = [category] if category is not None else list(self._policies)
        if category is not None:
            self._policy(category)
        plan = {
            cat: select(self._ledger(cat), entry_ids=entry_ids, tenant=tenant) for cat in categories
        }
        removed = 0
        for cat, ids in plan.items():
            if not ids:
                continue
            removed += await self._repo.delete(ids)
            self._forget(cat, self._ledger(cat).remove(ids))
        return removed

    def feedback(self, entry_id: str, correct: bool, tenant: str) -> str:
        """Mark a hit correct/incorrect. Semantic hits feed threshold calibration; the counters
        appear in Stats. Only an entry the tenant can see may be rated. Returns its category."""
        if not isinstance(correct, bool):
            raise InvalidRequest("correct", "must be a boolean")
        recent = self._feedback.take(tenant, entry_id)
        if recent is None:
            category = self._find(entry_id, tenant)
            self._stats.feedback(tenant, category, correct)
            return category
        category, similarity = recent
        self._stats.feedback(tenant, category, correct)
        if similarity is not None:
            self._feedback.rate(category, similarity, correct, self._policies[category])
        return category

    def policies(self) -> dict[str, CategoryPolicy]:
        """The configured policies (Stats shows calibrated and effective thresholds)."""
        return dict(self._policies)

    def set_policy(
        self, category: str, *, create: bool = False, **changes: object
    ) -> CategoryPolicy:
        """Change fields of a category's policy (validated, unknown fields refused; see
        `CategoryPolicy.with_changes` for lowering a threshold below its bound). An unknown
        category is refused unless `create`, which makes it from `default`'s policy (a typo in
        a category name must not silently add a category). Setting `threshold` restarts
        calibration."""
        _check_category_name(category)
        if not isinstance(create, bool):
            raise InvalidRequest("create", "must be a boolean")
        if category not in self._policies and not create:
            raise InvalidRequest(
                "category",
                f"unknown category {category!r} (known: {sorted(self._policies)}); "
                "set create to add a new category",
            )
        base = self._policies.get(category, self._policies[DEFAULT_CATEGORY])
        policy = base.with_changes(changes)
        self._policies[category] = policy
        if "threshold" in changes or policy.strict:
            self._feedback.reset(category)
        return policy

    def stats(
        self, model: str | None = None, *, tenants: Iterable[str] | None = None
    ) -> dict[str, CategoryStats]:
        """Per category: counters, entries and what is in force now. With `tenants` (a
        tenant-scoped caller), counters and entries are those tenants' own only."""
        load = self._load(model)
        scope = None if tenants is None else frozenset(tenants)
        out = {}
        for category, policy in self._policies.items():
            base = self._calibrated_policy(category)
            threshold, ttl = effective(base, load)
            ledger = self._ledger(category)
            entries = len(ledger) if scope is None else sum(ledger.count(t) for t in scope)
            out[category] = CategoryStats(
                category=category,
                counters=self._stats.counters(category, scope),
                entries=entries,
                threshold=base.threshold,
                effective_threshold=threshold,
                effective_ttl_s=ttl,
                load=load,
                calibrated=self._feedback.threshold(category) is not None and not policy.strict,
            )
        return out

    # ---------------------------------------------------------------- helpers

    async def _prepare(self, req: LookupRequest) -> Prepared:
        if not isinstance(req, LookupRequest):
            raise InvalidRequest("request", "must be a LookupRequest")
        if req.embedding is not None and req.embedding.shape[0] != self._embedder.dim:
            raise InvalidRequest(
                "embedding", f"has {req.embedding.shape[0]} dims, expected {self._embedder.dim}"
            )
        if req.category is not None:
            self._policy(req.category)
        field, size = (
            ("prompt", utf8_size(req.prompt))
            if req.prompt is not None
            else ("messages", sum(utf8_size(content) for _, content in req.messages))
        )
        limit = self._options.max_prompt_bytes
        if size > limit:
            raise InvalidRequest(
                field, f"{size} bytes, above the limit of {limit} (max_prompt_bytes)"
            )
        if size > _PREPARE_INLINE_BYTES:
            # Normalising and fingerprinting a long prompt takes milliseconds: off the event
            # loop, in pieces that let the GIL go (see normalise_prompt), so the other
            # tenants' lookups keep flowing meanwhile.
            return await asyncio.to_thread(Prepared, req)
        return Prepared(req)

    async def _resolve_category(self, prep: Prepared, steps: dict[str, float]) -> str:
        if prep.category is None:
            tenant = prep.req.tenant
            prep.category = (
                prep.req.category
                or self._routes.get(prep.route_key(tenant))
                or self._routes.get(prep.route_key(SHARED_TENANT))
            )
        if prep.category is None:
            vector = await self._vector(prep, steps)
            t0 = self._clock.monotonic()
            category, confidence = (
                (DEFAULT_CATEGORY, 0.0)
                if self._classifier is None
                else self._classifier.classify(vector)
            )
            steps["classify"] = _ms(self._clock.monotonic() - t0)
            prep.category = (
                category
                if confidence >= self._floor and category in self._policies
                else DEFAULT_CATEGORY
            )
        return prep.category

    async def _vector(self, prep: Prepared, steps: dict[str, float]) -> np.ndarray:
        if prep.vector is None:
            t0 = self._clock.monotonic()
            rows = await self._embedder.embed([prep.query])
            steps["embed"] = _ms(self._clock.monotonic() - t0)
            prep.vector = rows[0]
        return prep.vector

    @staticmethod
    def _cacheable(prep: Prepared, policy: CategoryPolicy) -> bool:
        """A sampled request is neither served from nor stored in a category that does not
        cache sampled answers (admission refuses the same requests)."""
        return prep.deterministic or policy.cache_nondeterministic

    def _verify(self, result: LookupResult) -> bool:
        """Exploration: verify this semantic hit against the backend (options.verify_hits)."""
        return (
            result.reason is Reason.SEMANTIC
            and self._options.verify_hits > 0.0
            and self._rng.random() < self._options.verify_hits
        )

    async def _self_label(
        self, prep: Prepared, result: LookupResult, fresh: CachedResponse
    ) -> None:
        """A free calibration label: the backend's fresh answer compared with the answer the
        nearest entry would have served. Taken from misses whose nearest entry lies within
        `label_band` below the threshold it needed, and from hits chosen for exploration;
        it goes to the category whose threshold decided (the stricter of the two)."""
        if result.entry_id is None or result.similarity is None or result.threshold is None:
            return
        if result.reason is Reason.BELOW_THRESHOLD:
            if result.similarity < result.threshold - self._options.label_band:
                return
        elif result.reason is not Reason.SEMANTIC:
            return
        entry = (await self._repo.get([result.entry_id])).get(result.entry_id)
        if (
            entry is None
            or not entry.visible_to(prep.req.tenant)
            or entry.model != prep.model
            or entry.context_fp != prep.context_fp
            or prep.category is None
        ):
            return  # gone, or a different model / conversation: its answer says nothing here
        agree = _same_calls(entry.tool_calls, fresh.tool_calls) and await self._agree(
            entry.response_text, fresh.text, prep.deterministic
        )
        load = self._load(prep.req.model)
        category = prep.category
        if entry.category in self._policies and self._threshold(
            entry.category, load
        ) > self._threshold(category, load):
            category = entry.category
        self._feedback.rate(category, result.similarity, agree, self._policies[category])

    async def _agree(self, cached: str, fresh: str, deterministic: bool) -> bool:
        if deterministic:
            return normalise_prompt(cached) == normalise_prompt(fresh)
        rows = await self._embedder.embed([cached, fresh])
        return float(np.dot(rows[0], rows[1])) >= self._options.agreement_similarity

    def _shareable(self, prep: Prepared) -> bool:
        """Single-flight only requests whose answer may be shared: deterministic ones, or any
        in a category that caches sampled answers."""
        if prep.deterministic:
            return True
        return prep.category is not None and self._policies[prep.category].cache_nondeterministic

    def _policy(self, category: str) -> CategoryPolicy:
        policy = self._policies.get(category)
        if policy is None:
            raise InvalidRequest(
                "category", f"unknown category {category!r}; known: {sorted(self._policies)}"
            )
        return policy

    def _calibrated_policy(self, category: str) -> CategoryPolicy:
        policy = self._policies[category]
        calibrated = self._feedback.threshold(category)
        if calibrated is None or policy.strict:
            return policy
        return replace(policy, threshold=calibrated)

    def _load(self, model: str | None) -> float:
        load = float(self._backend.load(model))
        return min(1.0, max(0.0, load)) if math.isfinite(load) else 0.0

    def _effective(self, category: str, model: str | None) -> tuple[float, float]:
        return effective(self._calibrated_policy(category), self._load(model))

    def _threshold(self, category: str, load: float) -> float:
        """Effective threshold of an entry's category (one no longer configured: `default`'s)."""
        if category not in self._policies:
            category = DEFAULT_CATEGORY
        return effective(self._calibrated_policy(category), load)[0]

    def _meta(self, entry_id: str) -> EntryMeta | None:
        category = self._where.get(entry_id)
        return None if category is None else self._ledger(category).get(entry_id)

    def _ledger(self, category: str) -> Ledger:
        ledger = self._ledgers.get(category)
        if ledger is None:
            ledger = self._ledgers[category] = Ledger()
        return ledger

    def _remember(self, category: str, ledger: Ledger, entry: CacheEntry) -> None:
        route = entry_route_key(
            tenant=entry.tenant,
            shared=entry.shared,
            prompt=entry.prompt,
            context_fp=entry.context_fp,
            model=entry.model,
            params_fp=entry.params_fp,
        )
        ledger.add(EntryMeta.of(entry, route))
        self._routes[route] = category
        self._where[entry.entry_id] = category

    def _forget(self, category: str, metas: Iterable[EntryMeta]) -> None:
        for meta in metas:
            if self._where.get(meta.entry_id) == category:
                del self._where[meta.entry_id]
            if self._routes.get(meta.route_key) == category:
                del self._routes[meta.route_key]

    def _find(self, entry_id: str, tenant: str) -> str:
        for category, ledger in self._ledgers.items():
            meta = ledger.get(entry_id)
            if meta is not None:
                if not meta.visible_to(tenant):
                    raise NotPermitted(f"entry {entry_id} is not visible to tenant {tenant!r}")
                return category
        raise EntryNotFound(f"no cache entry {entry_id!r}")


def _check_category_name(name: object) -> None:
    if not isinstance(name, str) or not _CATEGORY_NAME.match(name):
        raise InvalidRequest("category", "must match [a-z0-9][a-z0-9_-]{0,63}")


def _same_calls(a: Sequence[ToolCall], b: Sequence[ToolCall]) -> bool:
    """The same functions with the same arguments (call ids are the backend's own)."""
    return [(c.name, c.arguments) for c in a] == [(c.name, c.arguments) for c in b]


def _clamp(similarity: float) -> float:
    return min(1.0, max(-1.0, float(similarity)))


def _ms(seconds: float) -> float:
    return seconds * 1000.0
