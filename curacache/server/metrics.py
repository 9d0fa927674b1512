"""The service's Prometheus metrics (`curacache serve --metrics-port P`) and access log.

One `ServiceMetrics` per server, with its own registry (no global state). What is measured
where it happens is recorded through small injected callables, so `cache/`, `storage/` and
`curacache.embed/llm` never import prometheus_client:

- RPC latency by method and status code: `RpcObserver`, a grpc.aio server interceptor (it
  also writes the access log, one line per RPC, when enabled);
- store latency by operation: `TimedStore`, a delegating wrapper around the DocumentStore;
- embedder batch size and queue wait: `BatchingEmbedder.on_batch`.

What the service already counts (the cache's per-category counters and policies, collection
sizes, backend load) is read at scrape time by `_ServiceCollector`, on the event loop that owns
that state (the HTTP server runs in its own thread).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from cache.service import SemanticCache
from curacache.llm.router import BackendRouter
from curacache.server.vectordb import VectorDB
from storage.base import DocumentStore

access_log = logging.getLogger("curacache.access")
log = logging.getLogger("curacache.metrics")

# A Health.Check answers in ~0.1 ms, a cache hit in ~1 ms, a Generate miss in LLM time.
RPC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
STORE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SCRAPE_TIMEOUT_S = 10.0


class ServiceMetrics:
    """The registry and the instruments the server's parts record into."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpc_seconds = Histogram(
            "curacache_rpc_duration_seconds",
            "gRPC server time per RPC, by method and status code (streams: to the last message)",
            ("method", "code"),
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "curacache_store_operation_seconds",
            "Document store call time by operation (iter_records: until the iterator is made)",
            ("operation",),
            buckets=STORE_BUCKETS,
            registry=self.registry,
        )
        self.embed_batch = Histogram(
            "curacache_embedder_batch_size",
            "Texts per embedder forward pass (dynamic batching)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.embed_wait = Histogram(
            "curacache_embedder_queue_wait_seconds",
            "Longest wait of a request in a pass's batch, from enqueue to the pass starting",
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self._http: Any = None

    def observe_store(self, operation: str, seconds: float) -> None:
        self.store_seconds.labels(operation).observe(seconds)

    def observe_embed_batch(self, texts: int, wait_s: float) -> None:
        self.embed_batch.observe(texts)
        self.embed_wait.observe(wait_s)

    def watch(
        self,
        loop: asyncio.AbstractEventLoop,
        db: VectorDB,
        cache: SemanticCache | None,
        router: BackendRouter | None,
    ) -> None:
        """Report the service's own counters at scrape time (read on `loop`)."""
        self.registry.register(_ServiceCollector(loop, db, cache, router))

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics over HTTP in a daemon thread; returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _tenant_of(request: Any) -> str:
    tenant = getattr(request, "tenant", None)
    if tenant is None:
        query = getattr(request, "query", None)
        tenant = getattr(query, "tenant", None) if query is not None else None
    return tenant if isinstance(tenant, str) else ""


class RpcObserver(grpc.aio.ServerInterceptor):
    """Times every RPC into `metrics` (if given) and writes the access log (if `log_access`).

    Installed only when one of them is on, so a server without either pays nothing."""

    def __init__(self, metrics: ServiceMetrics | None, *, log_access: bool) -> None:
        self._metrics = metrics
        self._log_access = log_access

    def _done(self, method: str, request: Any, context: Any, started: float, error: bool) -> None:
        seconds = time.perf_counter() - started
        code = context.code()
        if code is None:  # the handler returned normally (or the client cancelled)
            code = grpc.StatusCode.UNKNOWN if error else grpc.StatusCode.OK
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        if self._metrics is not None:
            self._metrics.rpc_seconds.labels(method, name).observe(seconds)
        if self._log_access:
            access_log.info(
                "%s tenant=%s status=%s ms=%.2f",
                method,
                _tenant_of(request) or "-",
                name,
                seconds * 1e3,
            )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler  # no client-streaming methods here
        method = handler_call_details.method.rsplit("/", 2)
        name = f"{method[-2].rsplit('.', 1)[-1]}/{method[-1]}" if len(method) == 3 else "unknown"
        done = self._done
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                started, error = time.perf_counter(), True
                try:
                    response = await inner(request, context)
                    error = False
                    return response
                finally:
                    done(name, request, context, started, error)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                started, error = time.perf_counter(), True
                try:
                    async for message in inner_stream(request, context):
                        yield message
                    error = False
                finally:
                    done(name, request, context, started, error)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


class TimedStore:
    """A DocumentStore that reports each call's duration to `observe(operation, seconds)`."""

    def __init__(self, inner: DocumentStore, observe: Callable[[str, float], None]) -> None:
        self._inner = inner
        self._observe = observe

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr
        observe = self._observe

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                observe(name, time.perf_counter() - started)

        return timed


class _ServiceCollector(Collector):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        db: VectorDB,
        cache: SemanticCache | None,
        router: BackendRouter | None,
    ) -> None:
        self._loop = loop
        self._db = db
        self._cache = cache
        self._router = router

    def collect(self) -> Iterator[Metric]:
        try:
            snapshot = asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop).result(
                SCRAPE_TIMEOUT_S
            )
        except Exception:  # a scrape must never take the endpoint down
            log.exception("metrics snapshot failed")
            return
        yield from snapshot

    async def _snapshot(self) -> list[Metric]:
        # The cache's counters belong to the event loop: read them there, in one go.
        metrics = self._cache_metrics() if self._cache is not None else []
        metrics += self._backend_metrics() if self._router is not None else []
        # Collection sizes take the collection's read lock and ask the store: a thread.
        metrics += await asyncio.to_thread(self._collection_metrics)
        return metrics

    def _cache_metrics(self) -> list[Metric]:
        assert self._cache is not None
        try:
            stats = self._cache.stats()
        except Exception:  # e.g. no backend serves the default model: load unknown
            log.debug("cache stats unavailable", exc_info=True)
            return []
        c = "category"
        lookups = CounterMetricFamily("curacache_cache_lookups", "Cache lookups", labels=[c])
        hits = CounterMetricFamily(
            "curacache_cache_hits", "Cache hits by kind (exact, semantic)", labels=[c, "kind"]
        )
        misses = CounterMetricFamily(
            "curacache_cache_misses", "Cache misses by reason", labels=[c, "reason"]
        )
        feedback = CounterMetricFamily(
            "curacache_cache_feedback", "Hit feedback by verdict", labels=[c, "verdict"]
        )
        evictions = CounterMetricFamily(
            "curacache_cache_evictions", "Entries evicted (quota)", labels=[c]
        )
        expirations = CounterMetricFamily(
            "curacache_cache_expirations", "Entries removed on expiry", labels=[c]
        )
        stores = CounterMetricFamily("curacache_cache_stores", "Entries stored", labels=[c])
        entries = GaugeMetricFamily("curacache_cache_entries", "Entries now", labels=[c])
        threshold = GaugeMetricFamily(
            "curacache_cache_effective_threshold",
            "Similarity threshold in force now (load-adapted, calibrated)",
            labels=[c],
        )
        ttl = GaugeMetricFamily(
            "curacache_cache_effective_ttl_seconds", "TTL in force now (load-adapted)", labels=[c]
        )
        for name, s in stats.items():
            k = s.counters
            lookups.add_metric([name], k.lookups)
            hits.add_metric([name, "exact"], k.exact_hits)
            hits.add_metric([name, "semantic"], k.semantic_hits)
            for reason, n in k.misses_by_reason.items():
                misses.add_metric([name, reason], n)
            feedback.add_metric([name, "incorrect"], k.false_hits)
            feedback.add_metric([name, "correct"], k.correct_hits)
            evictions.add_metric([name], k.evictions)
            expirations.add_metric([name], k.expirations)
            stores.add_metric([name], k.stores)
            entries.add_metric([name], s.entries)
            threshold.add_metric([name], s.effective_threshold)
            ttl.add_metric([name], s.effective_ttl_s)
        return [
            lookups,
            hits,
            misses,
            feedback,
            evictions,
            expirations,
            stores,
            entries,
            threshold,
            ttl,
        ]

    def _backend_metrics(self) -> list[Metric]:
        assert self._router is not None
        b = ["backend"]
        in_flight = GaugeMetricFamily(
            "curacache_backend_in_flight", "Calls to the backend in progress", labels=b
        )
        load = GaugeMetricFamily(
            "curacache_backend_load", "Load L in [0, 1] that adapts the cache policies", labels=b
        )
        ttft = SummaryMetricFamily(
            "curacache_backend_ttft_seconds", "Backend time to first token", labels=b
        )
        attempts = CounterMetricFamily(
            "curacache_backend_attempts",
            "HTTP attempts to the backend by outcome",
            labels=[*b, "outcome"],
        )
        for backend in self._router.backends:
            totals = backend.load_totals()
            in_flight.add_metric([backend.name], backend.in_flight)
            load.add_metric([backend.name], backend.load())
            ttft.add_metric([backend.name], totals.ttft_count, totals.ttft_sum_s)
            attempts.add_metric([backend.name, "ok"], totals.attempts - totals.failed_attempts)
            attempts.add_metric([backend.name, "error"], totals.failed_attempts)
        return [in_flight, load, ttft, attempts]

    def _collection_metrics(self) -> list[Metric]:
        records = GaugeMetricFamily(
            "curacache_collection_records", "Records per collection", labels=["collection"]
        )
        memory = GaugeMetricFamily(
            "curacache_collection_index_memory_bytes",
            "Index memory by collection and component",
            labels=["collection", "component"],
        )
        for collection in sorted(self._db.loaded(), key=lambda c: c.spec.name):  # in memory here
            try:
                stats = collection.stats()
            except Exception:  # deleted meanwhile
                continue
            records.add_metric([collection.spec.name], stats.record_count)
            for component, size in stats.index_memory.items():
                memory.add_metric([collection.spec.name, component], size)
        return [records, memory]
