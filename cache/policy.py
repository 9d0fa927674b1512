"""Per-category cache policies (DESIGN §5) and their load adaptation.

Categories differ in how densely their prompts cluster and how fast answers go stale: code
prompts need a high threshold but stay valid for weeks; market/news/weather answers are stale
in minutes; health and legal are `strict` (never relaxed under load, never calibrated down).
The shipped numbers are starting points; bench/cache_quality tunes them from data.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from cache.errors import InvalidPolicy

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


class Eviction(StrEnum):
    LRU = "lru"  # least recently hit (or created, if never hit) first
    LFU = "lfu"  # fewest hits first, older first among equals
    TTL_FIRST = "ttl-first"  # soonest to expire first


@dataclass(frozen=True, kw_only=True, slots=True)
class CategoryPolicy:
    """How one category caches. Validated on construction; errors name the field.

    `relax`: how far the threshold drops at full backend load (L = 1), bounded by
    `min_threshold`. `extend`: TTL multiplier growth at full load, bounded by `max_ttl_s`
    (None = no bound beyond ttl·(1+extend)). `strict`: neither moves, nor does calibration.
    `target_false_hit_rate`: what online calibration aims for, in false hits per lookup of
    the category (DESIGN §9's false-hit rate; None switches calibration off).
    """

    threshold: float
    ttl_s: float
    quota_per_tenant: int = 10_000
    quota_total: int = 1_000_000
    eviction: Eviction = Eviction.LRU
    enabled: bool = True
    strict: bool = False
    min_threshold: float = 0.80
    max_ttl_s: float | None = None
    relax: float = 0.03
    extend: float = 1.0
    cache_nondeterministic: bool = False
    allow_truncated: bool = False
    target_false_hit_rate: float | None = 0.02

    def __post_init__(self) -> None:
        _unit("threshold", self.threshold)
        _unit("min_threshold", self.min_threshold)
        if self.min_threshold > self.threshold:
            raise InvalidPolicy(
                "min_threshold", f"{self.min_threshold} is above threshold {self.threshold}"
            )
        _positive("ttl_s", self.ttl_s)
        if self.max_ttl_s is not None:
            _positive("max_ttl_s", self.max_ttl_s)
            if self.max_ttl_s < self.ttl_s:
                raise InvalidPolicy("max_ttl_s", f"{self.max_ttl_s} is below ttl_s {self.ttl_s}")
        for name in ("quota_per_tenant", "quota_total"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidPolicy(name, "must be a positive integer")
        if self.quota_per_tenant > self.quota_total:
            raise InvalidPolicy("quota_per_tenant", "is above quota_total")
        try:
            object.__setattr__(self, "eviction", Eviction(self.eviction))
        except ValueError:
            raise InvalidPolicy(
                "eviction", f"must be one of {[e.value for e in Eviction]}"
            ) from None
        for name in ("enabled", "strict", "cache_nondeterministic", "allow_truncated"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidPolicy(name, "must be a boolean")
        _unit("relax", self.relax)
        _number("extend", self.extend)
        if self.extend < 0:
            raise InvalidPolicy("extend", "must be >= 0")
        if self.target_false_hit_rate is not None:
            _unit("target_false_hit_rate", self.target_false_hit_rate)

    def with_changes(self, changes: Mapping[str, object]) -> CategoryPolicy:
        """A validated copy with some fields changed (SetPolicy); unknown names are refused.

        Lowering `threshold` below `min_threshold` (without setting `min_threshold` too) moves
        the bound down with it, keeping the room load adaptation had (threshold − min_threshold):
        the user asked for a lower threshold, and refusing would make them change two fields to
        change one. Setting both to inconsistent values is refused, naming both values."""
        known = {f.name for f in dataclasses.fields(self)}
        for name in changes:
            if name not in known:
                raise InvalidPolicy(name, "unknown policy field")
        changes = dict(changes)
        threshold = changes.get("threshold")
        if (
            "min_threshold" not in changes
            and isinstance(threshold, (int, float))
            and not isinstance(threshold, bool)
            and math.isfinite(threshold)
            and threshold < self.min_threshold
        ):
            room = self.threshold - self.min_threshold
            changes["min_threshold"] = max(0.0, round(threshold - room, 6))
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def effective(policy: CategoryPolicy, load: float) -> tuple[float, float]:
    """(threshold, ttl_s) in force at backend load `load` in [0, 1].

    Under load a cache hit is worth more (it spares a queued GPU), so non-strict categories
    accept slightly less similar prompts and keep answers longer:
    threshold = max(min_threshold, threshold − relax·L), ttl = min(max_ttl, ttl·(1 + extend·L)).
    """
    if policy.strict:
        return policy.threshold, policy.ttl_s
    load = min(1.0, max(0.0, load)) if math.isfinite(load) else 0.0
    threshold = max(policy.min_threshold, policy.threshold - policy.relax * load)
    ttl = policy.ttl_s * (1.0 + policy.extend * load)
    if policy.max_ttl_s is not None:
        ttl = min(policy.max_ttl_s, ttl)
    return threshold, ttl


def default_policies() -> dict[str, CategoryPolicy]:
    """The shipped categories (a fresh dict each call; the service owns its copy).

    Thresholds are tuned by bench/cache_quality on QQP (MiniLM) with the service's decision
    (one search over every category, the stricter of the two categories' thresholds), chosen
    on the calibration half only: the lowest global threshold whose false-hit rate stays <= 2%
    of lookups (0.962), plus the per-category moves that beat the half's sampling noise (none
    does: QQP's categories want the same threshold). Strict categories keep 0.97 — a product
    choice, not a QQP finding (a wrong medical or legal answer costs more than QQP's uniform
    labels say). `min_threshold` = threshold − `relax`: full backend load reaches the bound,
    and online calibration may move a non-strict category down to it towards
    `target_false_hit_rate` (2% of lookups). They are conservative: QQP's negatives are hard,
    high-overlap near-misses, which is exactly the false hit users complain about.
    """
    tuned, bound = 0.962, 0.932  # bench/cache_quality README, "re-tuned after one search"
    return {
        "default": CategoryPolicy(
            threshold=tuned, ttl_s=DAY, min_threshold=bound, max_ttl_s=2 * DAY
        ),
        "code": CategoryPolicy(
            threshold=tuned,
            ttl_s=30 * DAY,
            min_threshold=bound,
            max_ttl_s=60 * DAY,
            eviction=Eviction.LFU,
        ),
        "conversation": CategoryPolicy(
            threshold=tuned, ttl_s=DAY, min_threshold=bound, max_ttl_s=2 * DAY
        ),
        "knowledge": CategoryPolicy(
            threshold=tuned,
            ttl_s=7 * DAY,
            min_threshold=bound,
            max_ttl_s=14 * DAY,
            eviction=Eviction.LFU,
        ),
        "time_sensitive": CategoryPolicy(
            threshold=tuned,
            ttl_s=5 * MINUTE,
            min_threshold=bound,
            max_ttl_s=10 * MINUTE,
            eviction=Eviction.TTL_FIRST,
            extend=0.5,
        ),
        # Strict categories stay the strictest of all (a wrong medical or legal answer costs most).
        "health": CategoryPolicy(
            threshold=0.97, ttl_s=DAY, strict=True, min_threshold=0.97, max_ttl_s=DAY
        ),
        "legal": CategoryPolicy(
            threshold=0.97, ttl_s=DAY, strict=True, min_threshold=0.97, max_ttl_s=DAY
        ),
        "assistant": CategoryPolicy(
            threshold=tuned, ttl_s=HOUR, min_threshold=bound, max_ttl_s=2 * HOUR
        ),
    }


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidPolicy(name, "must be a finite number")
    return float(value)


def _unit(name: str, value: object) -> None:
    if not 0.0 <= _number(name, value) <= 1.0:
        raise InvalidPolicy(name, "must be in [0, 1]")


def _positive(name: str, value: object) -> None:
    if _number(name, value) <= 0:
        raise InvalidPolicy(name, "must be positive")
