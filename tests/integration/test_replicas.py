"""Several servers on one store are replicas: the store's change log keeps their in-memory
indexes and caches in step (DESIGN §6). Two servers here share the SQLite file or the Redis
of the parametrised store; the same checks across processes: test_workers.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from curacache.client import AsyncClient, Client, GenerateResult
from curacache.client.errors import NotFoundError, PermissionDeniedError, UnavailableError
from curacache.llm.simulator import SimConfig
from tests.server_harness import MODEL, ThreadFakeLLM, ThreadServer

DIM = 8
WAIT_S = 20.0  # generous bound for "eventually", on a loaded 2-core machine


def eventually(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` until it returns something truthy (bounded; never asserts a time)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            result = check()
        except NotFoundError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not replicated within {WAIT_S}s: {what}")
        time.sleep(0.01)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def pair(start_server: Callable[..., ThreadServer]) -> tuple[ThreadServer, ThreadServer]:
    return start_server(), start_server()


def test_collection_created_on_a_is_usable_on_b(pair: tuple[ThreadServer, ThreadServer]) -> None:
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        info = ca.create_collection("docs", DIM, index="flat")
        token = ca.log_position("docs")
        assert token
        # read-your-writes: B waits until it has applied the create, then serves the search
        assert cb.search("docs", vectors(1)[0], "alice", min_log_position=token) == []
        cb.upsert("docs", ["x"], vectors(1), owner="alice")
        assert cb.get_collection("docs").dim == info.dim
        ca.delete_collection("docs")
        eventually(lambda: "docs" not in {c.name for c in cb.list_collections()}, "drop")


def test_upsert_on_a_is_found_by_b_search(pair: tuple[ThreadServer, ThreadServer]) -> None:
    a, b = pair
    data = vectors(50)
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.create_collection("docs", DIM, index="flat")
        eventually(lambda: cb.get_collection("docs"), "create")
        # without a position: found within a bounded wait
        ca.upsert("docs", [f"r{i}" for i in range(50)], data, owner="alice")
        eventually(
            lambda: [h.id for h in cb.search("docs", data[7], "alice", k=1)] == ["r7"], "upsert"
        )
        # with read-your-writes: found by the very next search
        ca.upsert("docs", ["new"], -data[3:4], owner="alice")
        token = ca.log_position("docs")
        hits = cb.search("docs", -data[3], "alice", k=1, min_log_position=token)
        assert [h.id for h in hits] == ["new"]
        assert cb.stats("docs").record_count == 51


def test_delete_and_revoke_on_b_are_gone_on_a(pair: tuple[ThreadServer, ThreadServer]) -> None:
    a, b = pair
    data = vectors(20, seed=1)
    with Client(a.target) as ca, Client(b.target, consistency="read_your_writes") as cb:
        ca.create_collection("docs", DIM, index="flat")
        ca.upsert("docs", [f"r{i}" for i in range(20)], data, owner="alice", tenants=["bob"])
        # B's client sees A's writes once B has applied them; it then writes on B
        cb.search("docs", data[0], "alice", min_log_position=ca.log_position("docs"))
        assert cb.delete("docs", ["r5"], "alice") == 1
        assert cb.revoke("docs", ["r6"], "bob", "alice") == 1
        token = cb.log_position("docs")
        hits = ca.search("docs", data[5], "alice", k=20, min_log_position=token)
        assert "r5" not in {h.id for h in hits} and len(hits) == 19
        bob = ca.search("docs", data[6], "bob", k=20, min_log_position=token)
        assert "r6" not in {h.id for h in bob} and len(bob) == 18
        assert ca.stats("docs").record_count == 19


def test_ownership_is_checked_against_the_store(pair: tuple[ThreadServer, ThreadServer]) -> None:
    """B refuses to let another tenant overwrite a record A wrote, even before B applied it."""
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        ca.create_collection("docs", DIM, index="flat")
        cb.search("docs", vectors(1)[0], "x", min_log_position=ca.log_position("docs"))
        ca.upsert("docs", ["mine"], vectors(1), owner="alice")
        with pytest.raises(PermissionDeniedError):
            cb.upsert("docs", ["mine"], vectors(1, seed=2), owner="mallory")


def test_a_replica_behind_the_position_answers_unavailable(
    pair: tuple[ThreadServer, ThreadServer],
) -> None:
    a, b = pair
    # B waits 4/5 of the deadline, then answers: within the deadline even on a loaded machine
    with Client(a.target) as ca, Client(b.target, timeout=2.0) as cb:
        ca.create_collection("docs", DIM, index="flat")
        head = ca.log_position("docs")
        stream = head.partition("@")[2]
        with pytest.raises(UnavailableError):  # a position nobody has reached yet
            cb.search("docs", vectors(1)[0], "alice", min_log_position=f"99999999999999-0@{stream}")


def test_sdk_spreads_calls_and_retries_reads_on_another_replica(
    start_server: Callable[..., ThreadServer],
) -> None:
    a, b = start_server(), start_server()
    with Client([a.target, b.target], consistency="read_your_writes") as c:
        c.create_collection("docs", DIM, index="flat")
        data = vectors(10, seed=3)
        for i in range(10):  # alternate replicas; each read must see the write before it
            c.upsert("docs", [f"r{i}"], data[i : i + 1], owner="alice")
            assert [h.id for h in c.search("docs", data[i], "alice", k=1)] == [f"r{i}"]
        b.stop()
        for i in range(4):  # every other call would go to the stopped replica
            assert [h.id for h in c.search("docs", data[i], "alice", k=1)] == [f"r{i}"]


def test_cache_store_on_a_hits_on_b(pair: tuple[ThreadServer, ThreadServer]) -> None:
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        stored = ca.store("what is the capital of france?", "Paris.", "t1", model="m")
        assert stored.stored
        hit = eventually(
            lambda: (r := cb.lookup("what is the capital of france?", "t1", model="m")).hit and r,
            "cache store",
        )
        assert hit.response.text == "Paris."
        assert cb.invalidate(tenant="t1", entry_ids=[stored.entry_id]) == 1
        eventually(
            lambda: not ca.lookup("what is the capital of france?", "t1", model="m").hit,
            "cache invalidate",
        )


def test_a_policy_set_on_a_applies_on_b_and_after_a_restart(
    start_server: Callable[..., ThreadServer],
) -> None:
    a, b = start_server(), start_server()

    def policy(c: Client, category: str) -> Any:
        return {p.category: p for p in c.get_policies()}.get(category)

    with Client(a.target) as ca, Client(b.target) as cb:
        assert ca.set_policy("code", threshold=0.97, eviction="lfu").threshold == 0.97
        ca.set_policy("recipes", create=True, threshold=0.9, ttl_s=60)
        cb.set_policy("knowledge", quota_per_tenant=7)  # B's own change keeps A's
        eventually(lambda: (p := policy(cb, "code")) and p.threshold == 0.97, "policy change")
        eventually(lambda: policy(cb, "recipes"), "new category")
        eventually(
            lambda: (p := policy(ca, "knowledge")) and p.quota_per_tenant == 7, "B's change on A"
        )
        assert policy(cb, "code").eviction == "lfu"
    a.stop()
    b.stop()
    with Client(start_server().target) as c:  # a restart keeps what SetPolicy changed
        assert policy(c, "code").threshold == 0.97 and policy(c, "code").eviction == "lfu"
        assert policy(c, "recipes").ttl_s == 60 and policy(c, "knowledge").quota_per_tenant == 7


def test_a_collection_just_created_elsewhere_is_found_in_the_store(
    pair: tuple[ThreadServer, ThreadServer],
) -> None:
    """B has not applied A's create yet: the collection is looked up in the store, not missed."""
    a, b = pair
    with Client(a.target) as ca, Client(b.target) as cb:
        for i in range(5):
            ca.create_collection(f"c{i}", DIM, index="flat")
            assert cb.upsert(f"c{i}", ["x"], vectors(1), owner="alice") == 1
        with pytest.raises(NotFoundError):
            cb.upsert("never-created", ["x"], vectors(1), owner="alice")


