"""Operational behaviour over the wire: rate limits, reflection, TLS, store outages."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from curacache.client import AsyncClient, Client, ResourceExhaustedError, UnavailableError
from tests.redis_server import RedisProcess
from tests.server_harness import ThreadServer, make_config


def test_tenant_over_its_rate_gets_resource_exhausted_with_retry_after(
    start_server: Callable[..., ThreadServer],
) -> None:
    server = start_server(**{"limits.tenant_rate": 0.5, "limits.tenant_burst": 3})
    with Client(server.target) as c:
        c.create_collection("c", 4, index="flat")
        for _ in range(3):
            c.search("c", np.ones(4), "greedy")
        with pytest.raises(ResourceExhaustedError) as info:
            c.search("c", np.ones(4), "greedy")
        assert info.value.retry_after is not None and info.value.retry_after >= 1
        assert c.search("c", np.ones(4), "polite") == []  # other tenants are not affected


def test_blocking_work_runs_in_the_configured_io_threads(
    start_server: Callable[..., ThreadServer],
) -> None:
    def io_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("curacache-io")}

    before = io_threads()  # other servers' (a module-scoped one may still be up)
    server = start_server(io_threads=2)
    with Client(server.target) as c:
        c.create_collection("c", 4, index="flat")
        for i in range(8):
            c.upsert("c", [f"r{i}"], np.ones((1, 4)), "t")
        assert len(c.search("c", np.ones(4), "t", k=8)) == 8
    assert 1 <= len(io_threads() - before) <= 2


def test_server_reflection_lists_the_services(server: ThreadServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request]), timeout=30))
        names = {s.name for s in response.list_services_response.service}
    assert {"curacache.v1.Collections", "curacache.v1.Vectors", "grpc.health.v1.Health"} <= names


def _self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("storage", ["sqlite"])
async def test_tls(tmp_path: Path, storage: str) -> None:
    cert, key = _self_signed_cert(tmp_path)
    config = make_config(
        storage, tmp_path / "data", None, **{"tls.cert_file": cert, "tls.key_file": key}
    )
    server = ThreadServer(config)
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with AsyncClient(f"localhost:{server.port}", credentials=credentials) as c:
            assert await c.health() == "SERVING"
            await c.create_collection("c", 4, index="flat")
        async with AsyncClient(f"localhost:{server.port}", timeout=5) as plaintext:
            with pytest.raises(UnavailableError):
                await plaintext.list_collections()
    finally:
        server.stop()


@pytest.mark.parametrize("storage", ["redis"])
def test_store_outage_is_unavailable_and_loses_nothing(
    start_server: Callable[..., ThreadServer], redis_server: RedisProcess, storage: str
) -> None:
    server = start_server()
    with Client(server.target, timeout=30) as c:
        c.create_collection("c", 4, index="flat")
        c.upsert("c", ["a"], np.ones((1, 4)), owner="t")
        redis_server.stop()
        try:
            with pytest.raises(UnavailableError):
                c.upsert("c", ["b"], np.ones((1, 4)), owner="t")
            with pytest.raises(UnavailableError):
                c.get("c", ["a"], "t")
        finally:
            redis_server.start()
        assert [r.id for r in c.get("c", ["a", "b"], "t")] == ["a"]
        assert [h.id for h in c.search("c", np.ones(4), "t")] == [
            "a"
        ]  # the refused write never reached the index
        c.upsert("c", ["b"], np.ones((1, 4)), owner="t")
        assert c.stats("c").record_count == 2
