"""The backend load signal L ∈ [0, 1] that the cache relaxes its thresholds by (DESIGN §5).

    L = min(1, max(in_flight / capacity,
                   mean_ttft / latency_slo_s,
                   pressure_rate / overload_error_rate))

- `in_flight`: our calls to the backend now in progress, including those waiting for one of our
  `capacity` (= max_concurrency) slots; a full queue therefore reads as 1.
- `mean_ttft`: mean time to first token of the streams that started within the last
  `window_s` seconds (non-streaming calls are left out: their latency is the whole generation and
  says more about max_tokens than about load). Reaching the SLO reads as fully loaded.
- `pressure_rate`: the share of attempts within the window that ended in 429, 5xx, a refused or
  dropped connection or a timeout. Backends shed load with 429/503 long before every request
  fails, so a rate of `overload_error_rate` (default 25 %) already reads as 1.

Each term is a different way a GPU backend shows saturation; the maximum lets whichever shows it
first drive the cache. The window makes the signal decay once the backend recovers.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_MAX_SAMPLES = 4096  # per window; bounds memory under very high request rates


@dataclass(frozen=True, slots=True)
class LoadTotals:
    """Cumulative counts since start (the window above forgets; metrics need totals)."""

    attempts: int
    failed_attempts: int  # 429, 5xx, dropped or timed out
    ttft_count: int
    ttft_sum_s: float


class LoadTracker:
    def __init__(
        self,
        *,
        capacity: int,
        latency_slo_s: float,
        window_s: float,
        overload_error_rate: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self._slo = latency_slo_s
        self._window = window_s
        self._overload_rate = overload_error_rate
        self._clock = clock
        self._in_flight = 0
        self._latencies: deque[tuple[float, float]] = deque(maxlen=_MAX_SAMPLES)
        self._attempts: deque[tuple[float, bool]] = deque(maxlen=_MAX_SAMPLES)
        self._totals = LoadTotals(0, 0, 0, 0.0)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        self._in_flight += 1

    def end(self) -> None:
        self._in_flight -= 1

    def record_ttft(self, seconds: float) -> None:
        self._latencies.append((self._clock(), seconds))
        t = self._totals
        self._totals = LoadTotals(
            t.attempts, t.failed_attempts, t.ttft_count + 1, t.ttft_sum_s + seconds
        )

    def record_attempt(self, *, pressure: bool) -> None:
        """One HTTP attempt finished; `pressure` when it was a 429/5xx/drop/timeout."""
        self._attempts.append((self._clock(), pressure))
        t = self._totals
        self._totals = LoadTotals(
            t.attempts + 1, t.failed_attempts + pressure, t.ttft_count, t.ttft_sum_s
        )

    @property
    def totals(self) -> LoadTotals:
        return self._totals

    def _prune(self) -> None:
        horizon = self._clock() - self._window
        while self._latencies and self._latencies[0][0] < horizon:
            self._latencies.popleft()
        while self._attempts and self._attempts[0][0] < horizon:
            self._attempts.popleft()

    def terms(self) -> tuple[float, float, float]:
        """(concurrency, latency, pressure) terms before clamping; for metrics and debugging."""
        self._prune()
        concurrency = self._in_flight / self._capacity
        latency = (
            (sum(s for _, s in self._latencies) / len(self._latencies) / self._slo)
            if self._latencies
            else 0.0
        )
        pressure = 0.0
        if self._attempts:
            pressure = (
                sum(1 for _, p in self._attempts if p) / len(self._attempts) / self._overload_rate
            )
        return concurrency, latency, pressure

    def load(self) -> float:
        return min(1.0, max(0.0, *self.terms()))
