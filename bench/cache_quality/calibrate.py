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

Regularised per category (`regularised`): the knapsack moves a category off the global
threshold as soon as that gains one correct hit on A, so on data whose categories do not
really differ (QQP) it fits A's sampling noise and loses on B. The regularised policy starts
from the global threshold at the wanted operating point (the base) and lets a category move
to its knapsack choice only when the move beats sampling noise: A's lookups are resampled
with replacement (`resamples` seeded bootstrap draws) and the move must improve the
objective in at least `confidence` of them. Objectives: "f1", the policy's F1; "fhr",
correct hits at no more false hits, i.e. C - lambda F with lambda the correct hits the global
threshold buys per false hit around the base (a move that beats lambda yields more correct
hits than the global threshold would at the same false hits), and the accepted moves may
not raise A's total false hits above the base's (a lowering move only fits once a raising
move has freed budget). Moves are accepted greedily, the best-supported first, each tested
against the policy built so far. Categories below `min_support` stay at the base. With no
supported move the policy is the global one: per category then costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.cache_quality.simulate import Lookups, metrics, outcome

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
    correct, false, support = (
        np.zeros((k, g), np.int64),
        np.zeros((k, g), np.int64),
        np.zeros(k, np.int64),
    )
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
    look: Lookups,
    *,
    pinned_threshold: float,
    min_support: int = 100,
    max_fhr: float = 0.35,
    points: int = 240,
    include_fhr: tuple[float, ...] = (),
    grid: np.ndarray = GRID,
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
        for j in (
            range(g - 1, -1, -1) if c in free else [pin]
        ):  # high thresholds first: ties keep them
            f = int(false[c, j])
            if f > top:
                continue
            cand = np.full(top + 1, neg, np.int64)
            prev = best[: top + 1 - f]
            cand[f:] = np.where(
                prev > neg, prev + correct[c, j], neg
            )  # infeasible stays infeasible
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


def per_category_each(
    look: Lookups,
    target_fhr: float,
    *,
    pinned_threshold: float,
    min_support: int = 100,
    grid: np.ndarray = GRID,
) -> dict[str, float]:
    """Per category, the lowest threshold whose false hits stay <= target of that category's own
    lookups: the same error guarantee in every category, whatever the traffic mix."""
    _correct, false, support = _counts(look, grid)
    out = {}
    for c, name in enumerate(look.categories):
        ok = np.flatnonzero(false[c] <= target_fhr * support[c])
        out[name] = (
            float(grid[ok.min()])
            if support[c] >= min_support and len(ok)
            else float(pinned_threshold)
        )
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


def rounded_up(
    thresholds: dict[str, float], *, step: float = 0.01, floor: dict[str, float] | None = None
) -> dict[str, float]:
    """Thresholds to ship: rounded up to `step` (never looser than measured), at least `floor`."""
    out = {}
    for name, t in thresholds.items():
        value = min(1.0, float(np.ceil(round(t / step, 6)) * step))
        if floor and name in floor:
            value = max(value, floor[name])
        out[name] = round(value, 4)
    return out


def exchange_rate(sweep: list[dict[str, float]], threshold: float, *, width: float = 0.01) -> float:
    """Correct hits the global threshold buys per extra false hit around `threshold`: the slope
    of the global sweep between threshold + width and threshold - width (>= 1 false hit)."""
    by_t = {round(r["threshold"], 3): r for r in sweep}
    ts = sorted(by_t)
    lo = by_t[min(ts, key=lambda t: abs(t - (threshold - width)))]
    hi = by_t[min(ts, key=lambda t: abs(t - (threshold + width)))]
    return max(0.0, lo["correct_hits"] - hi["correct_hits"]) / max(
        1.0, lo["false_hits"] - hi["false_hits"]
    )


@dataclass(frozen=True, slots=True)
class Regularised:
    thresholds: dict[str, float]
    on_a: dict[str, float]
    moves: dict[str, dict[str, object]]  # per category: base, candidate, support, status

    @property
    def moved(self) -> tuple[str, ...]:
        return tuple(c for c, m in self.moves.items() if m["status"] == "moved")


