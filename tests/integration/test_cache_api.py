"""The Cache service end to end: real server (both stores), real MiniLM embedder and classifier,
the `fake-llm` backend simulator over HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from curacache.client import AsyncClient, Client, GenerateResult
from curacache.client.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from curacache.llm.simulator import SimConfig
from tests.server_harness import MODEL, ThreadFakeLLM, ThreadServer


@pytest.fixture
def fake_llm() -> Iterator[ThreadFakeLLM]:
    sim = ThreadFakeLLM(SimConfig(ttft_ms=20, tokens_per_s=2000, max_concurrency=4))
    yield sim
    sim.stop()


@pytest.fixture
def cache_server(
    start_server: Callable[..., ThreadServer], fake_llm: ThreadFakeLLM
) -> Callable[..., ThreadServer]:
    def start(**overrides: Any) -> ThreadServer:
        settings = {
            "cache.embedder": "minilm",
            "cache.backends": f"sim={fake_llm.base_url}",
            "cache.default_model": MODEL,
            **overrides,
        }
        return start_server(**settings)

    return start


@pytest.fixture
def cache_client(cache_server: Callable[..., ThreadServer]) -> Iterator[Client]:
    with Client(cache_server().target) as c:
        yield c


def _generate(c: Client, prompt: Any, tenant: str, **kw: Any) -> tuple[str, GenerateResult]:
    chunks, final = [], None
    for item in c.generate(prompt, tenant, model=MODEL, **kw):
        if isinstance(item, GenerateResult):
            final = item
        else:
            chunks.append(item)
    assert final is not None
    return "".join(chunks), final


def test_paraphrase_hits_after_a_miss_and_near_miss_misses(cache_client: Client) -> None:
    c = cache_client
    first = c.lookup("How do I reverse a list in Python?", "acme", model=MODEL)
    assert not first.hit and first.reason.startswith("empty")
    stored = c.store(
        "How do I reverse a list in Python?", "Use reversed(xs) or xs[::-1].", "acme", model=MODEL
    )
    assert stored.stored and stored.category == "code"
    hit = c.lookup("How can I reverse a Python list?", "acme", model=MODEL)
    assert hit.hit and hit.entry_id == stored.entry_id and hit.reason.startswith("semantic")
    assert hit.response is not None and hit.response.text == "Use reversed(xs) or xs[::-1]."
    assert hit.similarity >= hit.threshold
    # The cache's own collections are internal: not listed, not addressable.
    assert all(":" not in info.name for info in c.list_collections())
    with pytest.raises(InvalidArgumentError):
        c.get_collection("cache::entries")

    c.store("What is the capital of France?", "Paris.", "acme", model=MODEL, category="knowledge")
    near = c.lookup("What is the capital of Germany?", "acme", model=MODEL, category="knowledge")
    assert (
        not near.hit
        and near.reason.startswith("below_threshold")
        and near.similarity < near.threshold
    )
    # A different model or sampling parameters never get this response.
    assert not c.lookup(
        "What is the capital of France?", "acme", model="other", category="knowledge"
    ).hit
    assert not c.lookup(
        "What is the capital of France?",
        "acme",
        model=MODEL,
        category="knowledge",
        params={"temperature": 0.7, "seed": 1},
    ).hit


def test_strict_category_refuses_a_severe_variant(cache_client: Client) -> None:
    c = cache_client
    c.store("What are the symptoms of the flu?", "Fever, cough, aches.", "acme", model=MODEL)
    r = c.lookup("What are the symptoms of a severe flu?", "acme", model=MODEL)
    assert r.category == "health" and not r.hit


def test_ttl_expiry(cache_client: Client) -> None:
    c = cache_client
    c.store(
        "Tell me a fun fact about octopuses",
        "They have three hearts.",
        "acme",
        model=MODEL,
        ttl=0.5,
    )
    assert c.lookup("Tell me a fun fact about octopuses", "acme", model=MODEL).hit
    time.sleep(0.7)
    r = c.lookup("Tell me a fun fact about octopuses", "acme", model=MODEL)
    assert not r.hit


def test_quota_eviction_by_policy(cache_client: Client) -> None:
    c = cache_client
    c.set_policy("knowledge", quota_per_tenant=2, eviction="lru")
    prompts = [
        "What is photosynthesis?",
        "Who wrote Hamlet?",
        "What is the boiling point of water?",
    ]
    ids = [
        c.store(p, f"answer {i}", "acme", model=MODEL, category="knowledge").entry_id
        for i, p in enumerate(prompts[:2])
    ]
    assert c.lookup(
        prompts[0], "acme", model=MODEL, category="knowledge"
    ).hit  # prompts[0] is now recent
    c.store(prompts[2], "answer 2", "acme", model=MODEL, category="knowledge")
    assert not c.lookup(
        prompts[1], "acme", model=MODEL, category="knowledge"
    ).hit  # least recently used: evicted
    assert c.lookup(prompts[0], "acme", model=MODEL, category="knowledge").hit
    assert ids[1] != ids[0]
    stats = {s.category: s for s in c.cache_stats()}
    assert stats["knowledge"].evictions == 1 and stats["knowledge"].entries == 2


def test_private_entries_stay_private_and_shared_ones_are_seen(cache_client: Client) -> None:
    c = cache_client
    c.store("How do I reverse a list in Python?", "private answer", "tenant-a", model=MODEL)
    assert not c.lookup("How do I reverse a list in Python?", "tenant-b", model=MODEL).hit
    assert not c.lookup("How can I reverse a Python list?", "tenant-b", model=MODEL).hit
    c.store(
        "How do I sort a list in Python?", "shared answer", "tenant-a", model=MODEL, shared=True
    )
    seen = c.lookup("How do I sort a list in Python?", "tenant-b", model=MODEL)
    assert seen.hit and seen.response is not None and seen.response.text == "shared answer"


def test_a_streamed_hit_replays_the_original_exactly(
    cache_client: Client, fake_llm: ThreadFakeLLM
) -> None:
    c = cache_client
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Explain recursion in Python"},
    ]
    text, first = _generate(c, prompt, "acme", params={"max_tokens": 40})
    assert not first.cached and first.stored and text == first.response.text and text
    again, second = _generate(c, prompt, "acme", params={"max_tokens": 40})
    assert (
        second.cached
        and again == text
        and second.response.finish_reason == first.response.finish_reason
    )
    assert fake_llm.sim.stats.requests_served == 1
    # Another conversation before the same last turn is a different context: no hit.
    other = [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Explain recursion in Python"},
    ]
    _, third = _generate(c, other, "acme", params={"max_tokens": 40})
    assert not third.cached


def test_concurrent_equivalent_misses_make_one_backend_call(
    cache_server: Callable[..., ThreadServer], fake_llm: ThreadFakeLLM
) -> None:
    target = cache_server().target

    async def run() -> list[tuple[str, bool]]:
        async with AsyncClient(target) as c:

            async def one() -> tuple[str, bool]:
                parts, cached = [], False
                async for item in c.generate(
                    "Write a haiku about caches", "acme", model=MODEL, params={"max_tokens": 30}
                ):
                    if isinstance(item, GenerateResult):
                        cached = item.cached
                    else:
                        parts.append(item)
                return "".join(parts), cached

            return await asyncio.gather(*(one() for _ in range(20)))

    results = asyncio.run(run())
    assert fake_llm.sim.stats.requests_received == 1
    assert len({text for text, _ in results}) == 1 and results[0][0]


@pytest.mark.parametrize(
    "fault,error",
    [
        ("500", UnavailableError),
        ("429,retry-after=30", ResourceExhaustedError),
        ("hang", DeadlineExceededError),
    ],
)
def test_backend_errors_are_reported_and_never_cached(
    cache_server: Callable[..., ThreadServer],
    fake_llm: ThreadFakeLLM,
    fault: str,
    error: type[Exception],
) -> None:
    # The backend's own timeout (1 s) must fire, well before the client's deadline.
    backend = [{"name": "sim", "base_url": fake_llm.base_url, "timeout_s": 1.0, "max_retries": 1}]
    prompt = f"Summarise the plot of Hamlet [[fake-fault:{fault}]]"
    with Client(cache_server(**{"cache.backends": backend}).target, timeout=20) as c:
        with pytest.raises(error) as info:
            _generate(c, prompt, "acme", params={"max_tokens": 20})
        assert "backend sim" in str(info.value)  # the server's status, not the client's deadline
        assert not c.lookup(prompt, "acme", model=MODEL).hit
        assert not c.lookup(prompt.replace(fault, "x"), "acme", model=MODEL).hit


def test_load_adaptation_moves_threshold_but_not_strict_categories(
    start_server: Callable[..., ThreadServer],
) -> None:
    slow = ThreadFakeLLM(SimConfig(ttft_ms=1500, tokens_per_s=50, max_concurrency=1))
    try:
        server = start_server(
            **{"cache.backends": f"sim={slow.base_url}", "cache.default_model": MODEL}
        )
        with Client(server.target) as c:
            idle = {s.category: s for s in c.cache_stats()}
            worker = threading.Thread(
                target=lambda: _generate(
                    c, "Tell me a long story", "acme", params={"max_tokens": 5}
                )
            )
            worker.start()
            deadline = time.monotonic() + 30  # bounds a failing test only
            while slow.sim.stats.requests_received == 0 and time.monotonic() < deadline:
                time.sleep(0.01)  # until the request is in flight: the backend is at capacity
            busy = {s.category: s for s in c.cache_stats()}
            worker.join()
    finally:
        slow.stop()
    assert busy["default"].backend_load > idle["default"].backend_load
    assert busy["default"].effective_threshold < idle["default"].effective_threshold
    assert busy["default"].effective_ttl_s > idle["default"].effective_ttl_s
    assert busy["health"].effective_threshold == idle["health"].effective_threshold
    assert busy["health"].effective_ttl_s == idle["health"].effective_ttl_s


def test_feedback_and_policies(cache_client: Client) -> None:
    c = cache_client
    stored = c.store("How do I reverse a list in Python?", "xs[::-1]", "acme", model=MODEL)
    hit = c.lookup("How can I reverse a Python list?", "acme", model=MODEL)
    assert hit.hit
    c.feedback(hit.entry_id, False, "acme")
    stats = {s.category: s for s in c.cache_stats()}
    assert stats["code"].false_hit_feedback == 1
    policy = c.set_policy("code", threshold=0.99)
    assert policy.threshold == 0.99
    assert not c.lookup("How can I reverse a Python list?", "acme", model=MODEL).hit
    assert c.invalidate("acme", entry_ids=[stored.entry_id]) == 1
    assert not c.lookup("How do I reverse a list in Python?", "acme", model=MODEL).hit


def test_set_policy_lowering_below_the_bound_and_creating_categories(cache_client: Client) -> None:
    c = cache_client
    shipped = {p.category: p for p in c.get_policies()}["code"]
    lowered = c.set_policy("code", threshold=0.9)  # below code's min_threshold: the bound moves
    gap = round(shipped.threshold - shipped.min_threshold, 6)
    assert lowered.threshold == 0.9 and lowered.min_threshold == round(0.9 - gap, 6)
    with pytest.raises(InvalidArgumentError) as info:
        c.set_policy("code", threshold=0.9, min_threshold=0.95)
    assert "policy.min_threshold: 0.95 is above threshold 0.9" in str(info.value)
    with pytest.raises(InvalidArgumentError) as info:
        c.set_policy("recipes", threshold=0.9)
    assert "policy.category" in str(info.value) and "create" in str(info.value)
    assert "recipes" not in {p.category for p in c.get_policies()}
    assert c.set_policy("recipes", create=True, threshold=0.9).threshold == 0.9
    assert c.store(
        "How long to boil an egg?", "7 minutes.", "acme", model=MODEL, category="recipes"
    ).stored


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda c: c.lookup("", "acme"), "query.prompt"),
        (lambda c: c.lookup("hi", ""), "query.tenant"),
        (lambda c: c.lookup("hi", "acme", embedding=[0.1] * 5), "query.embedding"),
        (lambda c: c.lookup("hi", "acme", embedding=[float("nan")] * 384), "query.embedding"),
        (lambda c: c.lookup([{"role": "system", "content": "x"}], "acme"), "query.messages"),
        (lambda c: c.store("hi", "there", "acme", ttl=-1), "ttl_s"),
        (lambda c: c.store("hi", "there", "acme", category="no such category!"), "query.category"),
        (lambda c: next(iter(c.generate("", "acme"))), "query.prompt"),
        (lambda c: c.invalidate("acme"), "entry_ids"),
        (lambda c: c.feedback("", True, "acme"), "entry_id"),
        (lambda c: c.set_policy("code", threshold=1.5), "policy.threshold"),
        (lambda c: c.set_policy("code", eviction="random"), "policy.eviction"),
        (
            lambda c: c.lookup("x" * 1_300_000, "acme"),
            "query.prompt: 1300000 bytes, above the limit of 1048576",
        ),
        (lambda c: c.store("hi", "x" * 1_300_000, "acme"), "response.text: 1300000 bytes"),
    ],
)
def test_bad_input_names_the_field(
    cache_client: Client, call: Callable[[Client], Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        call(cache_client)
    assert field in str(info.value)
    assert cache_client.lookup("still serving?", "acme").reason  # the server keeps serving


def test_shared_entries_need_an_admin_key(start_server: Callable[..., ThreadServer]) -> None:
    server = start_server(**{"auth.keys": "k1=acme;root=*"})
    with Client(server.target, api_key="k1") as c:
        with pytest.raises(PermissionDeniedError):
            c.store("hello", "world", "acme", shared=True)
        with pytest.raises(PermissionDeniedError):
            c.lookup("hello", "other-tenant")
        with pytest.raises(PermissionDeniedError):
            next(iter(c.generate("hello", "acme", shared=True)))
    with Client(server.target, api_key="root") as admin:
        assert admin.store("hello", "world", "acme", shared=True).stored


def test_tenant_keys_see_only_their_own_figures(start_server: Callable[..., ThreadServer]) -> None:
    server = start_server(**{"auth.keys": "k1=acme;k2=beta,gamma;root=*"})
    with Client(server.target, api_key="root") as admin:
        admin.create_collection("c", 4, index="flat")
        admin.upsert("c", ["a1", "a2"], np.ones((2, 4)), owner="acme")
        admin.upsert("c", ["b1"], np.ones((1, 4)), owner="beta")
        admin.grant("c", ["b1"], "gamma", "beta")
        admin.upsert("c", ["g1"], np.ones((1, 4)), owner="gamma")
        admin.grant("c", ["a1"], "gamma", "acme")
        for tenant, prompt in (("acme", "hello"), ("acme", "hi there"), ("beta", "good morning")):
            admin.store(prompt, "answer", tenant, category="default")
            admin.lookup(prompt, tenant, category="default")
        everything = admin.stats("c")
        assert (everything.record_count, everything.tenant_count) == (
            4,
            3,
        ) and everything.store_bytes > 0
        assert {s.category: s for s in admin.cache_stats()}["default"].lookups == 3
        assert {s.category: s for s in admin.cache_stats(tenant="beta")}["default"].stores == 1
    with Client(server.target, api_key="k1") as acme, Client(server.target, api_key="k2") as bg:
        mine = acme.stats("c")
        assert (mine.record_count, mine.tenant_count, mine.store_bytes) == (2, 1, 0)
        theirs = bg.stats("c")  # b1 is seen by both beta and gamma: counted once
        assert (theirs.record_count, theirs.tenant_count) == (3, 2)
        own = {s.category: s for s in acme.cache_stats()}["default"]
        assert (own.lookups, own.stores, own.entries, own.exact_hits) == (2, 2, 2, 2)
        other = {s.category: s for s in bg.cache_stats()}["default"]
        assert (other.lookups, other.stores, other.entries) == (1, 1, 1)
        with pytest.raises(PermissionDeniedError):
            acme.cache_stats(tenant="beta")


def test_generate_shared_is_seen_by_other_tenants(
    cache_client: Client, fake_llm: ThreadFakeLLM
) -> None:
    c = cache_client
    text, first = _generate(c, "Explain recursion in Python", "tenant-a", shared=True)
    assert not first.cached and first.stored
    again, seen = _generate(c, "Explain recursion in Python", "tenant-b")
    assert seen.cached and seen.entry_id == first.entry_id and again == text
    assert fake_llm.sim.stats.requests_served == 1


def test_complete_answers_whole_and_names_the_stored_entry(
    cache_server: Callable[..., ThreadServer], fake_llm: ThreadFakeLLM
) -> None:
    with Client(cache_server().target) as c:
        text, _ = _generate(c, "What is a closure in JavaScript?", "acme", no_store=True)
        start, miss = c.complete("What is a closure in JavaScript?", "acme", model=MODEL)
        assert not start.cached and start.cacheable and not miss.cached and miss.stored
        assert miss.response.text == text and miss.response.finish_reason == "stop"
        assert miss.entry_id  # where it was stored (the lookup had no candidate to name)
        start, hit = c.complete("What is a closure in JavaScript?", "acme", model=MODEL)
        assert start.cached and hit.cached and hit.entry_id == start.entry_id == miss.entry_id
        assert hit.response == miss.response
        _, refused = c.complete(
            "What is a closure in JavaScript?", "beta", model=MODEL, no_store=True
        )
        assert not refused.stored and refused.entry_id == ""
        with pytest.raises(InvalidArgumentError, match="max_ttl_s"):
            c.complete("anything", "acme", model=MODEL, max_ttl=-1.0)
    assert fake_llm.sim.stats.requests_served == 3


def test_complete_verifies_a_hit_after_replying(
    cache_server: Callable[..., ThreadServer], fake_llm: ThreadFakeLLM
) -> None:
    """What follows a result (here: verifying a semantic hit against the backend, for the
    calibration) still runs after Complete has replied, as it does after Generate's stream."""
    with Client(cache_server(**{"cache.verify_hits": 1.0}).target) as c:
        c.complete("How do I reverse a list in Python?", "acme", model=MODEL)
        start, hit = c.complete("How can I reverse a Python list?", "acme", model=MODEL)
        assert start.cached and hit.cached and start.reason == "semantic"
        deadline = time.monotonic() + 10
        while fake_llm.sim.stats.requests_served < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert fake_llm.sim.stats.requests_served == 2


def test_generate_ends_at_the_result_and_what_follows_survives_a_caller_leaving(
    cache_server: Callable[..., ThreadServer], fake_llm: ThreadFakeLLM
) -> None:
    """The gateway cancels a Generate stream once it has the result; verifying a semantic hit
    against the backend (for the calibration) runs on after the stream all the same."""
    with Client(cache_server(**{"cache.verify_hits": 1.0}).target) as c:
        _generate(c, "How do I reverse a list in Python?", "acme")
        for item in c.generate_events("How can I reverse a Python list?", "acme", model=MODEL):
            if isinstance(item, GenerateResult):
                assert item.cached
                break  # leave at once, as the gateway does
        deadline = time.monotonic() + 10
        while fake_llm.sim.stats.requests_served < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert fake_llm.sim.stats.requests_served == 2
