"""OpenAI's HTTP shapes: requests in (what may be cached, and how), responses and SSE chunks out.

Pure functions over dicts, no I/O, so every shape is unit-tested byte for byte.

A request is *cacheable* when its answer is one text for one prompt: one choice (`n` = 1), no
logprobs, plain text messages with at least one user turn and at most `max_turns` of them, and
no tools or functions -- unless the gateway is configured with `cache_tools`: then a chat
request that offers `tools` is cached too, its tool definitions and `tool_choice` part of the
fingerprint (different tool sets never share an entry), and the model's `tool_calls` are stored
and replayed. Anything else passes through to the backend untouched (`X-Cache: BYPASS`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from curacache.client.cache_types import ToolCall, ToolCallDelta

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"

# Fields that describe the request rather than generation; everything else is a generation
# parameter the backend receives verbatim (and the cache fingerprints).
_STRUCTURAL = frozenset({"model", "messages", "prompt", "stream", "stream_options"})
_TOOL_FIELDS = ("tools", "functions", "tool_choice", "function_call", "parallel_tool_calls")
# What `cache_tools` lets through: the tools API. The legacy `functions` API answers in another
# shape (`function_call`) and still passes through.
_LEGACY_FUNCTION_FIELDS = ("functions", "function_call")
_CHAT_ROLES = frozenset({"system", "developer", "user", "assistant"})
_INT64 = 1 << 63


class BadRequest(ValueError):
    """The request is wrong; `param` names the field the way the client sent it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one request: the cache call's inputs, or why it bypasses the cache."""

    chat: bool
    model: str
    stream: bool
    include_usage: bool
    bypass: str | None = None  # why the cache is skipped; None: cacheable
    prompt: str | list[dict[str, str]] = ""  # completions: the prompt; chat: the messages
    params: dict[str, Any] = field(default_factory=dict)


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequest("body", "is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body", "must be a JSON object")
    return body


class _Uncacheable(Exception):
    """The request is valid but the cache cannot represent it; `reason` is reported."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def plan(body: Mapping[str, Any], *, chat: bool, max_turns: int, cache_tools: bool = False) -> Plan:
    """Validate what the gateway itself reads and decide cacheable vs pass-through.
    `cache_tools`: chat requests offering `tools` are cacheable (see the module docstring)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model", "is required (a string)")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream", "must be a boolean")
    options = body.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise BadRequest("stream_options", "must be an object")
    include_usage = bool(options.get("include_usage", False))
    params = _params(body)
    try:
        prompt = _chat_prompt(body, max_turns) if chat else _completion_prompt(body)
        _check_cacheable(body, params, tools_ok=cache_tools and chat)
    except _Uncacheable as why:
        return Plan(
            chat=chat, model=model, stream=stream, include_usage=include_usage, bypass=why.reason
        )
    # n = 1 and logprobs = false are the defaults: leave them out of the fingerprint
    params = {k: v for k, v in params.items() if not (k == "n" or (k == "logprobs" and v is False))}
    return Plan(
        chat=chat,
        model=model,
        stream=stream,
        include_usage=include_usage,
        prompt=prompt,
        params=params,
    )


