"""Per-category counters, step timings and the break-even rule (DESIGN §5).

Break-even: the semantic path (embed + search + fetch) costs time on every lookup, and pays
back only on a hit, by the backend time the hit saves. When a category's rolling hit rate ×
saved backend time falls below its measured miss-path cost, the semantic search is skipped
(exact path only). A skipping category still probes every `probe_every`-th lookup so its hit
rate keeps being measured and it can recover when traffic changes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cache.types import Reason

STEPS = ("exact", "classify", "embed", "search", "fetch")


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakEvenConfig:
    window: int = 200  # semantic-path outcomes kept for the rolling hit rate
    min_sample: int = 50  # no skipping before this many outcomes and one backend latency
    probe_every: int = 20  # while skipping, every n-th lookup still searches
    ewma_alpha: float = 0.1


class Ewma:
    __slots__ = ("alpha", "value")

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, x: float) -> None:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)


@dataclass(slots=True)
class _Counts:
    """Event counters: one per category, and one per (tenant, category) for tenant-scoped Stats."""

    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    stores: int = 0
    refusals: int = 0
    evictions: int = 0
    expirations: int = 0
    false_hits: int = 0
    correct_hits: int = 0
    misses_by_reason: Counter[str] = field(default_factory=Counter)
    refusals_by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, other: _Counts) -> None:
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.misses_by_reason.update(other.misses_by_reason)
        self.refusals_by_reason.update(other.refusals_by_reason)


_COUNT_FIELDS = (
    "lookups",
    "exact_hits",
    "semantic_hits",
    "misses",
    "stores",
    "refusals",
    "evictions",
    "expirations",
    "false_hits",
    "correct_hits",
)


@dataclass(slots=True)
class _Category:
    config: BreakEvenConfig
    counts: _Counts = field(default_factory=_Counts)
    outcomes: deque[bool] = field(init=False)
    steps: dict[str, Ewma] = field(init=False)
    miss_path: Ewma = field(init=False)
    backend: Ewma = field(init=False)
    skipped: int = 0

    def __post_init__(self) -> None:
        alpha = self.config.ewma_alpha
        self.outcomes = deque(maxlen=self.config.window)
        self.steps = {s: Ewma(alpha) for s in STEPS}
        self.miss_path = Ewma(alpha)
        self.backend = Ewma(alpha)


@dataclass(frozen=True, kw_only=True, slots=True)
class CategoryCounters:
    """A snapshot of one category's counters (the service adds policy and ledger numbers)."""

    lookups: int
    exact_hits: int
    semantic_hits: int
    misses: int
    stores: int
    store_refusals: int
    evictions: int
    expirations: int
    false_hits: int
    correct_hits: int
    hit_rate: float
    rolling_hit_rate: float | None
    miss_path_ms: float | None
    backend_ms: float | None
    skipping_semantic: bool
    step_ms: Mapping[str, float]
    misses_by_reason: Mapping[str, int]
    refusals_by_reason: Mapping[str, int]


