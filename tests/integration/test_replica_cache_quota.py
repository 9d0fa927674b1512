"""Two replicas of one store keep a cache quota together (DESIGN §6: quota counts are the
store's): concurrent stores spread over both never leave more entries in the store than the
category's per-tenant quota. Each store is parametrised (SQLite file shared by two servers,
and Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cache.types import CacheEntry
from curacache.client import AsyncClient, Client
from curacache.server.cache_ports import COLLECTION
from curacache.server.replica import make_token
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


def test_hits_on_one_replica_count_in_the_other_replicas_eviction_order(
    start_server: Callable[..., ThreadServer],
) -> None:
    """An entry hit only through B is, for LRU, more recent than one nobody hit: when A
    evicts for the quota it keeps the entry B served (B shares its hits on the log)."""
    settings = {"cache.hit_share_interval_s": 0.05}
    a, b = start_server(**settings), start_server(**settings)
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.set_policy("knowledge", quota_per_tenant=2)
        first = ca.store("first question about lakes", "one", "t1", category="knowledge")
        second = ca.store("second question about seas", "two", "t1", category="knowledge")
        token = ca.cache_log_position()
        for _ in range(3):  # hits through B only, on the older entry
            hit = cb.lookup("first question about lakes", "t1", "knowledge", min_log_position=token)
            assert hit.hit and hit.entry_id == first.entry_id
        time.sleep(0.5)  # B's next share of its hits is on the log by now
        store = a.server.store
        stream = store.stream_of(COLLECTION)
        head = make_token(stream, store.log_heads([stream])[stream])
        assert not ca.lookup(
            "unrelated", "t1", "knowledge", min_log_position=head
        ).hit  # A applied it
        ca.store("third question about rivers", "three", "t1", category="knowledge")
        assert ca.lookup("first question about lakes", "t1", "knowledge").hit  # kept: B served it
        missed = ca.lookup("second question about seas", "t1", "knowledge")
        assert not missed.hit and missed.entry_id != second.entry_id
