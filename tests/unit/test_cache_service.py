"""SemanticCache lookup/store paths over in-memory fakes (no I/O, no sleeps)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from cache import (
    CachedResponse,
    CacheOptions,
    CategoryPolicy,
    Chunk,
    EntryNotFound,
    Eviction,
    FinalResult,
    InvalidRequest,
    LookupRequest,
    NotPermitted,
    Reason,
    StoreReason,
)
from cache.stats import BreakEvenConfig
from cache.testing import FakeClassifier, FakePorts, reference_policies

BASE = "How do I reverse a list in Python?"
PARAPHRASE = "how can i reverse a python list"  # cos 0.958 with BASE
NEAR_MISS = "how do I sort a list in python"  # cos 0.857 with BASE
TABLE: dict[str, list[float]] = {
    BASE: [1, 0, 0, 0],
    PARAPHRASE: [1, 0.3, 0, 0],
    NEAR_MISS: [1, 0.6, 0, 0],
    "headache": [0, 0, 1, 0],
    "severe headache": [0, 0.4, 1, 0],  # cos 0.928 with "headache"
    "And in Germany?": [0, 0, 0, 1],
}
OK = CachedResponse(
    text="use reversed() or list[::-1]", finish_reason="stop", usage={"completion_tokens": 7}
)


def ports(**kw: Any) -> FakePorts:
    return FakePorts(table=TABLE, **kw)


def req(
    prompt: str = BASE, tenant: str = "ann", category: str | None = "default", **kw: Any
) -> LookupRequest:
    return LookupRequest(tenant=tenant, prompt=prompt, category=category, **kw)


async def test_paraphrase_hits_and_near_miss_misses_by_threshold() -> None:
    cache = ports().cache()
    stored = await cache.store(req(), OK)
    assert stored.stored and stored.reason is StoreReason.STORED
    hit = await cache.lookup(req(PARAPHRASE))
    assert hit.hit and hit.reason is Reason.SEMANTIC and hit.response == OK
    assert hit.similarity == pytest.approx(
        1 / np.sqrt(1.09), abs=1e-5
    ) and hit.threshold == pytest.approx(0.88)
    assert "similarity 0.95" in hit.detail
    miss = await cache.lookup(req(NEAR_MISS))
    assert not miss.hit and miss.reason is Reason.BELOW_THRESHOLD
    assert miss.similarity == pytest.approx(1 / np.sqrt(1.36), abs=1e-5)
    assert "< threshold 0.8800" in miss.detail


async def test_exact_path_hits_on_normalised_prompt_without_embedding() -> None:
    p = ports()
    cache = p.cache()
    await cache.store(req(), OK)
    calls = p.embedder.calls
    hit = await cache.lookup(req("  how DO i reverse a list in\tpython?  ", category=None))
    assert (
        hit.hit
        and hit.reason is Reason.EXACT
        and hit.similarity == 1.0
        and hit.category == "default"
    )
    assert p.embedder.calls == calls  # routed by the remembered category, no embed/classify


async def test_exact_step_asks_the_store_only_for_keys_this_process_holds() -> None:
    p = ports()
    cache = p.cache()
    await cache.store(req(), OK)
    gets = p.repo.gets
    miss = await cache.lookup(req(NEAR_MISS))  # a new prompt: no exact key known, no fetch
    assert not miss.hit and p.repo.gets == gets
    assert (await cache.lookup(req())).reason is Reason.EXACT and p.repo.gets == gets + 1
    restarted = p.cache()  # a new process: what it holds comes from the store
    assert await restarted.restore() == 1
    assert (await restarted.lookup(req())).reason is Reason.EXACT


async def test_strict_category_refuses_near_paraphrase_that_a_loose_one_accepts() -> None:
    cache = ports().cache()
    for category in ("health", "conversation"):
        await cache.store(req("headache", category=category), OK)
    strict = await cache.lookup(req("severe headache", category="health"))
    loose = await cache.lookup(req("severe headache", category="conversation"))
    assert not strict.hit and strict.reason is Reason.BELOW_THRESHOLD
    assert loose.hit and loose.reason is Reason.SEMANTIC


async def test_ttl_expiry_with_fake_clock_and_sweeper() -> None:
    p = ports()
    cache = p.cache()
    await cache.store(req(category="time_sensitive"), OK)
    assert (await cache.lookup(req(category="time_sensitive"))).hit
    p.clock.advance(5 * 60 + 1)
    expired = await cache.lookup(req(category="time_sensitive"))
    assert not expired.hit and expired.reason is Reason.EXPIRED
    para = await cache.lookup(req(PARAPHRASE, category="time_sensitive"))
    assert not para.hit and para.reason in (Reason.EXPIRED, Reason.BELOW_THRESHOLD)
    assert await cache.sweep_expired() == 1
    assert p.repo.count("time_sensitive") == 0
    assert cache.stats()["time_sensitive"].counters.expirations == 1
    assert (await cache.lookup(req(category="time_sensitive"))).reason is Reason.EMPTY


async def test_private_entries_are_invisible_to_other_tenants_shared_ones_visible() -> None:
    cache = ports().cache()
    await cache.store(req(tenant="ann"), OK)
    other = await cache.lookup(req(tenant="ben"))
    assert not other.hit and other.reason is Reason.EMPTY and other.similarity is None
    shared_resp = CachedResponse(text="shared answer", finish_reason="stop")
    await cache.store(req(tenant="ann"), shared_resp, shared=True)
    for tenant in ("ben", "cat"):
        hit = await cache.lookup(req(PARAPHRASE, tenant=tenant))
        assert hit.hit and hit.response == shared_resp
    own = await cache.lookup(req(tenant="ann"))
    assert own.hit and own.response == OK  # the private exact key is tried first


async def test_reserved_shared_tenant_name_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as err:
        req(tenant="*")
    assert err.value.field == "tenant"


async def test_context_fingerprint_prevents_follow_up_collisions() -> None:
    cache = ports().cache()
    france = [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "And in Germany?"),
    ]
    weather = [
        ("user", "Is it raining in France?"),
        ("assistant", "Yes."),
        ("user", "And in Germany?"),
    ]
    r1 = LookupRequest(tenant="ann", messages=france, category="conversation")
    await cache.store(r1, CachedResponse(text="Berlin.", finish_reason="stop"))
    r2 = LookupRequest(tenant="ann", messages=weather, category="conversation")
    miss = await cache.lookup(r2)
    assert not miss.hit and miss.reason is Reason.FINGERPRINT_MISMATCH and "context" in miss.detail
    assert (await cache.lookup(r1)).hit


async def test_temperature_fingerprint_mismatch_misses() -> None:
    cache = ports().cache()
    await cache.store(req(params={"temperature": 0}), OK)
    assert (await cache.lookup(req(params={"temperature": 0.0}))).hit  # 0 == 0.0 canonically
    miss = await cache.lookup(req(params={"temperature": 1, "seed": 7}))
    assert (
        not miss.hit and miss.reason is Reason.FINGERPRINT_MISMATCH and "parameters" in miss.detail
    )
    other_model = await cache.lookup(req(params={"temperature": 0}, model="big"))
    assert other_model.reason is Reason.FINGERPRINT_MISMATCH and "model" in other_model.detail


async def test_nondeterministic_requests_are_not_stored_unless_policy_allows() -> None:
    p = ports()
    cache = p.cache()
    refused = await cache.store(req(params={"temperature": 0.7}), OK)
    assert not refused.stored and refused.reason is StoreReason.NONDETERMINISTIC
    cache.set_policy("default", cache_nondeterministic=True)
    assert (await cache.store(req(params={"temperature": 0.7}), OK)).stored
    # that category now also serves a sampled answer for other sampling settings
    hit = await cache.lookup(req(PARAPHRASE, params={"temperature": 1.0}))
    assert hit.hit


async def test_adaptation_relaxes_threshold_under_load_but_not_for_strict() -> None:
    p = ports()
    cache = p.cache()
    await cache.store(req("headache", category="conversation"), OK)
    await cache.store(req("headache", category="health"), OK)
    p.backend.load_value = 1.0
    stats = cache.stats()
    assert stats["conversation"].effective_threshold == pytest.approx(0.82)
    assert stats["conversation"].effective_ttl_s == pytest.approx(2 * 86400)
    assert stats["health"].effective_threshold == 0.95 and stats["health"].effective_ttl_s == 86400
    # an entry stored under load lives longer
    stored = await cache.store(req("something else", category="code"), OK)
    assert stored.expires_at == pytest.approx(p.clock.now() + 60 * 86400)


async def test_disabled_category_neither_serves_nor_stores() -> None:
    cache = ports().cache()
    await cache.store(req(), OK)
    cache.set_policy("default", enabled=False)
    result = await cache.lookup(req())
    assert not result.hit and result.reason is Reason.DISABLED
    assert (await cache.store(req(), OK)).reason is StoreReason.DISABLED


async def test_no_cache_skips_lookup_no_store_skips_store() -> None:
    cache = ports().cache()
    await cache.store(req(), OK)
    assert (await cache.lookup(req(no_cache=True))).reason is Reason.NO_CACHE
    assert (await cache.store(req(PARAPHRASE, no_store=True), OK)).reason is StoreReason.NO_STORE


async def test_classifier_picks_category_and_low_confidence_falls_back_to_default() -> None:
    classifier = FakeClassifier(
        vectors={"code": [1, 0, 0, 0], "health": [0, 0, 1, 0]}, confidence=0.9
    )
    cache = ports(classifier=classifier).cache()
    assert (await cache.store(req(category=None), OK)).category == "code"
    assert (await cache.lookup(req(PARAPHRASE, category=None))).category == "code"
    unsure = ports(
        classifier=FakeClassifier(vectors={"code": [1, 0, 0, 0]}, confidence=0.3)
    ).cache()
    assert (await unsure.store(req(category=None), OK)).category == "default"


async def test_calibration_raises_threshold_after_incorrect_hit_feedback() -> None:
    p = ports()
    options = CacheOptions(min_feedback=4)
    cache = p.cache(options=options)
    await cache.store(req(), OK)
    before = cache.stats()["default"].effective_threshold
    for _ in range(4):
        hit = await cache.lookup(req(PARAPHRASE))
        assert hit.hit and hit.entry_id is not None
        cache.feedback(hit.entry_id, False, "ann")
    after = cache.stats()["default"]
    assert after.calibrated and after.effective_threshold > before
    assert hit.similarity is not None and after.effective_threshold > hit.similarity
    assert after.counters.false_hits == 4
    assert not (await cache.lookup(req(PARAPHRASE))).hit
    cache.set_policy("health", threshold=0.96)  # strict categories are never calibrated
    assert not cache.stats()["health"].calibrated


async def test_feedback_checks_visibility() -> None:
    cache = ports().cache()
    stored = await cache.store(req(), OK)
    assert stored.entry_id is not None
    with pytest.raises(NotPermitted):
        cache.feedback(stored.entry_id, True, "ben")
    with pytest.raises(EntryNotFound):
        cache.feedback("nope", True, "ann")
    cache.feedback(stored.entry_id, True, "ann")
    assert cache.stats()["default"].counters.correct_hits == 1


async def test_break_even_skip_kicks_in_and_recovers() -> None:
    p = ports()
    p.repo._cost = 0.010  # 10 ms per search on the fake clock
    config = BreakEvenConfig(window=10, min_sample=10, probe_every=4, ewma_alpha=0.5)
    cache = p.cache(options=CacheOptions(break_even=config))
    cache._stats.backend_latency("default", 5.0)  # a hit saves only 5 ms
    for i in range(10):
        result = await cache.lookup(req(f"unrelated question {i}"))
        assert result.reason in (Reason.EMPTY, Reason.BELOW_THRESHOLD)
    assert cache.stats()["default"].counters.skipping_semantic
    reasons = [(await cache.lookup(req(PARAPHRASE))).reason for _ in range(8)]
    assert reasons.count(Reason.BREAK_EVEN_SKIP) == 6  # every 4th lookup still probes
    # traffic changes: an entry now matches and hits save a lot of backend time
    await cache.store(req(), OK)
    cache._stats.backend_latency("default", 5000.0)
    cache._stats.backend_latency("default", 5000.0)
    for _ in range(40):
        await cache.lookup(req(PARAPHRASE))
    assert not cache.stats()["default"].counters.skipping_semantic
    assert (await cache.lookup(req(PARAPHRASE))).reason is Reason.SEMANTIC


async def test_invalidate_by_ids_category_and_tenant() -> None:
    p = ports()
    cache = p.cache()
    a = await cache.store(req(tenant="ann"), OK)
    await cache.store(req(PARAPHRASE, tenant="ann", category="code"), OK)
    b = await cache.store(req(tenant="ben"), OK)
    assert a.entry_id is not None and b.entry_id is not None
    with pytest.raises(NotPermitted):
        await cache.invalidate(entry_ids=[b.entry_id], tenant="ann")
    assert await cache.invalidate(entry_ids=[a.entry_id], tenant="ann") == 1
    assert await cache.invalidate(tenant="ann") == 1  # the code entry
    assert await cache.invalidate(category="default") == 1  # ben's
    assert len(p.repo) == 0
    with pytest.raises(InvalidRequest):
        await cache.invalidate()


async def test_restore_rebuilds_bookkeeping_from_scan() -> None:
    p = ports()
    first = p.cache()
    await first.store(req(), OK)
    second = p.cache()  # a restarted process over the same store
    assert await second.restore() == 1
    assert second.stats()["default"].entries == 1
    calls = p.embedder.calls
    assert (await second.lookup(req(category=None))).reason is Reason.EXACT
    assert p.embedder.calls == calls


async def test_set_policy_validates_and_creates_categories() -> None:
    cache = ports().cache()
    with pytest.raises(InvalidRequest) as err:
        cache.set_policy("default", threshold=1.5)
    assert err.value.field == "threshold"
    with pytest.raises(InvalidRequest) as err:
        cache.set_policy("default", colour="red")
    assert err.value.field == "colour"
    with pytest.raises(InvalidRequest) as err:
        cache.set_policy("recipes", threshold=0.9)  # a typo must not add a category
    assert err.value.field == "category" and "create" in err.value.message
    assert "recipes" not in cache.policies()
    created = cache.set_policy("recipes", create=True, threshold=0.9)
    assert created.ttl_s == reference_policies()["default"].ttl_s and "recipes" in cache.policies()
    assert (await cache.store(req(category="recipes"), OK)).stored
    with pytest.raises(InvalidRequest) as err:
        await cache.lookup(req(category="nonexistent"))
    assert err.value.field == "category"


async def test_bad_store_inputs_name_the_field() -> None:
    cache = ports().cache()
    with pytest.raises(InvalidRequest) as err:
        await cache.store(req(), OK, ttl=-1)
    assert err.value.field == "ttl"
    with pytest.raises(InvalidRequest) as err:
        await cache.lookup(req(embedding=np.ones(7)))
    assert err.value.field == "embedding"


async def test_admission_refuses_errors_empty_and_truncated() -> None:
    cache = ports().cache()
    cases = [
        (CachedResponse(text="oops", finish_reason="error"), StoreReason.ERROR),
        (CachedResponse(text="  ", finish_reason="stop"), StoreReason.EMPTY),
        (CachedResponse(text="half an ans", finish_reason="length"), StoreReason.TRUNCATED),
        (CachedResponse(text="filtered", finish_reason="content_filter"), StoreReason.ERROR),
    ]
    for response, reason in cases:
        result = await cache.store(req(), response)
        assert not result.stored and result.reason is reason
    cache.set_policy("default", allow_truncated=True)
    assert (await cache.store(req(), cases[2][0])).stored
    counters = cache.stats()["default"].counters
    assert counters.store_refusals == 4 and counters.stores == 1


async def test_stats_count_lookups_by_outcome_and_time_steps() -> None:
    p = ports()
    cache = p.cache()
    await cache.store(req(), OK)
    await cache.lookup(req())
    await cache.lookup(req(PARAPHRASE))
    await cache.lookup(req(NEAR_MISS))
    c = cache.stats()["default"].counters
    assert (c.lookups, c.exact_hits, c.semantic_hits, c.misses) == (3, 1, 1, 1)
    assert c.misses_by_reason == {"below_threshold": 1}
    assert {"exact", "embed", "search"} <= set(c.step_ms)


@pytest.mark.parametrize("eviction,evicted", [("lru", "q1"), ("lfu", "q1"), ("ttl-first", "q0")])
async def test_store_over_quota_evicts_by_policy(eviction: str, evicted: str) -> None:
    p = ports()
    policies = reference_policies()
    policies["default"] = CategoryPolicy(
        threshold=0.88, ttl_s=1000, quota_per_tenant=2, quota_total=3, eviction=Eviction(eviction)
    )
    cache = p.cache(policies=policies)
    await cache.store(req("q0"), OK, ttl=100)  # expires soonest
    p.clock.advance(1)
    await cache.store(req("q1"), OK)
    p.clock.advance(1)
    assert (await cache.lookup(req("q0"))).hit  # q0 is now recently and more often used
    await cache.store(req("q2"), OK)
    await cache.store(req("b0", tenant="ben"), OK)  # other tenants count only toward the total
    remaining = {
        e.prompt
        for e in (await p.repo.get([m.entry_id for m in cache._ledger("default")])).values()
    }
    assert (
        evicted not in remaining and "q2" in remaining and "b0" in remaining and len(remaining) == 3
    )
    assert cache.stats()["default"].counters.evictions == 1


async def test_size_limits_name_the_field_and_large_generations_are_not_stored() -> None:
    p = ports()
    cache = p.cache(options=CacheOptions(max_prompt_bytes=100, max_response_bytes=50))
    with pytest.raises(InvalidRequest) as err:
        await cache.lookup(req("é" * 51))  # 102 bytes in UTF-8
    assert (
        err.value.field == "prompt"
        and "102 bytes" in err.value.message
        and "100" in err.value.message
    )
    convo = [("system", "x" * 60), ("user", "y" * 41)]
    with pytest.raises(InvalidRequest) as err:
        await cache.lookup(LookupRequest(tenant="ann", messages=convo, category="default"))
    assert err.value.field == "messages"
    with pytest.raises(InvalidRequest) as err:
        await cache.store(req(), CachedResponse(text="z" * 51, finish_reason="stop"))
    assert err.value.field == "response.text"
    assert (await cache.lookup(req("é" * 50))).reason is Reason.EMPTY  # at the limit: fine
    p.backend.text = "w" * 51
    chunks, final = [], None
    async for item in cache.generate(req(params={"temperature": 0})):
        if isinstance(item, FinalResult):
            final = item
        elif isinstance(item, Chunk):  # after the lookup's outcome
            chunks.append(item.text)
    assert final is not None and "".join(chunks) == p.backend.text  # delivered ...
    assert (
        final.store_reason is StoreReason.TOO_LARGE and p.repo.count("default") == 0
    )  # ... not stored


async def test_a_long_prompt_is_prepared_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Normalising a long prompt runs in a worker thread, so other lookups go on meanwhile."""
    import threading

    from cache import fingerprint

    threads = []
    original = fingerprint.normalise_prompt

    def spy(text: str, **kw: Any) -> str:
        threads.append(threading.current_thread() is threading.main_thread())
        return original(text, **kw)

    cache = ports().cache()
    monkeypatch.setattr(fingerprint, "normalise_prompt", spy)
    await cache.lookup(req("short prompt"))
    await cache.lookup(req("a long prompt " * 10_000))
    assert threads == [True, False]


