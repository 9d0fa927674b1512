"""Choosing thresholds on half A: one global threshold, or one per category.

Every decision here is the service's (one search over every category, a hit needs the
stricter of the lookup's and the entry's category thresholds: `simulate.SingleSearch`), and
the functions also take the partitioned decision (`simulate.Lookups`) for comparison.

Global: sweep a fine grid; the best-F1 threshold, and the lowest threshold whose false-hit
rate stays <= the target (every lower threshold adds hits, so that one has the most recall).

Per category: with one search a category's threshold also decides lookups of other
categories whose candidates are filed under it, so false and correct hits no longer add up
per category and the exact multiple-choice knapsack of the partitioned layout does not apply.
`coordinate_ascent` gives each category in turn its best grid threshold with the others
fixed, from the global threshold, until nothing changes (the knapsack's answer when
categories do not interact, a local optimum otherwise). Objectives: F1 (from the global
best-F1 threshold), and correct hits − λ·false hits (from the global FHR-target threshold)
with λ the correct hits the global threshold buys per false hit there (`exchange_rate`):
a move that beats λ yields more correct hits than the global threshold would at the same
false hits. `per_category_lagrangian` repeats that for several λ to trace the per-category
curve. Per category ("each" method): the lowest threshold keeping that category's OWN
false-hit rate <= target (others at the global threshold), a guarantee that does not depend
on the traffic mix. A category with fewer than `min_support` lookups in A is not moved.

Regularised per category (`regularised`): coordinate ascent moves a category off the global
threshold as soon as that gains one correct hit on A, so on data whose categories do not
really differ (QQP) it fits A's sampling noise and loses on B. The regularised policy starts
from the global threshold at the wanted operating point (the base) and lets a category move
to its candidate only when the move beats sampling noise: A's lookups are resampled with
replacement (`resamples` seeded bootstrap draws) and the move must improve the objective in
at least `confidence` of them. Objectives: "f1", the policy's F1; "fhr", C − λF, and the
accepted moves may not raise A's total false hits above the base's (a lowering move only
fits once a raising move has freed budget). Moves are accepted greedily, the best-supported
first, each tested against the policy built so far (its effect recomputed over every lookup,
since with one search moves interact). With no supported move the policy is the global one:
per category then costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.cache_quality.simulate import Decision, metrics

GRID = np.round(np.arange(0.70, 1.0 + 1e-9, 0.005), 3)
# The global threshold is one number, so it is chosen on a finer grid: near 2% false hits one
# 0.005 step moves QQP's false-hit rate by ~0.35 points and recall by ~0.02.
FINE_GRID = np.round(np.arange(0.70, 1.0 + 1e-9, 0.001), 3)


def global_sweep(look: Decision, grid: np.ndarray = FINE_GRID) -> list[dict[str, float]]:
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


def per_category_each(
    look: Decision,
    target_fhr: float,
    *,
    pinned_threshold: float,
    min_support: int = 100,
    grid: np.ndarray = GRID,
) -> dict[str, float]:
    """Per category, the lowest threshold whose false hits stay <= target of that category's own
    lookups: the same error guarantee in every category, whatever the traffic mix. Each category
    is swept with the others at `pinned_threshold` (with one search a lookup's outcome also
    depends on the thresholds of the categories its candidates are filed under)."""
    k = len(look.categories)
    support = np.bincount(look.category, minlength=k)
    out = {}
    for c, name in enumerate(look.categories):
        mine = look.category == c
        ok = []
        if support[c] >= min_support:
            for t in grid:
                thresholds = np.full(k, float(pinned_threshold))
                thresholds[c] = t
                hit, correct = look.outcome(thresholds)
                if int((hit & ~correct & mine).sum()) <= target_fhr * support[c]:
                    ok.append(float(t))
        out[name] = min(ok) if ok else float(pinned_threshold)
    return out


def coordinate_ascent(
    look: Decision,
    start: Mapping[str, float],
    objective: Callable[[int, int, int], float],
    *,
    min_support: int = 100,
    grid: np.ndarray = GRID,
    sweeps: int = 4,
) -> dict[str, float]:
    """Per-category thresholds for one search, where a category's threshold also decides the
    lookups of other categories whose candidates it holds, so the knapsack's additivity is
    gone: from `start`, each category (with >= `min_support` lookups) in turn takes the grid
    value maximising `objective(correct hits, false hits, lookups with a duplicate)` with the
    others fixed (ties keep the higher threshold), until a sweep changes nothing. A local
    optimum; for correct hits − λ·false hits and categories that do not interact, the
    knapsack's exact answer."""
    k = len(look.categories)
    support = np.bincount(look.category, minlength=k)
    t = look.thresholds(start)
    dup = int(look.has_dup.sum())

    def value(thresholds: np.ndarray) -> float:
        hit, correct = look.outcome(thresholds)
        good = int(correct.sum())
        return objective(good, int(hit.sum()) - good, dup)

    current = value(t)
    for _ in range(sweeps):
        changed = False
        for c in range(k):
            if support[c] < min_support:
                continue
            for g in grid[::-1]:  # high thresholds first: ties keep them
                trial = t.copy()
                trial[c] = g
                v = value(trial)
                if v > current + 1e-12:
                    t, current, changed = trial, v, True
        if not changed:
            break
    return {name: float(t[i]) for i, name in enumerate(look.categories)}


