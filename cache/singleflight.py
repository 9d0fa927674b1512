"""Single-flight: concurrent equivalent misses share one backend call (DESIGN §5).

Keyed by the exact key, so only truly equivalent requests (same tenant, category, normalised
prompt, context, model, params) wait for each other. The leader's result, or its exception,
is delivered to every follower. If the leader is abandoned (its client went away mid-stream)
followers get `FlightAbandoned` and retry, one of them becoming the next leader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FlightAbandoned(Exception):
    """The leader stopped before producing a result; followers should retry."""


class Flight(Generic[T]):
    """One in-flight call. The leader must end it with `resolve` or `fail`."""

    def __init__(
        self, owner: SingleFlight[T], key: str, future: asyncio.Future[T], leader: bool
    ) -> None:
        self._owner = owner
        self.key = key
        self._future = future
        self.leader = leader

    async def wait(self) -> T:
        """Followers: the leader's result (or its exception, re-raised)."""
        return await asyncio.shield(self._future)

    def resolve(self, value: T) -> None:
        self._owner._finish(self.key, self._future)
        if not self._future.done():
            self._future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        self._owner._finish(self.key, self._future)
        if not self._future.done():
            self._future.set_exception(exc)
            self._future.exception()  # retrieved: no "never retrieved" warning without followers


class ProcessLeases:
    """`cache.ports.Leases` for a cache no other process shares: every lease is granted (the
    process's own SingleFlight already makes one leader per key)."""

    async def acquire(self, key: str) -> str | None:
        return key

    async def release(self, key: str, token: str) -> None:
        return None


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: str) -> Flight[T]:
        """Lead a new flight for `key`, or follow the one in progress."""
        future = self._flights.get(key)
        if future is not None:
            return Flight(self, key, future, leader=False)
        future = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        return Flight(self, key, future, leader=True)

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` once for all concurrent callers with the same key."""
        while True:
            flight = self.join(key)
            if not flight.leader:
                try:
                    return await flight.wait()
                except FlightAbandoned:
                    continue
            try:
                value = await fn()
            except asyncio.CancelledError:
                flight.fail(FlightAbandoned(key))
                raise
            except BaseException as exc:
                flight.fail(exc)
                raise
            flight.resolve(value)
            return value

    def _finish(self, key: str, future: asyncio.Future[T]) -> None:
        if self._flights.get(key) is future:
            del self._flights[key]
