"""Online, per-category threshold calibration (DESIGN §5; vCache's idea, applied per category).

Labels: (similarity, correct) pairs from three sources — explicit Feedback on hits; free
self-labels (a miss whose nearest entry lies in a band just below the threshold calls the
backend anyway, and its fresh answer is compared with that entry's cached one); and, when
switched on, exploration (a hit verified against the backend the same way). Self-labels come
from just below the threshold, so unlike hit feedback they can show that a lower threshold is
safe. Per category we also keep, unlabelled, the best candidate's similarity of every recent
semantic lookup: the share of lookups a threshold t would serve.

Goal: the category's target false-hit rate, false hits per lookup (DESIGN §9). Estimated at a
threshold t as the mean over recent lookups of 1[best similarity >= t]·q(similarity), with
q(s), the chance that an entry served at similarity s is wrong, fitted to the labels as a
non-increasing function of s (see `calibrate`). The calibrated threshold is the lowest t,
among the configured one and the labelled similarities, whose estimate meets the target,
never below min_threshold; going below the configured threshold needs at least `min_labels`
labels at or above t. Windows slide (recent traffic matters most when the mix drifts).
Strict categories never move. Label noise (a backend that answers the same question two
ways) reads as false hits, so the estimate errs on the safe side.

Pooling (a prior shared across categories): a small or new category sees few labels, and
waiting for `min_feedback` of its own keeps it at its configured threshold for a long time
(bench/cache_quality: conversation and assistant traffic arrives late in the drifting stream
and spent most of it uncalibrated). Each category's fit therefore starts from `prior` labels'
worth of the other categories' labels (their similarity and outcome mix, scaled down to that
total weight): with few labels of its own a category follows what the others learnt; as its
own labels accumulate they dominate (empirical-Bayes shrinkage towards the pooled fit). The
prior counts towards `min_feedback` and `min_labels` by its weight, so with the default
(half of `min_feedback`) a category still needs half its labels of its own. It also keeps
one or two correct labels at the top of a small sample from reading as "nothing above is
ever wrong". Cost: each label refits over the other categories' windows too (measured ~1 ms
per label with every window full, vs ~0.4 ms without pooling), on the event loop after the
answer was delivered; only band misses (and Feedback, exploration) make labels.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

import numpy as np

from cache.policy import CategoryPolicy


class Calibrator:
    """Labels and recent lookup similarities of one category, and the threshold they justify."""

    def __init__(self, *, window: int, min_feedback: int, lookups: int | None = None) -> None:
        self._samples: deque[tuple[float, bool]] = deque(maxlen=window)
        self._lookups: deque[float] = deque(maxlen=lookups or 4 * window)
        self._min = min_feedback

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, similarity: float, correct: bool) -> None:
        self._samples.append((similarity, correct))

    def observe(self, similarity: float) -> None:
        """The best candidate's similarity of one semantic lookup (-1 when there was none)."""
        self._lookups.append(similarity)

    def clear(self) -> None:
        self._samples.clear()

    def labels(self) -> list[tuple[float, bool]]:
        return list(self._samples)

    def threshold(
        self,
        policy: CategoryPolicy,
        prior: list[tuple[float, bool]] | None = None,
        prior_weight: float = 0.0,
    ) -> float | None:
        """The calibrated threshold, or None when there is too little feedback / it is off.
        `prior`: other categories' labels, counting `prior_weight` labels in all."""
        weight = prior_weight if prior else 0.0
        if (
            policy.strict
            or policy.target_false_hit_rate is None
            or not self._samples
            or len(self._samples) + weight < self._min
        ):
            return None
        return calibrate(
            list(self._samples),
            base=policy.threshold,
            floor=policy.min_threshold,
            target=policy.target_false_hit_rate,
            lookups=list(self._lookups),
            min_labels=self._min,
            prior=prior,
            prior_weight=weight,
        )


