"""Online, per-category threshold calibration (DESIGN §5; vCache's idea, applied per category).

Labels: (similarity, correct) pairs from three sources — explicit Feedback on hits; free
self-labels (a miss whose nearest entry lies in a band just below the threshold calls the
backend anyway, and its fresh answer is compared with that entry's cached one); and, when
switched on, exploration (a hit verified against the backend the same way). Self-labels come
from just below the threshold, so unlike hit feedback they can show that a lower threshold is
safe. Per category we also keep, unlabelled, the best candidate's similarity of every recent
semantic lookup: the share of lookups a threshold t would serve.

Goal: the category's target false-hit rate, false hits per lookup (DESIGN §9). Estimated at a
threshold t as (share of recent lookups whose best candidate reaches t) × (false share among
labels at or above t). The calibrated threshold is the lowest t, among the configured one and
the labelled similarities, whose estimate meets the target, never below min_threshold; going
below the configured threshold needs at least `min_labels` labels at or above t. Windows
slide (recent traffic matters most when the mix drifts). Strict categories never move.
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

    def threshold(self, policy: CategoryPolicy) -> float | None:
        """The calibrated threshold, or None when there is too little feedback / it is off."""
        if policy.strict or policy.target_false_hit_rate is None or len(self._samples) < self._min:
            return None
        return calibrate(list(self._samples), base=policy.threshold, floor=policy.min_threshold,
                         target=policy.target_false_hit_rate, lookups=list(self._lookups), min_labels=self._min)


def calibrate(
    samples: list[tuple[float, bool]], *, base: float, floor: float, target: float,
    lookups: list[float] | None = None, min_labels: int = 1,
) -> float:
    """Lowest t in {base} ∪ {labelled similarities}, t >= floor, whose estimated false-hit
    rate share(t) × false(>= t) / labels(>= t) meets `target` (share(t): of `lookups` reaching
    t; 1 when no lookups are known, i.e. the false share among labels alone). Below `base`
    a t needs `min_labels` labels at or above it. If none qualifies, just above the most
    similar false label."""
    candidates = sorted({base, *(s for s, _ in samples)})
    seen = np.sort(np.asarray(lookups, dtype=np.float64)) if lookups else None
    for t in candidates:
        if t < floor:
            continue
        above = [ok for s, ok in samples if s >= t]
        if t < base and len(above) < min_labels:
            continue
        if not above:
            return min(1.0, t)
        share = 1.0 if seen is None else 1.0 - np.searchsorted(seen, t, side="left") / len(seen)
        if share * above.count(False) / len(above) <= target:
            return min(1.0, t)
    worst = max(s for s, ok in samples if not ok)
    return min(1.0, max(floor, math.nextafter(worst, math.inf)))


class FeedbackBook:
    """Ties feedback to the hit it rates: remembers recent (tenant, entry) hits with the
    similarity they were served at (bounded, oldest dropped; lost on restart), and keeps each
    category's calibrator and the threshold it currently justifies."""

    def __init__(self, *, recent: int, window: int, min_feedback: int) -> None:
        self._recent: OrderedDict[tuple[str, str], tuple[str, float | None]] = OrderedDict()
        self._capacity = recent
        self._window = window
        self._min = min_feedback
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
            calibrator = self._calibrators[category] = Calibrator(window=self._window, min_feedback=self._min)
        return calibrator

    def observe(self, category: str, similarity: float) -> None:
        """One semantic lookup of `category` and its best candidate's similarity."""
        self._calibrator(category).observe(similarity)

    def rate(self, category: str, similarity: float, correct: bool, policy: CategoryPolicy) -> None:
        """A label (Feedback, self-label or exploration) for `similarity` in `category`."""
        calibrator = self._calibrator(category)
        calibrator.add(similarity, correct)
        threshold = calibrator.threshold(policy)
        if threshold is not None:
            self._thresholds[category] = threshold

    def threshold(self, category: str) -> float | None:
        return self._thresholds.get(category)

    def reset(self, category: str) -> None:
        self._thresholds.pop(category, None)
        if category in self._calibrators:
            self._calibrators[category].clear()
