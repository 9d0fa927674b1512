"""Composition root: the only place that builds stores, indexes and servicers and wires them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from curacache.api.v1 import (
    cache_pb2,
    cache_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    vectors_pb2,
    vectors_pb2_grpc,
)
from curacache.embed.batching import BatchingEmbedder
from curacache.server.auth import Authenticator
from curacache.server.cache_wiring import CacheParts, build_cache
from curacache.server.config import ServerConfig, StorageConfig
from curacache.server.gate import Gate
from curacache.server.metrics import RpcObserver, ServiceMetrics, TimedStore
from curacache.server.placement_book import MAP_BLOB, PLACEMENT_COLLECTION, PlacementBook
from curacache.server.policy_book import POLICIES_BLOB
from curacache.server.ratelimit import TenantRateLimiter
from curacache.server.replica import Replica
from curacache.server.servicers.cache import CacheServicer
from curacache.server.servicers.collections import CollectionsServicer
from curacache.server.servicers.vectors import VectorsServicer
from curacache.server.vectordb import VectorDB
from curator.warmup import warm_up
from storage.base import DocumentStore
from storage.redis import RedisStore
from storage.sqlite import SqliteStore

log = logging.getLogger("curacache.server")

STORES: Mapping[str, Callable[[StorageConfig], DocumentStore]] = {
    "sqlite": lambda c: SqliteStore(c.data_dir / "curacache.sqlite3"),
    "redis": lambda c: RedisStore(
        c.redis_url,
        prefix=c.redis_prefix,
        wait_replicas=c.redis_wait_replicas,
        wait_timeout_ms=c.redis_wait_timeout_ms,
    ),
}

SERVICE_NAMES = (
    collections_pb2.DESCRIPTOR.services_by_name["Collections"].full_name,
    vectors_pb2.DESCRIPTOR.services_by_name["Vectors"].full_name,
)
CACHE_SERVICE_NAME = cache_pb2.DESCRIPTOR.services_by_name["Cache"].full_name


def describe_store(config: StorageConfig) -> str:
    if config.kind == "redis":
        return f"redis at {config.redis_url} (key prefix {config.redis_prefix!r})"
    return f"sqlite at {config.data_dir / 'curacache.sqlite3'}"


class CuracacheServer:
    """A started-or-startable grpc.aio server plus what must be closed after it stops."""

    def __init__(
        self,
        server: grpc.aio.Server,
        db: VectorDB,
        health_servicer: health.aio.HealthServicer,
        config: ServerConfig,
        cache: CacheParts | None = None,
        replica: Replica | None = None,
        metrics: ServiceMetrics | None = None,
    ) -> None:
        self.grpc_server = server
        self.db = db
        self.replica = replica
        self.store = db.store
        self.cache = cache
        self._health = health_servicer
        self._config = config
        self._tasks: list[asyncio.Task[None]] = []
        self.metrics = metrics
        self.metrics_port = 0  # bound once started, when metrics are on

    async def start(self) -> None:
        await self.grpc_server.start()
        if self.metrics is not None and self._config.metrics_port is not None:
            self.metrics.watch(
                asyncio.get_running_loop(),
                self.db,
                self.cache.cache if self.cache is not None else None,
                self.cache.router if self.cache is not None else None,
            )
            self.metrics_port = self.metrics.serve(self._config.host, self._config.metrics_port)
        names = (*SERVICE_NAMES, CACHE_SERVICE_NAME) if self.cache is not None else SERVICE_NAMES
        for name in ("", *names):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.replica is not None:
            self._tasks.append(asyncio.create_task(self.replica.run()))
        if self._config.snapshot_interval_s > 0:
            self._tasks.append(
                asyncio.create_task(self._snapshot_loop(self._config.snapshot_interval_s))
            )
        if self.cache is not None and self._config.cache.hit_share_interval_s > 0:
            self._tasks.append(
                asyncio.create_task(self._share_hits_loop(self._config.cache.hit_share_interval_s))
            )
        if self.cache is not None and self._config.cache.sweep_interval_s > 0:
            self._tasks.append(
                asyncio.create_task(self._sweep_loop(self._config.cache.sweep_interval_s))
            )

    async def _snapshot_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.db.save_snapshots)
            try:
                await asyncio.to_thread(self.store.trim_log, self._config.log_retention_s)
            except Exception:  # the log only grows until the next try; nothing is lost
                log.exception("trimming the change log failed")

    async def _share_hits_loop(self, interval: float) -> None:
        assert self.cache is not None
        while True:
            await asyncio.sleep(interval)
            try:
                await self.cache.share_hits()
            except Exception:  # those hits only count here; eviction order stays approximate
                log.exception("sharing cache hits failed")

    async def _sweep_loop(self, interval: float) -> None:
        assert self.cache is not None
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.cache.cache.sweep_expired()
            except (
                Exception
            ):  # a failing sweep must not end the loop; expired entries are never served anyway
                log.exception("cache sweep failed")
                continue
            if removed:
                log.info("cache sweep removed %d expired entries", removed)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, drain in-flight RPCs within `grace` seconds, snapshot, close the store."""
        await self._health.enter_graceful_shutdown()
        await self.grpc_server.stop(self._config.grace_seconds if grace is None else grace)
        if self.metrics is not None:
            self.metrics.close()
        for task in self._tasks:
            task.cancel()
        if self.cache is not None:
            await self.cache.aclose()
        await asyncio.to_thread(self.db.save_snapshots)
        await asyncio.to_thread(self.store.close)

    async def wait_for_termination(self) -> None:
        await self.grpc_server.wait_for_termination()


