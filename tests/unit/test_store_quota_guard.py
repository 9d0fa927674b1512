"""StoreQuotaGuard: stores of one category in one process queue locally, so only other
processes contend for (and poll) the store's lease."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from curacache.server.cache_ports import StoreQuotaGuard


class LeaseStore:
    """The store calls the guard makes, with an empty change log."""

    def __init__(self) -> None:
        self.holder: dict[str, str] = {}
        self.attempts = 0

    def try_lease(self, key: str, token: str, ttl_s: float) -> bool:
        self.attempts += 1
        if key in self.holder:
            return False
        self.holder[key] = token
        return True

    def release_lease(self, key: str, token: str) -> None:
        if self.holder.get(key) == token:
            del self.holder[key]

    def stream_of(self, collection: str) -> str:
        return f"log:{collection}"

    def log_heads(self, streams: Any) -> dict[str, str]:
        return dict.fromkeys(streams, "")  # nothing logged yet: nothing to catch up


def test_one_process_queues_locally_and_takes_the_store_lease_once_per_store() -> None:
    store = LeaseStore()
    collection = SimpleNamespace(spec=SimpleNamespace(name="cache::entries"))
    repository: Any = SimpleNamespace(name="cache::entries", collection=lambda: collection)
    guard = StoreQuotaGuard(store, replica=None, repository=repository)  # type: ignore[arg-type]
    inside, most = 0, 0

    async def one() -> None:
        nonlocal inside, most
        async with guard.hold("knowledge"):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.002)
            inside -= 1

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(20)))

    asyncio.run(run())
    assert most == 1  # one admission at a time
    assert store.attempts == 20  # no polling of a lease this process itself holds
    assert store.holder == {}
