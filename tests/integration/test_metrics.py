"""`--metrics-port`: the Prometheus endpoint of a real server, parsed with prometheus-client's
own parser; and the access log."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from curacache.client import Client
from curacache.client.cache_types import GenerateResult
from curacache.client.errors import InvalidArgumentError
from curacache.llm.simulator import SimConfig
from tests.integration.test_cache_api import ThreadFakeLLM
from tests.server_harness import ThreadServer

MODEL = "fake-llm"


@pytest.fixture
def storage() -> str:
    return "sqlite"  # the metrics do not depend on the store; the Redis path has its own tests


@pytest.fixture
def fake_llm() -> Iterator[ThreadFakeLLM]:
    sim = ThreadFakeLLM(SimConfig(ttft_ms=5, tokens_per_s=5000, max_concurrency=4))
    yield sim
    sim.stop()


def scrape(server: ThreadServer) -> dict[str, Any]:
    port = server.server.metrics_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, suffix: str = "", **labels: str) -> float:
    """The value of the one sample of `name` (+suffix) whose labels include `labels`."""
    found = [
        s.value
        for s in families[name].samples
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, suffix, labels, families[name].samples)
    return float(found[0])


def test_metrics_endpoint_reports_rpcs_cache_collections_embedder_backend_and_store(
    start_server: Callable[..., ThreadServer],
    fake_llm: ThreadFakeLLM,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = start_server(
        metrics_port=0,
        access_log=True,
        **{
            "cache.embedder": "minilm",
            "cache.backends": f"sim={fake_llm.base_url}",
            "cache.default_model": MODEL,
        },
    )
    assert server.server.metrics_port > 0
    rng = np.random.default_rng(0)
    caplog.set_level(logging.INFO, logger="curacache.access")
    with Client(server.target) as c:
        c.create_collection("docs", 8, index="flat")
        c.upsert("docs", ["a", "b"], rng.standard_normal((2, 8)).astype(np.float32), owner="t1")
        c.search("docs", rng.standard_normal(8).astype(np.float32), "t1", k=1)
        with pytest.raises(InvalidArgumentError):
            c.search("docs", np.zeros(3, np.float32), "t1", k=1)
        final = [
            i
            for i in c.generate("What is a vector index?", "t1", model=MODEL)
            if isinstance(i, GenerateResult)
        ]
        assert final and not final[0].cached
        assert c.lookup("What is a vector index?", "t1", model=MODEL).hit
        miss = c.lookup("How tall is Mont Blanc?", "t1", model=MODEL)
        assert not miss.hit

    m = scrape(server)
    rpc = "curacache_rpc_duration_seconds"
    assert sample(m, rpc, "_count", method="Vectors/Search", code="OK") == 1
    assert sample(m, rpc, "_count", method="Vectors/Search", code="INVALID_ARGUMENT") == 1
    assert sample(m, rpc, "_count", method="Cache/Lookup", code="OK") == 2
    assert sample(m, rpc, "_count", method="Cache/Generate", code="OK") == 1
    assert sample(m, rpc, "_bucket", method="Cache/Lookup", code="OK", le="+Inf") == 2

    lookups = sum(s.value for s in m["curacache_cache_lookups"].samples)
    assert lookups == 3  # Generate's own lookup, then the hit and the miss
    assert sum(s.value for s in m["curacache_cache_hits"].samples) == 1
    assert sum(s.value for s in m["curacache_cache_misses"].samples) == 2
    assert sum(s.value for s in m["curacache_cache_stores"].samples) == 1
    assert {s.labels["category"] for s in m["curacache_cache_effective_threshold"].samples} >= {
        "default"
    }
    assert all(0 < s.value <= 1 for s in m["curacache_cache_effective_threshold"].samples)
    assert all(s.value > 0 for s in m["curacache_cache_effective_ttl_seconds"].samples)

    assert sample(m, "curacache_collection_records", collection="docs") == 2
    assert (
        sum(
            s.value
            for s in m["curacache_collection_index_memory_bytes"].samples
            if s.labels["collection"] == "docs"
        )
        > 0
    )

    assert sample(m, "curacache_embedder_batch_size", "_count") >= 2  # two misses embedded
    assert sample(m, "curacache_embedder_queue_wait_seconds", "_count") >= 2
    assert sample(m, "curacache_backend_in_flight", backend="sim") == 0
    assert sample(m, "curacache_backend_attempts", "_total", backend="sim", outcome="ok") == 1
    assert sample(m, "curacache_backend_ttft_seconds", "_count", backend="sim") == 1
    assert sample(m, "curacache_store_operation_seconds", "_count", operation="put_many") >= 2

    lines = [r.getMessage() for r in caplog.records if r.name == "curacache.access"]
    assert any(
        line.startswith("Vectors/Search tenant=t1 status=INVALID_ARGUMENT ms=") for line in lines
    ), lines
    assert any(line.startswith("Cache/Lookup tenant=t1 status=OK") for line in lines), lines


def test_metrics_and_access_log_are_off_by_default(
    start_server: Callable[..., ThreadServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server()
    caplog.set_level(logging.INFO, logger="curacache.access")
    with Client(server.target) as c:
        assert c.health() == "SERVING"
    assert server.server.metrics is None and server.server.metrics_port == 0
    assert not [r for r in caplog.records if r.name == "curacache.access"]
