"""In-memory bookkeeping of one category's entries (TTL, quota and eviction are per category): owner, expiry, hits, last hit.

Why in memory: eviction (LRU/LFU/quota) and the expiry sweeper need per-entry counters that
change on every hit; writing them to the store on each hit would double the store traffic of
the hot path. The ledger is rebuilt from `EntryRepository.scan()` at start-up (hits and
last_hit_at as of each entry's last put: counts since then are lost on a restart, which only
makes eviction order approximate). It describes the entries this process knows of, which
the change log keeps equal across replicas; other replicas' hits arrive as shared notes
(`SemanticCache.observe_hits`), a moment late.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cache.errors import NotPermitted
from cache.types import CacheEntry


@dataclass(slots=True)
class EntryMeta:
    entry_id: str
    category: str
    tenant: str
    shared: bool
    created_at: float
    expires_at: float
    hits: int
    last_hit_at: float | None
    route_key: str

    @classmethod
    def of(cls, entry: CacheEntry, route_key: str) -> EntryMeta:
        return cls(
            entry_id=entry.entry_id,
            category=entry.category,
            tenant=entry.tenant,
            shared=entry.shared,
            created_at=entry.created_at,
            expires_at=entry.expires_at,
            hits=entry.hits,
            last_hit_at=entry.last_hit_at,
            route_key=route_key,
        )

    def visible_to(self, tenant: str) -> bool:
        return self.shared or self.tenant == tenant


class Ledger:
    """Entry metadata of one category, indexed by id and by owner tenant."""

    def __init__(self) -> None:
        self._entries: dict[str, EntryMeta] = {}
        self._by_tenant: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[EntryMeta]:
        return iter(list(self._entries.values()))

    def get(self, entry_id: str) -> EntryMeta | None:
        return self._entries.get(entry_id)

    def add(self, meta: EntryMeta) -> EntryMeta | None:
        """Insert or replace; returns the replaced meta (same id), if any."""
        old = self._entries.get(meta.entry_id)
        if old is not None:
            self._by_tenant[old.tenant].discard(old.entry_id)
        self._entries[meta.entry_id] = meta
        self._by_tenant.setdefault(meta.tenant, set()).add(meta.entry_id)
        return old

    def remove(self, entry_ids: Iterable[str]) -> list[EntryMeta]:
        removed = []
        for entry_id in entry_ids:
            meta = self._entries.pop(entry_id, None)
            if meta is None:
                continue
            ids = self._by_tenant[meta.tenant]
            ids.discard(entry_id)
            if not ids:
                del self._by_tenant[meta.tenant]
            removed.append(meta)
        return removed

    def touch(self, entry_id: str, now: float) -> None:
        meta = self._entries.get(entry_id)
        if meta is not None:
            meta.hits += 1
            meta.last_hit_at = now

    def count(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._entries)
        return len(self._by_tenant.get(tenant, ()))

    def of_tenant(self, tenant: str) -> list[EntryMeta]:
        return [self._entries[i] for i in self._by_tenant.get(tenant, ())]

    def expired(self, now: float) -> list[str]:
        return [m.entry_id for m in self._entries.values() if now >= m.expires_at]


def select(ledger: Ledger, *, entry_ids: Iterable[str] | None, tenant: str | None) -> list[str]:
    """Ids for Invalidate: those named (if any) and owned by `tenant` (if set). Naming another
    tenant's entry with `tenant` set is refused rather than silently skipped."""
    wanted = set(entry_ids) if entry_ids is not None else None
    out = []
    for meta in ledger:
        if wanted is not None and meta.entry_id not in wanted:
            continue
        if tenant is not None and meta.tenant != tenant:
            if wanted is not None:
                raise NotPermitted(f"entry {meta.entry_id} belongs to another tenant")
            continue
        out.append(meta.entry_id)
    return out
