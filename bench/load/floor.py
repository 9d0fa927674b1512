"""Where a cache lookup's server time goes: gRPC's floor and our code's share.

    # 1. gRPC's floor for Cache.Lookup's messages: a server whose Lookup and Store return a
    #    canned answer, loaded by bench.load like the real one
    python -m bench.load.floor serve --port 50100 &
    python -m bench.load --target 127.0.0.1:50100 --server-pid $! \\
        --scenario lookup-embedding --clients 1,16 --repeats 3
    # 2. our code's share: CacheServicer.Lookup called in process (no gRPC) on the same
    #    workload (2,000 QQP entries over 4 tenants, their paired questions looked up),
    #    over the server's own wiring (SQLite store, default index kind, shipped policies)
    python -m bench.load.floor inproc [--lookups 8000]

The real server's CPU per lookup (bench.load) is about the canned server's plus `inproc`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bench.load.scenarios import Data
from curacache.api.v1 import cache_pb2 as pb
from curacache.api.v1 import cache_pb2_grpc
from curacache.server.app import STORES
from curacache.server.auth import Authenticator
from curacache.server.cache_wiring import build_cache
from curacache.server.config import ServerConfig, load_config
from curacache.server.gate import Gate
from curacache.server.ratelimit import TenantRateLimiter
from curacache.server.servicers.cache import CacheServicer
from curacache.server.vectordb import VectorDB
from curator.warmup import warm_up

ENTRIES, TENANTS, MODEL = 2000, 4, "m"


class CannedCache(cache_pb2_grpc.CacheServicer):
    """Lookup and Store as cheap as they can be: what gRPC alone costs for these messages."""

    async def Lookup(self, request: pb.LookupRequest, context: Any) -> pb.LookupResponse:
        return pb.LookupResponse(
            hit=False, similarity=0.5, category="default", reason="below_threshold", threshold=0.9
        )

    async def Store(self, request: pb.StoreRequest, context: Any) -> pb.StoreResponse:
        return pb.StoreResponse(entry_id="e", category="default", stored=True)


async def start_canned(port: int) -> tuple[grpc.aio.Server, int]:
    """The canned Cache server, started on 127.0.0.1:`port` (0: a free one), and its port."""
    server = grpc.aio.server()
    cache_pb2_grpc.add_CacheServicer_to_server(CannedCache(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound


async def serve(port: int) -> None:
    server, bound = await start_canned(port)
    print(f"canned Cache server on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


class _Context:
    """The part of grpc.aio.ServicerContext the Cache servicer uses on these calls."""

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass


async def inproc(lookups: int) -> float:
    """CPU ms per CacheServicer.Lookup (printed with the wall time and hit rate)."""
    warm_up()
    config: ServerConfig = load_config(env={}, overrides={"cache.embedder": "hashing"})
    with tempfile.TemporaryDirectory() as tmp:
        store = STORES["sqlite"](replace(config.storage, data_dir=Path(tmp)))
        db = VectorDB(store, default_index_kind=config.default_index_kind)
        db.load()
        parts = build_cache(config.cache, db, config.limits)
        try:
            await parts.cache.restore()
            await parts.policies.load()
            limits = config.limits
            servicer = CacheServicer(
                parts.cache,
                Gate(
                    Authenticator(config.auth),
                    TenantRateLimiter(limits.tenant_rate, limits.tenant_burst),
                ),
                policies=parts.policies,
                dim=parts.dim,
                router=parts.router,
                max_forward_bytes=limits.max_forward_bytes,
            )
            context: Any = _Context()
            stored, asked, stored_emb, asked_emb = Data().qqp_entries(ENTRIES)
            tenants = [f"t{i}" for i in range(TENANTS)]

            def query(i: int, prompt: str, emb: Any) -> pb.CacheQuery:
                return pb.CacheQuery(
                    tenant=tenants[i % TENANTS],
                    prompt=prompt,
                    model=MODEL,
                    embedding=emb.astype("<f4").tobytes(),
                )

            for i in range(ENTRIES):
                response = pb.CachedResponse(text=f"cached answer {i}")
                store_request = pb.StoreRequest(
                    query=query(i, stored[i], stored_emb[i]), response=response
                )
                await servicer.Store(store_request, context)
            requests = [
                pb.LookupRequest(query=query(i, asked[i], asked_emb[i])) for i in range(ENTRIES)
            ]
            for request in requests[:500]:  # warm-up
                await servicer.Lookup(request, context)
            hits = 0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for i in range(lookups):
                hits += (await servicer.Lookup(requests[i % ENTRIES], context)).hit
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            await parts.aclose()
            store.close()
    print(
        f"CacheServicer.Lookup in process: {1e3 * cpu / lookups:.3f} CPU ms per lookup "
        f"({1e3 * wall / lookups:.3f} ms wall), {lookups} lookups, hit rate {hits / lookups:.2f}"
    )
    return 1e3 * cpu / lookups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="the canned Cache server (gRPC's floor)")
    serve_p.add_argument("--port", type=int, default=0)
    inproc_p = sub.add_parser("inproc", help="CacheServicer.Lookup's CPU without gRPC")
    inproc_p.add_argument("--lookups", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(serve(args.port))
    else:
        asyncio.run(inproc(args.lookups))


if __name__ == "__main__":
    main()
