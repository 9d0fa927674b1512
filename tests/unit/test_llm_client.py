"""BackendClient and BackendRouter behaviour on an in-memory transport (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from curacache.llm import (
    BackendClient,
    BackendConfig,
    BackendOverloaded,
    BackendRejected,
    BackendRouter,
    BackendTimeout,
    BackendUnavailable,
    Chunk,
    Completion,
    GenerationRequest,
    UnknownModel,
)

REQUEST = GenerationRequest(model="m", prompt="hi")
OK = {
    "model": "m",
    "choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def sse(*events: object, done: bool = True) -> bytes:
    out = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
    return out + (b"data: [DONE]\n\n" if done else b"")


def text_event(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "text": text, "finish_reason": finish}]}


USAGE = {
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


class Backend:
    """A scripted backend: each call pops the next reply (a Response, an exception, or a factory)."""

    def __init__(
        self, *replies: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, **options: Any) -> BackendClient:
        config = BackendConfig(name="b", base_url="http://gpu:8000", **options)
        return BackendClient(
            config=config,
            transport=httpx.MockTransport(self.handler),
            sleep=self.sleep,
            rng=random.Random(1),
        )


async def collect(stream: AsyncIterator[Chunk | Completion]) -> list[Chunk | Completion]:
    return [item async for item in stream]


async def test_request_shape_path_and_api_key() -> None:
    backend = Backend(httpx.Response(200, json=OK))
    async with backend.client(api_key="sk-test") as client:
        assert (await client.complete(REQUEST)).text == "hello"
    sent = backend.requests[0]
    assert str(sent.url) == "http://gpu:8000/v1/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert json.loads(sent.content) == {"model": "m", "prompt": "hi", "stream": False}


async def test_retry_after_is_honoured_then_success() -> None:
    backend = Backend(
        httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200, json=OK)
    )
    async with backend.client() as client:
        assert (await client.complete(REQUEST)).text == "hello"
    assert backend.sleeps == [2.0] and len(backend.requests) == 2


async def test_exponential_backoff_with_jitter_without_retry_after() -> None:
    backend = Backend(httpx.Response(503), httpx.Response(502), httpx.Response(200, json=OK))
    async with backend.client(backoff_s=0.2) as client:
        await client.complete(REQUEST)
    first, second = backend.sleeps
    assert 0.1 <= first <= 0.2 and 0.2 <= second <= 0.4


async def test_429_when_retries_run_out() -> None:
    backend = Backend(httpx.Response(429, headers={"Retry-After": "1"}))
    async with backend.client(max_retries=2) as client:
        with pytest.raises(BackendOverloaded) as info:
            await client.complete(REQUEST)
    assert info.value.retry_after == 1.0 and len(backend.requests) == 3


async def test_connect_errors_are_retried() -> None:
    backend = Backend(httpx.ConnectError("refused"), httpx.Response(200, json=OK))
    async with backend.client() as client:
        assert (await client.complete(REQUEST)).text == "hello"
    backend = Backend(httpx.ConnectError("refused"))
    async with backend.client(max_retries=1) as client:
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            await client.complete(REQUEST)
    assert len(backend.requests) == 2


@pytest.mark.parametrize(
    "reply,kind",
    [
        (httpx.ReadTimeout("slow"), BackendTimeout),
        (httpx.Response(400, json={"error": {"message": "max_tokens too large"}}), BackendRejected),
        (httpx.Response(500, text="oops"), BackendUnavailable),
        (httpx.Response(200, text="<html>"), BackendUnavailable),
    ],
)
async def test_failures_that_are_not_retried(
    reply: httpx.Response | Exception, kind: type[Exception]
) -> None:
    backend = Backend(reply)
    async with backend.client(max_retries=3) as client:
        with pytest.raises(kind):
            await client.complete(REQUEST)
    assert len(backend.requests) == 1 and backend.sleeps == []


async def test_stream_yields_chunks_then_one_completion() -> None:
    body = sse(text_event("hel"), text_event("lo"), text_event("", "stop"), USAGE)
    backend = Backend(httpx.Response(200, content=body))
    async with backend.client() as client:
        items = await collect(client.stream(REQUEST))
    assert items[:-1] == [Chunk("hel", 0), Chunk("lo", 1)]
    final = items[-1]
    assert (
        isinstance(final, Completion)
        and final.text == "hello"
        and final.usage.completion_tokens == 2
    )
    assert json.loads(backend.requests[0].content)["stream_options"] == {"include_usage": True}


class _Dropping(httpx.AsyncByteStream):
    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            yield self.head
        raise httpx.RemoteProtocolError("peer closed connection")


def dropping(head: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, stream=_Dropping(head))


async def test_stream_drop_before_any_chunk_is_retried() -> None:
    backend = Backend(dropping(b""), httpx.Response(200, content=sse(text_event("ok", "stop"))))
    async with backend.client() as client:
        items = await collect(client.stream(REQUEST))
    assert items[0] == Chunk("ok", 0) and len(backend.requests) == 2


async def test_stream_drop_after_a_chunk_is_not_retried() -> None:
    backend = Backend(
        dropping(sse(text_event("par"), done=False)),
        httpx.Response(200, content=sse(text_event("x", "stop"))),
    )
    got: list[object] = []
    async with backend.client(max_retries=3) as client:
        with pytest.raises(BackendUnavailable):
            async for item in client.stream(REQUEST):
                got.append(item)
    assert got == [Chunk("par", 0)] and len(backend.requests) == 1


async def test_stream_that_ends_without_done() -> None:
    truncated = Backend(httpx.Response(200, content=sse(text_event("par"), done=False)))
    async with truncated.client(max_retries=0) as client:
        with pytest.raises(BackendUnavailable, match="closed the stream"):
            await collect(client.stream(REQUEST))
    finished = Backend(httpx.Response(200, content=sse(text_event("all", "stop"), done=False)))
    async with finished.client() as client:  # a finish_reason without [DONE] is accepted
        assert (await collect(client.stream(REQUEST)))[-1].text == "all"


async def test_stream_error_event() -> None:
    backend = Backend(
        httpx.Response(200, content=sse(text_event("a"), {"error": {"message": "engine died"}}))
    )
    async with backend.client() as client:
        with pytest.raises(BackendUnavailable, match="engine died"):
            await collect(client.stream(REQUEST))


async def test_concurrency_is_capped_and_load_follows_it() -> None:
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        return httpx.Response(200, json=OK)

    config = BackendConfig(name="b", base_url="http://gpu:8000", max_concurrency=2)
    async with BackendClient(config=config, transport=httpx.MockTransport(slow)) as client:
        tasks = [asyncio.create_task(client.complete(REQUEST)) for _ in range(4)]
        for _ in range(1000):
            if running == 2:
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # give a third request the chance to (wrongly) get in
        assert running == 2 and client.in_flight == 4 and client.load() == 1.0
        gate.set()
        await asyncio.gather(*tasks)
    assert peak == 2 and client.load() == 0.0


async def test_unknown_model_is_raised_before_any_request() -> None:
    backend = Backend(httpx.Response(200, json=OK))
    async with backend.client(models=("m",)) as client:
        with pytest.raises(UnknownModel):
            await client.complete(GenerationRequest(model="other", prompt="x"))
        with pytest.raises(UnknownModel):
            client.stream(GenerationRequest(model="other", prompt="x"))
    assert backend.requests == []


async def test_router_picks_by_model_then_by_load() -> None:
    a, b, catch_all = (
        Backend(httpx.Response(200, json=OK)),
        Backend(httpx.Response(200, json=OK)),
        Backend(httpx.Response(200, json=OK)),
    )
    clients = [
        BackendClient(
            config=BackendConfig(name="a", base_url="http://a", models=("m", "n")),
            transport=httpx.MockTransport(a.handler),
        ),
        BackendClient(
            config=BackendConfig(name="b", base_url="http://b", models=("m",), max_concurrency=1),
            transport=httpx.MockTransport(b.handler),
        ),
        BackendClient(
            config=BackendConfig(name="any", base_url="http://c"),
            transport=httpx.MockTransport(catch_all.handler),
        ),
    ]
    async with BackendRouter(backends=clients) as router:
        assert router.models() == ("m", "n")
        assert router.route("m").name == "a"  # equal load: configuration order
        clients[0]._load.begin()  # a: 1/16 busy
        assert router.route("m").name == "b" and router.load("m") == 0.0
        assert router.route("n").name == "a" and router.load("n") == pytest.approx(1 / 16)
        assert router.route("zzz").name == "any" and router.load() == 0.0
        await router.complete(GenerationRequest(model="zzz", prompt="x"))
        assert len(catch_all.requests) == 1
    strict = BackendRouter(backends=clients[:2])
    with pytest.raises(UnknownModel, match="served models: m, n"):
        strict.route("zzz")
    with pytest.raises(ValueError, match="duplicate"):
        BackendRouter(backends=[clients[0], clients[0]])
