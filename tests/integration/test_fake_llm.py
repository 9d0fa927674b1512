"""BackendClient against the real backend simulator (`curacache fake-llm`) on port 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import asynccontextmanager
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
    Message,
    ToolCall,
    UnknownModel,
)
from curacache.llm.sim_model import generate
from curacache.llm.simulator import FakeLLM, SimConfig

FAST = SimConfig(ttft_ms=5, tokens_per_s=5000, max_concurrency=8)


@asynccontextmanager
async def backend(
    sim_config: SimConfig = FAST, sleeps: list[float] | None = None, **client_options: Any
) -> AsyncIterator[tuple[FakeLLM, BackendClient]]:
    """A simulator and a client for it; `sleeps` records the client's backoff waits."""

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)
        await asyncio.sleep(seconds)

    async with FakeLLM(config=sim_config) as sim:
        options: dict[str, Any] = {"backoff_s": 0.01, **client_options}
        config = BackendConfig(name="sim", base_url=sim.base_url, **options)
        async with BackendClient(config=config, sleep=sleep) as client:
            yield sim, client


def chat(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(
        model="fake-llm",
        messages=(Message("system", "be brief"), Message("user", text)),
        params=params,
    )


def prompt(text: str, **params: object) -> GenerationRequest:
    return GenerationRequest(model="fake-llm", prompt=text, params=params)


async def collect(stream: AsyncIterator[Chunk | Completion]) -> tuple[list[Chunk], Completion]:
    chunks: list[Chunk] = []
    async for item in stream:
        if isinstance(item, Chunk):
            chunks.append(item)
        else:
            final = item
    return chunks, final


async def test_output_is_deterministic_and_depends_on_the_request() -> None:
    async with backend() as (_, client):
        first = await client.complete(chat("what is a vector index?", temperature=0))
        again = await client.complete(chat("what is a vector index?", temperature=0))
        other = await client.complete(chat("what is a vector index!", temperature=0))
        hotter = await client.complete(chat("what is a vector index?", temperature=1.0))
    assert first == again
    assert first.text and first.text != other.text and first.text != hotter.text
    body = {
        "model": "fake-llm",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "what is a vector index?"},
        ],
        "temperature": 0,
    }
    assert first.text == generate(body).text  # a test can compute what a cache hit must return


@pytest.mark.parametrize("make", [chat, prompt], ids=["chat", "completions"])
async def test_stream_chunks_join_to_the_completion_and_equal_the_non_streaming_answer(
    make: Callable[..., GenerationRequest],
) -> None:
    async with backend() as (sim, client):
        chunks, final = await collect(client.stream(make("tell me about caches", seed=7)))
        whole = await client.complete(make("tell me about caches", seed=7))
    content = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "tell me about caches"},
        ]
    }
    expected = generate(
        {
            "model": "fake-llm",
            "seed": 7,
            **(content if make is chat else {"prompt": "tell me about caches"}),
        }
    )
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert "".join(c.text for c in chunks) == final.text == expected.text
    assert final.finish_reason == "stop"
    assert final.usage.completion_tokens == len(expected.tokens) == len(chunks)
    assert final.usage.prompt_tokens == expected.prompt_tokens
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    assert whole == final
    assert sim.stats.requests_served == 2


