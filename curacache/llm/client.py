"""`BackendClient`: one OpenAI-compatible LLM backend over httpx, with retries and a load signal.

Why it looks like this:
- A semaphore of `max_concurrency` keeps the excess in our queue: a GPU server that is handed
  more sequences than it can decode only gets slower for everyone (and the queue length is what
  `load()` reports).
- Retries (429, 502/503/504, refused connection, a drop) happen only while nothing has reached
  the caller. Once a chunk was yielded a retry would replay or duplicate text, so a later drop
  raises `BackendUnavailable` and the caller (the cache) must not store the partial answer.
- `Retry-After` beats our own backoff: the backend knows when it will have room.
- Timeouts are never retried: a backend that hangs would otherwise hold the caller for
  (retries + 1) × timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import httpx

from curacache.llm import wire
from curacache.llm.config import BackendConfig
from curacache.llm.errors import BackendError, BackendTimeout, BackendUnavailable, UnknownModel
from curacache.llm.load import LoadTotals, LoadTracker
from curacache.llm.types import Chunk, Completion, ForwardHead, GenerationRequest


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix; `error` is raised if none is left."""

    def __init__(self, error: BackendError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _unwrap(failure: Exception) -> Exception:
    """The error inside a `_Retry` (for calls that never retry)."""
    return failure.error if isinstance(failure, _Retry) else failure


class BackendClient:
    """Calls for one backend. Use `async with` or call `aclose()` to release its connections."""

    def __init__(
        self,
        *,
        config: BackendConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._load = LoadTracker(
            capacity=config.max_concurrency,
            latency_slo_s=config.latency_slo_s,
            window_s=config.load_window_s,
            overload_error_rate=config.overload_error_rate,
            clock=clock,
        )
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._stream_timeout = httpx.Timeout(config.timeout_s)
        self._completion_timeout = httpx.Timeout(config.timeout_s, read=config.completion_timeout_s)
        self._http = httpx.AsyncClient(
            base_url=config.api_base,
            headers=headers,
            timeout=self._stream_timeout,
            limits=httpx.Limits(
                max_connections=config.max_concurrency,
                max_keepalive_connections=config.max_concurrency,
            ),
            transport=transport,
            trust_env=False,  # GPU backends are internal; an inherited HTTP(S)_PROXY would misroute them
        )

    # -- identity and load -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def models(self) -> tuple[str, ...]:
        return self.config.models

    def serves(self, model: str) -> bool:
        return not self.config.models or model in self.config.models

    def load(self) -> float:
        """L ∈ [0, 1]; the formula is documented in `curacache.llm.load`."""
        return self._load.load()

    def load_terms(self) -> tuple[float, float, float]:
        """The (concurrency, latency, pressure) terms behind `load()`, for metrics."""
        return self._load.terms()

    @property
    def in_flight(self) -> int:
        return self._load.in_flight

    def load_totals(self) -> LoadTotals:
        """Attempts, failed attempts and time-to-first-token totals since start, for metrics."""
        return self._load.totals

    # -- calls -------------------------------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if not self.serves(model):
            raise UnknownModel(model, known=self.config.models, backend=self.name)

    async def complete(self, request: GenerationRequest) -> Completion:
        """One non-streaming call (whatever `request.stream` says), retried as documented."""
        self._check_model(request.model)
        body = wire.request_body(request, stream=False)
        path = wire.path_for(request)
        self._load.begin()
        try:
            attempt = 0
            while True:
                try:
                    return await self._complete_once(path, body, request)
                except _Retry as retry:
                    await self._backoff(retry, attempt)
                    attempt += 1
        finally:
            self._load.end()

    async def _complete_once(self, path: str, body: dict, request: GenerationRequest) -> Completion:
        async with self._slots:
            try:
                response = await self._http.post(path, json=body, timeout=self._completion_timeout)
            except httpx.HTTPError as exc:
                raise self._transport_failure(exc, delivered=False) from exc
            if response.status_code != 200:
                raise self._status_failure(response, request)
            try:
                data = response.json()
                completion = wire.parse_completion(data, request=request, backend=self.name)
            except (ValueError, BackendError) as exc:
                self._load.record_attempt(pressure=True)
                if isinstance(exc, BackendError):
                    raise
                raise BackendUnavailable(
                    f"backend {self.name} sent a body that is not JSON", backend=self.name
                ) from exc
            self._load.record_attempt(pressure=False)
            return completion

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Completion]:
        """Text `Chunk`s as they arrive, then exactly one `Completion` with the whole text.

        Raises UnknownModel at once (not on first iteration) for a model this backend does not
        serve. Leaving the loop early closes the HTTP stream and frees the slot.
        """
        self._check_model(request.model)
        return self._stream(request)

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[Chunk | Completion]:
        body = wire.request_body(request, stream=True)
        path = wire.path_for(request)
        self._load.begin()
        try:
            attempt = 0
            while True:
                try:
                    async with contextlib.aclosing(self._stream_once(path, body, request)) as items:
                        async for item in items:
                            yield item
                    return
                except _Retry as retry:  # only raised while nothing was yielded
                    await self._backoff(retry, attempt)
                    attempt += 1
        finally:
            self._load.end()

    async def _open_stream(
        self, path: str, body: dict, request: GenerationRequest
    ) -> httpx.Response:
        """POST and wait for the status line; a non-200 is read, closed and raised."""
        try:
            response = await self._http.send(
                self._http.build_request("POST", path, json=body, timeout=self._stream_timeout),
                stream=True,
            )
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc, delivered=False) from exc
        if response.status_code == 200:
            return response
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_failure(exc, delivered=False) from exc
        finally:
            await response.aclose()
        raise self._status_failure(response, request)

    async def _stream_once(
        self, path: str, body: dict[str, Any], request: GenerationRequest
    ) -> AsyncGenerator[Chunk | Completion, None]:
        """One attempt: chunks, then the Completion. Raises `_Retry` only before its first chunk."""
        assembler = wire.StreamAssembler(request=request, backend=self.name)
        async with self._slots:
            started = self._clock()
            response = await self._open_stream(path, body, request)
            try:
                async with contextlib.aclosing(
                    wire.iter_sse_data(response.aiter_lines())
                ) as events:
                    index = 0
                    while not assembler.done:
                        try:
                            payload = await anext(events)
                        except StopAsyncIteration:
                            if assembler.finished:
                                break  # lenient: a finish_reason but no [DONE]
                            raise self._dropped(delivered=index > 0) from None
                        except httpx.HTTPError as exc:
                            raise self._transport_failure(exc, delivered=index > 0) from exc
                        try:
                            text = assembler.feed(payload)
                        except BackendError:
                            self._load.record_attempt(pressure=True)
                            raise
                        pieces = [Chunk(text, index)] if text else []
                        pieces += [
                            Chunk("", index + i, d)
                            for i, d in enumerate(assembler.tool_deltas, start=len(pieces))
                        ]
                        for chunk in pieces:
                            if index == 0:
                                self._load.record_ttft(self._clock() - started)
                            yield chunk
                            index += 1
                self._load.record_attempt(pressure=False)
            finally:
                await response.aclose()
        yield assembler.completion()  # after the slot is free: the HTTP exchange is over

    async def served_models(self) -> tuple[str, ...]:
        """The configured model list; a catch-all backend (none configured) is asked for its
        own `/models`. Raises BackendError when it cannot be asked."""
        if self.config.models:
            return self.config.models
        try:
            response = await self._http.get("/models", timeout=self._completion_timeout)
        except httpx.HTTPError as exc:
            raise _unwrap(self._transport_failure(exc, delivered=True)) from exc
        if response.status_code != 200:
            raise BackendUnavailable(
                f"backend {self.name}: /models answered {response.status_code}", backend=self.name
            )
        try:
            rows = response.json().get("data") or []
            return tuple(str(row["id"]) for row in rows if isinstance(row, dict) and row.get("id"))
        except (ValueError, AttributeError) as exc:
            raise BackendUnavailable(
                f"backend {self.name}: /models sent no model list", backend=self.name
            ) from exc

    async def forward(self, path: str, body: bytes) -> AsyncIterator[ForwardHead | bytes]:
        """POST `body` untouched to `path` (relative to the API base) and relay the response:
        its `ForwardHead`, then its body bytes as they arrive.

        For requests the cache must not touch (tools, n > 1, ...). The backend's own status and
        body pass through, errors included; only a failure to reach it raises. Never retried:
        the body is opaque, so we cannot tell whether a retry is safe.
        """
        self._load.begin()
        try:
            async with self._slots:
                request = self._http.build_request(
                    "POST",
                    path,
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=self._stream_timeout,
                )
                try:
                    response = await self._http.send(request, stream=True)
                except httpx.HTTPError as exc:
                    raise _unwrap(self._transport_failure(exc, delivered=True)) from exc
                try:
                    self._load.record_attempt(
                        pressure=response.status_code == 429 or response.status_code >= 500
                    )
                    yield ForwardHead(
                        status=response.status_code,
                        content_type=response.headers.get("content-type", "application/json"),
                        retry_after=response.headers.get("retry-after"),
                    )
                    try:
                        async for data in response.aiter_bytes():
                            yield data
                    except httpx.HTTPError as exc:
                        raise _unwrap(self._transport_failure(exc, delivered=True)) from exc
                finally:
                    await response.aclose()
        finally:
            self._load.end()

    # -- failure classification ------------------------------------------------------------------

    def _dropped(self, delivered: bool) -> Exception:
        self._load.record_attempt(pressure=True)
        error = BackendUnavailable(
            f"backend {self.name} closed the stream before it finished", backend=self.name
        )
        return error if delivered else _Retry(error)

    def _transport_failure(self, exc: httpx.HTTPError, delivered: bool) -> Exception:
        """What an httpx exception means: a `_Retry` to try again, or the error to raise."""
        self._load.record_attempt(pressure=True)
        if isinstance(exc, httpx.ConnectTimeout):
            return _Retry(
                BackendTimeout(
                    f"backend {self.name}: connect timed out after {self.config.timeout_s:g}s",
                    backend=self.name,
                )
            )
        if isinstance(exc, httpx.ConnectError):
            return _Retry(
                BackendUnavailable(
                    f"backend {self.name}: cannot connect ({exc})", backend=self.name
                )
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendTimeout(
                f"backend {self.name}: no response within the timeout ({type(exc).__name__})",
                backend=self.name,
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.NetworkError)):
            error = BackendUnavailable(
                f"backend {self.name}: connection dropped ({exc or type(exc).__name__})",
                backend=self.name,
            )
            return error if delivered else _Retry(error)
        return BackendUnavailable(
            f"backend {self.name}: {type(exc).__name__}: {exc}", backend=self.name
        )

    def _status_failure(self, response: httpx.Response, request: GenerationRequest) -> Exception:
        status = response.status_code
        error = wire.error_for_status(
            status, response.text, response.headers, backend=self.name, model=request.model
        )
        self._load.record_attempt(pressure=status == 429 or status >= 500)
        if status in wire.RETRYABLE_STATUS:
            return _Retry(error, wire.parse_retry_after(response.headers.get("retry-after")))
        return error

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when we should give up."""
        if attempt >= self.config.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.config.max_retry_wait_s else None
        backoff = min(self.config.max_backoff_s, self.config.backoff_s * 2**attempt)
        return backoff * (0.5 + 0.5 * self._rng.random())  # jitter: retries of a burst spread out

    async def _backoff(self, retry: _Retry, attempt: int) -> None:
        delay = self._delay(attempt, retry.retry_after)
        if delay is None:
            raise retry.error from retry.__cause__
        await self._sleep(delay)

    # -- lifecycle -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
