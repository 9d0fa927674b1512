"""SemanticCache: the category-aware semantic cache's public face (DESIGN §5).

It wires and delegates; each concern lives in its own module:
  - `cache.resolve`: request checks and limits, category, embedding;
  - `cache.lookup`: the lookup path (exact, then one semantic search across categories);
  - `cache.storing`: admission, the write, quota and eviction;
  - `cache.generate`: Generate's streaming and single-flight;
  - `cache.labelling`: self-labels and exploration for calibration;
  - `cache.categories`: policies, calibrated and load-adapted thresholds;
  - `cache.bookkeeping`: the in-memory ledgers, routes and unshared hits.

Ports are injected; the service keeps only bookkeeping in memory (ledger, routes, recent
hits for feedback, calibration), all of it rebuilt or harmlessly reset by `restore()`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

from cache.admission import utf8_size
from cache.bookkeeping import Bookkeeping
from cache.calibration import FeedbackBook
from cache.categories import Categories
from cache.errors import InvalidRequest
from cache.fingerprint import Prepared
from cache.generate import Generator
from cache.labelling import Labeller
from cache.ledger import Ledger, select
from cache.lookup import LookupPath
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
from cache.resolve import Resolver
from cache.stats import CacheStats
from cache.storing import StorePath
from cache.types import (
    CachedResponse,
    CacheEntry,
    Chunk,
    FinalResult,
    LookupRequest,
    LookupResult,
    StoreResult,
)


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
        feedback = FeedbackBook(
            recent=options.recent_hits,
            window=options.calibration_window,
            min_feedback=options.min_feedback,
            prior=options.calibration_prior,
        )
        self._categories = Categories(policies, feedback=feedback, backend=backend)
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
        self._clock = clock
        self._options = options
        self._feedback = feedback
        self._book = Bookkeeping()
        self._stats = CacheStats(config=options.break_even)
        self._resolver = Resolver(
            embedder=embedder,
            classifier=classifier,
            clock=clock,
            categories=self._categories,
            book=self._book,
            confidence_floor=confidence_floor,
            options=options,
        )
        self._lookups = LookupPath(
            repository=repository,
            clock=clock,
            options=options,
            categories=self._categories,
            book=self._book,
            resolver=self._resolver,
            stats=self._stats,
            replicated=leases is not None,
        )
        self._stores = StorePath(
            repository=repository,
            clock=clock,
            options=options,
            categories=self._categories,
            book=self._book,
            resolver=self._resolver,
            stats=self._stats,
            quota_guard=quota_guard,
        )
        labeller = Labeller(
            repository=repository, embedder=embedder, categories=self._categories, options=options
        )
        self._generator = Generator(
            lookup=self._lookups.lookup,
            recheck=self._lookups.recheck_exact,
            store=lambda prep, response, shared: self._stores.store(prep, response, shared=shared),
            shareable=self._shareable,
            label=labeller.label,
            verify=labeller.verify,
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
        self._book.clear()
        count = 0
        async for entry in self._repo.scan():
            self._book.remember(entry)
            count += 1
        return count

    def observe(self, present: Iterable[CacheEntry], gone: Iterable[str]) -> None:
        """Another server (a replica of the same store) stored or removed these entries: keep
        the bookkeeping as `restore` would have it. Hits arrive separately (`observe_hits`)."""
        for entry in present:
            self._book.remember(entry)
        self._book.forget(gone)

    def drain_hits(self) -> dict[str, tuple[float, int]]:
        """The hits served here since the last call, entry id -> (last hit, count): what the
        server shares with the other replicas so their eviction order counts them too."""
        return self._book.drain_hits()

    def observe_hits(self, hits: Mapping[str, tuple[float, int]]) -> None:
        """Another replica served these hits: fold them into LRU/LFU order (entries this
        process does not know, or no longer, are skipped)."""
        self._book.observe_hits(hits)

    async def sweep_expired(self) -> int:
        """Delete expired entries from index and store (run periodically by the server).
        Expired entries are never served even before the sweep: every read checks expiry."""
        now = self._clock.now()
        total = 0
        for category, ledger in self._book.ledgers():
            ids = ledger.expired(now)
            if ids:
                await self._repo.delete(ids)
                removed = self._book.remove(category, ids)
                for tenant, n in Counter(m.tenant for m in removed).items():
                    self._stats.expired(tenant, category, n)
                total += len(ids)
        return total

    # ---------------------------------------------------------------- lookup / store / generate

    async def lookup(self, req: LookupRequest) -> LookupResult:
        result, _ = await self._lookups.lookup(req)
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
        prep = await self._resolver.prepare(req)
        return await self._stores.store(prep, response, ttl=ttl, shared=shared)

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
        categories = [category] if category is not None else list(self._categories.policies)
        if category is not None:
            self._categories.policy(category)
        plan = {
            cat: select(self._book.ledger(cat), entry_ids=entry_ids, tenant=tenant)
            for cat in categories
        }
        removed = 0
        for cat, ids in plan.items():
            if not ids:
                continue
            removed += await self._repo.delete(ids)
            self._book.remove(cat, ids)
        return removed

    def feedback(self, entry_id: str, correct: bool, tenant: str) -> str:
        """Mark a hit correct/incorrect. Semantic hits feed threshold calibration; the counters
        appear in Stats. Only an entry the tenant can see may be rated. Returns its category."""
        if not isinstance(correct, bool):
            raise InvalidRequest("correct", "must be a boolean")
        recent = self._feedback.take(tenant, entry_id)
        if recent is None:
            category = self._book.find(entry_id, tenant)
            self._stats.feedback(tenant, category, correct)
            return category
        category, similarity = recent
        self._stats.feedback(tenant, category, correct)
        if similarity is not None:
            self._feedback.rate(category, similarity, correct, self._categories.policies[category])
        return category

    def policies(self) -> dict[str, CategoryPolicy]:
        """The configured policies (Stats shows calibrated and effective thresholds)."""
        return dict(self._categories.policies)

    def set_policy(
        self, category: str, *, create: bool = False, **changes: object
    ) -> CategoryPolicy:
        """Change fields of a category's policy (validated, unknown fields refused; see
        `CategoryPolicy.with_changes` for lowering a threshold below its bound). An unknown
        category is refused unless `create`, which makes it from `default`'s policy (a typo in
        a category name must not silently add a category). Setting `threshold` restarts
        calibration."""
        return self._categories.set_policy(category, create=create, changes=changes)

    def stats(
        self, model: str | None = None, *, tenants: Iterable[str] | None = None
    ) -> dict[str, CategoryStats]:
        """Per category: counters, entries and what is in force now. With `tenants` (a
        tenant-scoped caller), counters and entries are those tenants' own only."""
        load = self._categories.load(model)
        scope = None if tenants is None else frozenset(tenants)
        out = {}
        for category in self._categories.policies:
            base = self._categories.calibrated_policy(category)
            threshold, ttl = effective(base, load)
            ledger = self._book.ledger(category)
            entries = len(ledger) if scope is None else sum(ledger.count(t) for t in scope)
            out[category] = CategoryStats(
                category=category,
                counters=self._stats.counters(category, scope),
                entries=entries,
                threshold=base.threshold,
                effective_threshold=threshold,
                effective_ttl_s=ttl,
                load=load,
                calibrated=self._categories.calibrated(category),
            )
        return out

    # ---------------------------------------------------------------- helpers

    def _shareable(self, prep: Prepared) -> bool:
        """Single-flight only requests whose answer may be shared: deterministic ones, or any
        in a category that caches sampled answers."""
        if prep.deterministic:
            return True
        return (
            prep.category is not None
            and self._categories.policies[prep.category].cache_nondeterministic
        )

    def _ledger(self, category: str) -> Ledger:
        return self._book.ledger(category)
