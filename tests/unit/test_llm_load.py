"""The load signal formula (curacache.llm.load), on a fake clock."""

from __future__ import annotations

import pytest

from curacache.llm.load import LoadTracker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def tracker(clock: Clock) -> LoadTracker:
    return LoadTracker(
        capacity=4, latency_slo_s=2.0, window_s=10.0, overload_error_rate=0.25, clock=clock
    )


def test_idle_backend_reads_zero() -> None:
    assert tracker(Clock()).load() == 0.0


def test_in_flight_over_capacity_and_clamped() -> None:
    t = tracker(Clock())
    for _ in range(3):
        t.begin()
    assert t.load() == pytest.approx(0.75)
    for _ in range(3):
        t.begin()
    assert t.load() == 1.0
    for _ in range(6):
        t.end()
    assert t.load() == 0.0


def test_latency_against_the_slo() -> None:
    t = tracker(Clock())
    t.record_ttft(0.5)
    t.record_ttft(1.5)
    assert t.load() == pytest.approx(0.5)  # mean 1.0 s of a 2.0 s SLO


def test_pressure_rate_and_the_window_forgets() -> None:
    clock = Clock()
    t = tracker(clock)
    for pressure in (True, False, False, False, False, False, False, False):
        t.record_attempt(pressure=pressure)
    assert t.load() == pytest.approx(0.125 / 0.25)
    t.record_attempt(pressure=True)
    assert t.load() == pytest.approx((2 / 9) / 0.25)
    clock.now += 11  # all samples left the window
    assert t.load() == 0.0


def test_the_largest_term_wins() -> None:
    t = tracker(Clock())
    t.begin()  # 0.25
    t.record_ttft(1.2)  # 0.6
    t.record_attempt(pressure=False)  # 0
    assert t.terms() == pytest.approx((0.25, 0.6, 0.0))
    assert t.load() == pytest.approx(0.6)
