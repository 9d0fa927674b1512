"""The gateway end to end, driven by the official `openai` client (what users use):
gateway -> real server (SQLite, MiniLM) -> `fake-llm` over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
    ChatCompletionUserMessageParam,
)

from curacache.llm.simulator import SimConfig
from tests.gateway_harness import FAST_SIM, ThreadGateway, user
from tests.server_harness import MODEL, ThreadFakeLLM, ThreadServer, make_config

QUESTION = "How do I reverse a list in Python?"
PARAPHRASE = "How can I reverse a Python list?"
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "now",
            "description": "time",
            "parameters": {"type": "object", "properties": {}},
        },
    }
]


@pytest.fixture(scope="module")
def sim() -> Iterator[ThreadFakeLLM]:
    s = ThreadFakeLLM(FAST_SIM)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server(sim: ThreadFakeLLM, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    config = make_config(
        "sqlite",
        tmp_path_factory.mktemp("gw") / "data",
        None,
        **{
            "cache.embedder": "minilm",
            "cache.backends": f"sim={sim.base_url}",
            "cache.default_model": MODEL,
        },
    )
    s = ThreadServer(config)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gateway(server: ThreadServer) -> Iterator[ThreadGateway]:
    g = ThreadGateway(server.target)
    yield g
    g.stop()


@pytest.fixture
def oai(gateway: ThreadGateway) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.base_url, api_key="unused-on-loopback", max_retries=0) as client:
        yield client


def test_chat_miss_then_paraphrase_hit_with_cache_headers(oai: OpenAI) -> None:
    miss = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(QUESTION), temperature=0
    )
    assert miss.headers["x-cache"] == "MISS"
    first = miss.parse()
    assert first.object == "chat.completion" and first.choices[0].message.role == "assistant"
    assert first.usage is not None and first.usage.completion_tokens > 0
    assert first.choices[0].finish_reason == "stop"
    hit = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(PARAPHRASE), temperature=0
    )
    assert hit.headers["x-cache"] == "HIT"
    assert float(hit.headers["x-cache-similarity"]) >= 0.9
    assert hit.headers["x-cache-category"] == "code" and hit.headers["x-cache-entry"]
    again = hit.parse()
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage is not None and again.usage.total_tokens == first.usage.total_tokens


def test_chat_stream_with_usage_then_streamed_hit(oai: OpenAI) -> None:
    messages = user("Explain how a hash map handles collisions")
    chunks = list(
        oai.chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and usage.completion_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=messages, stream=True
    ) as response:
        assert response.headers["x-cache"] == "HIT"
        replay = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert replay == text


def test_completions_stream_and_non_stream(oai: OpenAI) -> None:
    whole = oai.completions.with_raw_response.create(
        model=MODEL, prompt="Write a limerick about sorting", max_tokens=20
    )
    body = whole.parse()
    assert whole.headers["x-cache"] == "MISS" and body.object == "text_completion"
    streamed = list(
        oai.completions.create(
            model=MODEL, prompt="Write a limerick about sorting", max_tokens=20, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in streamed) == body.choices[0].text
    assert (
        streamed[-1].choices[0].finish_reason == "length"
        or streamed[-1].choices[0].finish_reason == "stop"
    )


def test_no_store_is_never_stored_and_no_cache_skips_the_lookup(oai: OpenAI) -> None:
    prompt = user("What is the capital of Mongolia, in one word?")
    first = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, extra_headers={"Cache-Control": "no-store"}
    )
    assert first.headers["x-cache"] == "BYPASS"
    second = oai.chat.completions.with_raw_response.create(model=MODEL, messages=prompt)
    assert second.headers["x-cache"] == "MISS"  # the no-store answer was not kept
    third = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, extra_headers={"Cache-Control": "no-cache"}
    )
    assert third.headers["x-cache"] == "MISS" and third.headers["x-cache-reason"] == "no_cache"
    assert (
        oai.chat.completions.with_raw_response.create(model=MODEL, messages=prompt).headers[
            "x-cache"
        ]
        == "HIT"
    )


def test_a_whole_miss_names_the_entry_it_was_stored_under(oai: OpenAI) -> None:
    prompt = user("Which planet has the longest day?")
    miss = oai.chat.completions.with_raw_response.create(model=MODEL, messages=prompt)
    entry = miss.headers["x-cache-entry"]
    assert miss.headers["x-cache"] == "MISS" and entry
    # no-cache skips the lookup (no candidate at all) and stores again, under the same id
    again = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=prompt, extra_headers={"Cache-Control": "no-cache"}
    )
    assert again.headers["x-cache"] == "MISS" and again.headers["x-cache-entry"] == entry
    hit = oai.chat.completions.with_raw_response.create(model=MODEL, messages=prompt)
    assert hit.headers["x-cache"] == "HIT" and hit.headers["x-cache-entry"] == entry
    refused = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Name three moons of Jupiter"), max_tokens=2
    )  # cut at max_tokens: not admitted, so no entry to name
    assert refused.headers["x-cache"] == "MISS" and refused.headers["x-cache-entry"] == ""


def test_category_header_and_stricter_threshold(oai: OpenAI) -> None:
    oai.chat.completions.create(
        model=MODEL,
        messages=user("How do I open a file in Rust?"),
        extra_headers={"X-Cache-Category": "knowledge"},
    )
    strict = oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=user("How can I open a file using Rust?"),
        extra_headers={"X-Cache-Category": "knowledge", "X-Cache-Threshold": "0.9999"},
    )
    assert strict.headers["x-cache"] == "MISS" and strict.headers["x-cache-category"] == "knowledge"
    assert float(strict.headers["x-cache-similarity"]) < 0.9999


def test_bypass_requests_reach_the_backend_untouched_and_still_stream(
    oai: OpenAI, sim: ThreadFakeLLM
) -> None:
    tools = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=user(QUESTION), tools=TOOLS
    )
    assert tools.headers["x-cache"] == "BYPASS" and tools.headers["x-cache-reason"] == "tools"
    calls = tools.parse().choices[0].message.tool_calls
    assert calls and isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "now"
    for kwargs, reason in (({"n": 2}, "n"), ({"logprobs": True}, "logprobs")):
        r = oai.chat.completions.with_raw_response.create(
            model=MODEL, messages=user(QUESTION), **kwargs
        )
        assert (r.headers["x-cache"], r.headers["x-cache-reason"]) == ("BYPASS", reason)
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=user(QUESTION), tools=TOOLS, stream=True
    ) as response:
        assert response.headers["x-cache"] == "BYPASS"
        deltas = [c.choices[0].delta for c in response.parse() if c.choices]
        assert sum(len(d.tool_calls or ()) for d in deltas) > 1  # the arguments, in pieces
    with oai.chat.completions.with_streaming_response.create(
        model=MODEL, messages=user(QUESTION), n=2, stream=True
    ) as response:
        assert response.headers["x-cache"] == "BYPASS"
        assert "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)


def test_sampled_request_in_a_category_that_does_not_cache_it_bypasses(oai: OpenAI) -> None:
    prompt = user("Write a poem about the sea")
    for _ in range(2):
        r = oai.chat.completions.with_raw_response.create(
            model=MODEL, messages=prompt, temperature=0.9
        )
        assert (r.headers["x-cache"], r.headers["x-cache-reason"]) == ("BYPASS", "nondeterministic")


def test_long_conversation_bypasses(oai: OpenAI, gateway: ThreadGateway) -> None:
    turns: list[ChatCompletionMessageParam] = [
        ChatCompletionUserMessageParam(role="user", content=f"turn {i}")
        if i % 2 == 0
        else ChatCompletionAssistantMessageParam(role="assistant", content=f"turn {i}")
        for i in range(gateway.config.max_turns + 1)
    ]
    r = oai.chat.completions.with_raw_response.create(model=MODEL, messages=turns)
    assert (r.headers["x-cache"], r.headers["x-cache-reason"]) == ("BYPASS", "max-turns")


def test_models_healthz_metrics_and_feedback(oai: OpenAI, gateway: ThreadGateway) -> None:
    assert [m.id for m in oai.models.list().data] == [MODEL]
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    oai.chat.completions.create(model=MODEL, messages=user("What does HTTP 418 mean?"))
    hit = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=user("What does HTTP 418 mean?")
    )
    entry = hit.headers["x-cache-entry"]
    fb = httpx.post(f"{gateway.base_url}/cache/feedback", json={"entry_id": entry, "correct": True})
    assert (
        fb.status_code == 200 and fb.json()["entry_id"] == entry and 0 < fb.json()["threshold"] <= 1
    )
    from prometheus_client.parser import text_string_to_metric_families

    families = {
        f.name: f for f in text_string_to_metric_families(httpx.get(f"{gateway.url}/metrics").text)
    }
    results = {
        s.labels["result"]
        for s in families["curacache_gateway_cache"].samples
        if s.name.endswith("_total")
    }
    assert {"hit", "miss"} <= results
    assert any(s.labels["status"] == "200" for s in families["curacache_gateway_requests"].samples)
    assert "curacache_gateway_request_seconds" in families


@pytest.mark.parametrize(
    ("body", "headers", "status", "param"),
    [
        ({"messages": user("hi")}, {}, 400, "model"),
        ({"model": MODEL}, {}, 400, "messages"),
        ({"model": MODEL, "messages": user("hi"), "temperature": "hot"}, {}, 400, "temperature"),
        ({"model": MODEL, "messages": user("hi"), "temperature": 7}, {}, 400, "temperature"),
        (
            {"model": MODEL, "messages": user("hi")},
            {"X-Cache-Threshold": "2"},
            400,
            "X-Cache-Threshold",
        ),
        (
            {"model": MODEL, "messages": user("hi")},
            {"Cache-Control": "max-age=soon"},
            400,
            "Cache-Control",
        ),
        ({"model": "no-such-model", "messages": user("hi")}, {}, 404, "model"),
    ],
)
def test_errors_in_openai_shape(
    gateway: ThreadGateway, body: dict[str, Any], headers: dict[str, str], status: int, param: str
) -> None:
    r = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert param in error["message"]


def test_error_mapping_through_the_official_client(oai: OpenAI, gateway: ThreadGateway) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=user("hi"))
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=user("hi"), top_p=3)
    big = httpx.post(
        f"{gateway.base_url}/chat/completions",
        content=b"x" * (gateway.config.max_body_bytes + 1),
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413 and big.json()["error"]["param"] == "body"
    assert (
        httpx.post(f"{gateway.base_url}/chat/completions", content=b"{not json").status_code == 400
    )


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        ("429,times=9,retry-after=0", 503, "backend_overloaded"),
        ("503,times=9,retry-after=0", 502, "backend_error"),
        ("500", 502, "backend_error"),
    ],
)
def test_backend_failures_map_to_http_and_are_never_cached(
    gateway: ThreadGateway, fault: str, status: int, code: str
) -> None:
    body = {
        "model": MODEL,
        "messages": user(f"Summarise the plot of Hamlet [[fake-fault:{fault}]]"),
    }
    r = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=60)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    if status == 503:
        assert r.headers["retry-after"]
    again = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=60)
    assert again.status_code == status  # the failure was not cached as an answer


def test_sse_framing_byte_by_byte(gateway: ThreadGateway) -> None:
    body = {
        "model": MODEL,
        "messages": user("Name three prime numbers"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(r.iter_raw())
    assert raw.endswith(b"data: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    payloads = [json.loads(e[len(b"data: ") :]) for e in events[:-2]]
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events[:-1])
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert len({p["id"] for p in payloads}) == 1 and len({p["created"] for p in payloads}) == 1
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert (
        payloads[-2]["choices"][0]["finish_reason"] == "stop"
        and payloads[-2]["choices"][0]["delta"] == {}
    )
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] > 0


def test_concurrent_equivalent_misses_make_one_backend_call(
    gateway: ThreadGateway, sim: ThreadFakeLLM
) -> None:
    prompt = user("Explain the difference between TCP and UDP in two sentences")
    served_before = sim.sim.stats.requests_received

    async def burst() -> list[str | None]:
        async with openai.AsyncOpenAI(
            base_url=gateway.base_url, api_key="x", max_retries=0
        ) as client:
            calls = [
                client.chat.completions.create(model=MODEL, messages=prompt, temperature=0)
                for _ in range(10)
            ]
            return [r.choices[0].message.content for r in await asyncio.gather(*calls)]

    answers = asyncio.run(burst())
    assert len(set(answers)) == 1
    assert sim.sim.stats.requests_received - served_before == 1


def test_first_token_reaches_the_client_before_the_backend_finishes(
    server: ThreadServer, tmp_path: Path
) -> None:
    slow = ThreadFakeLLM(SimConfig(ttft_ms=100, tokens_per_s=20, max_concurrency=2))
    try:
        config = make_config(
            "sqlite",
            tmp_path / "data",
            None,
            **{
                "cache.embedder": "hashing",
                "cache.backends": f"slow={slow.base_url}",
                "cache.default_model": MODEL,
            },
        )
        srv = ThreadServer(config)
        gw = ThreadGateway(srv.target)
        try:
            body = {
                "model": MODEL,
                "messages": user("Tell me a long story"),
                "stream": True,
                "max_tokens": 30,
            }
            started = time.monotonic()
            arrivals = []
            with httpx.stream(
                "POST", f"{gw.base_url}/chat/completions", json=body, timeout=60
            ) as r:
                for line in r.iter_lines():
                    if (
                        line.startswith("data: {")
                        and '"content":"' in line
                        and '"content":""' not in line
                    ):
                        arrivals.append(time.monotonic() - started)
            # Decoding at 20 tokens/s spreads the tokens over most of the call; a buffering
            # gateway would deliver them all at once, at the end.
            assert len(arrivals) >= 5
            assert arrivals[0] < 0.5 * arrivals[-1]
        finally:
            gw.stop()
            srv.stop()
    finally:
        slow.stop()


def test_service_restart_gives_503_then_reconnects(tmp_path: Path, sim: ThreadFakeLLM) -> None:
    settings = {
        "cache.embedder": "hashing",
        "cache.backends": f"sim={sim.base_url}",
        "cache.default_model": MODEL,
    }
    srv = ThreadServer(make_config("sqlite", tmp_path / "data", None, **settings))
    port = srv.port
    gw = ThreadGateway(srv.target)
    try:
        body = {"model": MODEL, "messages": user("ping")}
        assert (
            httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30).status_code == 200
        )
        srv.stop()
        started = time.monotonic()
        down = httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30)
        assert (
            down.status_code == 503
            and down.headers["retry-after"]
            and time.monotonic() - started < 10
        )
        assert down.json()["error"]["code"] == "service_unavailable"
        assert httpx.get(f"{gw.url}/healthz", timeout=30).status_code == 503
        srv = ThreadServer(
            make_config("sqlite", tmp_path / "data", None, **{**settings, "port": port})
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (
                httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30).status_code
                == 200
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the gateway did not reconnect to the restarted service")
    finally:
        gw.stop()
        srv.stop()


def test_keys_map_to_tenants_and_unknown_keys_get_401(server: ThreadServer) -> None:
    gw = ThreadGateway(
        server.target, keys=[{"key": "sk-a", "tenant": "ten-a"}, {"key": "sk-b", "tenant": "ten-b"}]
    )
    try:
        with (
            OpenAI(base_url=gw.base_url, api_key="sk-a", max_retries=0) as a,
            OpenAI(base_url=gw.base_url, api_key="sk-b", max_retries=0) as b,
            OpenAI(base_url=gw.base_url, api_key="sk-wrong", max_retries=0) as wrong,
        ):
            prompt = user("What is the boiling point of water at sea level?")
            a.chat.completions.create(model=MODEL, messages=prompt)
            assert (
                a.chat.completions.with_raw_response.create(model=MODEL, messages=prompt).headers[
                    "x-cache"
                ]
                == "HIT"
            )
            assert (
                b.chat.completions.with_raw_response.create(model=MODEL, messages=prompt).headers[
                    "x-cache"
                ]
                == "MISS"
            )
            with pytest.raises(openai.AuthenticationError):
                wrong.chat.completions.create(model=MODEL, messages=prompt)
        assert httpx.post(f"{gw.base_url}/chat/completions", json={}).status_code == 401
    finally:
        gw.stop()


def test_gateway_refuses_to_listen_beyond_loopback_without_keys() -> None:
    from curacache.gateway.config import GatewayConfigError, load_gateway_config

    with pytest.raises(GatewayConfigError, match="keys"):
        load_gateway_config(overrides={"listen": "0.0.0.0:8080"})
    assert load_gateway_config(
        overrides={"listen": "0.0.0.0:8080", "keys": [{"key": "k", "tenant": "t"}]}
    ).keys == {"k": "t"}


def test_gateway_uses_its_own_service_key(sim: ThreadFakeLLM, tmp_path: Path) -> None:
    """With auth on at the service, the gateway authenticates as itself; a tenant its key does
    not cover is refused (403), and a wrong service key is the gateway's problem, not the user's."""
    keys = [{"key": "gw-key", "tenants": ["ten-a"]}]
    settings = {
        "cache.embedder": "hashing",
        "cache.backends": f"sim={sim.base_url}",
        "cache.default_model": MODEL,
        "auth.keys": keys,
    }
    srv = ThreadServer(make_config("sqlite", tmp_path / "data", None, **settings))
    users = [{"key": "sk-a", "tenant": "ten-a"}, {"key": "sk-z", "tenant": "ten-z"}]
    good = ThreadGateway(srv.target, service_key="gw-key", keys=users)
    bad = ThreadGateway(srv.target, service_key="not-the-key", keys=users)
    try:
        body = {"model": MODEL, "messages": user("What is a monad?")}
        ok = httpx.post(
            f"{good.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-a"}
        )
        assert ok.status_code == 200 and ok.headers["x-cache"] == "MISS"
        other = httpx.post(
            f"{good.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-z"}
        )
        assert other.status_code == 403 and other.json()["error"]["type"] == "permission_error"
        wrong = httpx.post(
            f"{bad.base_url}/chat/completions", json=body, headers={"Authorization": "Bearer sk-a"}
        )
        assert wrong.status_code == 500 and wrong.json()["error"]["code"] == "gateway_misconfigured"
    finally:
        good.stop()
        bad.stop()
        srv.stop()


def test_backend_timeout_is_504_and_tenant_rate_limit_is_429(
    sim: ThreadFakeLLM, tmp_path: Path
) -> None:
    backend = [{"name": "sim", "base_url": sim.base_url, "timeout_s": 1.0, "max_retries": 0}]
    settings = {
        "cache.embedder": "hashing",
        "cache.backends": backend,
        "cache.default_model": MODEL,
        "limits.tenant_rate": 0.5,
        "limits.tenant_burst": 3.0,
    }
    srv = ThreadServer(make_config("sqlite", tmp_path / "data", None, **settings))
    gw = ThreadGateway(srv.target)
    try:
        hang = {
            "model": MODEL,
            "messages": user("Tell me a story [[fake-fault:hang]]"),
            "stream": True,
        }
        r = httpx.post(f"{gw.base_url}/chat/completions", json=hang, timeout=30)
        assert (
            r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        )  # before any byte: a real status
        statuses = [
            httpx.post(
                f"{gw.base_url}/chat/completions",
                json={"model": MODEL, "messages": user(f"q{i}")},
                timeout=30,
            )
            for i in range(4)
        ]
        limited = [s for s in statuses if s.status_code == 429]
        assert limited, [s.status_code for s in statuses]
        assert int(limited[0].headers["retry-after"]) >= 1
        assert limited[0].json()["error"]["type"] == "rate_limit_error"
    finally:
        gw.stop()
        srv.stop()
