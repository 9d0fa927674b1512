"""What the clients send: one picklable `Workload` per scenario, prepared by the parent.

A workload's `connect(conn, proc)` returns the coroutine function a client calls once per
request (`await call(seq)`); it raises on any failure and `error_code` names the failure
(the gRPC status, `HTTP_<code>` for the gateway, else the exception's type). Request bodies
are built up front where the SDK allows, so the client spends its CPU on the RPC itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from curacache.client import AsyncClient
from curacache.client.errors import CuracacheError

# A call returns the kind of request it made where a workload mixes several (else None).
Call = Callable[[int], Awaitable[str | None]]
MODEL = "fake-llm"


class HttpStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def error_code(exc: BaseException) -> str:
    if isinstance(exc, CuracacheError):
        return exc.code.name
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    if isinstance(exc, HttpStatusError):
        return f"HTTP_{exc.status}"
    if isinstance(exc, asyncio.TimeoutError):
        return "CLIENT_TIMEOUT"
    return type(exc).__name__


@dataclass(slots=True)
class Connection:
    """Where to send: the gRPC target and (for gateway scenarios) the gateway's base URL.
    Picklable until entered; entering opens the channel (and an HTTP session if needed)."""

    target: str
    gateway: str = ""
    api_key: str | None = None
    timeout_s: float = 60.0
    client: Any = None
    http: Any = None

    async def __aenter__(self) -> Connection:
        self.client = AsyncClient(self.target, api_key=self.api_key, timeout=self.timeout_s)
        if self.gateway:
            import aiohttp

            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http is not None:
            await self.http.close()
        await self.client.close()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "gateway": self.gateway,
            "api_key": self.api_key,
            "timeout_s": self.timeout_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self.client = self.http = None


class Workload:
    """Base: `name` for reports; `connect` returns the per-request call."""

    name = "workload"

    async def connect(self, conn: Connection, proc: int) -> Call:
        raise NotImplementedError


@dataclass
class HealthCheck(Workload):
    """grpc.health.v1 Health.Check: the floor of this client, this server and gRPC itself."""

    name: str = "health"

    async def connect(self, conn: Connection, proc: int) -> Call:
        client = conn.client

        async def call(seq: int) -> None:
            await client.health()

        return call


@dataclass
class CacheLookup(Workload):
    """Cache.Lookup of `prompts` (with `embeddings` when given) as `tenants` in turn."""

    prompts: list[str]
    tenants: list[str]
    embeddings: np.ndarray | None = None
    name: str = "lookup"

    async def connect(self, conn: Connection, proc: int) -> Call:
        client, prompts, tenants, emb = conn.client, self.prompts, self.tenants, self.embeddings
        offset = proc * 7919  # processes walk the prompts from different places

        async def call(seq: int) -> None:
            i = (seq + offset) % len(prompts)
            await client.lookup(
                prompts[i],
                tenants[i % len(tenants)],
                model=MODEL,
                embedding=None if emb is None else emb[i],
            )

        return call


@dataclass
class CacheStore(Workload):
    """Cache.Store of new entries (a unique prompt per request; embedding reused from a pool)."""

    embeddings: np.ndarray
    tenants: list[str]
    name: str = "store"

    async def connect(self, conn: Connection, proc: int) -> Call:
        client, emb, tenants = conn.client, self.embeddings, self.tenants

        async def call(seq: int) -> None:
            i = seq % len(emb)
            await client.store(
                f"load-store p{proc} #{seq}: {i}",
                f"answer {seq}",
                tenants[i % len(tenants)],
                model=MODEL,
                embedding=emb[i],
            )

        return call


@dataclass
class Generate(Workload):
    """Cache.Generate streamed to the end: a `hit_ratio` share replays prompts stored at setup,
    the rest are new prompts that go to the backend (fake-llm) and are then stored."""

    hit_prompts: list[str]
    hit_ratio: float
    tenant: str = "gen"
    name: str = "generate"

    async def connect(self, conn: Connection, proc: int) -> Call:
        client, hits, ratio, tenant = conn.client, self.hit_prompts, self.hit_ratio, self.tenant
        rng = np.random.default_rng(1000 + proc)

        async def call(seq: int) -> None:
            if rng.random() < ratio:
                prompt = hits[seq % len(hits)]
            else:
                prompt = f"load-generate miss p{proc} #{seq} {rng.integers(1 << 62)}"
            async for _ in client.generate(
                prompt, tenant, model=MODEL, params={"temperature": 0.0}
            ):
                pass

        return call


@dataclass
class Search(Workload):
    """Vectors.Search of `queries[i]` as `tenants[i]` (k nearest, ids and scores only)."""

    collection: str
    queries: np.ndarray
    tenants: list[str]
    k: int = 10
    name: str = "search"

    async def connect(self, conn: Connection, proc: int) -> Call:
        client, coll, q, tenants, k = (
            conn.client,
            self.collection,
            self.queries,
            self.tenants,
            self.k,
        )
        offset = proc * 7919

        async def call(seq: int) -> None:
            i = (seq + offset) % len(q)
            await client.search(coll, q[i], tenants[i], k=k)

        return call


@dataclass
class Upsert(Workload):
    """Vectors.Upsert of `batch` new records per request (ids unique per process and request)."""

    collection: str
    vectors: np.ndarray
    tenants: list[list[str]]
    batch: int = 1
    name: str = "upsert"

    async def connect(self, conn: Connection, proc: int) -> Call:
        client, coll, vecs, tenants, b = (
            conn.client,
            self.collection,
            self.vectors,
            self.tenants,
            self.batch,
        )

        async def call(seq: int) -> None:
            start = (seq * b) % len(vecs)
            rows = [(start + j) % len(vecs) for j in range(b)]
            await client.upsert(
                coll,
                [f"load-p{proc}-{seq}-{j}" for j in range(b)],
                vecs[rows],
                owner=tenants[rows[0]][0],
                tenants=[tenants[r] for r in rows],
            )

        return call


@dataclass
class GatewayChat(Workload):
    """POST /v1/chat/completions on the gateway (non-streamed) for prompts cached at setup."""

    prompts: list[str]
    name: str = "gateway-hit"

    async def connect(self, conn: Connection, proc: int) -> Call:
        http, url, prompts = conn.http, f"{conn.gateway}/v1/chat/completions", self.prompts
        bodies = [
            {"model": MODEL, "messages": [{"role": "user", "content": p}], "temperature": 0}
            for p in prompts
        ]

        async def call(seq: int) -> None:
            async with http.post(url, json=bodies[seq % len(bodies)]) as r:
                await r.read()
                if r.status != 200:
                    raise HttpStatusError(r.status)

        return call


@dataclass
class Mixed(Workload):
    """Several workloads interleaved by weight (a deterministic shuffle per process)."""

    parts: list[tuple[Workload, float]] = field(default_factory=list)
    name: str = "mixed"

    async def connect(self, conn: Connection, proc: int) -> Call:
        calls = [await w.connect(conn, proc) for w, _ in self.parts]
        weights = np.array([w for _, w in self.parts], dtype=np.float64)
        # A fixed 1,000-slot schedule: exact proportions, no per-request random draw.
        rng = np.random.default_rng(proc)
        slots = rng.permutation(
            np.repeat(np.arange(len(calls)), np.round(weights / weights.sum() * 1000).astype(int))
        )

        names = [w.name for w, _ in self.parts]

        async def call(seq: int) -> str | None:
            part = slots[seq % len(slots)]
            await calls[part](seq)
            return names[part]

        return call
