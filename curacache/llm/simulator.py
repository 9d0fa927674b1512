"""`curacache fake-llm`: an OpenAI-compatible LLM backend SIMULATOR for tests and load tests.

It is not a language model. It answers `/v1/chat/completions` and `/v1/completions` (streaming
SSE with a final usage chunk, and non-streaming), `/v1/models` and `/health` with text that is a
deterministic function of the request (see `sim_model.generate`), so a cache hit can be checked
word for word (a chat request offering `tools` gets a call of the function `tool_choice` names,
else of the first tool, with `{"query": <text>}` as arguments and finish_reason "tool_calls"),
and it costs time the way a GPU server does:

- at most `max_concurrency` sequences decode at once; the rest wait in a FIFO queue;
- a sequence that got its slot spends `ttft_ms` before its first token, then emits
  `tokens_per_s` tokens per second.

Faults, to exercise clients: a 429 with Retry-After, a 503, a connection dropped mid-stream, a
request that is never answered. They are drawn per request with the `*_rate` knobs (seeded), or
forced per request by a header `x-fake-fault: KIND[,times=N][,retry-after=S]` or a prompt marker
`[[fake-fault:KIND[,times=N][,retry-after=S]]]`, KIND ∈ 429 | 500 | 503 | drop | hang (`times=N`:
only the first N identical requests fault, so a retry succeeds).

In a test: `async with FakeLLM(config=SimConfig(...)) as sim: ...sim.base_url...` (port 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from curacache.llm.sim_model import (
    FaultSpec,
    FifoSlots,
    Generated,
    fault_in,
    generate,
    request_key,
    split_due,
)

BANNER = (
    "curacache fake-llm: an LLM backend SIMULATOR for tests and load tests (not a language model)"
)
OWNER = "curacache-fake-llm"


@dataclass(frozen=True, slots=True)
class SimConfig:
    models: tuple[str, ...] = ("fake-llm",)
    ttft_ms: float = 50.0
    tokens_per_s: float = 50.0
    max_concurrency: int = 8
    fail_429_rate: float = 0.0
    fail_503_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    retry_after_s: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ValueError("the simulator needs at least one model name")
        if self.max_concurrency < 1 or self.tokens_per_s <= 0 or self.ttft_ms < 0:
            raise ValueError("max_concurrency >= 1, tokens_per_s > 0 and ttft_ms >= 0 are required")
        rates = (self.fail_429_rate, self.fail_503_rate, self.drop_rate, self.hang_rate)
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")


@dataclass
class SimStats:
    """Counters of one simulator instance; `events` logs ("start"|"end", request number) of
    decoding in the order it happened (bounded), so tests can check queueing without clocks."""

    requests_received: int = 0
    requests_served: int = 0
    active: int = 0
    max_concurrent: int = 0
    max_queued: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    events: deque[tuple[str, int]] = field(default_factory=lambda: deque(maxlen=100_000))


def _error(
    status: int,
    message: str,
    *,
    kind: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class FakeLLM:
    """The simulator as an aiohttp app; `start()` binds (port 0 picks a free port)."""

    def __init__(
        self,
        *,
        config: SimConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout_s: float = 1.0,
    ) -> None:
        self.config = config or SimConfig()
        self.stats = SimStats()
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout_s
        self._rng = random.Random(self.config.seed)
        self._slots = FifoSlots(self.config.max_concurrency)
        self._fault_counts: dict[tuple[str, str], int] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._ids = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=self._shutdown_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self._closing.set()  # releases hung requests
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Server root (where /health is)."""
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (ends in /v1), what an OpenAI client or BackendConfig takes."""
        return self.url + "/v1"

    # -- small endpoints -------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": OWNER, "simulator": True}
            for m in self.config.models
        ]
        return web.json_response(
            {"object": "list", "data": data, "simulator": True, "note": BANNER}
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "simulator": True, "note": BANNER})

    # -- generation ------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    def _validate(self, body: Any, *, chat: bool) -> str | None:
        if not isinstance(body, dict):
            return "the body must be a JSON object"
        if chat and not (isinstance(body.get("messages"), list) and body["messages"]):
            return "'messages' must be a non-empty list"
        if not chat and not isinstance(body.get("prompt"), (str, list)):
            return "'prompt' is required"
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return "'max_tokens' must be a positive integer"
        return None

    def _pick_fault(
        self, body: dict[str, Any], header: str | None
    ) -> tuple[FaultSpec | None, str | None]:
        """The fault for this request (None: answer normally), or an error message for a bad spec."""
        raw = fault_in(body, header)
        if raw is None:
            draw = self._rng.random()
            for kind, rate in (
                ("429", self.config.fail_429_rate),
                ("503", self.config.fail_503_rate),
                ("drop", self.config.drop_rate),
                ("hang", self.config.hang_rate),
            ):
                if draw < rate:
                    return FaultSpec(kind), None
                draw -= rate
            return None, None
        try:
            spec = FaultSpec.parse(raw)
        except ValueError as exc:
            return None, f"bad fault spec: {exc}"
        if spec.times is not None:
            key = (raw, request_key(body))
            seen = self._fault_counts.get(key, 0)
            self._fault_counts[key] = seen + 1
            if seen >= spec.times:
                return None, None
        return spec, None

    async def _generate(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        self.stats.requests_received += 1
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not valid JSON", kind="invalid_request_error")
        problem = self._validate(body, chat=chat)
        if problem:
            return _error(400, problem, kind="invalid_request_error")
        model = body.get("model")
        if model not in self.config.models:
            return _error(
                404,
                f"The model `{model}` does not exist.",
                kind="invalid_request_error",
                code="model_not_found",
            )
        fault, problem = self._pick_fault(body, request.headers.get("x-fake-fault"))
        if problem:
            return _error(400, problem, kind="invalid_request_error")
        if fault is not None:
            self.stats.faults[fault.kind] = self.stats.faults.get(fault.kind, 0) + 1
            retry_after = (
                self.config.retry_after_s if fault.retry_after is None else fault.retry_after
            )
            if fault.kind == "429":
                return _error(
                    429,
                    "simulated overload",
                    kind="rate_limit_error",
                    headers={"Retry-After": f"{retry_after:g}"},
                )
            if fault.kind == "500":  # a backend bug: not retryable
                return _error(500, "simulated internal error", kind="server_error")
            if fault.kind == "503":
                return _error(
                    503,
                    "simulated unavailability",
                    kind="server_error",
                    headers={"Retry-After": f"{retry_after:g}"},
                )
            if fault.kind == "hang":
                await self._closing.wait()
                self._abort(request)
                return web.Response(status=503)  # not delivered: the connection is gone
        generated = generate(body)
        self._ids += 1
        number = self._ids
        drop = fault is not None and fault.kind == "drop"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(
                request, generated, model, number, chat=chat, include_usage=include_usage, drop=drop
            )
        return await self._whole(request, generated, model, number, chat=chat, drop=drop)

    async def _decode(
        self, generated: Generated, number: int, drop: bool
    ) -> AsyncGenerator[list[str], None]:
        """Queue for a slot, then yield the tokens due at each step of the cost model."""
        if not self._slots.free:
            self.stats.max_queued = max(self.stats.max_queued, self._slots.queued + 1)
        await self._slots.acquire()
        self.stats.active += 1
        self.stats.max_concurrent = max(self.stats.max_concurrent, self.stats.active)
        self.stats.events.append(("start", number))
        try:
            await asyncio.sleep(self.config.ttft_ms / 1000)
            tokens = generated.tokens
            stop_at = max(1, len(tokens) // 2) if drop else len(tokens)
            started, emitted = time.monotonic(), 0
            while emitted < stop_at:
                due = min(
                    stop_at,
                    split_due(
                        tokens, emitted, time.monotonic() - started, self.config.tokens_per_s
                    ),
                )
                if due > emitted:
                    yield list(tokens[emitted:due])
                    emitted = due
                if emitted < stop_at:
                    await asyncio.sleep(
                        max(0.0, started + emitted / self.config.tokens_per_s - time.monotonic())
                    )
        finally:
            self.stats.events.append(("end", number))
            self.stats.active -= 1
            self._slots.release()

    @staticmethod
    def _abort(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    def _envelope(self, model: str, number: int, chat: bool, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if chat else "text_completion") + (
            ".chunk" if chunk and chat else ""
        )
        prefix = "chatcmpl" if chat else "cmpl"
        return {
            "id": f"{prefix}-fake-{number}",
            "object": kind,
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": OWNER,
        }

    @staticmethod
    def _usage(generated: Generated) -> dict[str, int]:
        completion = len(generated.tokens)
        return {
            "prompt_tokens": generated.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": generated.prompt_tokens + completion,
        }

    async def _whole(
        self,
        request: web.Request,
        generated: Generated,
        model: str,
        number: int,
        *,
        chat: bool,
        drop: bool,
    ) -> web.StreamResponse:
        async with contextlib.aclosing(self._decode(generated, number, drop)) as steps:
            async for _ in steps:
                pass
        if drop:
            self._abort(request)
            return web.Response(status=503)
        text = generated.text
        choice: dict[str, Any] = {"index": 0, "finish_reason": generated.finish_reason}
        if chat and generated.tool_call is not None:
            call_id, name = generated.tool_call
            choice["message"] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": text},
                    }
                ],
            }
        elif chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice.update(text=text, logprobs=None)
        self.stats.requests_served += 1
        return web.json_response(
            {
                **self._envelope(model, number, chat, False),
                "choices": [choice],
                "usage": self._usage(generated),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        generated: Generated,
        model: str,
        number: int,
        *,
        chat: bool,
        include_usage: bool,
        drop: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        envelope = self._envelope(model, number, chat, True)
        extra = {"usage": None} if include_usage else {}

        def event(choice: dict[str, Any]) -> bytes:
            return f"data: {json.dumps({**envelope, 'choices': [choice], **extra})}\n\n".encode()

        def piece(text: str, finish: str | None = None) -> dict[str, Any]:
            if chat and generated.tool_call is not None and text:
                # OpenAI's shape: the first delta of a call names it, later ones add arguments
                call: dict[str, Any] = {"index": 0, "function": {"arguments": text}}
                if not opened:
                    call_id, name = generated.tool_call
                    call.update(id=call_id, type="function")
                    call["function"]["name"] = name
                    opened.append(True)
                return {"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}
            if chat:
                return {
                    "index": 0,
                    "delta": {"content": text} if text or finish is None else {},
                    "finish_reason": finish,
                }
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        opened: list[bool] = []  # the tool call's first delta was sent
        try:
            if chat:
                await response.write(
                    event(
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    )
                )
            async with contextlib.aclosing(self._decode(generated, number, drop)) as steps:
                async for tokens in steps:
                    await response.write(b"".join(event(piece(t)) for t in tokens))
            if drop:
                self._abort(request)
                return response
            await response.write(event(piece("", generated.finish_reason)))
            if include_usage:
                usage = {**envelope, "choices": [], "usage": self._usage(generated)}
                await response.write(f"data: {json.dumps(usage)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except ConnectionError:
            return response  # the client went away; its slot was released by _decode
        self.stats.requests_served += 1
        return response


async def serve(*, config: SimConfig, host: str, port: int, stop: asyncio.Event) -> None:
    """Run until `stop` is set; prints a startup line that says what this is."""
    sim = FakeLLM(config=config, host=host, port=port, shutdown_timeout_s=5.0)
    await sim.start()
    print(
        f"{BANNER}\nlistening on {sim.base_url} (models: {', '.join(config.models)}; ttft {config.ttft_ms:g} ms, "
        f"{config.tokens_per_s:g} tokens/s, {config.max_concurrency} concurrent sequences)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await sim.close()
