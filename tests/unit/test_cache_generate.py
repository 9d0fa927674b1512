"""Generate: streamed hits replay exactly, misses stream through and are stored once,
equivalent concurrent misses share one backend call, errors are never cached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cache import (
    CachedResponse,
    CacheOptions,
    Chunk,
    FinalResult,
    LookupRequest,
    LookupResult,
    Reason,
    SemanticCache,
    StoreReason,
)
from cache.fingerprint import Prepared
from cache.singleflight import FlightAbandoned, SingleFlight
from cache.testing import FakePorts


def req(prompt: str = "Explain single-flight", tenant: str = "ann", **kw: Any) -> LookupRequest:
    return LookupRequest(
        tenant=tenant, prompt=prompt, category="default", params={"temperature": 0}, **kw
    )


async def collect(
    stream: AsyncIterator[LookupResult | Chunk | FinalResult],
) -> tuple[str, FinalResult]:
    text: list[str] = []
    final: FinalResult | None = None
    started = False
    async for item in stream:
        if isinstance(item, LookupResult):
            assert not started and not text and final is None, (
                "the lookup's outcome comes first, once"
            )
            started = True
        elif isinstance(item, Chunk):
            assert final is None, "chunks after the final result"
            text.append(item.text)
        else:
            final = item
    assert started and final is not None
    return "".join(text), final


async def test_miss_streams_through_and_stores_then_hit_replays_exact_text() -> None:
    p = FakePorts()
    p.backend.text = "Line one.\n  Line two — with ünïcode and   spaces.\n" * 5
    cache = p.cache()
    text, final = await collect(cache.generate(req()))
    assert text == p.backend.text and not final.cached and final.store_reason is StoreReason.STORED
    assert final.text == text and final.entry_id is not None
    replay, hit = await collect(cache.generate(req()))
    assert replay == p.backend.text and hit.cached and hit.lookup_reason is Reason.EXACT
    assert hit.finish_reason == "stop" and hit.usage == final.usage
    assert p.backend.calls == 1


async def test_generate_shared_stores_a_shared_entry_other_tenants_hit() -> None:
    p = FakePorts()
    cache = p.cache()
    text, stored = await collect(cache.generate(req(tenant="ann"), shared=True))
    assert stored.store_reason is StoreReason.STORED
    replay, hit = await collect(cache.generate(req(tenant="ben")))
    assert hit.cached and hit.entry_id == stored.entry_id and replay == text
    assert p.backend.calls == 1
    _, private = await collect(cache.generate(req("Explain a private thing", tenant="ann")))
    _, other = await collect(cache.generate(req("Explain a private thing", tenant="ben")))
    assert not other.cached and other.entry_id != private.entry_id  # the default stays private
    assert p.backend.calls == 3


async def test_twenty_concurrent_equivalent_misses_make_one_backend_call() -> None:
    p = FakePorts()
    p.backend.gate = asyncio.Event()
    cache = p.cache()
    tasks = [
        asyncio.create_task(collect(cache.generate(req("  EXPLAIN single-flight "))))
        for _ in range(20)
    ]
    await asyncio.sleep(0.01)
    p.backend.gate.set()
    results = await asyncio.gather(*tasks)
    assert p.backend.calls == 1
    texts = {text for text, _ in results}
    assert len(texts) == 1 and texts == {p.backend.answer(req("  EXPLAIN single-flight "))}
    assert sum(final.lookup_reason is Reason.SINGLE_FLIGHT for _, final in results) == 19
    assert p.repo.count("default") == 1


async def test_different_tenants_do_not_share_a_flight() -> None:
    p = FakePorts()
    p.backend.gate = asyncio.Event()
    cache = p.cache()
    tasks = [asyncio.create_task(collect(cache.generate(req(tenant=t)))) for t in ("ann", "ben")]
    await asyncio.sleep(0.01)
    p.backend.gate.set()
    await asyncio.gather(*tasks)
    assert p.backend.calls == 2


async def test_backend_exception_reaches_all_waiters_and_nothing_is_cached() -> None:
    p = FakePorts()
    p.backend.gate = asyncio.Event()
    p.backend.error = ConnectionError("backend dropped the stream")
    cache = p.cache()
    tasks = [asyncio.create_task(collect(cache.generate(req()))) for _ in range(5)]
    await asyncio.sleep(0.01)
    p.backend.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert p.backend.calls == 1
    assert p.repo.count("default") == 0
    p.backend.error = None
    p.backend.gate = None
    _, final = await collect(cache.generate(req()))
    assert not final.cached and final.store_reason is StoreReason.STORED


async def test_error_and_truncated_finishes_are_streamed_but_not_stored() -> None:
    p = FakePorts()
    cache = p.cache()
    for finish, reason in (("length", StoreReason.TRUNCATED), ("error", StoreReason.ERROR)):
        p.backend.finish_reason = finish
        _, final = await collect(cache.generate(req()))
        assert final.store_reason is reason and final.entry_id is None
    assert p.repo.count("default") == 0


async def test_nondeterministic_requests_are_not_single_flighted_or_stored() -> None:
    p = FakePorts()
    p.backend.gate = asyncio.Event()
    cache = p.cache()
    sampled = LookupRequest(
        tenant="ann", prompt="a poem", category="default", params={"temperature": 0.9}
    )
    tasks = [asyncio.create_task(collect(cache.generate(sampled))) for _ in range(3)]
    await asyncio.sleep(0.01)
    p.backend.gate.set()
    results = await asyncio.gather(*tasks)
    assert p.backend.calls == 3
    assert all(final.store_reason is StoreReason.NONDETERMINISTIC for _, final in results)


async def test_backend_latency_is_recorded_as_time_saved_per_hit() -> None:
    p = FakePorts()
    p.backend._latency = 0.8
    cache = p.cache()
    await collect(cache.generate(req()))
    assert cache.stats()["default"].counters.backend_ms == pytest.approx(800.0)


async def test_abandoned_leader_hands_over_to_a_follower() -> None:
    p = FakePorts()
    p.backend.gate = asyncio.Event()
    cache = p.cache()
    leader = cache.generate(req())
    assert isinstance(
        await leader.__anext__(), LookupResult
    )  # the miss is known before the backend call
    first = asyncio.ensure_future(anext(leader))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(collect(cache.generate(req())))
    await asyncio.sleep(0.01)
    first.cancel()  # the leader's client goes away while waiting on the backend
    with pytest.raises(asyncio.CancelledError):
        await first
    p.backend.gate.set()
    text, final = await follower
    assert text == p.backend.answer(req()) and final.store_reason is StoreReason.STORED
    assert p.backend.calls == 2


async def test_singleflight_do_shares_result_and_exception() -> None:
    flights: SingleFlight[int] = SingleFlight()
    gate = asyncio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(flights.do("k", work)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 10 and calls == 1 and len(flights) == 0

    async def boom() -> int:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await flights.do("k", boom)
    assert len(flights) == 0
    assert issubclass(FlightAbandoned, Exception)


async def test_a_miss_whose_equivalent_leader_finished_meanwhile_is_served_from_the_cache() -> None:
    """The window between a miss's lookup and its single-flight join: an equivalent leader that
    stored its answer and left in between must not cost a second backend call."""
    p = FakePorts()
    cache = p.cache()
    lookup = cache._generator._lookup
    gate, calls = asyncio.Event(), []

    async def late_lookup(request: LookupRequest) -> tuple[LookupResult, Prepared]:
        out = await lookup(request)
        calls.append(request)
        if len(calls) == 1:
            await gate.wait()  # B has missed; A now runs to the end before B joins
        return out

    cache._generator._lookup = late_lookup
    late = asyncio.create_task(collect(cache.generate(req())))
    await asyncio.sleep(0.01)
    text, first = await collect(cache.generate(req()))
    assert first.store_reason is StoreReason.STORED
    gate.set()
    replay, second = await late
    assert replay == text and second.cached and p.backend.calls == 1


NEAR = "a near paraphrase"  # cos 0.876 with BASE: just below default's 0.88, inside the 0.03 band
LABEL_TABLE: dict[str, list[float]] = {
    "base prompt": [1, 0, 0, 0],
    NEAR: [1, 0.55, 0, 0],
    "the paraphrase": [1, 0.3, 0, 0],
}


async def _generate_misses(cache: SemanticCache, n: int) -> None:
    for _ in range(n):
        _, final = await collect(
            cache.generate(
                LookupRequest(tenant="ann", prompt=NEAR, category="default", no_store=True)
            )
        )
        assert not final.cached and final.lookup_reason is Reason.BELOW_THRESHOLD


async def test_misses_just_below_the_threshold_label_it_and_can_lower_it() -> None:
    """The backend is called on such a miss anyway: its answer agreeing with the nearest
    entry's is a free label saying the threshold could be lower."""
    p = FakePorts(table=LABEL_TABLE)
    p.backend.text = "the same answer"
    cache = p.cache(options=CacheOptions(min_feedback=3))
    await cache.store(
        LookupRequest(tenant="ann", prompt="base prompt", category="default"),
        CachedResponse(text="The same   answer", finish_reason="stop"),
    )
    assert not (
        await cache.lookup(LookupRequest(tenant="ann", prompt=NEAR, category="default"))
    ).hit
    await _generate_misses(cache, 3)
    stats = cache.stats()["default"]
    assert (
        stats.calibrated and 0.85 <= stats.effective_threshold < 0.88
    )  # never below min_threshold
    assert (await cache.lookup(LookupRequest(tenant="ann", prompt=NEAR, category="default"))).hit


