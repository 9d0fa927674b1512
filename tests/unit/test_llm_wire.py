"""OpenAI wire format helpers: bodies, SSE, assembly of streamed chunks, HTTP errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from curacache.llm import (
    BackendOverloaded,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    GenerationRequest,
    Message,
    UnknownModel,
)
from curacache.llm.types import ToolCall, ToolCallDelta
from curacache.llm.wire import (
    StreamAssembler,
    error_for_status,
    iter_sse_data,
    parse_completion,
    parse_retry_after,
    request_body,
)

CHAT = GenerationRequest(
    model="m", messages=(Message("user", "hi"),), params={"temperature": 0, "max_tokens": 5}
)
TEXT = GenerationRequest(model="m", prompt="hi")


def test_request_body() -> None:
    assert request_body(CHAT, stream=False) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "max_tokens": 5,
        "stream": False,
    }
    streamed = request_body(TEXT, stream=True)
    assert streamed["prompt"] == "hi" and streamed["stream_options"] == {"include_usage": True}


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def test_sse_data_events() -> None:
    events = [
        e
        async for e in iter_sse_data(
            _lines(
                ": keep-alive",
                "event: message",
                'data: {"a":1}',
                "",
                "data:x",
                "data: y",
                "",
                "data: [DONE]",
            )
        )
    ]
    assert events == ['{"a":1}', "x\ny", "[DONE]"]


def _chunk(**fields: object) -> str:
    return json.dumps({"model": "m-served", **fields})


def test_assembler_chat_stream() -> None:
    asm = StreamAssembler(request=CHAT, backend="b")
    texts = [
        asm.feed(_chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}])),
        asm.feed(_chunk(choices=[{"index": 0, "delta": {"content": "Hel"}}])),
        asm.feed(_chunk(choices=[{"index": 0, "delta": {"content": "lo"}}])),
        asm.feed(_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])),
        asm.feed(
            _chunk(
                choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            )
        ),
    ]
    assert texts == ["", "Hel", "lo", "", ""] and not asm.done
    asm.feed("[DONE]")
    assert asm.done
    final = asm.completion()
    assert (final.text, final.finish_reason, final.usage.total_tokens, final.model) == (
        "Hello",
        "stop",
        5,
        "m-served",
    )


def test_assembler_without_usage_estimates_from_chunks() -> None:
    asm = StreamAssembler(request=TEXT, backend="b")
    for piece in ("a", " b", " c"):
        asm.feed(_chunk(choices=[{"index": 0, "text": piece}]))
    asm.feed(_chunk(choices=[{"index": 0, "text": "", "finish_reason": "length"}]))
    assert asm.finished
    final = asm.completion()
    assert (
        final.text == "a b c"
        and final.usage.completion_tokens == 3
        and final.finish_reason == "length"
    )


@pytest.mark.parametrize(
    "event",
    ['{"error": {"message": "CUDA OOM"}}', '{"object": "error", "message": "boom"}', "not json"],
)
def test_assembler_raises_on_an_error_event(event: str) -> None:
    with pytest.raises(BackendUnavailable):
        StreamAssembler(request=CHAT, backend="b").feed(event)


def test_parse_completion() -> None:
    data = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hey"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    final = parse_completion(data, request=CHAT, backend="b")
    assert final.text == "hey" and final.usage.total_tokens == 2
    with pytest.raises(BackendUnavailable):
        parse_completion({"choices": []}, request=CHAT, backend="b")


def test_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


@pytest.mark.parametrize(
    "status,body,kind",
    [
        (429, '{"error": {"message": "slow down"}}', BackendOverloaded),
        (503, "upstream down", BackendUnavailable),
        (500, "", BackendUnavailable),
        (401, '{"error": {"message": "bad key"}}', BackendUnavailable),
        (404, '{"error": {"message": "The model `x` does not exist."}}', UnknownModel),
        (404, "Not Found", BackendUnavailable),
        (408, "", BackendTimeout),
        (400, '{"error": {"message": "maximum context length is 4096 tokens"}}', BackendRejected),
        (422, '{"detail": "bad field"}', BackendRejected),
    ],
)
def test_error_for_status(status: int, body: str, kind: type) -> None:
    error = error_for_status(status, body, {"retry-after": "7"}, backend="b", model="x")
    assert type(error) is kind
    if kind is BackendOverloaded:
        assert (
            isinstance(error, BackendOverloaded)
            and error.retry_after == 7.0
            and "slow down" in str(error)
        )
    if kind is BackendRejected:
        assert "context length" in str(error) or "bad field" in str(error)


def test_tool_call_deltas_are_joined_by_index() -> None:
    asm = StreamAssembler(request=CHAT, backend="b")
    deltas: list[dict] = [
        {"role": "assistant", "content": None},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "f", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]},
        {
            "tool_calls": [
                {"index": 1, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
    ]
    texts, pieces = [], []
    for d in deltas:
        texts.append(asm.feed(_chunk(choices=[{"index": 0, "delta": d}])))
        pieces += asm.tool_deltas
    asm.feed(_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
    asm.feed("[DONE]")
    final = asm.completion()
    assert texts == [""] * 5 and final.text == "" and final.finish_reason == "tool_calls"
    assert final.tool_calls == (ToolCall("call_a", "f", '{"x": 1}'), ToolCall("call_b", "g", "{}"))
    assert pieces == [
        ToolCallDelta(0, "call_a", "f", ""),
        ToolCallDelta(0, "", "", '{"x"'),
        ToolCallDelta(1, "call_b", "g", "{}"),
        ToolCallDelta(0, "", "", ": 1}"),
    ]


def test_parse_completion_with_tool_calls() -> None:
    call = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    data = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                "finish_reason": "tool_calls",
            }
        ]
    }
    final = parse_completion(data, request=CHAT, backend="b")
    assert (final.text, final.tool_calls) == ("", (ToolCall("call_a", "f", "{}"),))
