"""The real Clock (the server injects it; tests inject `cache.testing.FakeClock`)."""

from __future__ import annotations

import time


class SystemClock:
    """`time.time` for timestamps that are persisted, `time.perf_counter` for durations."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.perf_counter()