async def test_disagreeing_answers_keep_the_threshold() -> None:
    p = FakePorts(table=LABEL_TABLE)  # the backend's answer names the prompt: it differs
    cache = p.cache(options=CacheOptions(min_feedback=3))
    await cache.store(
        LookupRequest(tenant="ann", prompt="base prompt", category="default"),
        CachedResponse(text="another answer", finish_reason="stop"),
    )
    await _generate_misses(cache, 3)
    assert cache.stats()["default"].effective_threshold == pytest.approx(0.88)
    assert not (
        await cache.lookup(LookupRequest(tenant="ann", prompt=NEAR, category="default"))
    ).hit


async def test_exploration_verifies_hits_against_the_backend_when_switched_on() -> None:
    for verify, calls in ((0.0, 0), (1.0, 1)):
        p = FakePorts(table=LABEL_TABLE)
        cache = p.cache(options=CacheOptions(min_feedback=1, verify_hits=verify, seed=0))
        await cache.store(
            LookupRequest(tenant="ann", prompt="base prompt", category="default"),
            CachedResponse(text="a wrong answer", finish_reason="stop"),
        )
        text, hit = await collect(
            cache.generate(LookupRequest(tenant="ann", prompt="the paraphrase", category="default"))
        )
        assert hit.cached and text == "a wrong answer" and p.backend.calls == calls
        # the verified hit disagreed with the backend: a false label above the threshold
        again = await cache.lookup(
            LookupRequest(tenant="ann", prompt="the paraphrase", category="default")
        )
        assert again.hit is (verify == 0.0)


