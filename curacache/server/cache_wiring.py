"""Builds the semantic cache from configuration: embedder, classifier, LLM router, policies.

Part of the composition root: the only place where `cache` meets its port implementations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cache.classifier import LinearClassifier
from cache.clock import SystemClock
from cache.errors import InvalidRequest
from cache.options import CacheOptions
from cache.policy import CategoryPolicy, default_policies
from cache.service import SemanticCache
from curacache.embed.base import Embedder, HashingEmbedder
from curacache.embed.batching import BatchingEmbedder
from curacache.embed.minilm import MiniLMEmbedder
from curacache.embed.remote import OpenAIEmbedder
from curacache.llm.router import BackendRouter
from curacache.server.cache_ports import (
    CollectionRepository,
    RouterBackend,
    StoreLeases,
    StoreQuotaGuard,
    adopt_legacy_collections,
)
from curacache.server.config import CacheConfig, ConfigError, LimitsConfig
from curacache.server.policy_book import PolicyBook
from curacache.server.replica import Replica
from curacache.server.vectordb import VectorDB

log = logging.getLogger("curacache.cache")

EMBED_DIM = 384  # MiniLM; the remote embedder must serve the same dimension

EMBEDDERS: Mapping[str, Callable[[CacheConfig], Embedder]] = {
    # Dynamic batching merges concurrent lookups into one forward pass.
    "minilm": lambda c: BatchingEmbedder(inner=MiniLMEmbedder()),
    "hashing": lambda c: HashingEmbedder(dim=EMBED_DIM),  # tests and demos only: not semantic
    "remote": lambda c: BatchingEmbedder(
        inner=OpenAIEmbedder(base_url=c.embedder_url, model=c.embedder_model, dim=EMBED_DIM)
    ),
}


@dataclass(slots=True)
class CacheParts:
    """The cache and what must be closed with it."""

    cache: SemanticCache
    embedder: Embedder
    router: BackendRouter
    dim: int
    repository: CollectionRepository
    policies: PolicyBook
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)  # this replica, in notes

    async def replicate(self, entry_ids: Sequence[str]) -> None:
        """A change to the cache collection came through the log: update the bookkeeping."""
        found = await self.repository.get(entry_ids)
        self.cache.observe(found.values(), [i for i in entry_ids if i not in found])

    async def share_hits(self) -> int:
        """Announce the hits served here since the last call on the cache collection's log
        (one note), so every replica's LRU/LFU order counts every replica's hits; returns how
        many entries it named."""
        hits = self.cache.drain_hits()
        if not hits:
            return 0
        note = json.dumps({"origin": self.origin, "hits": {k: list(v) for k, v in hits.items()}})
        store = self.repository.db.store
        await asyncio.to_thread(store.announce, self.repository.name, [], note)
        return len(hits)

    async def replicated_hits(self, note: str) -> None:
        """A note from the log: another replica's hits (this replica's own come back too and
        are skipped: they are counted already)."""
        doc = json.loads(note)
        if doc.get("origin") == self.origin:
            return
        self.cache.observe_hits({k: (float(t), int(n)) for k, (t, n) in doc["hits"].items()})

    async def aclose(self) -> None:
        await self.router.aclose()
        await self.embedder.aclose()


def policies_from(config: CacheConfig) -> dict[str, CategoryPolicy]:
    """Shipped policies with the config's overrides applied (unknown categories start from default)."""
    policies = default_policies()
    for category, changes in config.policies.items():
        base = policies.get(category, policies["default"])
        try:
            policies[category] = base.with_changes(changes)
        except InvalidRequest as exc:
            raise ConfigError(f"cache.policies.{category}.{exc.field}: {exc.message}") from None
    return policies


def build_cache(
    config: CacheConfig,
    db: VectorDB,
    limits: LimitsConfig = LimitsConfig(),
    replica: Replica | None = None,
) -> CacheParts:
    """The cache over `db`; with `replica` (a server's tail of the store's log) its quotas
    are kept across every replica of the store (StoreQuotaGuard)."""
    factory = EMBEDDERS.get(config.embedder)
    if factory is None:
        raise ConfigError(
            f"cache.embedder: must be one of {sorted(EMBEDDERS)}, got {config.embedder!r}"
        )
    if config.embedder == "remote" and not (config.embedder_url and config.embedder_model):
        raise ConfigError(
            "cache.embedder_url and cache.embedder_model: required for the remote embedder"
        )
    if not config.hit_share_interval_s >= 0:
        raise ConfigError(
            f"cache.hit_share_interval_s: must be >= 0, got {config.hit_share_interval_s}"
        )
    if not config.miss_lease_s > 0:
        raise ConfigError(f"cache.miss_lease_s: must be positive, got {config.miss_lease_s}")
    for name in ("label_band", "verify_hits"):
        if not 0.0 <= getattr(config, name) <= 1.0:
            raise ConfigError(f"cache.{name}: must be in [0, 1], got {getattr(config, name)}")
    router = BackendRouter.from_configs(config.backends)
    embedder = factory(config)
    classifier = LinearClassifier.load()
    floor = classifier.floor if config.confidence_floor is None else config.confidence_floor
    repository = CollectionRepository(
        db=db, dim=EMBED_DIM, index_kind=config.index_kind, index_params=config.index_params
    )
    moved = adopt_legacy_collections(db, repository)
    if moved:
        log.info(
            "moved %d cache entries from per-category collections into %s", moved, repository.name
        )
    cache = SemanticCache(
        repository=repository,
        embedder=embedder,
        classifier=classifier,
        backend=RouterBackend(router=router, default_model=config.default_model or None),
        clock=SystemClock(),
        policies=policies_from(config),
        confidence_floor=floor,
        options=CacheOptions(
            max_prompt_bytes=limits.max_prompt_bytes,
            max_response_bytes=limits.max_response_bytes,
            label_band=config.label_band,
            verify_hits=config.verify_hits,
        ),
        leases=StoreLeases(db.store, ttl_s=config.miss_lease_s),
        quota_guard=StoreQuotaGuard(db.store, replica, repository) if replica else None,
    )
    return CacheParts(cache, embedder, router, EMBED_DIM, repository, PolicyBook(cache, repository))
