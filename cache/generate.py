"""Generate: lookup; on a hit replay the cached text; on a miss stream the backend through,
admit and store on success (DESIGN §3 Cache.Generate, §5). The stream opens with the lookup's
outcome, so a caller knows hit or miss before the first chunk.

Users complain that semantic caches do not cache streamed responses and replay errors as
successes; here the streamed text is accumulated and stored only after the backend's final
result passes admission, and a backend exception propagates with nothing stored. Equivalent
concurrent misses share one backend call (single-flight): the leader streams, followers get
the leader's final result replayed as chunks. Across processes (replicas of one store) the
leader of each process also takes the miss's lease (`cache.ports.Leases`): while another
process holds it, this one waits for that leader's entry instead of calling the backend.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from cache.fingerprint import Prepared
from cache.ports import Backend, Clock, Leases
from cache.singleflight import Flight, FlightAbandoned, ProcessLeases, SingleFlight
from cache.types import (
    CachedResponse,
    Chunk,
    FinalResult,
    LookupRequest,
    LookupResult,
    Reason,
    StoreResult,
)

log = logging.getLogger("cache.generate")

LookupFn = Callable[[LookupRequest], Awaitable[tuple[LookupResult, Prepared]]]
RecheckFn = Callable[[Prepared], Awaitable[LookupResult | None]]
StoreFn = Callable[[Prepared, CachedResponse, bool], Awaitable[StoreResult]]
"""(prepared request, response, shared) -> the store's verdict."""
ShareableFn = Callable[[Prepared], bool]
LabelFn = Callable[[Prepared, LookupResult, CachedResponse], Awaitable[None]]
"""(request, its lookup's result, the backend's fresh response) -> a calibration label."""
VerifyFn = Callable[[LookupResult], bool]
"""Whether to verify this hit against the backend (exploration)."""
LatencyFn = Callable[[str, float], None]


class BackendProtocolError(RuntimeError):
    """The backend stream ended without a FinalResult (treated like any backend error)."""


def replay_chunks(text: str, size: int) -> list[str]:
    """Split a cached text into stream chunks; their concatenation is exactly `text`."""
    return [text[i : i + size] for i in range(0, len(text), size)]