def f1_objective(correct: int, false: int, dup: int) -> float:
    total = correct + false + dup
    return 2.0 * correct / total if total else 0.0


def exchange_objective(rate: float) -> Callable[[int, int, int], float]:
    """Correct hits minus `rate` per false hit: a move pays when it buys correct hits more
    cheaply than the global threshold does at its operating point."""
    return lambda correct, false, _dup: correct - rate * false


def per_category_lagrangian(
    look: Decision,
    start: float,
    *,
    rates: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
    min_support: int = 100,
    grid: np.ndarray = GRID,
) -> list[Step]:
    """Per-category policies along the hit rate vs false-hit rate frontier on A for one
    search: for each exchange rate, the coordinate ascent of correct hits - rate x false hits
    from the global threshold `start` (traces the per-category curve for the plot)."""
    path = []
    grid = np.union1d(grid, [start])
    for rate in rates:
        t = coordinate_ascent(
            look,
            dict.fromkeys(look.categories, start),
            exchange_objective(rate),
            min_support=min_support,
            grid=grid,
        )
        path.append(Step(t, metrics(look, look.thresholds(t))))
    return sorted(path, key=lambda s: s.on_a["false_hit_rate"])


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


def _columns(look: Decision, base: np.ndarray, cand: np.ndarray, pending: list[int]) -> np.ndarray:
    """One row per lookup: [correct hit under base, false hit under base, has duplicate], then
    per pending category the change in the correct hits, then in the false hits, when that
    category alone moves from `base` to `cand` (-1/0/+1). With one search a category's move
    also changes lookups of other categories whose candidates it holds, so the change is
    computed over every lookup, and again after each accepted move (moves do not add up).
    Summing rows with bootstrap weights gives every count a resample needs in one product."""
    n, m = len(look), len(pending)

    def hits(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit, correct = look.outcome(t)
        return correct.astype(np.float32), (hit & ~correct).astype(np.float32)

    cb, fb = hits(base)
    x = np.zeros((n, 3 + 2 * m), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = cb, fb, look.has_dup
    for j, i in enumerate(pending):
        moved = base.copy()
        moved[i] = cand[i]
        cc, fc = hits(moved)
        x[:, 3 + j], x[:, 3 + m + j] = cc - cb, fc - fb
    return x


def _bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multiplicities of each row in `resamples` draws with replacement."""
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, n), np.float32)
    chunk = max(1, min(resamples, 4_000_000 // max(n, 1)))  # bounds the (chunk, n) draw matrix
    for start in range(0, resamples, chunk):
        r = min(chunk, resamples - start)
        draws = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
        out[start : start + r] = np.bincount(draws.ravel(), minlength=r * n).reshape(r, n)
    return out


def regularised(
    look_a: Decision,
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
    (`exchange_rate`). Works for either decision (partitioned or one search)."""
    if objective == "fhr" and exchange is None:
        raise ValueError("objective 'fhr' needs the exchange rate")
    cats, k = look_a.categories, len(look_a.categories)
    base, cand = look_a.thresholds(base_thresholds), look_a.thresholds(candidate)
    # row 0: A itself; rows 1..: the resamples (the same draws for every round)
    weights = np.vstack(
        [np.ones((1, len(look_a)), np.float32), _bootstrap_weights(len(look_a), resamples, seed)]
    )

    def score(c: np.ndarray, f: np.ndarray, dup: np.ndarray) -> np.ndarray:
        if objective == "f1":
            total = c + f + dup
            return np.divide(2 * c, total, out=np.zeros_like(total), where=total > 0)
        assert exchange is not None
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
    budget: float | None = None
    while pending:
        m = len(pending)
        # integer counts < 2^24: exact in float32
        counts = np.rint((weights @ _columns(look_a, chosen, cand, pending)).astype(np.float64))
        c, f, dup = counts[:, 0], counts[:, 1], counts[:, 2]
        dc, df = counts[:, 3 : 3 + m], counts[:, 3 + m :]
        if budget is None:
            budget = float(f[0])  # the base policy's false hits on A
        gain = score(c[:, None] + dc, f[:, None] + df, dup[:, None]) - score(c, f, dup)[:, None]
        backed = (gain[1:] > 0).mean(axis=0)
        fits = np.ones(m, bool) if objective == "f1" else f[0] + df[0] <= budget
        for j, i in enumerate(pending):
            moves[cats[i]]["support"] = float(backed[j])
            moves[cats[i]]["status"] = (
                "over false-hit budget"
                if backed[j] >= confidence and not fits[j]
                else "not supported"
            )
        ok = np.flatnonzero((backed >= confidence) & fits & (gain[0] > 0))
        if not len(ok):
            break
        j = int(ok[np.lexsort((-gain[0, ok], -backed[ok]))[0]])  # best supported, then largest gain
        i = pending[j]
        chosen[i] = cand[i]
        moves[cats[i]]["status"] = "moved"
        pending.remove(i)
    thresholds = {name: float(chosen[i]) for i, name in enumerate(cats)}
    return Regularised(thresholds, metrics(look_a, chosen), moves)
