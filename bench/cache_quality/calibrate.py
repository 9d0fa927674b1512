"""Choosing thresholds on half A: one global threshold, or one per category.

Global: sweep a grid; the best-F1 threshold, and the lowest threshold whose false-hit rate
stays <= the target (every lower threshold adds hits, so that one has the most recall).

Per category ("budget" method): maximise correct hits on A subject to false hits <= target x
lookups. False hits add up across categories (FHR is false hits / all lookups), so this is a
multiple-choice knapsack: each category picks one grid threshold, which costs its false hits
and buys its correct hits; dynamic programming over the integer false-hit budget solves it
exactly (8 categories x 61 grid values x <= 10^4 budget values: milliseconds). Solving it for
budgets from 0 up to a high FHR traces the best per-category hit-rate vs false-hit-rate
frontier on A; from it we take the policy at the target (the calibrated policy), the max-F1
policy (F1 = 2C / (C + F + D) rises with C at fixed F, so it lies on this frontier) and the
policy whose hit rate matches the best global threshold's (the equal-hit-rate comparison).
Any global threshold is one feasible choice, so on A the frontier is never below the global
sweep; on B it can be (over-fitting).
Per category ("each" method): the lowest threshold keeping that category's OWN false-hit rate
<= target, a guarantee that does not depend on the traffic mix.
A category with fewer than `min_support` lookups in A is not calibrated: it keeps the global
threshold for the target (too few lookups to trust a per-category estimate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.cache_quality.simulate import Lookups, metrics

GRID = np.round(np.arange(0.70, 1.0 + 1e-9, 0.005), 3)


def global_sweep(look: Lookups, grid: np.ndarray = GRID) -> list[dict[str, float]]:
    k = len(look.categories)
    return [{"threshold": float(t), **metrics(look, np.full(k, t))} for t in grid]


def best_f1(sweep: list[dict[str, float]]) -> dict[str, float]:
    return max(sweep, key=lambda r: (r["f1"], r["threshold"]))


def lowest_within(sweep: list[dict[str, float]], target_fhr: float) -> dict[str, float]:
    """The lowest threshold with false-hit rate <= target (the highest grid value if none)."""
    ok = [r for r in sweep if r["false_hit_rate"] <= target_fhr]
    return min(ok, key=lambda r: r["threshold"]) if ok else max(sweep, key=lambda r: r["threshold"])


@dataclass(frozen=True, slots=True)
class Step:
    thresholds: dict[str, float]
    on_a: dict[str, float]  # metrics on the calibration half


def _counts(look: Lookups, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (category, grid value): semantic correct hits, false hits; and lookups per category."""
    k, g = len(look.categories), len(grid)
    correct, false, support = np.zeros((k, g), np.int64), np.zeros((k, g), np.int64), np.zeros(k, np.int64)
    for c in range(k):
        rows = look.category == c
        support[c] = int(rows.sum())
        rows &= ~look.exact
        above = look.sim[rows][:, None] >= grid[None, :]
        good = look.nearest_correct[rows][:, None]
        correct[c] = (above & good).sum(axis=0)
        false[c] = (above & ~good).sum(axis=0)
    return correct, false, support


def per_category_path(
    look: Lookups, *, pinned_threshold: float, min_support: int = 100, max_fhr: float = 0.35, points: int = 240,
    include_fhr: tuple[float, ...] = (), grid: np.ndarray = GRID,
) -> list[Step]:
    """The optimal per-category policies on A for false-hit budgets from 0 to `max_fhr`
    (multiple-choice knapsack, solved exactly by dynamic programming over the budget)."""
    correct, false, support = _counts(look, grid)
    k, g = correct.shape
    n = len(look)
    exact_false = int((look.exact & ~look.nearest_correct).sum())
    top = max(0, int(np.floor(max_fhr * n)) - exact_false)
    free = {c for c in range(k) if support[c] >= min_support}
    pin = int(np.argmin(np.abs(grid - pinned_threshold)))
    neg = np.iinfo(np.int64).min // 4
    best = np.zeros(top + 1, np.int64)  # most correct hits with <= b false hits, categories so far
    choice = np.zeros((k, top + 1), np.int64)
    for c in range(k):
        new = np.full(top + 1, neg, np.int64)
        for j in (range(g - 1, -1, -1) if c in free else [pin]):  # high thresholds first: ties keep them
            f = int(false[c, j])
            if f > top:
                continue
            cand = np.full(top + 1, neg, np.int64)
            prev = best[: top + 1 - f]
            cand[f:] = np.where(prev > neg, prev + correct[c, j], neg)  # infeasible stays infeasible
            better = cand > new
            new[better] = cand[better]
            choice[c, better] = j
        best = new

    def policy(budget: int) -> Step:
        at, b = {}, budget
        for c in range(k - 1, -1, -1):
            j = int(choice[c, b])
            at[look.categories[c]] = float(grid[j])
            b -= int(false[c, j])
        thresholds = {name: at[name] for name in look.categories}
        return Step(thresholds, metrics(look, look.thresholds(thresholds)))

    budgets = np.linspace(0, top, points).astype(int).tolist()
    budgets += [min(top, max(0, int(np.floor(t * n)) - exact_false)) for t in include_fhr]
    feasible = [b for b in sorted(set(budgets)) if best[b] > neg]
    path = [policy(b) for b in feasible]
    return path


def per_category_each(look: Lookups, target_fhr: float, *, pinned_threshold: float, min_support: int = 100,
                      grid: np.ndarray = GRID) -> dict[str, float]:
    """Per category, the lowest threshold whose false hits stay <= target of that category's own
    lookups: the same error guarantee in every category, whatever the traffic mix."""
    correct, false, support = _counts(look, grid)
    out = {}
    for c, name in enumerate(look.categories):
        ok = np.flatnonzero(false[c] <= target_fhr * support[c])
        out[name] = float(grid[ok.min()]) if support[c] >= min_support and len(ok) else float(pinned_threshold)
    return out


def within(path: list[Step], target_fhr: float) -> Step:
    """The policy with the most correct hits on A among those with FHR <= target (the
    frontier's point at the target when `path` includes that budget)."""
    ok = [s for s in path if s.on_a["false_hit_rate"] <= target_fhr]
    return max(ok, key=lambda s: s.on_a["correct_hits"]) if ok else path[0]


def max_f1(path: list[Step]) -> Step:
    return max(path, key=lambda s: s.on_a["f1"])


def at_hit_rate(path: list[Step], hit_rate: float) -> Step:
    """The policy whose hit rate on A is closest to `hit_rate` (ties: the lower one)."""
    return min(path, key=lambda s: (abs(s.on_a["hit_rate"] - hit_rate), s.on_a["hit_rate"]))


def rounded_up(thresholds: dict[str, float], *, step: float = 0.01, floor: dict[str, float] | None = None) -> dict[str, float]:
    """Thresholds to ship: rounded up to `step` (never looser than measured), at least `floor`."""
    out = {}
    for name, t in thresholds.items():
        value = min(1.0, float(np.ceil(round(t / step, 6)) * step))
        if floor and name in floor:
            value = max(value, floor[name])
        out[name] = round(value, 4)
    return out