class Generator:
    """The streaming half of SemanticCache, wired to it through plain callables."""

    def __init__(
        self,
        *,
        lookup: LookupFn,
        recheck: RecheckFn,
        store: StoreFn,
        shareable: ShareableFn,
        record_latency: LatencyFn,
        backend: Backend,
        clock: Clock,
        chunk_chars: int,
        label: LabelFn,
        verify: VerifyFn,
        leases: Leases | None = None,
        lease_poll_s: float = 0.02,
    ) -> None:
        self._lookup = lookup
        self._recheck = recheck
        self._store = store
        self._shareable = shareable
        self._record_latency = record_latency
        self._backend = backend
        self._clock = clock
        self._chunk_chars = chunk_chars
        self._label = label
        self._verify = verify
        self._leases: Leases = leases if leases is not None else ProcessLeases()
        self._lease_poll_s = lease_poll_s
        self._flights: SingleFlight[FinalResult] = SingleFlight()

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    async def run(
        self, req: LookupRequest, *, shared: bool = False
    ) -> AsyncIterator[LookupResult | Chunk | FinalResult]:
        """`shared`: a generated response is stored as a shared entry (the caller checked that
        the requester may do so)."""
        result, prep = await self._lookup(req)
        yield result  # first, so a caller can say hit or miss before any text (HTTP headers)
        if result.hit and result.response is not None:
            for item in self._replay(result):
                yield item
            if self._verify(result):  # after the answer: the client does not wait for it
                await self._explore(prep, result)
            return
        if not self._shareable(prep):
            async for item in self._lead(prep, result, None, shared):
                yield item
            return
        key = _flight_key(prep, shared)
        while True:
            flight = self._flights.join(key)
            if flight.leader:
                try:
                    fresh, token = await self._claim(prep, key)
                except BaseException:  # cancelled while waiting: a follower here takes over
                    flight.fail(FlightAbandoned(key))
                    raise
                if token is None:
                    assert fresh is not None
                    flight.fail(FlightAbandoned(key))  # our followers retry, and find it too
                    for item in self._replay(fresh):
                        yield item
                    return
                try:
                    async for item in self._lead(prep, result, flight, shared):
                        yield item
                finally:
                    await self._leases.release(key, token)
                return
            try:
                final = await flight.wait()
            except FlightAbandoned:
                continue  # the leader's client went away: retry, maybe as the new leader
            for piece in replay_chunks(final.text, self._chunk_chars):
                yield Chunk(text=piece)
            yield FinalResult(
                text=final.text,
                finish_reason=final.finish_reason,
                usage=final.usage,
                tool_calls=final.tool_calls,
                cached=False,
                category=final.category,
                entry_id=final.entry_id,
                lookup_reason=Reason.SINGLE_FLIGHT,
                store_reason=final.store_reason,
            )
            return

    async def _claim(self, prep: Prepared, key: str) -> tuple[LookupResult | None, str | None]:
        """(a hit, None) when an equivalent leader stored its answer meanwhile, else (None, the
        lease token): this process calls the backend.

        The exact path is looked at again (a get by id) after taking the lease, since a leader
        here or on another replica may have stored its answer and left between our lookup and
        now. While another process holds the lease, poll for its entry; a leader that fails or
        dies frees the lease (its release, or the lease's lapse), and one waiter takes over."""
        while True:
            token = await self._leases.acquire(key)
            fresh = await self._recheck(prep)
            if fresh is not None and fresh.hit and fresh.response is not None:
                if token is not None:
                    await self._leases.release(key, token)
                return fresh, None
            if token is not None:
                return None, token
            await asyncio.sleep(self._lease_poll_s)

    def _replay(self, hit: LookupResult) -> list[Chunk | FinalResult]:
        """A hit as stream items: its text in chunks, then the FinalResult."""
        assert hit.response is not None
        response = hit.response
        return [
            *(Chunk(text=piece) for piece in replay_chunks(response.text, self._chunk_chars)),
            FinalResult(
                text=response.text,
                finish_reason=response.finish_reason,
                usage=response.usage,
                tool_calls=response.tool_calls,
                cached=True,
                similarity=hit.similarity,
                category=hit.category,
                entry_id=hit.entry_id,
                lookup_reason=hit.reason,
            ),
        ]

    async def _lead(
        self, prep: Prepared, result: LookupResult, flight: Flight[FinalResult] | None, shared: bool
    ) -> AsyncIterator[Chunk | FinalResult]:
        started = self._clock.monotonic()
        parts: list[str] = []
        try:
            final: FinalResult | None = None
            async for item in self._backend.stream(prep.req):
                if isinstance(item, FinalResult):
                    final = item
                    break
                parts.append(item.text)
                yield item
            if final is None:
                raise BackendProtocolError("backend stream ended without a final result")
            text = "".join(parts)
            if not parts and final.text:
                text = final.text  # a non-streaming backend: deliver its text as one chunk
                yield Chunk(text=text)
            elapsed_ms = (self._clock.monotonic() - started) * 1000.0
            response = CachedResponse(
                text=text,
                finish_reason=final.finish_reason,
                usage=final.usage,
                tool_calls=final.tool_calls,
            )
            stored = await self._store_quietly(prep, response, shared)
            category = stored.category if stored is not None else prep.category
            if category is not None:
                self._record_latency(category, elapsed_ms)
            out = FinalResult(
                text=text,
                finish_reason=final.finish_reason,
                usage=final.usage,
                tool_calls=final.tool_calls,
                cached=False,
                category=category,
                entry_id=stored.entry_id if stored is not None and stored.stored else None,
                lookup_reason=result.reason,
                store_reason=stored.reason if stored is not None else None,
            )
        except (GeneratorExit, asyncio.CancelledError):
            if flight is not None:
                flight.fail(FlightAbandoned(flight.key))
            raise
        except BaseException as exc:
            if flight is not None:
                flight.fail(exc)
            raise
        if flight is not None:
            flight.resolve(out)
        yield out
        await self._label_quietly(prep, result, response)  # after the answer: nobody waits for it

    async def _store_quietly(
        self, prep: Prepared, response: CachedResponse, shared: bool
    ) -> StoreResult | None:
        """The user already has the answer; a failing store must not turn it into an error."""
        try:
            return await self._store(prep, response, shared)
        except Exception:
            log.warning("storing a generated response failed", exc_info=True)
            return None

    async def _explore(self, prep: Prepared, result: LookupResult) -> None:
        """Ask the backend too and label the hit with the comparison (a backend call)."""
        parts: list[str] = []
        try:
            async for item in self._backend.stream(prep.req):
                if isinstance(item, FinalResult):
                    text = "".join(parts) or item.text
                    fresh = CachedResponse(
                        text=text,
                        finish_reason=item.finish_reason,
                        usage=item.usage,
                        tool_calls=item.tool_calls,
                    )
                    await self._label(prep, result, fresh)
                    return
                parts.append(item.text)
        except Exception:
            log.warning("verifying a hit against the backend failed", exc_info=True)

    async def _label_quietly(
        self, prep: Prepared, result: LookupResult, response: CachedResponse
    ) -> None:
        try:
            await self._label(prep, result, response)
        except Exception:
            log.warning("self-labelling a miss failed", exc_info=True)


def _flight_key(prep: Prepared, shared: bool) -> str:
    """A shared and a private generation of the same prompt store different entries: two flights."""
    req = prep.req
    return "|".join(
        (
            prep.exact_key(req.tenant, prep.category or ""),
            "1" if req.no_store else "0",
            "1" if shared else "0",
        )
    )
