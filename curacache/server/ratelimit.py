"""Per-tenant token buckets: a tenant over its rate gets RESOURCE_EXHAUSTED with retry-after."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from curacache.errors import ResourceExhausted


class TenantRateLimiter:
    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, stamp)
        self._lock = threading.Lock()

    def acquire(self, tenant: str, cost: float = 1.0) -> None:
        if self._rate <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.get(tenant, (self._burst, now))
            tokens = min(self._burst, tokens + (now - stamp) * self._rate)
            if tokens < cost:
                self._buckets[tenant] = (tokens, now)
                raise ResourceExhausted(
                    f"tenant {tenant!r} is over its request rate ({self._rate:g}/s)",
                    retry_after=(cost - tokens) / self._rate,
                )
            self._buckets[tenant] = (tokens - cost, now)
