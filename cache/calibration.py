"""Online threshold calibration from hit feedback (DESIGN §5, Feedback RPC).

Per category we keep the similarities of recent semantic hits that users marked correct or
incorrect, in a bounded window (recent feedback matters most when traffic drifts, so a
sliding window rather than a uniform reservoir). The calibrated threshold is the lowest
threshold t, among the configured threshold and the observed similarities, such that the
false-hit fraction among feedback with similarity >= t is <= the target; never below
min_threshold. Strict categories are never calibrated.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

from cache.policy import CategoryPolicy


class Calibrator:
    """Feedback samples of one category and the threshold they justify."""

    def __init__(self, *, window: int, min_feedback: int) -> None:
        self._samples: deque[tuple[float, bool]] = deque(maxlen=window)
        self._min = min_feedback

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, similarity: float, correct: bool) -> None:
        self._samples.append((similarity, correct))

    def clear(self) -> None:
        self._samples.clear()

    def threshold(self, policy: CategoryPolicy) -> float | None:
        """The calibrated threshold, or None when there is too little feedback / it is off."""
        if policy.strict or policy.target_false_hit_rate is None or len(self._samples) < self._min:
            return None
        return calibrate(list(self._samples), base=policy.threshold, floor=policy.min_threshold,
                         target=policy.target_false_hit_rate)


def calibrate(samples: list[tuple[float, bool]], *, base: float, floor: float, target: float) -> float:
    """Lowest t in {base} ∪ {observed similarities}, t >= floor, with
    false(>= t) / all(>= t) <= target. If none qualifies, just above the most similar false hit."""
    candidates = sorted({base, *(s for s, _ in samples)})
    for t in candidates:
        if t < floor:
            continue
        above = [ok for s, ok in samples if s >= t]
        if not above or above.count(False) / len(above) <= target:
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

    def rate(self, category: str, similarity: float, correct: bool, policy: CategoryPolicy) -> None:
        calibrator = self._calibrators.get(category)
        if calibrator is None:
            calibrator = self._calibrators[category] = Calibrator(window=self._window, min_feedback=self._min)
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
