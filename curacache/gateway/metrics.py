"""The gateway's own Prometheus metrics, in a registry per gateway (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Hits answer in about a millisecond, misses take as long as the LLM: buckets span both.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
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
    120,
)


class GatewayMetrics:
    """Requests by endpoint and HTTP status; cache outcomes (hit, miss, bypass) by category;
    latency to the whole response and to its first byte."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "curacache_gateway_requests",
            "HTTP requests by endpoint and status code",
            ("endpoint", "status"),
            registry=self.registry,
        )
        self.cache = Counter(
            "curacache_gateway_cache",
            "Cacheable-endpoint requests by outcome (hit, miss, bypass) and category",
            ("result", "category"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "curacache_gateway_request_seconds",
            "Time to the whole response, by endpoint and cache outcome",
            ("endpoint", "result"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "curacache_gateway_first_byte_seconds",
            "Time to the first byte of the answer, by cache outcome",
            ("result",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