def test_equivalent_misses_on_two_replicas_make_one_backend_call(
    start_server: Callable[..., ThreadServer],
) -> None:
    """20 concurrent equivalent Generate misses, spread over two replicas: one backend call.
    The backend answers slowly (its first token after 1 s), so every request arrives while the
    first is in flight; each replica's own single-flight joins its half, and the store's lease
    makes the other replica's leader wait for the entry instead of calling the backend."""
    sim = ThreadFakeLLM(SimConfig(ttft_ms=1000, tokens_per_s=2000, max_concurrency=8))
    try:
        settings = {
            "cache.embedder": "hashing",
            "cache.backends": f"sim={sim.base_url}",
            "cache.default_model": MODEL,
        }
        servers = [start_server(**settings), start_server(**settings)]

        async def ask(target: str) -> str:
            async with AsyncClient(target, timeout=60) as c:
                parts, final = [], None
                async for item in c.generate(
                    "What is the tallest mountain on Earth?", "acme", params={"temperature": 0}
                ):
                    if isinstance(item, GenerateResult):
                        final = item
                    else:
                        parts.append(item)
                assert final is not None
                return "".join(parts)

        async def main() -> list[str]:
            return await asyncio.gather(*(ask(servers[i % 2].target) for i in range(20)))

        texts = asyncio.run(main())
        assert sim.sim.stats.requests_received == 1
        assert len(set(texts)) == 1 and texts[0]  # everyone got the one answer
    finally:
        sim.stop()


def test_cache_lookup_reads_your_writes_on_another_replica(
    start_server: Callable[..., ThreadServer],
) -> None:
    """B tails the log slowly (every second), so a lookup right after A's store misses there
    unless it waits for the store's position: by token, and by the SDK's option."""
    a, b = start_server(), start_server(replica_poll_interval_s=1.0)
    prompt = "what is the capital of italy?"
    with Client(a.target) as ca, Client(b.target) as cb:
        stored = ca.store(prompt, "Rome.", "t1", model="m")
        assert stored.log_position and ca.cache_log_position() == stored.log_position
        hit = cb.lookup(prompt, "t1", model="m", min_log_position=stored.log_position)
        assert hit.hit and hit.response is not None and hit.response.text == "Rome."
        assert cb.invalidate("t1", entry_ids=[stored.entry_id]) == 1
        gone = cb.cache_log_position()
        assert gone and not ca.lookup(prompt, "t1", model="m", min_log_position=gone).hit
    # calls alternate A, B, A, B...: every store lands on A and every lookup on B
    with Client([a.target, b.target], consistency="read_your_writes") as c:
        for i in range(3):
            assert c.store(f"question {i} about rome", f"answer {i}", "t2", model="m").stored
            assert c.lookup(f"question {i} about rome", "t2", model="m").hit
