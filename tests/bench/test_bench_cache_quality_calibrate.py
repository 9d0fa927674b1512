"""bench/cache_quality.calibrate.regularised on small synthetic lookups: a per-category move
must beat bootstrap noise to leave the base (global) threshold."""

from __future__ import annotations

import numpy as np
import pytest

from bench.cache_quality import calibrate
from bench.cache_quality.run import tuned_defaults
from bench.cache_quality.simulate import Lookups, SingleSearch, metrics
from cache.policy import CategoryPolicy

# (category, similarity of the nearest entry, nearest entry correct, lookup has a duplicate, count)
Rows = list[tuple[str, float, bool, bool, int]]


def _lookups(categories: tuple[str, ...], rows: Rows, exact: int = 0) -> Lookups:
    cat, sim, good, dup = [], [], [], []
    for name, s, ok, d, count in rows:
        cat += [categories.index(name)] * count
        sim += [s] * count
        good += [ok] * count
        dup += [d] * count
    n = len(cat)
    is_exact = np.zeros(n, bool)
    is_exact[:exact] = True  # exact repeats always hit, whatever the thresholds
    sim_a = np.array(sim)
    sim_a[is_exact] = 1.0
    return Lookups(
        categories,
        np.array(cat, np.int64),
        is_exact,
        sim_a,
        np.arange(n, dtype=np.int64),
        np.array(good),
        np.array(dup),
    )


F1_CATS = ("default", "real", "noise")
F1_ROWS: Rows = [
    ("default", 0.95, True, True, 600),
    ("default", 0.95, False, False, 300),
    ("default", 0.80, False, True, 400),
    ("default", 0.50, False, False, 700),
    # a real difference: 400 duplicates between 0.86 and 0.90, nothing wrong there
    ("real", 0.95, True, True, 100),
    ("real", 0.87, True, True, 400),
    ("real", 0.50, False, False, 500),
    # noise: between 0.885 and 0.90, 3 right and 4 wrong; helps F1 on A, by a hair
    ("noise", 0.95, True, True, 300),
    ("noise", 0.95, False, False, 100),
    ("noise", 0.89, True, True, 3),
    ("noise", 0.89, False, False, 4),
    ("noise", 0.60, False, False, 593),
]
F1_BASE = {"default": 0.90, "real": 0.90, "noise": 0.90}
F1_CAND = {"default": 0.90, "real": 0.86, "noise": 0.885}


def test_f1_real_difference_moves_noise_stays() -> None:
    look = _lookups(F1_CATS, F1_ROWS, exact=50)
    # the knapsack-style candidate is better on A in both categories, noise included
    base_f1 = metrics(look, look.thresholds(F1_BASE))["f1"]
    assert metrics(look, look.thresholds({**F1_BASE, "noise": 0.885}))["f1"] > base_f1
    r = calibrate.regularised(look, F1_BASE, F1_CAND, objective="f1", seed=0)
    assert r.thresholds == {"default": 0.90, "real": 0.86, "noise": 0.90}
    assert r.moved == ("real",)
    assert r.moves["real"]["support"] == 1.0
    noise, support = r.moves["noise"], r.moves["noise"]["support"]
    assert noise["status"] == "not supported" and isinstance(support, float) and support < 0.9
    assert r.moves["default"]["status"] == "same"
    assert r.on_a == metrics(look, look.thresholds(r.thresholds))
    assert r.on_a["f1"] > base_f1
    # without the noise test the noise move is taken: the assertions above can fail
    loose = calibrate.regularised(look, F1_BASE, F1_CAND, objective="f1", seed=0, confidence=0.0)
    assert loose.thresholds == F1_CAND


def test_deterministic_for_a_seed() -> None:
    look = _lookups(F1_CATS, F1_ROWS)
    one = calibrate.regularised(look, F1_BASE, F1_CAND, objective="f1", seed=3, resamples=120)
    two = calibrate.regularised(look, F1_BASE, F1_CAND, objective="f1", seed=3, resamples=120)
    other = calibrate.regularised(look, F1_BASE, F1_CAND, objective="f1", seed=4, resamples=120)
    assert one == two
    assert other.thresholds == one.thresholds  # the decision does not hang on the seed here...
    assert other.moves["noise"]["support"] != one.moves["noise"]["support"]  # ...but the draws do


def test_small_category_stays_at_base() -> None:
    look = _lookups(F1_CATS, F1_ROWS)
    r = calibrate.regularised(look, F1_BASE, F1_CAND, objective="f1", min_support=1001)
    assert r.thresholds == F1_BASE
    assert r.moves["real"]["status"] == "too few lookups"


FHR_CATS = ("default", "strict", "loose", "noise")
FHR_ROWS: Rows = [
    ("default", 0.95, True, True, 500),
    ("default", 0.95, False, False, 50),
    ("default", 0.50, False, False, 450),
    # raising 0.90 -> 0.95 drops 200 false hits for 5 correct ones
    ("strict", 0.97, True, True, 100),
    ("strict", 0.92, True, True, 5),
    ("strict", 0.92, False, False, 200),
    ("strict", 0.50, False, False, 695),
    # lowering 0.90 -> 0.85 buys 300 correct hits for 100 false ones
    ("loose", 0.95, True, True, 100),
    ("loose", 0.87, True, True, 300),
    ("loose", 0.87, False, False, 100),
    ("loose", 0.50, False, False, 500),
    # noise: 0.90 -> 0.88 buys 4 correct for 2 false, better than 1:1 on A, by a hair
    ("noise", 0.95, True, True, 200),
    ("noise", 0.89, True, True, 4),
    ("noise", 0.89, False, False, 2),
    ("noise", 0.50, False, False, 794),
]
FHR_BASE = dict.fromkeys(FHR_CATS, 0.9)
FHR_CAND = {"default": 0.90, "strict": 0.95, "loose": 0.85, "noise": 0.88}


