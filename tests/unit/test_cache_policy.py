"""Policies, fingerprints, admission, eviction order and calibration as pure functions."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from cache import (
    CachedResponse,
    CacheEntry,
    CategoryPolicy,
    CorruptEntry,
    InvalidRequest,
    LookupRequest,
    ToolCall,
)
from cache.admission import admit
from cache.calibration import FeedbackBook, calibrate
from cache.eviction import choose_victims
from cache.fingerprint import (
    context_fingerprint,
    is_deterministic,
    normalise_prompt,
    params_fingerprint,
)
from cache.ledger import EntryMeta, Ledger
from cache.policy import Eviction, default_policies, effective


def test_shipped_defaults() -> None:
    p = default_policies()
    assert set(p) == {
        "default",
        "code",
        "conversation",
        "knowledge",
        "time_sensitive",
        "health",
        "legal",
        "assistant",
    }
    # TTLs as DESIGN §5; thresholds tuned by bench/cache_quality (one search, FHR <= 2% on QQP).
    assert (p["default"].threshold, p["default"].ttl_s) == (0.962, 86400)
    assert (p["code"].threshold, p["code"].ttl_s) == (0.962, 30 * 86400)
    assert (p["conversation"].ttl_s, p["knowledge"].ttl_s) == (86400, 7 * 86400)
    assert (p["time_sensitive"].threshold, p["time_sensitive"].ttl_s) == (0.962, 300)
    # strict categories stay the strictest; non-strict ones may relax / calibrate down by relax
    assert all(p[c].threshold == p[c].min_threshold == 0.97 for c in ("health", "legal"))
    assert all(
        p[c].min_threshold == pytest.approx(p[c].threshold - p[c].relax)
        for c in p
        if not p[c].strict
    )
    assert (p["assistant"].ttl_s) == 3600
    assert p["health"].strict and p["legal"].strict
    loosest_strict = min(q.threshold for q in p.values() if q.strict)
    assert loosest_strict >= max(
        q.threshold for q in p.values() if not q.strict
    )  # strict is strictest
    for q in p.values():
        assert q.min_threshold <= q.threshold and q.min_threshold >= 0.85


@pytest.mark.parametrize(
    "field,value",
    [
        ("threshold", 1.2),
        ("threshold", math.nan),
        ("ttl_s", 0),
        ("quota_per_tenant", 0),
        ("eviction", "random"),
        ("strict", "yes"),
        ("relax", -0.1),
        ("extend", -1),
        ("target_false_hit_rate", 2.0),
        ("min_threshold", 0.99),
        ("max_ttl_s", 10.0),
    ],
)
def test_policy_validation_names_the_field(field: str, value: object) -> None:
    base = default_policies()["default"]
    with pytest.raises(InvalidRequest) as err:
        base.with_changes({field: value})
    assert err.value.field == field and isinstance(err.value, ValueError)


def test_effective_moves_with_load_within_bounds_and_strict_never_moves() -> None:
    p = CategoryPolicy(
        threshold=0.9, ttl_s=100, min_threshold=0.88, max_ttl_s=150, relax=0.05, extend=1.0
    )
    assert effective(p, 0.0) == (0.9, 100)
    thr, ttl = effective(p, 0.2)
    assert thr == pytest.approx(0.89) and ttl == pytest.approx(120)
    assert effective(p, 1.0) == (0.88, 150)  # clamped by min_threshold / max_ttl_s
    assert effective(p, 7.0) == effective(p, 1.0) and effective(p, math.nan) == (0.9, 100)
    strict = CategoryPolicy(threshold=0.95, ttl_s=100, strict=True, min_threshold=0.5)
    assert effective(strict, 1.0) == (0.95, 100)


def test_normalisation_and_params_fingerprint() -> None:
    assert normalise_prompt("  Ｈｅｌｌｏ\u00a0 WORLD\n") == "hello world"
    assert params_fingerprint({"temperature": 0, "stop": "x"}) == params_fingerprint(
        {"stop": ["x"], "temperature": 0.0}
    )
    assert params_fingerprint(
        {"temperature": 0, "stream": True, "user": "u"}
    ) == params_fingerprint({"temperature": 0})
    assert params_fingerprint({"temperature": 0}) != params_fingerprint({"temperature": 1})
    assert params_fingerprint({"max_tokens": 10}) != params_fingerprint({"max_tokens": 11})
    assert is_deterministic({}) and is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 1, "seed": 3}) and not is_deterministic(
        {"temperature": 0.2}
    )
    assert context_fingerprint(()) == ""
    assert context_fingerprint([("system", "a")]) != context_fingerprint([("system", "a ")])


def test_lookup_request_validation_names_fields() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(tenant="", prompt="x"), "tenant"),
        (dict(tenant="t"), "prompt"),
        (dict(tenant="t", prompt="x", messages=[("user", "y")]), "prompt"),
        (dict(tenant="t", prompt="   "), "prompt"),
        (dict(tenant="t", messages=[("system", "s")]), "messages"),
        (dict(tenant="t", messages=[("user", 3)]), "messages[0].content"),
        (dict(tenant="t", prompt="x", params={"temperature": 3}), "params.temperature"),
        (dict(tenant="t", prompt="x", params={"top_p": 0}), "params.top_p"),
        (dict(tenant="t", prompt="x", params={"max_tokens": 1.5}), "params.max_tokens"),
        (dict(tenant="t", prompt="x", params={"stop": [1]}), "params.stop"),
        (dict(tenant="t", prompt="x", params={"x": object()}), "params.x"),
        (dict(tenant="t", prompt="x", embedding=[0.0, 0.0]), "embedding"),
        (dict(tenant="t", prompt="x", embedding=[np.nan, 1.0]), "embedding"),
        (dict(tenant="t", prompt="x", category=""), "category"),
    ]
    for kwargs, field in cases:
        with pytest.raises(InvalidRequest) as err:
            LookupRequest(**kwargs)
        assert err.value.field == field, kwargs


def test_conversation_query_and_context() -> None:
    r = LookupRequest(
        tenant="t",
        messages=[
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "hello"),
            ("user", "And in Germany?"),
        ],
    )
    assert r.query_text == "And in Germany?"
    assert r.context == (("system", "be brief"), ("user", "hi"), ("assistant", "hello"))


def test_entry_round_trips_through_bytes_and_rejects_garbage() -> None:
    e = CacheEntry(
        entry_id="e1",
        category="code",
        tenant="ann",
        shared=True,
        prompt="p",
        context_fp="",
        model="m",
        params_fp="x",
        core_params_fp="y",
        response_text="résumé",
        finish_reason="stop",
        usage={"total_tokens": 3},
        created_at=1.0,
        expires_at=2.0,
        hits=4,
        last_hit_at=1.5,
    )
    assert CacheEntry.from_bytes(e.to_bytes()) == e
    assert e.access_list() == ("ann", "*") and e.metadata()["expires_at"] == "2.0"
    with pytest.raises(CorruptEntry):
        CacheEntry.from_bytes(b"{not json")
    calls = (ToolCall("call_1", "get_weather", '{"city": "Oslo"}'), ToolCall("call_2", "now", "{}"))
    with_calls = replace(e, response_text="", finish_reason="tool_calls", tool_calls=calls)
    back = CacheEntry.from_bytes(with_calls.to_bytes())
    assert back == with_calls and back.response.tool_calls == calls
    # entries stored before tool calls were kept read back with none
    old_doc = json.loads(e.to_bytes())
    del old_doc["tool_calls"]
    assert CacheEntry.from_bytes(json.dumps(old_doc).encode()) == e
    with pytest.raises(CorruptEntry):
        CacheEntry.from_bytes(e.to_bytes().replace(b'"tool_calls":[]', b'"tool_calls":[[1,2]]'))


def test_a_tool_call_answer_without_text_is_admitted_an_empty_one_is_not() -> None:
    policy = default_policies()["default"]
    call = ToolCall("call_1", "get_weather", "{}")
    calls = CachedResponse(text="", finish_reason="tool_calls", tool_calls=(call,))
    assert admit(response=calls, policy=policy, deterministic=True, no_store=False).admitted
    empty = CachedResponse(text="", finish_reason="tool_calls")
    assert (
        admit(response=empty, policy=policy, deterministic=True, no_store=False).reason == "empty"
    )
    with pytest.raises(InvalidRequest, match=r"response.tool_calls\[0\].name"):
        CachedResponse(text="", finish_reason="tool_calls", tool_calls=(ToolCall("c", "", "{}"),))


def test_admission_reasons() -> None:
    policy = default_policies()["default"]
    ok = CachedResponse(text="fine", finish_reason="stop")
    assert admit(response=ok, policy=policy, deterministic=True, no_store=False).admitted
    assert admit(response=ok, policy=policy, deterministic=True, no_store=True).reason == "no_store"
    assert (
        admit(response=ok, policy=policy, deterministic=False, no_store=False).reason
        == "nondeterministic"
    )


def _ledger(metas: list[tuple[str, str, float, float, int, float | None]]) -> Ledger:
    ledger = Ledger()
    for entry_id, tenant, created, expires, hits, last in metas:
        ledger.add(
            EntryMeta(
                entry_id=entry_id,
                category="default",
                tenant=tenant,
                shared=False,
                created_at=created,
                expires_at=expires,
                hits=hits,
                last_hit_at=last,
                route_key=entry_id,
            )
        )
    return ledger


@pytest.mark.parametrize(
    "eviction,victim",
    [
        (Eviction.LRU, "b"),  # a was hit recently; b created earliest among the never-hit
        (Eviction.LFU, "c"),  # fewest hits (0), then oldest among b/c -> b has 1 hit
        (Eviction.TTL_FIRST, "a"),  # soonest to expire
    ],
)
def test_quota_eviction_per_policy(eviction: Eviction, victim: str) -> None:
    ledger = _ledger(
        [
            ("a", "ann", 1.0, 150.0, 5, 90.0),
            ("b", "ann", 2.0, 500.0, 1, None),
            ("c", "ann", 3.0, 400.0, 0, None),
            ("new", "ann", 100.0, 1000.0, 0, None),
        ]
    )
    policy = CategoryPolicy(threshold=0.9, ttl_s=10, quota_per_tenant=3, eviction=eviction)
    assert choose_victims(ledger, policy, tenant="ann", now=100.0, keep="new") == [victim]


def test_expired_entries_go_first_and_total_quota_spans_tenants() -> None:
    ledger = _ledger(
        [
            ("a", "ann", 1.0, 500.0, 0, None),
            ("b", "ben", 2.0, 50.0, 9, 99.0),  # expired at now=100
            ("c", "cat", 3.0, 500.0, 0, None),
            ("new", "ann", 100.0, 1000.0, 0, None),
        ]
    )
    policy = CategoryPolicy(
        threshold=0.9, ttl_s=10, quota_per_tenant=2, quota_total=2, eviction=Eviction.LFU
    )
    assert choose_victims(ledger, policy, tenant="ann", now=100.0, keep="new") == ["b", "a"]


def test_calibration_picks_lowest_safe_threshold() -> None:
    samples = [(0.90, False), (0.91, False), (0.95, True), (0.97, True), (0.99, True)]
    assert calibrate(samples, base=0.88, floor=0.85, target=0.05) == 0.95
    assert calibrate([(0.9, True)] * 5, base=0.88, floor=0.85, target=0.05) == 0.88
    worst = calibrate([(0.93, False)] * 3, base=0.88, floor=0.85, target=0.05)
    assert 0.93 < worst < 0.9301
    assert (
        calibrate([(0.86, True)] * 5, base=0.88, floor=0.85, target=0.05) == 0.86
    )  # lowers, never below floor
    assert calibrate([(0.80, True)] * 5, base=0.88, floor=0.85, target=0.05) == 0.88


def test_lowering_threshold_below_its_bound_moves_the_bound_keeping_the_room() -> None:
    base = CategoryPolicy(threshold=0.97, ttl_s=100, min_threshold=0.95)
    lowered = base.with_changes({"threshold": 0.9})
    assert (lowered.threshold, lowered.min_threshold) == (0.9, 0.88)
    assert base.with_changes({"threshold": 0.96}).min_threshold == 0.95  # still above: unchanged
    assert base.with_changes({"threshold": 0.01}).min_threshold == 0.0
    with pytest.raises(InvalidRequest) as err:  # both named: refused, values as given
        base.with_changes({"threshold": 0.9, "min_threshold": 0.95})
    assert err.value.field == "min_threshold" and err.value.message == "0.95 is above threshold 0.9"


def test_calibration_weighs_labels_by_where_lookups_fall() -> None:
    """Labels just below the threshold are the hardest cases; most lookups that a lower
    threshold would serve lie higher, where the fitted false share is that of the most
    similar labels, not the band's average. Ties are pooled; the fit never increases."""
    labels = (
        [(0.90, False)] * 6
        + [(0.90, True)] * 4
        + [(0.92, False)] * 2
        + [(0.92, True)] * 8
        + [(0.94, True)] * 10
    )
    lookups = [0.90] * 10 + [0.92] * 10 + [0.94] * 10 + [0.99] * 70
    # at 0.92: 10 lookups at false share 0.2 -> 2 false hits per 100 lookups; at 0.90 another 6
    assert (
        calibrate(labels, base=0.96, floor=0.85, target=0.02, lookups=lookups, min_labels=5) == 0.92
    )
    assert (
        calibrate(labels, base=0.96, floor=0.85, target=0.019, lookups=lookups, min_labels=5)
        == 0.94
    )
    # pooled over the labels alone (no lookups known) the same labels justify less
    assert calibrate(labels, base=0.96, floor=0.85, target=0.02, min_labels=5) == 0.94
    # an inverted pattern is pooled: the fit never rises with similarity
    assert (
        calibrate(
            [(0.90, True)] * 5 + [(0.93, False)] * 5,
            base=0.96,
            floor=0.85,
            target=0.3,
            lookups=[0.90] * 5 + [0.93] * 5,
            min_labels=5,
        )
        == 0.93
    )


