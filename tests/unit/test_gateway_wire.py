"""Gateway without I/O: what is cacheable, OpenAI's shapes, the HTTP error map, the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from curacache.client import CuracacheError, ResourceExhaustedError, ToolCall, ToolCallDelta
from curacache.gateway import wire
from curacache.gateway.config import GatewayConfigError, load_gateway_config
from curacache.gateway.errors import http_error

CHAT = {
    "model": "m",
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
}


def plan(body: dict[str, Any], chat: bool = True, max_turns: int = 8) -> wire.Plan:
    return wire.plan(body, chat=chat, max_turns=max_turns)


def test_plain_chat_is_cacheable_and_keeps_generation_params() -> None:
    p = plan(
        {
            **CHAT,
            "temperature": 0,
            "n": 1,
            "logprobs": False,
            "presence_penalty": 0.5,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert p.bypass is None and p.stream and p.include_usage
    assert p.prompt == CHAT["messages"]
    assert p.params == {
        "temperature": 0,
        "presence_penalty": 0.5,
    }  # defaults left out of the fingerprint


def test_text_content_parts_are_joined() -> None:
    body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
    }
    assert plan(body).prompt == [{"role": "user", "content": "ab"}]


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "tools"),
        ({"n": 3}, "n"),
        ({"logprobs": True}, "logprobs"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "tool", "content": "42", "tool_call_id": "c"},
                ]
            },
            "message-fields",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}
                ]
            },
            "content-parts",
        ),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "no-user-turn"),
        ({"messages": [{"role": "user", "content": "x"}] * 9}, "max-turns"),
    ],
)
def test_what_bypasses_the_cache(extra: dict[str, Any], reason: str) -> None:
    assert plan({**CHAT, **extra}).bypass == reason


def test_completion_prompts() -> None:
    assert plan({"model": "m", "prompt": ["one"]}, chat=False).prompt == "one"
    assert plan({"model": "m", "prompt": ["one", "two"]}, chat=False).bypass == "prompt-list"
    assert plan({"model": "m", "prompt": "p", "best_of": 2}, chat=False).bypass == "n"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": CHAT["messages"]}, "model"),
        ({"model": "m"}, "messages"),
        ({**CHAT, "messages": ["hi"]}, "messages[0]"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "temperature": "warm"}, "temperature"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "seed": 1.5}, "seed"),
        ({**CHAT, "stop": [1]}, "stop"),
    ],
)
def test_bad_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(wire.BadRequest) as err:
        plan(body)
    assert err.value.param == param


def test_chat_stream_events_in_openai_order() -> None:
    w = wire.ChunkWriter(chat=True, model="m", include_usage=True, rid="chatcmpl-1", created=7)
    raw = w.opening() + w.text("Hel") + w.text("lo") + w.finish("stop", wire.usage_body(3, 2, 0))
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    bodies = [json.loads(e[len(b"data: ") :]) for e in events[:-2]]
    assert [b["choices"][0]["delta"] if b["choices"] else None for b in bodies] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        None,
    ]
    assert [b["usage"] for b in bodies[:-1]] == [None] * 4
    assert bodies[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert {(b["id"], b["object"], b["created"], b["model"]) for b in bodies} == {
        ("chatcmpl-1", "chat.completion.chunk", 7, "m")
    }


def test_completion_stream_has_no_opening_and_no_usage_unless_asked() -> None:
    w = wire.ChunkWriter(chat=False, model="m", include_usage=False)
    assert w.opening() == b""
    body = json.loads(w.text("x")[len(b"data: ") :])
    assert (
        body["object"] == "text_completion"
        and body["choices"][0]["text"] == "x"
        and "usage" not in body
    )


def test_whole_bodies() -> None:
    chat = wire.completion_body(
        chat=True, rid="r", created=1, model="m", text="t", finish_reason="stop", usage={}
    )
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"] == "t"
    text = wire.completion_body(
        chat=False, rid="r", created=1, model="m", text="t", finish_reason="length", usage={}
    )
    assert text["object"] == "text_completion" and text["choices"][0]["text"] == "t"


@pytest.mark.parametrize(
    ("code", "source", "status", "retry"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "", 400, None),
        (
            grpc.StatusCode.UNAUTHENTICATED,
            "",
            500,
            None,
        ),  # the gateway's own service_key was refused
        (grpc.StatusCode.PERMISSION_DENIED, "", 403, None),
        (grpc.StatusCode.NOT_FOUND, "backend", 404, None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "", 429, "3"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "backend", 503, "3"),
        (grpc.StatusCode.UNAVAILABLE, "backend", 502, None),
        (grpc.StatusCode.UNAVAILABLE, "", 503, "1"),
        (grpc.StatusCode.CANCELLED, "", 503, "1"),  # dropped from the service's backlog
        (grpc.StatusCode.DEADLINE_EXCEEDED, "backend", 504, None),
        (grpc.StatusCode.INTERNAL, "", 500, None),
    ],
)
def test_service_errors_map_to_http(
    code: grpc.StatusCode, source: str, status: int, retry: str | None
) -> None:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        exc: CuracacheError = ResourceExhaustedError(code, "slow down", 2.5, source=source)
    else:
        exc = CuracacheError(code, "query.params.temperature: must be in [0, 2]", source=source)
    error = http_error(exc)
    assert error.status == status and error.headers().get("Retry-After") == retry
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}
    if status == 400:
        assert error.param == "temperature"


def test_trailing_metadata_keys_match_the_server() -> None:
    # The SDK may not import the server's packages: its copies are checked here.
    from curacache.client import errors as client
    from curacache.server import status as server

    assert client.ERROR_SOURCE_KEY == server.ERROR_SOURCE_KEY
    assert client.GROUP_KEY == server.GROUP_KEY
    assert client.REPLICA_GROUP_KEY == server.REPLICA_GROUP_KEY


def test_config_rejects_bad_settings_by_name(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('listen = "127.0.0.1:8081"\nmax_turns = 0\n')
    with pytest.raises(GatewayConfigError, match="max_turns"):
        load_gateway_config(file=path)
    with pytest.raises(GatewayConfigError, match="colour"):
        load_gateway_config(overrides={"colour": "blue"})
    with pytest.raises(GatewayConfigError, match="server"):
        load_gateway_config(overrides={"server": "nohostport"})
    with pytest.raises(GatewayConfigError, match=r"keys\[1\]"):
        load_gateway_config(
            overrides={"keys": [{"key": "a", "tenant": "t"}, {"key": "a", "tenant": "u"}]}
        )


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def test_cache_tools_makes_tool_requests_cacheable_with_the_tools_in_the_params() -> None:
    body = {**CHAT, "tools": TOOLS, "tool_choice": "auto", "parallel_tool_calls": False}
    assert plan(body).bypass == "tools"  # the default
    p = wire.plan(body, chat=True, max_turns=8, cache_tools=True)
    assert p.bypass is None
    assert (p.params["tools"], p.params["tool_choice"]) == (TOOLS, "auto")  # fingerprinted
    assert p.params["parallel_tool_calls"] is False
    legacy = {**CHAT, "functions": [{"name": "f"}]}  # answers in another shape: passes through
    assert wire.plan(legacy, chat=True, max_turns=8, cache_tools=True).bypass == "tools"
    completion = {"model": "m", "prompt": "p", "tools": TOOLS}
    assert wire.plan(completion, chat=False, max_turns=8, cache_tools=True).bypass == "tools"


CALLS = (ToolCall("call_1", "get_weather", '{"city":"Oslo"}'), ToolCall("call_2", "now", "{}"))


def test_tool_calls_in_a_whole_body() -> None:
    body = wire.completion_body(
        chat=True,
        rid="r",
        created=1,
        model="m",
        text="",
        finish_reason="tool_calls",
        usage={},
        tool_calls=CALLS,
    )
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            },
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
        ],
    }


def test_tool_calls_stream_as_one_delta_per_call_before_the_finish() -> None:
    w = wire.ChunkWriter(chat=True, model="m", include_usage=False, rid="chatcmpl-1", created=7)
    raw = w.opening() + w.tool_calls(CALLS) + w.finish("tool_calls", wire.usage_body(3, 2, 0))
    events = raw.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    choices = [json.loads(e[len(b"data: ") :])["choices"][0] for e in events[:-2]]
    assert [c["delta"].get("tool_calls") for c in choices] == [
        None,
        [{"index": 0, **wire.tool_calls_body(CALLS)[0]}],
        [{"index": 1, **wire.tool_calls_body(CALLS)[1]}],
        None,
    ]
    assert [c["finish_reason"] for c in choices] == [None, None, None, "tool_calls"]


def test_a_streamed_tool_call_piece_names_the_call_only_on_its_first_piece() -> None:
    w = wire.ChunkWriter(chat=True, model="m", include_usage=False)
    first = json.loads(w.tool_call_delta(ToolCallDelta(1, "call_9", "now", ""))[len(b"data: ") :])
    later = json.loads(w.tool_call_delta(ToolCallDelta(1, "", "", '{"a"'))[len(b"data: ") :])
    assert first["choices"][0]["delta"] == {
        "tool_calls": [
            {
                "index": 1,
                "id": "call_9",
                "type": "function",
                "function": {"name": "now", "arguments": ""},
            }
        ]
    }
    assert later["choices"][0]["delta"] == {
        "tool_calls": [{"index": 1, "function": {"arguments": '{"a"'}}]
    }