async def create_server(
    config: ServerConfig, *, store: DocumentStore | None = None
) -> tuple[CuracacheServer, int]:
    """Open the store, rebuild every index from it, and bind (not start) the gRPC server.

    Returns the server and the bound port (useful with port 0 in tests).
    """
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(config.io_threads, thread_name_prefix="curacache-io")
    )
    store = store if store is not None else STORES[config.storage.kind](config.storage)
    metrics = ServiceMetrics() if config.metrics_port is not None else None
    if metrics is not None:
        store = TimedStore(store, metrics.observe_store)
    try:
        # Before anything can search or write (and long before health says SERVING): no
        # request pays numba's compilation or cache loading.
        warm_s = await asyncio.to_thread(warm_up)
        log.info("compiled kernels ready in %.2f s", warm_s)
        await asyncio.to_thread(store.ping)
        placement = PlacementBook(store, config.group)
        db = VectorDB(store, default_index_kind=config.default_index_kind, placement=placement)
        replica = Replica(db, poll_interval_s=config.replica_poll_interval_s)
        await asyncio.to_thread(replica.begin)  # before loading: the tail starts where it ends
        await asyncio.to_thread(placement.load)
        await asyncio.to_thread(db.load)
        replica.keep_loaded_only()  # another group's collections: their logs are not read

        async def placement_changed() -> None:
            await asyncio.to_thread(placement.load)
            await asyncio.to_thread(replica.follow_placement)

        replica.listen_blob(PLACEMENT_COLLECTION, MAP_BLOB, placement_changed)
        cache = None
        if config.cache.enabled:
            cache = await asyncio.to_thread(build_cache, config.cache, db, config.limits, replica)
            restored = await cache.cache.restore()
            changed = await cache.policies.load()
            log.info(
                "semantic cache ready (%s embedder, %d entries, %d policies changed at run time)",
                config.cache.embedder,
                restored,
                changed,
            )
            replica.listen(cache.repository.name, cache.replicate)
            replica.listen_notes(cache.repository.name, cache.replicated_hits)
            replica.listen_blob(cache.repository.name, POLICIES_BLOB, cache.policies.reload)
    except BaseException:
        store.close()
        raise

    if metrics is not None and cache is not None and isinstance(cache.embedder, BatchingEmbedder):
        cache.embedder.on_batch = metrics.observe_embed_batch
    if config.access_log:
        logging.getLogger("curacache.access").setLevel(logging.INFO)
    limits = config.limits
    server = grpc.aio.server(
        # Timing and the access log wrap every RPC: installed only when asked for.
        interceptors=[RpcObserver(metrics, log_access=config.access_log)]
        if metrics is not None or config.access_log
        else [],
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            # --workers N: N processes bind the one port and the kernel spreads connections.
            ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
            # Overload: gRPC sheds the backlog of calls not yet taken up (LimitsConfig).
            ("grpc.server.max_pending_requests", limits.max_pending_rpcs),
            ("grpc.server.max_pending_requests_hard_limit", limits.max_pending_rpcs_hard),
        ],
    )
    gate = Gate(
        Authenticator(config.auth), TenantRateLimiter(limits.tenant_rate, limits.tenant_burst)
    )
    collections_pb2_grpc.add_CollectionsServicer_to_server(
        CollectionsServicer(db, gate, limits), server
    )
    vectors_pb2_grpc.add_VectorsServicer_to_server(
        VectorsServicer(db, gate, limits, replica), server
    )
    if cache is not None:
        cache_pb2_grpc.add_CacheServicer_to_server(
            CacheServicer(
                cache.cache,
                gate,
                policies=cache.policies,
                dim=cache.dim,
                router=cache.router,
                max_forward_bytes=limits.max_forward_bytes,
                replica=replica,
                log_collection=cache.repository.name,
            ),
            server,
        )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            *((CACHE_SERVICE_NAME,) if cache is not None else ()),
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )

    address = f"{config.host}:{config.port}"
    if config.tls.enabled:
        assert config.tls.cert_file is not None and config.tls.key_file is not None
        credentials = grpc.ssl_server_credentials(
            [(config.tls.key_file.read_bytes(), config.tls.cert_file.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if not config.auth.enabled:
        log.warning(
            "authentication is OFF (allowed only because %s is a loopback address)", config.host
        )
    return (
        CuracacheServer(server, db, health_servicer, config, cache, replica, metrics),
        port,
    )
