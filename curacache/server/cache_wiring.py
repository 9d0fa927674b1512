"""Builds the semantic cache from configuration: embedder, classifier, LLM router, policies.

Part of the composition root: the only place where `cache` meets its port implementations.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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

    async def replicate(self, entry_ids: Sequence[str]) -> None:
        """A change to the cache collection came through the log: update the bookkeeping."""
        found = await self.repository.get(entry_ids)
        self.cache.observe(found.values(), [i for i in entry_ids if i not in found])

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
