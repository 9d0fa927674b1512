"""Quota enforcement: which entries to evict when a tenant or the category is over quota.

Expired entries always go first (they can never be served again); then the category's
policy orders the rest: lru (last hit, else creation), lfu (fewest hits, then oldest),
ttl-first (soonest expiry). The entry just stored is never its own victim.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cache.ledger import EntryMeta, Ledger
from cache.policy import CategoryPolicy, Eviction

SortKey = Callable[[EntryMeta], tuple[float, ...]]


def choose_victims(
    ledger: Ledger, policy: CategoryPolicy, *, tenant: str, now: float, keep: str | None = None
) -> list[str]:
    """Ids to evict so that `tenant` is within quota_per_tenant and the category within
    quota_total (the ledger already contains the new entry `keep`)."""
    order = victim_order(policy.eviction, now)
    victims: list[str] = []
    over = ledger.count(tenant) - policy.quota_per_tenant
    if over > 0:
        victims += _pick(ledger.of_tenant(tenant), over, order, keep, set())
    over = ledger.count() - len(victims) - policy.quota_total
    if over > 0:
        victims += _pick(ledger, over, order, keep, set(victims))
    return victims


def victim_order(policy: Eviction, now: float) -> SortKey:
    """Sort key: entries that sort first are evicted first."""

    def expired_first(meta: EntryMeta) -> float:
        return 0.0 if now >= meta.expires_at else 1.0

    if policy is Eviction.LFU:
        return lambda m: (expired_first(m), float(m.hits), m.created_at)
    if policy is Eviction.TTL_FIRST:
        return lambda m: (expired_first(m), m.expires_at, m.created_at)
    return lambda m: (
        expired_first(m),
        m.last_hit_at if m.last_hit_at is not None else m.created_at,
    )


def _pick(
    metas: Iterable[EntryMeta], n: int, order: SortKey, keep: str | None, taken: set[str]
) -> list[str]:
    candidates = sorted(
        (m for m in metas if m.entry_id != keep and m.entry_id not in taken), key=order
    )
    return [m.entry_id for m in candidates[:n]]
