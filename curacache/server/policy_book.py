"""Cache policies changed at run time (SetPolicy) live in the store, shared by every replica.

The configured policies (file + env) are each process's starting point; what SetPolicy changes
on top of them is kept, per category, as one JSON blob on the cache's collection. The write is
announced in the change log (`DocumentStore.put_blob(..., announce=True)`), so every replica
reloads it (`Replica.listen_blob` -> `reload`), and a restarted server applies it at start-up
(`load`): a policy change is neither per process nor lost on restart (DESIGN §6).

Each category's entry accumulates the fields ever set on it, and is re-applied to the
configured policy as a whole. Two replicas changing policies at the same instant race on the
blob (read, merge, write); the later write wins for the fields both set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from cache.errors import InvalidRequest
from cache.policy import CategoryPolicy, Eviction
from cache.service import SemanticCache
from curacache.server.cache_ports import CollectionRepository

log = logging.getLogger("curacache.policies")

POLICIES_BLOB = "policies"

Overrides = dict[str, dict[str, Any]]
"""category -> the policy fields set on it at run time (JSON values)."""


class PolicyBook:
    """SetPolicy's home: validates through the cache, keeps the change in the store."""

    def __init__(self, cache: SemanticCache, repository: CollectionRepository) -> None:
        self._cache = cache
        self._repository = repository
        self._applied: Overrides = {}

    @property
    def collection(self) -> str:
        return self._repository.name

    async def set(
        self, category: str, *, create: bool, changes: Mapping[str, object]
    ) -> CategoryPolicy:
        """Change `category`'s policy here (validated by the cache: errors name the field),
        then in the store for every replica and the next start."""
        await self.reload()  # first what other replicas changed, so it is kept, not overwritten
        policy = self._cache.set_policy(category, create=create, **changes)
        overrides = {c: dict(f) for c, f in self._applied.items()}
        overrides.setdefault(category, {}).update(
            {name: _to_json(value) for name, value in changes.items()}
        )
        self._applied = overrides
        await asyncio.to_thread(self._put, json.dumps(overrides, sort_keys=True).encode())
        return policy

    async def load(self) -> int:
        """Apply what the store holds (start-up); returns how many categories it changed."""
        return await self.reload()

    async def reload(self) -> int:
        """Apply the categories whose stored changes differ from what this process applied."""
        overrides = await self._read()
        changed = 0
        for category, fields in overrides.items():
            if self._applied.get(category) == fields:
                continue
            try:
                values = {name: _from_json(name, value) for name, value in fields.items()}
                self._cache.set_policy(category, create=True, **values)
                changed += 1
            except InvalidRequest as exc:  # e.g. a field no longer valid: keep the rest
                log.warning("stored policy of %r not applied: %s: %s", category, exc.field, exc)
        self._applied = overrides
        return changed

    async def _read(self) -> Overrides:
        raw = await asyncio.to_thread(self._get)
        if raw is None:
            return {}
        stored = json.loads(raw)
        return {str(c): dict(f) for c, f in stored.items()} if isinstance(stored, dict) else {}

    def _get(self) -> bytes | None:
        self._repository.collection()  # made on first use
        return self._repository.db.store.get_blob(self._repository.name, POLICIES_BLOB)

    def _put(self, data: bytes) -> None:
        self._repository.collection()
        self._repository.db.store.put_blob(
            self._repository.name, POLICIES_BLOB, data, announce=True
        )


def _to_json(value: object) -> object:
    return value.value if isinstance(value, Eviction) else value


def _from_json(name: str, value: object) -> object:
    return Eviction(value) if name == "eviction" and isinstance(value, str) else value
