"""Caching tool requests (gateway `cache_tools = true`), driven by the official `openai` client:
gateway -> real server (SQLite, MiniLM) -> `fake-llm`, which answers a request offering tools
with a call of the function `tool_choice` names (else the first tool)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionToolParam,
)

from tests.gateway_harness import FAST_SIM, ThreadGateway, user
from tests.server_harness import MODEL, ThreadFakeLLM, ThreadServer, make_config


def tool(name: str) -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"look {name} up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }


WEATHER = [tool("get_weather"), tool("get_time")]
OTHER_TOOLS = [tool("search_web")]


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadFakeLLM]:
    s = ThreadFakeLLM(FAST_SIM)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gateway(
    sim: ThreadFakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadGateway]:
    config = make_config(
        "sqlite",
        tmp_path_factory.mktemp("gwtools") / "data",
        None,
        **{"cache.embedder": "minilm", "cache.backends": f"sim={sim.base_url}"},
    )
    server = ThreadServer(config)
    g = ThreadGateway(server.target, cache_tools=True)
    yield g
    g.stop()
    server.stop()


@pytest.fixture
def oai(gateway: ThreadGateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.base_url, api_key="unused-on-loopback", max_retries=0) as client:
        yield client


def whole_calls(response: Any) -> list[tuple[str, str, str]]:
    message = response.choices[0].message
    calls = message.tool_calls or []
    assert all(isinstance(c, ChatCompletionMessageFunctionToolCall) for c in calls)
    return [(c.id, c.function.name, c.function.arguments) for c in calls]


def streamed_calls(chunks: list[Any]) -> tuple[list[tuple[str, str, str]], str | None]:
    """Tool calls joined from their deltas by index, as OpenAI clients do; the finish reason."""
    calls: dict[int, list[str]] = {}
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        assert not choice.delta.content
        for d in choice.delta.tool_calls or []:
            call = calls.setdefault(d.index, ["", "", ""])
            call[0] += d.id or ""
            call[1] += (d.function.name if d.function else None) or ""
            call[2] += (d.function.arguments if d.function else None) or ""
    return [(c[0], c[1], c[2]) for _, c in sorted(calls.items())], finish


def test_tool_calls_are_cached_and_replayed_whole_and_streamed(
    oai: OpenAI, sim: ThreadFakeLLM
) -> None:
    prompt = user("What is the weather in Lisbon right now?")
    miss = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, tools=WEATHER, temperature=0
    )
    assert miss.headers["x-cache"] == "MISS" and miss.headers["x-cache-entry"]
    first = miss.parse()
    calls = whole_calls(first)
    assert [name for _, name, _ in calls] == ["get_weather"]
    assert calls[0][0].startswith("call_") and "query" in json.loads(calls[0][2])
    assert first.choices[0].finish_reason == "tool_calls"
    assert first.choices[0].message.content is None and first.usage is not None
    served = sim.sim.stats.requests_served

    hit = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, tools=WEATHER, temperature=0
    )
    assert hit.headers["x-cache"] == "HIT"
    assert hit.headers["x-cache-entry"] == miss.headers["x-cache-entry"]
    again = hit.parse()
    assert whole_calls(again) == calls and again.choices[0].finish_reason == "tool_calls"
    assert again.choices[0].message.content is None

    with oai.chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=prompt,
        tools=WEATHER,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-cache"] == "HIT"
        chunks = list(response.parse())
    assert streamed_calls(chunks) == (calls, "tool_calls")
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert sim.sim.stats.requests_served == served  # both replays came from the cache


def test_a_streamed_tool_call_miss_is_stored_and_served_whole(oai: OpenAI) -> None:
    prompt = user("Book me a table for two tomorrow")
    choice: Any = {"type": "function", "function": {"name": "get_time"}}
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=prompt, tools=WEATHER, tool_choice=choice, stream=True
    ) as response:
        assert response.headers["x-cache"] == "MISS"
        chunks = list(response.parse())
    calls, finish = streamed_calls(chunks)
    assert [name for _, name, _ in calls] == ["get_time"] and finish == "tool_calls"
    # a miss passes the backend's pieces on as they arrive: the arguments come in several
    pieces = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert len(pieces) > 1 and sum(1 for d in pieces if d.id) == 1
    hit = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, tools=WEATHER, tool_choice=choice
    )
    assert hit.headers["x-cache"] == "HIT" and whole_calls(hit.parse()) == calls


def test_different_tools_or_tool_choice_never_share_an_entry(oai: OpenAI) -> None:
    prompt = user("Find the opening hours of the Louvre")
    base = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, tools=WEATHER
    )
    assert base.headers["x-cache"] == "MISS"
    other = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, tools=OTHER_TOOLS
    )
    assert other.headers["x-cache"] == "MISS"
    assert [name for _, name, _ in whole_calls(other.parse())] == ["search_web"]
    forced: Any = {"type": "function", "function": {"name": "get_time"}}
    chosen = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, tools=WEATHER, tool_choice=forced
    )
    assert chosen.headers["x-cache"] == "MISS"
    without = oai.chat.completions.with_raw_response.create(model=MODEL, messages=prompt)
    assert without.headers["x-cache"] == "MISS" and without.parse().choices[0].message.content
    # and each is now a hit for its own tool set only
    for tools, kwargs in ((WEATHER, {}), (OTHER_TOOLS, {}), (WEATHER, {"tool_choice": forced})):
        r = oai.chat.completions.with_raw_response.create(
            model=MODEL, messages=prompt, tools=tools, **kwargs
        )
        assert r.headers["x-cache"] == "HIT"


def test_legacy_functions_and_tool_turns_still_pass_through(oai: OpenAI) -> None:
    functions: Any = [{"name": "now", "parameters": {"type": "object", "properties": {}}}]
    legacy = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("What time is it?"), functions=functions
    )
    assert (legacy.headers["x-cache"], legacy.headers["x-cache-reason"]) == ("BYPASS", "tools")
    turns: Any = [
        {"role": "user", "content": "What is the weather in Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    follow_up = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=turns, tools=WEATHER
    )
    assert follow_up.headers["x-cache"] == "BYPASS"
    assert follow_up.headers["x-cache-reason"] == "message-fields"