def calibrate(
    samples: list[tuple[float, bool]],
    *,
    base: float,
    floor: float,
    target: float,
    lookups: list[float] | None = None,
    min_labels: int = 1,
    prior: list[tuple[float, bool]] | None = None,
    prior_weight: float = 0.0,
) -> float:
    """Lowest t in {base} ∪ {labelled similarities}, t >= floor, whose estimated false-hit
    rate meets `target`. The estimate at t is the mean over recent lookups (the labels' own
    similarities when none are known) of 1[s >= t]·q(s), q(s) the chance that serving an entry
    at similarity s is wrong: the labels' false share fitted non-increasing in s (pool
    adjacent violators), so lookups above the labelled range count at the false share of the
    most similar labels. `prior` labels join the fit with `prior_weight` in all (each weighs
    prior_weight / len(prior)). Below `base` a t needs `min_labels` labels' weight at or above
    it. If no t qualifies, just above the most similar false label."""
    pooled = list(prior or []) if prior_weight > 0 else []
    every = samples + pooled
    weight = np.concatenate(
        [np.ones(len(samples)), np.full(len(pooled), prior_weight / max(len(pooled), 1))]
    )
    # similarities on a 0.001 grid (rounded down: a label stays at or above its own candidate):
    # a few dozen distinct values for the fit and the candidates instead of one per label
    sims_all = np.floor(np.array([s for s, _ in every], dtype=np.float64) * 1000.0 + 1e-9) / 1000.0
    false_all = np.array([0.0 if ok else 1.0 for _, ok in every])
    sims, inverse = np.unique(sims_all, return_inverse=True)
    mass = np.bincount(inverse, weights=weight)
    q = _non_increasing(np.bincount(inverse, weights=false_all * weight) / mass, mass)
    own = sims_all[: len(samples)]
    seen = np.sort(np.asarray(lookups if lookups else own, dtype=np.float64))
    # q at each lookup: that of the most similar labels at or below it (the lowest labels' below);
    # false hits a threshold t would serve = the suffix sum from the first lookup >= t
    at = q[np.maximum(np.searchsorted(sims, seen, side="right") - 1, 0)]
    served_false = np.concatenate([np.cumsum(at[::-1])[::-1], [0.0]])
    candidates = np.union1d(sims, [base])
    # label weight at or above each candidate (a suffix sum over the sorted similarities)
    above = np.concatenate([np.cumsum(mass[::-1])[::-1], [0.0]])
    n_above = above[np.searchsorted(sims, candidates, side="left")]
    estimate = served_false[np.searchsorted(seen, candidates, side="left")] / len(seen)
    eligible = (candidates >= floor) & ((candidates >= base) | (n_above >= min_labels - 1e-9))
    good = np.flatnonzero(eligible & ((n_above == 0) | (estimate <= target)))
    if len(good):
        return min(1.0, float(candidates[good[0]]))
    worst = max(s for s, ok in every if not ok)
    return min(1.0, max(floor, math.nextafter(worst, math.inf)))


def _non_increasing(means: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares fit of `means` (ordered by similarity) that never increases:
    pool adjacent violators."""
    blocks: list[list[float]] = []  # [mean, weight, points]
    for m, w in zip(means.tolist(), weights.tolist()):
        blocks.append([m, w, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, w2, n2), (m1, w1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])


class FeedbackBook:
    """Ties feedback to the hit it rates: remembers recent (tenant, entry) hits with the
    similarity they were served at (bounded, oldest dropped; lost on restart), and keeps each
    category's calibrator and the threshold it currently justifies."""

    def __init__(self, *, recent: int, window: int, min_feedback: int, prior: int = 0) -> None:
        self._recent: OrderedDict[tuple[str, str], tuple[str, float | None]] = OrderedDict()
        self._capacity = recent
        self._window = window
        self._min = min_feedback
        self._prior = prior
        self._calibrators: dict[str, Calibrator] = {}
        self._thresholds: dict[str, float] = {}

    def hit(self, tenant: str, entry_id: str, category: str, similarity: float | None) -> None:
        """Record a hit; `similarity` None for exact hits (they say nothing about thresholds)."""
        key = (tenant, entry_id)
        self._recent[key] = (category, similarity)
        self._recent.move_to_end(key)
        while len(self._recent) > self._capacity:
            self._recent.popitem(last=False)

    def take(self, tenant: str, entry_id: str) -> tuple[str, float | None] | None:
        """The recorded hit (category, similarity), consumed: one hit, one vote."""
        return self._recent.pop((tenant, entry_id), None)

    def _calibrator(self, category: str) -> Calibrator:
        calibrator = self._calibrators.get(category)
        if calibrator is None:
            calibrator = self._calibrators[category] = Calibrator(
                window=self._window, min_feedback=self._min
            )
        return calibrator

    def observe(self, category: str, similarity: float) -> None:
        """One semantic lookup of `category` and its best candidate's similarity."""
        self._calibrator(category).observe(similarity)

    def rate(self, category: str, similarity: float, correct: bool, policy: CategoryPolicy) -> None:
        """A label (Feedback, self-label or exploration) for `similarity` in `category`."""
        calibrator = self._calibrator(category)
        calibrator.add(similarity, correct)
        others = (
            [
                label
                for c, cal in self._calibrators.items()
                if c != category
                for label in cal.labels()
            ]
            if self._prior > 0
            else []
        )
        threshold = calibrator.threshold(policy, others, float(self._prior))
        if threshold is not None:
            self._thresholds[category] = threshold

    def threshold(self, category: str) -> float | None:
        return self._thresholds.get(category)

    def reset(self, category: str) -> None:
        self._thresholds.pop(category, None)
        if category in self._calibrators:
            self._calibrators[category].clear()
