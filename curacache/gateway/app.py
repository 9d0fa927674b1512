"""The gateway sidecar: OpenAI-compatible HTTP in front of the Curacache service (via the SDK).

Any OpenAI client gets the semantic cache by changing its base URL. A cacheable request becomes
one `Cache.Generate` call: the service looks up, and on a miss streams the backend's tokens
through (the gateway writes each as it arrives) and stores the answer; equivalent concurrent
misses share one backend call there. Requests the cache must not touch go to the backend
untouched through `Cache.Forward`. See docs in README ("Use it from any OpenAI client").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from curacache.client import (
    AsyncClient,
    CachedResponse,
    CuracacheError,
    GenerateResult,
    GenerateStart,
    ToolCallDelta,
)
from curacache.gateway import wire
from curacache.gateway.config import GatewayConfig
from curacache.gateway.errors import HttpError, bad_request, http_error
from curacache.gateway.metrics import CONTENT_TYPE, GatewayMetrics

_RESULT_KEY = web.RequestKey("cache_result", str)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the cache treated a request: what the X-Cache headers say."""

    result: str  # hit | miss | bypass
    reason: str
    similarity: float = 0.0
    entry_id: str = ""
    category: str = ""

    @classmethod
    def of(
        cls, start: GenerateStart, *, no_store: bool, stored: GenerateResult | None = None
    ) -> Outcome:
        """`stored`: a whole answer's result; a miss then names the entry it was stored under
        (none when admission refused it), not the nearest candidate the lookup saw."""
        # bypass: neither served from nor stored in the cache (by policy, or no-store)
        result = "hit" if start.cached else "bypass" if no_store or not start.cacheable else "miss"
        entry_id = start.entry_id if start.cached or stored is None else stored.entry_id
        return cls(result, start.reason, start.similarity, entry_id, start.category)

    def headers(self) -> dict[str, str]:
        return {
            "X-Cache": self.result.upper(),
            "X-Cache-Similarity": f"{self.similarity:.4f}",
            "X-Cache-Entry": self.entry_id,
            "X-Cache-Category": self.category,
            "X-Cache-Reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Controls:
    """Per-request cache controls from the request headers."""

    category: str | None = None
    no_cache: bool = False  # Cache-Control: no-cache -- skip the lookup, still store
    no_store: bool = False  # Cache-Control: no-store -- skip both
    max_age: float | None = (
        None  # Cache-Control: max-age=N -- TTL of what is stored (policy-bounded)
    )
    min_similarity: float | None = None  # X-Cache-Threshold -- only ever stricter than the policy


class Gateway:
    """Handlers over one SDK client. `app()` builds the aiohttp application."""

    def __init__(self, *, config: GatewayConfig, client: AsyncClient) -> None:
        self._config = config
        self._client = client
        self.metrics = GatewayMetrics()

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self._config.max_body_bytes, middlewares=[self._observe]
        )
        app.router.add_post(wire.CHAT_PATH, self._chat)
        app.router.add_post(wire.COMPLETIONS_PATH, self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/cache/feedback", self._feedback)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/health", self._healthz)  # the name vLLM and fake-llm use
        app.router.add_get("/metrics", self._metrics)
        return app

    # -- middleware: errors and metrics in one place -------------------------------------------

    @web.middleware
    async def _observe(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            response = _error_response(
                HttpError(
                    413,
                    f"body: larger than the limit of {self._config.max_body_bytes} bytes",
                    "invalid_request_error",
                    param="body",
                    code="request_too_large",
                )
            )
        except web.HTTPException as exc:  # aiohttp's own 404 / 405
            response = _error_response(HttpError(exc.status, exc.reason, "invalid_request_error"))
        except Exception as exc:
            response = _error_response(http_error(exc))
        route = request.match_info.route.resource
        endpoint = route.canonical if route is not None else "unmatched"
        self.metrics.requests.labels(endpoint, str(response.status)).inc()
        self.metrics.latency.labels(endpoint, request.get(_RESULT_KEY, "none")).observe(
            time.perf_counter() - started
        )
        return response

    # -- identity and controls -----------------------------------------------------------------

    def _tenant(self, request: web.Request) -> str:
        if not self._config.keys:
            return self._config.default_tenant  # loopback only (checked at start-up)
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        tenant = self._config.keys.get(key.strip()) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise HttpError(
                401,
                "missing or unknown API key (send Authorization: Bearer <key>)",
                "authentication_error",
                code="invalid_api_key",
            )
        return tenant

    # -- completions -----------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        tenant = self._tenant(request)
        raw = await request.read()
        controls = _controls(request)
        plan = wire.plan(
            wire.parse_body(raw),
            chat=chat,
            max_turns=self._config.max_turns,
            cache_tools=self._config.cache_tools,
        )
        if plan.bypass is not None:
            return await self._forward(request, raw, tenant, plan)
        # One call to the service: it looks up, and on a miss calls the backend, stores the
        # answer, single-flights equivalent misses and learns from near misses (the lookup's
        # nearest entry is at hand there). A streamed request uses Generate, whose first
        # message is the lookup's outcome (for the X-Cache headers) and whose text chunks are
        # written as they arrive; a whole one uses Complete, one unary message: a hit then
        # costs the gateway about half the CPU of a streamed one (bench/gateway/README.md).
        query: dict[str, Any] = {
            "no_cache": controls.no_cache or controls.no_store,
            "no_store": controls.no_store,
            "min_similarity": controls.min_similarity,
            "max_ttl": controls.max_age,
        }
        args = (plan.prompt, tenant, controls.category, plan.model, plan.params)
        if not plan.stream:
            looked_up, result = await self._client.complete(*args, **query)
            outcome = self._count(
                request, Outcome.of(looked_up, no_store=controls.no_store, stored=result)
            )
            return _whole(plan, result.response, outcome)
        events = self._client.generate_events(*args, **query)
        async with contextlib.aclosing(events):
            start = await anext(events, None)
            if not isinstance(start, GenerateStart):
                raise HttpError(502, "cache service sent no lookup outcome", "server_error")
            outcome = self._count(request, Outcome.of(start, no_store=controls.no_store))
            answer = _answer(events)
            async with contextlib.aclosing(answer):
                return await self._stream(request, plan, answer, outcome)

    def _count(self, request: web.Request, outcome: Outcome) -> Outcome:
        request[_RESULT_KEY] = outcome.result
        self.metrics.cache.labels(outcome.result, outcome.category or "none").inc()
        return outcome

    async def _stream(
        self,
        request: web.Request,
        plan: wire.Plan,
        answer: AsyncIterator[str | ToolCallDelta | CachedResponse],
        outcome: Outcome,
    ) -> web.StreamResponse:
        started = time.perf_counter()
        # The status line waits for the first token: the client sees no byte earlier than the
        # backend's first token anyway, and a backend that fails before answering (most
        # failures do) still gets its proper HTTP status instead of an in-band error.
        item = await anext(answer, None)
        if item is None:
            raise _no_result()
        self.metrics.first_byte.labels(outcome.result).observe(time.perf_counter() - started)
        response = web.StreamResponse(headers={**outcome.headers(), **_SSE_HEADERS})
        await response.prepare(request)
        writer = wire.ChunkWriter(
            chat=plan.chat, model=plan.model, include_usage=plan.include_usage
        )
        try:
            await response.write(writer.opening())
            streamed_calls = False  # a miss streams its tool calls in pieces; a replay whole
            while not isinstance(item, CachedResponse):
                if isinstance(item, ToolCallDelta):
                    await response.write(writer.tool_call_delta(item))
                    streamed_calls = True
                else:
                    await response.write(writer.text(item))
                item = await anext(answer, None)
                if item is None:
                    raise _no_result()
            if item.tool_calls and not streamed_calls:
                await response.write(writer.tool_calls(item.tool_calls))
            u = item.usage
            await response.write(
                writer.finish(
                    item.finish_reason or "stop",
                    wire.usage_body(u.prompt_tokens, u.completion_tokens, u.total_tokens),
                )
            )
        except (CuracacheError, HttpError) as exc:
            # Headers are gone: report in-band as OpenAI-compatible servers do, and end without
            # [DONE] so a client cannot take the partial answer for a whole one.
            await response.write(wire.sse(http_error(exc).body()))
        await response.write_eof()
        return response

    async def _forward(
        self, request: web.Request, raw: bytes, tenant: str, plan: wire.Plan
    ) -> web.StreamResponse:
        request[_RESULT_KEY] = "bypass"
        self.metrics.cache.labels("bypass", "none").inc()
        path = wire.CHAT_PATH if plan.chat else wire.COMPLETIONS_PATH
        parts = self._client.forward(path, raw, tenant)
        async with contextlib.aclosing(parts):
            head = await anext(parts, None)
            if head is None or isinstance(head, bytes):
                raise HttpError(502, "cache service sent no status line", "server_error")
            headers = {
                "Content-Type": head.content_type,
                "X-Cache": "BYPASS",
                "X-Cache-Reason": plan.bypass or "",
            }
            if head.retry_after:
                headers["Retry-After"] = head.retry_after
            response = web.StreamResponse(status=head.status, headers=headers)
            await response.prepare(request)
            try:
                async for data in parts:
                    if isinstance(data, bytes):
                        await response.write(data)
            except CuracacheError as exc:  # the backend dropped mid-answer
                if not head.content_type.startswith("text/event-stream"):
                    # A cut JSON body must not look whole: drop the connection, no last chunk.
                    if request.transport is not None:
                        request.transport.close()
                    return response
                await response.write(wire.sse(http_error(exc).body()))
            await response.write_eof()
            return response

    # -- the rest of the API ---------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        self._tenant(request)
        models = await self._client.models()
        data = [
            {"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by} for m in models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _feedback(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = wire.parse_body(await request.read())
        entry_id, correct = body.get("entry_id"), body.get("correct")
        if not isinstance(entry_id, str) or not entry_id:
            raise bad_request("entry_id", "is required (the X-Cache-Entry of the hit)")
        if not isinstance(correct, bool):
            raise bad_request("correct", "is required (true or false)")
        threshold = await self._client.feedback(entry_id, correct, tenant)
        return web.json_response(
            {
                "object": "cache.feedback",
                "entry_id": entry_id,
                "correct": correct,
                "threshold": threshold,
            }
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            status = await self._client.health()
        except CuracacheError as exc:
            return web.json_response(
                {"status": "unavailable", "detail": exc.details},
                status=503,
                headers={"Retry-After": "1"},
            )
        ok = status == "SERVING"
        return web.json_response(
            {"status": "ok" if ok else status.lower()}, status=200 if ok else 503
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


def _whole(plan: wire.Plan, answer: CachedResponse, outcome: Outcome) -> web.Response:
    u = answer.usage
    body = wire.completion_body(
        chat=plan.chat,
        rid=wire.response_id(plan.chat),
        created=int(time.time()),
        model=plan.model,
        text=answer.text,
        finish_reason=answer.finish_reason or "stop",
        usage=wire.usage_body(u.prompt_tokens, u.completion_tokens, u.total_tokens),
        tool_calls=answer.tool_calls,
    )
    return web.json_response(body, headers=outcome.headers())


def _no_result() -> HttpError:
    return HttpError(502, "cache service ended the answer without a result", "server_error")


_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def _error_response(error: HttpError) -> web.Response:
    return web.json_response(error.body(), status=error.status, headers=error.headers())


async def _answer(
    events: AsyncIterator[Any],
) -> AsyncGenerator[str | ToolCallDelta | CachedResponse, None]:
    """Generate's text chunks (and tool-call pieces), then its whole CachedResponse."""
    async for item in events:
        yield item.response if isinstance(item, GenerateResult) else item


def _controls(request: web.Request) -> Controls:
    category = request.headers.get("X-Cache-Category", "").strip() or None
    no_cache = no_store = False
    max_age: float | None = None
    for directive in request.headers.get("Cache-Control", "").split(","):
        name, _, value = directive.strip().lower().partition("=")
        if name == "no-cache":
            no_cache = True
        elif name == "no-store":
            no_store = True
        elif name == "max-age":
            if not value.strip().isdigit():
                raise bad_request(
                    "Cache-Control", f"max-age must be a whole number of seconds, got {value!r}"
                )
            max_age = float(value)
    if max_age == 0:
        no_store, max_age = True, None  # nothing may be kept for zero seconds
    min_similarity = None
    if "X-Cache-Threshold" in request.headers:
        text = request.headers["X-Cache-Threshold"]
        try:
            min_similarity = float(text)
        except ValueError:
            raise bad_request(
                "X-Cache-Threshold", f"must be a number in (0, 1], got {text!r}"
            ) from None
        if not 0.0 < min_similarity <= 1.0:
            raise bad_request("X-Cache-Threshold", f"must be a number in (0, 1], got {text!r}")
    return Controls(category, no_cache, no_store, max_age, min_similarity)


def reconnect_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """Channel arguments so a restarted service is found again within `reconnect_backoff_s`
    (gRPC's default backoff grows to two minutes)."""
    backoff_ms = int(config.reconnect_backoff_s * 1000)
    return [
        ("grpc.initial_reconnect_backoff_ms", min(100, backoff_ms)),
        ("grpc.min_reconnect_backoff_ms", min(100, backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]


async def serve(
    config: GatewayConfig, *, stop: asyncio.Event, ready: Callable[[int], None] | None = None
) -> None:
    """Run the gateway until `stop` is set; `ready(port)` is called once it listens."""
    client = AsyncClient(
        config.server,
        api_key=config.service_key,
        timeout=config.request_timeout_s,
        channel_options=reconnect_options(config),
    )
    runner = web.AppRunner(Gateway(config=config, client=client).app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        if ready is not None:
            ready(int(runner.addresses[0][1]))
        await stop.wait()
    finally:
        await runner.cleanup()
        await client.close()