def test_fhr_trade_moves_within_the_budget_noise_stays() -> None:
    look = _lookups(FHR_CATS, FHR_ROWS)
    base = metrics(look, look.thresholds(FHR_BASE))
    r = calibrate.regularised(look, FHR_BASE, FHR_CAND, objective="fhr", exchange=1.0, seed=0)
    assert r.thresholds == {"default": 0.90, "strict": 0.95, "loose": 0.85, "noise": 0.90}
    assert r.moved == ("strict", "loose")
    noise, support = r.moves["noise"], r.moves["noise"]["support"]
    assert noise["status"] == "not supported" and isinstance(support, float) and support < 0.9
    # more correct hits at no more false hits than the base
    assert r.on_a["correct_hits"] == base["correct_hits"] - 5 + 300
    assert r.on_a["false_hits"] == base["false_hits"] - 200 + 100 <= base["false_hits"]


def test_fhr_lowering_alone_does_not_fit_the_budget() -> None:
    look = _lookups(FHR_CATS, FHR_ROWS)
    r = calibrate.regularised(
        look, FHR_BASE, {**FHR_CAND, "strict": 0.90}, objective="fhr", exchange=1.0
    )
    assert r.thresholds == FHR_BASE
    assert (
        r.moves["loose"]["status"] == "over false-hit budget" and r.moves["loose"]["support"] == 1.0
    )


def test_fhr_needs_the_exchange_rate() -> None:
    look = _lookups(FHR_CATS, FHR_ROWS)
    with pytest.raises(ValueError, match="exchange"):
        calibrate.regularised(look, FHR_BASE, FHR_CAND, objective="fhr")


def test_exchange_rate_is_the_global_sweep_slope() -> None:
    look = _lookups(FHR_CATS, FHR_ROWS)
    sweep = calibrate.global_sweep(look)
    # from 0.91 down to 0.89: + 4 correct, + 2 false (noise rows at 0.89); strict rows at 0.92 are outside
    assert calibrate.exchange_rate(sweep, 0.90) == pytest.approx(2.0)
    # from 0.94 down to 0.92: + 5 correct, + 200 false (strict rows at 0.92)
    assert calibrate.exchange_rate(sweep, 0.93) == pytest.approx(5 / 200)


def test_coordinate_ascent_matches_exhaustive_search_when_categories_do_not_interact() -> None:
    """Partitioned lookups: correct hits - rate x false hits adds up per category, so the
    coordinate ascent must find the exhaustive optimum over every threshold pair."""
    look = _lookups(F1_CATS, F1_ROWS)
    grid = np.round(np.arange(0.80, 0.96 + 1e-9, 0.005), 3)
    objective = calibrate.exchange_objective(2.0)

    def value(t: dict[str, float]) -> float:
        m = metrics(look, look.thresholds(t))
        return objective(int(m["correct_hits"]), int(m["false_hits"]), 0)

    found = calibrate.coordinate_ascent(look, F1_BASE, objective, grid=grid)
    best = max(
        value({"default": x, "real": y, "noise": z}) for x in grid for y in grid for z in grid
    )
    assert value(found) == best
    assert found["real"] <= 0.87  # the real difference is taken


def _one_search(n_good: int, n_bad: int, n_far: int) -> SingleSearch:
    """Lookups of category 'a' whose only candidate is filed under category 'b' (k = 1)."""
    n = n_good + n_bad + n_far
    sim = np.array([0.90] * (n_good + n_bad) + [0.50] * n_far)[:, None]
    correct = np.array([True] * n_good + [False] * (n_bad + n_far))[:, None]
    return SingleSearch(
        ("a", "b"),
        np.zeros(n, np.int64),
        np.zeros(n, bool),
        np.zeros(n, bool),
        sim,
        np.arange(n, dtype=np.int64)[:, None],
        np.full(n, -1, np.int64),
        np.ones((n, 1), np.int64),
        correct,
        correct[:, 0].copy(),
    )


def test_one_search_moves_count_their_effect_on_other_categories_lookups() -> None:
    """With one search, category b's threshold decides lookups of category a whose candidates
    are b's entries: a move of b (which has no lookups of its own) must be judged by them."""
    look = _one_search(600, 50, 350)
    base, cand = {"a": 0.85, "b": 0.95}, {"a": 0.85, "b": 0.85}
    assert metrics(look, look.thresholds(base))["hits"] == 0  # b's 0.95 binds (stricter)
    r = calibrate.regularised(look, base, cand, objective="f1", min_support=0, seed=0)
    assert r.moved == ("b",) and r.on_a["correct_hits"] == 600 and r.on_a["false_hits"] == 50
    found = calibrate.coordinate_ascent(
        look, base, calibrate.f1_objective, min_support=0, grid=np.array([0.85, 0.95])
    )
    assert found["b"] == 0.85


def test_tuned_defaults_round_up_and_keep_strict_categories() -> None:
    """The shipped-threshold rule: the chosen thresholds rounded up to 0.001, a strict
    category never below its shipped value."""
    shipped = {
        "default": CategoryPolicy(threshold=0.96, ttl_s=1),
        "health": CategoryPolicy(threshold=0.97, ttl_s=1, strict=True, min_threshold=0.97),
    }
    rule = tuned_defaults({"default": 0.9612, "health": 0.962}, shipped)
    assert rule == {"default": 0.962, "health": 0.97}
    assert tuned_defaults({"default": 0.95, "health": 0.99}, shipped)["health"] == 0.99