class CacheStats:
    """Counters for every category, also kept per (tenant, category) so a tenant-scoped caller
    sees only its own figures; mutated only from the event loop (no locks needed)."""

    def __init__(self, *, config: BreakEvenConfig) -> None:
        self._config = config
        self._cats: dict[str, _Category] = {}
        self._tenants: dict[tuple[str, str], _Counts] = {}

    def _cat(self, category: str) -> _Category:
        cat = self._cats.get(category)
        if cat is None:
            cat = self._cats[category] = _Category(config=self._config)
        return cat

    def _counts(self, tenant: str, category: str) -> tuple[_Counts, _Counts]:
        """(the category's counts, the tenant's counts in it): every event goes to both."""
        own = self._tenants.get((tenant, category))
        if own is None:
            own = self._tenants[(tenant, category)] = _Counts()
        return self._cat(category).counts, own

    def lookup(
        self,
        tenant: str,
        category: str,
        reason: Reason,
        steps_ms: Mapping[str, float],
        semantic_ms: float | None,
    ) -> None:
        """One lookup's outcome. `semantic_ms` is what the semantic path (embed + search +
        fetch after the break-even decision) cost, None when it did not run."""
        for counts in self._counts(tenant, category):
            counts.lookups += 1
            if reason is Reason.EXACT:
                counts.exact_hits += 1
            elif reason is Reason.SEMANTIC:
                counts.semantic_hits += 1
            else:
                counts.misses += 1
                counts.misses_by_reason[reason.value] += 1
        cat = self._cat(category)
        for step, ms in steps_ms.items():
            cat.steps[step].add(ms)
        if semantic_ms is not None:
            cat.outcomes.append(reason is Reason.SEMANTIC)
            cat.miss_path.add(semantic_ms)

    def backend_latency(self, category: str, ms: float) -> None:
        """Backend time of one generation: what a hit in this category saves."""
        self._cat(category).backend.add(ms)

    def stored(self, tenant: str, category: str) -> None:
        for counts in self._counts(tenant, category):
            counts.stores += 1

    def refused(self, tenant: str, category: str, reason: str) -> None:
        for counts in self._counts(tenant, category):
            counts.refusals += 1
            counts.refusals_by_reason[reason] += 1

    def evicted(self, tenant: str, category: str, n: int) -> None:
        """`tenant`: the owner of the evicted entries."""
        for counts in self._counts(tenant, category):
            counts.evictions += n

    def expired(self, tenant: str, category: str, n: int) -> None:
        for counts in self._counts(tenant, category):
            counts.expirations += n

    def feedback(self, tenant: str, category: str, correct: bool) -> None:
        for counts in self._counts(tenant, category):
            if correct:
                counts.correct_hits += 1
            else:
                counts.false_hits += 1

    def below_break_even(self, category: str) -> bool:
        """Rolling hit rate × saved backend time < miss-path cost (after min_sample)."""
        cat = self._cat(category)
        if len(cat.outcomes) < self._config.min_sample:
            return False
        saved, cost = cat.backend.value, cat.miss_path.value
        if saved is None or cost is None:
            return False
        return (sum(cat.outcomes) / len(cat.outcomes)) * saved < cost

    def should_skip(self, category: str) -> bool:
        """Decide for one lookup; every probe_every-th lookup below break-even still probes."""
        if not self.below_break_even(category):
            return False
        cat = self._cat(category)
        cat.skipped += 1
        return cat.skipped % self._config.probe_every != 0

    def counters(self, category: str, tenants: Iterable[str] | None = None) -> CategoryCounters:
        """The category's counters; with `tenants`, only those tenants' events (summed), and the
        rolling hit rate left out (it is the category's, i.e. everyone's). Timings and the
        break-even state are the category's either way: they are the service's, not a tenant's."""
        cat = self._cat(category)
        rolling = sum(cat.outcomes) / len(cat.outcomes) if cat.outcomes else None
        if tenants is None:
            c = cat.counts
        else:
            c = _Counts()
            for tenant in set(tenants):
                own = self._tenants.get((tenant, category))
                if own is not None:
                    c.add(own)
            rolling = None
        hits = c.exact_hits + c.semantic_hits
        return CategoryCounters(
            lookups=c.lookups,
            exact_hits=c.exact_hits,
            semantic_hits=c.semantic_hits,
            misses=c.misses,
            stores=c.stores,
            store_refusals=c.refusals,
            evictions=c.evictions,
            expirations=c.expirations,
            false_hits=c.false_hits,
            correct_hits=c.correct_hits,
            hit_rate=hits / c.lookups if c.lookups else 0.0,
            rolling_hit_rate=rolling,
            miss_path_ms=cat.miss_path.value,
            backend_ms=cat.backend.value,
            skipping_semantic=self.below_break_even(category),
            step_ms={s: e.value for s, e in cat.steps.items() if e.value is not None},
            misses_by_reason=dict(c.misses_by_reason),
            refusals_by_reason=dict(c.refusals_by_reason),
        )