class SharedLeases:
    """The store's leases as two replicas see them: one holder per key."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.denied = 0

    async def acquire(self, key: str) -> str | None:
        if key in self.holders:
            self.denied += 1
            return None
        token = f"t{len(self.holders)}-{self.denied}"
        self.holders[key] = token
        return token

    async def release(self, key: str, token: str) -> None:
        if self.holders.get(key) == token:
            del self.holders[key]


async def test_a_replica_waits_for_the_other_replicas_leader_instead_of_calling_the_backend() -> (
    None
):
    p = FakePorts()  # one repository: the store both replicas share
    leases = SharedLeases()
    options = CacheOptions(lease_poll_s=0.001)
    a, b = p.cache(leases=leases, options=options), p.cache(leases=leases, options=options)
    p.backend.gate = asyncio.Event()
    lead = asyncio.create_task(collect(a.generate(req())))
    while not leases.holders:  # A's leader holds the lease, its backend call is in flight
        await asyncio.sleep(0)
    wait = asyncio.create_task(collect(b.generate(req())))
    while leases.denied == 0:  # B's leader found the lease taken: it polls for the entry
        await asyncio.sleep(0)
    p.backend.gate.set()
    (text_a, final_a), (text_b, final_b) = await asyncio.gather(lead, wait)
    assert p.backend.calls == 1 and text_a == text_b
    assert not final_a.cached and final_b.cached and final_b.entry_id == final_a.entry_id
    assert not leases.holders  # A gave its lease back


async def test_a_waiting_replica_takes_over_when_the_other_leader_stops() -> None:
    p = FakePorts()
    leases = SharedLeases()
    options = CacheOptions(lease_poll_s=0.001)
    a, b = p.cache(leases=leases, options=options), p.cache(leases=leases, options=options)
    p.backend.gate = asyncio.Event()
    lead = asyncio.create_task(collect(a.generate(req())))
    while not leases.holders:
        await asyncio.sleep(0)
    wait = asyncio.create_task(collect(b.generate(req())))
    while leases.denied == 0:
        await asyncio.sleep(0)
    lead.cancel()  # A's client went away mid-call: its lease is given back
    with pytest.raises(asyncio.CancelledError):
        await lead
    p.backend.gate.set()
    text, final = await wait
    assert p.backend.calls == 2 and not final.cached and text