def test_calibration_prior_from_other_categories_shrinks_a_small_sample() -> None:
    """Three correct labels alone say nothing served at >= 0.93 is ever wrong; the other
    categories' labels (half wrong there) weigh in as `prior_weight` labels and keep the
    threshold up; with plenty of own labels the category's own evidence wins again."""
    own = [(0.93, True)] * 3
    lookups = [0.93] * 10 + [0.99] * 90
    free = calibrate(own, base=0.96, floor=0.90, target=0.02, lookups=lookups, min_labels=3)
    assert free == 0.93
    others = [(0.93, False)] * 50 + [(0.93, True)] * 50
    held = calibrate(
        own,
        base=0.96,
        floor=0.90,
        target=0.02,
        lookups=lookups,
        min_labels=3,
        prior=others,
        prior_weight=10,
    )
    assert held == 0.96  # (0 + 10 x 0.5) / 13 wrong at 0.93: far above 2% of lookups
    plenty = [(0.93, True)] * 500
    assert (
        calibrate(
            plenty,
            base=0.96,
            floor=0.90,
            target=0.02,
            lookups=lookups,
            min_labels=3,
            prior=others,
            prior_weight=10,
        )
        == 0.93
    )  # 5 / 510 wrong at 0.93 x 10% of lookups: 0.1%
    # the prior's weight counts towards min_labels: 3 own + 10 pooled >= 12
    assert (
        calibrate(
            [(0.93, True)] * 3,
            base=0.96,
            floor=0.90,
            target=0.5,
            lookups=lookups,
            min_labels=12,
            prior=[(0.93, True)] * 40,
            prior_weight=10,
        )
        == 0.93
    )


def test_feedback_book_pools_labels_across_categories() -> None:
    """A category with fewer than min_feedback labels of its own calibrates once the
    pooled prior makes up the rest; without pooling it waits for its own."""
    policy = CategoryPolicy(threshold=0.96, ttl_s=100, min_threshold=0.90)
    for prior, expected in ((10, 0.93), (0, None)):
        book = FeedbackBook(recent=10, window=500, min_feedback=20, prior=prior)
        for _ in range(100):
            book.observe("small", 0.99)
            book.rate("big", 0.93, True, policy)
        for _ in range(10):
            book.rate("small", 0.93, True, policy)
        assert book.threshold("small") == expected