@pytest.mark.parametrize(
    "text",
    [
        "  Ｈｅｌｌｏ\u00a0 WORLD\n",
        "a \u0301b  c\t\td",
        "x" * 10 + " " * 7 + "ﬁ y\u2028z",
        "é e\u0301 É  ",
        "",
    ],
)
def test_normalising_in_pieces_equals_one_piece(text: str) -> None:
    from cache.fingerprint import normalise_prompt

    assert all(
        normalise_prompt(text, piece_chars=n) == normalise_prompt(text) for n in range(1, 12)
    )


async def test_category_sets_policy_not_partition() -> None:
    """One search over every category: a paraphrase filed under another category still hits,
    at the stricter of the two categories' thresholds (strict categories stay strict)."""
    cache = ports().cache()
    stored = await cache.store(req(category="code"), OK)  # code 0.90
    hit = await cache.lookup(req(PARAPHRASE, category="default"))  # default 0.88, cos 0.958
    assert hit.hit and hit.entry_id == stored.entry_id and hit.category == "code"
    assert hit.threshold == pytest.approx(0.90)  # code's, the stricter
    await cache.store(req("headache", category="health"), OK)  # health 0.95 (strict)
    near = await cache.lookup(req("severe headache", category="default"))  # cos 0.928
    assert (
        not near.hit
        and near.reason is Reason.BELOW_THRESHOLD
        and near.threshold == pytest.approx(0.95)
    )
    assert "'health' is stricter" in near.detail
    # The lookup's category binds too: a health lookup of the code entry needs health's 0.95.
    assert (await cache.lookup(req(PARAPHRASE, category="health"))).hit  # 0.958 >= 0.95
    cache.set_policy("health", threshold=0.97, min_threshold=0.97)
    strict = await cache.lookup(req(PARAPHRASE, category="health"))
    assert not strict.hit and strict.threshold == pytest.approx(0.97)
    # TTL, quota and eviction stay per category.
    assert cache.stats()["code"].entries == 1 and cache.stats()["health"].entries == 1
