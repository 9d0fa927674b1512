"""What the cache keeps in memory about its entries (DESIGN §5): per-category ledgers (TTL,
quota and eviction stay per category), which category each entry id is in, which category
each exact prompt was stored under (exact repeats skip the classifier), and the hits not yet
shared with the other replicas. All of it is rebuilt from the repository by `restore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from cache.errors import EntryNotFound, NotPermitted
from cache.fingerprint import entry_route_key
from cache.ledger import EntryMeta, Ledger
from cache.types import CacheEntry


class Bookkeeping:
    def __init__(self) -> None:
        self._ledgers: dict[str, Ledger] = {}
        self._where: dict[str, str] = {}  # entry id -> its category (the entry's policy)
        self._routes: dict[str, str] = {}  # route key -> category
        # Hits not yet shared with other replicas: entry id -> (last hit, how many).
        self._unshared_hits: dict[str, tuple[float, int]] = {}

    def clear(self) -> None:
        """Forget every entry (before a restore); unshared hits are kept."""
        self._ledgers, self._where, self._routes = {}, {}, {}

    def ledgers(self) -> Iterator[tuple[str, Ledger]]:
        """(category, ledger) for every category holding or having held entries (a copy, so
        the caller may remove while iterating)."""
        return iter(list(self._ledgers.items()))

    def ledger(self, category: str) -> Ledger:
        ledger = self._ledgers.get(category)
        if ledger is None:
            ledger = self._ledgers[category] = Ledger()
        return ledger

    def category_of(self, entry_id: str) -> str | None:
        """The category of an entry this process knows, else None."""
        return self._where.get(entry_id)

    def knows(self, entry_id: str) -> bool:
        return entry_id in self._where

    def route(self, route_key: str) -> str | None:
        """The category this exact prompt was stored under, if any."""
        return self._routes.get(route_key)

    def meta(self, entry_id: str) -> EntryMeta | None:
        category = self._where.get(entry_id)
        return None if category is None else self.ledger(category).get(entry_id)

    def remember(self, entry: CacheEntry) -> None:
        category = entry.category
        route = entry_route_key(
            tenant=entry.tenant,
            shared=entry.shared,
            prompt=entry.prompt,
            context_fp=entry.context_fp,
            model=entry.model,
            params_fp=entry.params_fp,
        )
        self.ledger(category).add(EntryMeta.of(entry, route))
        self._routes[route] = category
        self._where[entry.entry_id] = category

    def remove(self, category: str, entry_ids: Iterable[str]) -> list[EntryMeta]:
        """Remove these entries of `category`; returns what was removed."""
        removed = self.ledger(category).remove(entry_ids)
        for meta in removed:
            if self._where.get(meta.entry_id) == category:
                del self._where[meta.entry_id]
            if self._routes.get(meta.route_key) == category:
                del self._routes[meta.route_key]
        return removed

    def forget(self, entry_ids: Iterable[str]) -> None:
        """Another replica removed these entries (ids this process does not know: skipped)."""
        for entry_id in entry_ids:
            category = self._where.get(entry_id)
            if category is not None:
                self.remove(category, [entry_id])

    def touch(self, category: str, entry_id: str, now: float) -> None:
        """A hit served here: LRU/LFU order, and a hit to share with the other replicas."""
        self.ledger(category).touch(entry_id, now)
        _, count = self._unshared_hits.get(entry_id, (now, 0))
        self._unshared_hits[entry_id] = (now, count + 1)

    def drain_hits(self) -> dict[str, tuple[float, int]]:
        hits, self._unshared_hits = self._unshared_hits, {}
        return hits

    def observe_hits(self, hits: Mapping[str, tuple[float, int]]) -> None:
        for entry_id, (last, count) in hits.items():
            meta = self.meta(entry_id)
            if meta is not None:
                meta.hits += count
                meta.last_hit_at = max(meta.last_hit_at or last, last)

    def find(self, entry_id: str, tenant: str) -> str:
        """The category of an entry the tenant may see (NotPermitted, EntryNotFound)."""
        for category, ledger in self._ledgers.items():
            meta = ledger.get(entry_id)
            if meta is not None:
                if not meta.visible_to(tenant):
                    raise NotPermitted(f"entry {entry_id} is not visible to tenant {tenant!r}")
                return category
        raise EntryNotFound(f"no cache entry {entry_id!r}")