def _chat_prompt(body: Mapping[str, Any], max_turns: int) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages", "is required (a non-empty list)")
    out: list[dict[str, str]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise BadRequest(f"messages[{i}]", "must be an object with a string role")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only is cacheable
            if not all(
                isinstance(p, Mapping)
                and p.get("type") == "text"
                and isinstance(p.get("text"), str)
                for p in content
            ):
                raise _Uncacheable("content-parts")
            content = "".join(p["text"] for p in content)
        if (
            m["role"] not in _CHAT_ROLES
            or set(m) - {"role", "content"}
            or not isinstance(content, str)
        ):
            raise _Uncacheable("message-fields")  # tool turns, tool_calls, names, audio, ...
        out.append({"role": m["role"], "content": content})
    if not any(m["role"] == "user" for m in out):
        raise _Uncacheable("no-user-turn")
    if len(out) > max_turns:
        raise _Uncacheable("max-turns")
    return out


def _completion_prompt(body: Mapping[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt:
        raise _Uncacheable("prompt-list")  # several prompts (or token ids): several answers
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt", "is required (a non-empty string)")
    return prompt


def _params(body: Mapping[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in body.items() if k not in _STRUCTURAL and v is not None}
    for name in ("temperature", "top_p"):
        value = params.get(name)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise BadRequest(name, "must be a number")
    for name in ("max_tokens", "max_completion_tokens", "n", "best_of", "seed"):
        value = params.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not -_INT64 <= value < _INT64
        ):
            raise BadRequest(name, "must be an integer")
        if name != "seed" and value is not None and value <= 0:
            raise BadRequest(name, "must be positive")
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise BadRequest("stop", "must be a string or a list of strings")
    return params


def _check_cacheable(body: Mapping[str, Any], params: Mapping[str, Any], *, tools_ok: bool) -> None:
    tool_fields = _LEGACY_FUNCTION_FIELDS if tools_ok else _TOOL_FIELDS
    if any(body.get(name) for name in tool_fields):
        raise _Uncacheable("tools")
    if params.get("n", 1) > 1 or params.get("best_of", 1) > 1:
        raise _Uncacheable("n")
    if params.get("logprobs") or params.get("top_logprobs") or params.get("echo"):
        raise _Uncacheable("logprobs")


# -- responses ---------------------------------------------------------------------------------


def response_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def usage_body(prompt_tokens: int, completion_tokens: int, total_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens or prompt_tokens + completion_tokens,
    }


def tool_calls_body(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def completion_body(
    *,
    chat: bool,
    rid: str,
    created: int,
    model: str,
    text: str,
    finish_reason: str,
    usage: dict[str, int],
    tool_calls: Sequence[ToolCall] = (),
) -> dict[str, Any]:
    """A whole non-streamed response: `chat.completion` or `text_completion`. With tool calls
    the message's `content` is null when the model wrote no text, as OpenAI sends it."""
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if tool_calls:
            message["content"] = text or None
            message["tool_calls"] = tool_calls_body(tool_calls)
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    else:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


@dataclass(slots=True)
class ChunkWriter:
    """SSE events of one streamed response, in OpenAI's order: (chat) a role delta, text
    deltas, a final chunk carrying `finish_reason`, (include_usage) a usage chunk with no
    choices, then `data: [DONE]`. With include_usage every other chunk has `"usage": null`."""

    chat: bool
    model: str
    include_usage: bool
    rid: str = ""
    created: int = 0

    def __post_init__(self) -> None:
        self.rid = self.rid or response_id(self.chat)
        self.created = self.created or int(time.time())

    def _event(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.rid,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        return sse(body)

    def _choice(
        self, text: str | None, finish_reason: str | None, *, role: bool = False
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"text": text or "", "index": 0, "logprobs": None, "finish_reason": finish_reason}

    def opening(self) -> bytes:
        """Chat streams open with the assistant's role; completions have no opening event."""
        return self._event([self._choice(None, None, role=True)]) if self.chat else b""

    def text(self, text: str) -> bytes:
        return self._event([self._choice(text, None)])

    def tool_call_delta(self, d: ToolCallDelta) -> bytes:
        """A piece of a call as the backend streamed it: id, type and name on its first piece."""
        call: dict[str, Any] = {"index": d.index}
        if d.id:
            call.update(id=d.id, type="function")
        call["function"] = (
            {"name": d.name, "arguments": d.arguments} if d.name else {"arguments": d.arguments}
        )
        return self._event(
            [
                {
                    "index": 0,
                    "delta": {"tool_calls": [call]},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
        )

    def tool_calls(self, calls: Sequence[ToolCall]) -> bytes:
        """A replay's calls, each as one delta (id, name and the whole arguments): OpenAI's first
        delta of a call carries id and name and later ones append arguments, and clients join
        them by index, so one delta per call is a valid stream."""
        return b"".join(
            self._event(
                [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": i, **body}]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for i, body in enumerate(tool_calls_body(calls))
        )

    def finish(self, finish_reason: str, usage: dict[str, int]) -> bytes:
        out = self._event([self._choice(None if self.chat else "", finish_reason)])
        if self.include_usage:
            out += self._event([], usage)
        return out + DONE


DONE = b"data: [DONE]\n\n"


def sse(body: Mapping[str, Any]) -> bytes:
    return (
        b"data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
    )