def _columns(look: Lookups, base: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """One row per lookup: [correct hit under base, false hit under base, has duplicate], then
    per category the change in its correct hits, then in its false hits, when it moves from
    `base` to `cand` (-1/0/+1, non-zero only in the lookup's own category). Summing rows with
    bootstrap weights gives every count a resample needs in one matrix product."""
    n, k = len(look), len(look.categories)

    def hits(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit, correct = outcome(look, t)
        return correct, hit & ~correct

    cb, fb = hits(base)
    cc, fc = hits(cand)
    x = np.zeros((n, 3 + 2 * k), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = cb, fb, look.has_dup
    rows = np.arange(n)
    x[rows, 3 + look.category] = cc.astype(np.float32) - cb
    x[rows, 3 + k + look.category] = fc.astype(np.float32) - fb
    return x


def _bootstrap(x: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Column sums of `x` over `resamples` draws of its rows with replacement, (R, columns)."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, x.shape[1]), np.float64)
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))  # bounds the (chunk, n) weight matrix
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        weights = np.bincount(draws.ravel(), minlength=r * n).reshape(r, n).astype(np.float32)
        out[start : start + r] = weights @ x  # integer counts < 2^24: exact in float32
    return np.rint(out)


def regularised(
    look_a: Lookups,
    base_thresholds: Mapping[str, float],
    candidate: Mapping[str, float],
    *,
    objective: Literal["f1", "fhr"],
    exchange: float | None = None,
    min_support: int = 100,
    resamples: int = 200,
    confidence: float = 0.9,
    seed: int = 0,
) -> Regularised:
    """The base policy plus those moves to `candidate` that improve `objective` in >=
    `confidence` of the bootstrap resamples of `look_a` (see the module docstring). "fhr"
    needs `exchange`: correct hits per false hit of the global threshold at the base
    (`exchange_rate`)."""
    if objective == "fhr" and exchange is None:
        raise ValueError("objective 'fhr' needs the exchange rate")
    cats, k = look_a.categories, len(look_a.categories)
    base, cand = look_a.thresholds(base_thresholds), look_a.thresholds(candidate)
    x = _columns(look_a, base, cand)
    # row 0: A itself; rows 1..: the resamples
    counts = np.vstack([x.sum(axis=0, dtype=np.float64)[None, :], _bootstrap(x, resamples, seed)])
    c, f, dup = counts[:, 0].copy(), counts[:, 1].copy(), counts[:, 2]
    dc, df = counts[:, 3 : 3 + k], counts[:, 3 + k :]
    budget = f[0]

    def score(c: np.ndarray, f: np.ndarray, dup: np.ndarray) -> np.ndarray:
        if objective == "f1":
            total = c + f + dup
            return np.divide(2 * c, total, out=np.zeros_like(total), where=total > 0)
        return c - exchange * f

    lookups = np.bincount(look_a.category, minlength=k)
    moves: dict[str, dict[str, object]] = {}
    pending: list[int] = []
    for i, name in enumerate(cats):
        status = (
            "same"
            if base[i] == cand[i]
            else "too few lookups"
            if lookups[i] < min_support
            else "pending"
        )
        moves[name] = {
            "base": float(base[i]),
            "candidate": float(cand[i]),
            "support": None,
            "status": status,
        }
        if status == "pending":
            pending.append(i)
    chosen = base.copy()
    while pending:
        idx = np.array(pending)
        gain = (
            score(c[:, None] + dc[:, idx], f[:, None] + df[:, idx], dup[:, None])
            - score(c, f, dup)[:, None]
        )
        backed = (gain[1:] > 0).mean(axis=0)
        fits = np.ones(len(idx), bool) if objective == "f1" else f[0] + df[0, idx] <= budget
        for j, i in enumerate(idx):
            moves[cats[i]]["support"] = float(backed[j])
            moves[cats[i]]["status"] = (
                "over false-hit budget"
                if backed[j] >= confidence and not fits[j]
                else "not supported"
            )
        ok = np.flatnonzero((backed >= confidence) & fits & (gain[0] > 0))
        if not len(ok):
            break
        j = ok[
            np.lexsort((-gain[0, ok], -backed[ok]))[0]
        ]  # the best supported, then the largest gain on A
        i = int(idx[j])
        chosen[i] = cand[i]
        moves[cats[i]]["status"] = "moved"
        c, f = c + dc[:, i], f + df[:, i]
        pending.remove(i)
    thresholds = {name: float(chosen[i]) for i, name in enumerate(cats)}
    return Regularised(thresholds, metrics(look_a, chosen), moves)