async def test_tool_calls_stream_as_deltas_and_join_to_the_whole_answers_calls() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    async with backend() as (_, client):
        chunks, final = await collect(client.stream(chat("weather in Oslo?", tools=tools)))
        whole = await client.complete(chat("weather in Oslo?", tools=tools))
    expected = generate(
        {
            "model": "fake-llm",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "weather in Oslo?"},
            ],
            "tools": tools,
        }
    )
    assert expected.tool_call is not None and len(expected.tokens) > 1  # arguments in pieces
    call_id, name = expected.tool_call
    deltas = [c.tool_call for c in chunks]
    assert len(deltas) == len(expected.tokens) and all(c.text == "" for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [(d.index, d.id, d.name) for d in deltas if d is not None] == [
        (0, call_id, name),
        *[(0, "", "")] * (len(deltas) - 1),
    ]  # id and name on the first piece only, as OpenAI streams them
    assert "".join(d.arguments for d in deltas if d is not None) == expected.text
    assert final.text == "" and final.finish_reason == "tool_calls"
    assert final.tool_calls == (ToolCall(call_id, name, expected.text),)
    assert whole == final


async def test_max_tokens_cuts_with_finish_reason_length() -> None:
    async with backend() as (_, client):
        full = await client.complete(prompt("a long story"))
        cut = await client.complete(prompt("a long story", max_tokens=3))
        chunks, streamed = await collect(client.stream(prompt("a long story", max_tokens=3)))
    assert full.finish_reason == "stop" and len(full.text.split()) > 3
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 3
    assert full.text.startswith(cut.text) and cut.text == streamed.text and len(chunks) == 3


async def test_decoding_is_limited_to_max_concurrency_and_the_rest_queue_fifo() -> None:
    sim_config = SimConfig(ttft_ms=20, tokens_per_s=400, max_concurrency=2)
    async with backend(sim_config) as (sim, client):
        answers = await asyncio.gather(
            *(client.complete(prompt(f"question {i}", max_tokens=8)) for i in range(6))
        )
    assert all(a.usage.completion_tokens == 8 for a in answers)
    events = list(sim.stats.events)
    running, peak = 0, 0
    for kind, _ in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2 == sim.stats.max_concurrent
    starts = [n for kind, n in events if kind == "start"]
    assert starts == sorted(starts) and len(starts) == 6  # served in arrival order
    # the 3rd request starts only after one of the first two ended: three waves of decoding
    assert events.index(("start", starts[2])) > min(
        events.index(("end", starts[0])), events.index(("end", starts[1]))
    )
    assert sim.stats.max_queued >= 3


async def test_429_is_retried_after_retry_after_then_succeeds() -> None:
    sleeps: list[float] = []
    async with backend(sleeps=sleeps, max_retries=3) as (sim, client):
        answer = await client.complete(prompt("hello [[fake-fault:429,times=2,retry-after=0.05]]"))
        chunks, final = await collect(
            client.stream(prompt("stream [[fake-fault:429,times=1,retry-after=0.05]]"))
        )
    assert answer.text and final.text == "".join(c.text for c in chunks)
    assert sleeps == [0.05, 0.05, 0.05]  # the backend's advice, not our backoff
    assert sim.stats.faults["429"] == 3 and sim.stats.requests_received == 5


async def test_429_after_the_last_retry_raises_overloaded_with_retry_after() -> None:
    async with backend(max_retries=1) as (sim, client):
        with pytest.raises(BackendOverloaded) as info:
            await client.complete(prompt("hello [[fake-fault:429,retry-after=0.05]]"))
    assert info.value.retry_after == pytest.approx(0.05)
    assert sim.stats.requests_received == 2


async def test_retry_after_longer_than_we_wait_is_not_waited_for() -> None:
    sleeps: list[float] = []
    async with backend(sleeps=sleeps, max_retries=3, max_retry_wait_s=1.0) as (sim, client):
        with pytest.raises(BackendOverloaded) as info:
            await client.complete(prompt("hello [[fake-fault:429,retry-after=30]]"))
    assert info.value.retry_after == 30 and sleeps == [] and sim.stats.requests_received == 1


async def test_503_raises_unavailable_after_retries() -> None:
    async with backend(max_retries=1) as (sim, client):
        with pytest.raises(BackendUnavailable) as info:
            await client.complete(prompt("hello [[fake-fault:503,retry-after=0.01]]"))
        with pytest.raises(BackendUnavailable):
            await collect(client.stream(prompt("hello [[fake-fault:503,retry-after=0.01]]")))
    assert info.value.status == 503 and sim.stats.requests_received == 4


async def test_drop_after_a_chunk_was_yielded_raises_unavailable_without_retry() -> None:
    async with backend(max_retries=3) as (sim, client):
        received: list[Chunk] = []
        with pytest.raises(BackendUnavailable, match=r"dropped|closed"):
            async for item in client.stream(chat("tell me [[fake-fault:drop]]")):
                assert isinstance(item, Chunk), "no Completion may follow a drop"
                received.append(item)
    assert received  # the caller had text already
    assert sim.stats.requests_received == 1  # so it was not retried
    assert client.in_flight == 0


async def test_drop_before_anything_was_delivered_is_retried() -> None:
    async with backend(max_retries=2) as (sim, client):
        answer = await client.complete(prompt("hello [[fake-fault:drop,times=1]]"))
    assert answer.finish_reason == "stop" and sim.stats.requests_received == 2


async def test_hang_raises_timeout_without_retry() -> None:
    async with backend(timeout_s=0.3, completion_timeout_s=0.3, max_retries=3) as (sim, client):
        with pytest.raises(BackendTimeout):
            await client.complete(prompt("hello [[fake-fault:hang]]"))
        with pytest.raises(BackendTimeout):
            await collect(client.stream(prompt("hello [[fake-fault:hang]]")))
    assert sim.stats.requests_received == 2 and sim.stats.faults["hang"] == 2


async def test_unknown_model() -> None:
    async with backend() as (sim, client):
        with pytest.raises(UnknownModel):  # the backend says so (404 model_not_found)
            await client.complete(GenerationRequest(model="gpt-nope", prompt="hi"))
        router = BackendRouter(backends=[client])
        configured = BackendClient(
            config=BackendConfig(name="b", base_url=sim.base_url, models=("fake-llm",))
        )
        async with BackendRouter(backends=[configured]) as strict:
            with pytest.raises(
                UnknownModel, match="gpt-nope"
            ):  # no backend lists it: no request is sent
                strict.stream(GenerationRequest(model="gpt-nope", prompt="hi"))
            assert (await strict.complete(prompt("hi"))).text
        assert (await router.complete(prompt("hi"))).text
    assert sim.stats.requests_received == 3


async def test_bad_request_is_rejected_with_the_backends_message_and_not_retried() -> None:
    async with backend(max_retries=3) as (sim, client):
        with pytest.raises(BackendRejected, match="max_tokens") as info:
            await client.complete(prompt("hi", max_tokens=0))
    assert info.value.status == 400 and sim.stats.requests_received == 1


async def test_load_rises_with_in_flight_requests_and_with_429s() -> None:
    slow = SimConfig(ttft_ms=300, tokens_per_s=1000, max_concurrency=8)
    async with backend(slow, max_concurrency=4, max_retries=0, overload_error_rate=1.0) as (
        sim,
        client,
    ):
        assert client.load() == 0.0
        tasks = [
            asyncio.create_task(client.complete(prompt(f"q{i}", max_tokens=2))) for i in range(2)
        ]
        await _until(lambda: sim.stats.active == 2)
        assert client.load() == pytest.approx(0.5)  # 2 in flight of 4
        await asyncio.gather(*tasks)
        assert client.load() == 0.0
        for _ in range(2):
            with pytest.raises(BackendOverloaded):
                await client.complete(prompt("x [[fake-fault:429,retry-after=0]]"))
        assert client.load() == pytest.approx(0.5)  # 2 of the 4 recent attempts were 429s


async def test_leaving_a_stream_early_frees_the_slot() -> None:
    async with backend(max_concurrency=1) as (_sim, client):
        stream = client.stream(prompt("a long story"))
        async for _item in stream:
            break
        assert isinstance(stream, AsyncGenerator)
        await stream.aclose()
        assert client.in_flight == 0
        assert (
            await asyncio.wait_for(client.complete(prompt("next")), 5)
        ).text  # the one slot is free again


async def test_models_and_health_say_it_is_a_simulator() -> None:
    async with FakeLLM(config=FAST) as sim, httpx.AsyncClient(trust_env=False) as http:
        models = (await http.get(sim.base_url + "/models")).json()
        health = (await http.get(sim.url + "/health")).json()
    assert models["simulator"] is True and "SIMULATOR" in models["note"]
    assert [m["id"] for m in models["data"]] == ["fake-llm"] and health["status"] == "ok"


def test_cli_help_says_it_is_a_simulator() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "curacache.cli", "fake-llm", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "simulator" in help_text.lower() and "not a language model" in help_text


def test_cli_starts_on_port_0_says_what_it_is_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "curacache.cli", "fake-llm", "--port", "0", "--model", "m1"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            banner, listening = proc.stdout.readline(), proc.stdout.readline()
            assert "SIMULATOR" in banner and "test" in banner
            base_url = listening.split("listening on ")[1].split()[0]
            with httpx.Client(trust_env=False) as http:
                answer = http.post(
                    base_url + "/completions", json={"model": "m1", "prompt": "hi", "max_tokens": 2}
                ).json()
            assert answer["usage"]["completion_tokens"] == 2
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(wait(), timeout)
