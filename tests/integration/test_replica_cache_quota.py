"""Two replicas of one store keep a cache quota together (DESIGN §6: quota counts are the
store's): concurrent stores spread over both never leave more entries in the store than the
category's per-tenant quota. Each store is parametrised (SQLite file shared by two servers,
and Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cache.types import CacheEntry
from curacache.client import AsyncClient, Client
from curacache.server.cache_ports import COLLECTION
from tests.integration.test_replicas import eventually
from tests.server_harness import ThreadServer

QUOTA = 3
STORES = 24


def _entries_in_store(server: ThreadServer, tenant: str, category: str) -> int:
    store = server.server.store
    entries = (CacheEntry.from_bytes(r.payload) for b in store.iter_records(COLLECTION) for r in b)
    return sum(1 for e in entries if e.tenant == tenant and e.category == category)


def test_two_replicas_together_keep_the_per_tenant_quota(
    start_server: Callable[..., ThreadServer],
) -> None:
    a, b = start_server(), start_server()
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.set_policy("knowledge", quota_per_tenant=QUOTA)
        eventually(
            lambda: (
                {p.category: p for p in cb.get_policies()}["knowledge"].quota_per_tenant == QUOTA
            ),
            "policy on B",
        )

    async def store(i: int) -> bool:
        target = (a, b)[i % 2].target
        async with AsyncClient(target, timeout=60) as c:
            result = await c.store(
                f"question number {i} about rivers", f"answer {i}", "t1", category="knowledge"
            )
            return result.stored

    async def main() -> list[bool]:
        return await asyncio.gather(*(store(i) for i in range(STORES)))

    assert all(asyncio.run(main()))
    assert _entries_in_store(a, "t1", "knowledge") == QUOTA

    # and both replicas' bookkeeping agrees with the store
    def entries(c: Client) -> int:
        return next(s.entries for s in c.cache_stats() if s.category == "knowledge")

    with Client(a.target) as ca, Client(b.target) as cb:
        eventually(lambda: entries(ca) == QUOTA and entries(cb) == QUOTA, "ledgers")
