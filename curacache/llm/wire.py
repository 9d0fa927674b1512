"""OpenAI wire format: request bodies, SSE parsing, responses and HTTP errors → our types.

Kept apart from the client so the retry/concurrency logic reads without JSON details, and so
the parsing is unit-testable without a server.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from typing import Any

from curacache.llm.errors import (
    BackendError,
    BackendOverloaded,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    UnknownModel,
)
from curacache.llm.types import Completion, GenerationRequest, ToolCall, ToolCallDelta, Usage

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


def path_for(request: GenerationRequest) -> str:
    return "/chat/completions" if request.is_chat else "/completions"


def request_body(request: GenerationRequest, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model}
    if request.messages is not None:
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    else:
        body["prompt"] = request.prompt
    body.update(request.params)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _usage(raw: Mapping[str, Any] | None) -> Usage | None:
    if not raw:
        return None
    prompt = int(raw.get("prompt_tokens") or 0)
    completion = int(raw.get("completion_tokens") or 0)
    return Usage(prompt, completion, int(raw.get("total_tokens") or prompt + completion))


def _first_choice(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for choice in data.get("choices") or ():
        if int(choice.get("index", 0)) == 0:
            return choice
    return None


def _choice_text(choice: Mapping[str, Any], *, chat: bool) -> str:
    if chat:
        holder = choice.get("delta") if "delta" in choice else choice.get("message")
        return str((holder or {}).get("content") or "")
    return str(choice.get("text") or "")


def parse_completion(
    data: Mapping[str, Any], *, request: GenerationRequest, backend: str
) -> Completion:
    """A non-streaming response body."""
    _raise_error_event(data, backend=backend)
    choice = _first_choice(data)
    if choice is None:
        raise BackendUnavailable("backend response has no choices", backend=backend)
    text = _choice_text(choice, chat=request.is_chat)
    usage = _usage(data.get("usage")) or Usage(0, 0, 0)
    calls = ToolCallAssembler()
    calls.feed((choice.get("message") or {}).get("tool_calls") if request.is_chat else None)
    return Completion(
        text,
        choice.get("finish_reason"),
        usage,
        str(data.get("model") or request.model),
        calls.calls(),
    )


class ToolCallAssembler:
    """Joins `tool_calls` entries by their `index`: a stream sends the id and name first, then
    the arguments in pieces; a whole response sends each call at once (no index needed)."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]

    def feed(self, entries: Any) -> list[ToolCallDelta]:
        """Join `entries` in; returns them as deltas (what a stream passes on)."""
        deltas: list[ToolCallDelta] = []
        if not isinstance(entries, list):
            return deltas
        for position, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue
            index = entry.get("index", position)
            index = index if isinstance(index, int) else position
            call = self._calls.setdefault(index, ["", "", ""])
            function = entry.get("function") or {}
            call[0] = str(entry.get("id") or call[0])
            call[1] = str(function.get("name") or call[1])
            call[2] += str(function.get("arguments") or "")
            deltas.append(
                ToolCallDelta(
                    index,
                    str(entry.get("id") or ""),
                    str(function.get("name") or ""),
                    str(function.get("arguments") or ""),
                )
            )
        return deltas

    def calls(self) -> tuple[ToolCall, ...]:
        return tuple(ToolCall(*self._calls[i]) for i in sorted(self._calls) if self._calls[i][1])


def _raise_error_event(data: Mapping[str, Any], *, backend: str) -> None:
    """vLLM and others report a failure inside a 200 stream as an error object."""
    if data.get("error"):
        err = data["error"]
        message = err.get("message", str(err)) if isinstance(err, Mapping) else str(err)
        raise BackendUnavailable(f"backend {backend} reported an error: {message}", backend=backend)
    if data.get("object") == "error":
        raise BackendUnavailable(
            f"backend {backend} reported an error: {data.get('message')}", backend=backend
        )


class StreamAssembler:
    """Folds the `data:` events of one stream into text pieces and the final Completion."""

    def __init__(self, *, request: GenerationRequest, backend: str) -> None:
        self._request = request
        self._backend = backend
        self._parts: list[str] = []
        self._finish_reason: str | None = None
        self._usage: Usage | None = None
        self._model = request.model
        self._tool_calls = ToolCallAssembler()
        self.tool_deltas: list[ToolCallDelta] = []  # the tool-call pieces of the last event
        self.done = False

    def feed(self, payload: str) -> str:
        """Consume one event's data; return its text (maybe empty). Sets `done` on `[DONE]`."""
        self.tool_deltas = []
        if payload.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise BackendUnavailable(
                f"backend {self._backend} sent malformed SSE data: {payload[:80]!r}",
                backend=self._backend,
            ) from exc
        _raise_error_event(data, backend=self._backend)
        self._model = str(data.get("model") or self._model)
        self._usage = _usage(data.get("usage")) or self._usage
        choice = _first_choice(data)
        if choice is None:
            return ""
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        if self._request.is_chat:
            self.tool_deltas = self._tool_calls.feed((choice.get("delta") or {}).get("tool_calls"))
        text = _choice_text(choice, chat=self._request.is_chat)
        if text:
            self._parts.append(text)
        return text

    @property
    def finished(self) -> bool:
        """A finish_reason was seen (a lenient end for servers that omit `[DONE]`)."""
        return self._finish_reason is not None

    def completion(self) -> Completion:
        """The whole response. Without a usage chunk (a backend ignoring `include_usage`), the
        completion token count is estimated as the number of text chunks (servers send about one
        token per chunk) and the prompt count is 0."""
        usage = self._usage or Usage(0, len(self._parts), len(self._parts))
        return Completion(
            "".join(self._parts),
            self._finish_reason,
            usage,
            self._model,
            self._tool_calls.calls(),
        )


async def iter_sse_data(lines: AsyncIterable[str]) -> AsyncGenerator[str, None]:
    """The `data` of each server-sent event; comments, `event:`/`id:` fields are skipped."""
    data: list[str] = []
    async for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds (fractions tolerated) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return body.strip()[:500] or "(no message)"
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            return str(err.get("message") or err.get("detail") or err)[:500]
        return str(err)[:500]
    return str(data)[:500]


def error_for_status(
    status: int, body: str, headers: Mapping[str, str], *, backend: str, model: str
) -> BackendError:
    """The error a non-2xx response stands for."""
    message = _error_message(body)
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return BackendOverloaded(
            f"backend {backend} is overloaded (429): {message}",
            retry_after=1.0 if retry_after is None else retry_after,
            backend=backend,
        )
    if status == 404 and "model" in message.lower():
        return UnknownModel(model, backend=backend)
    if status in (401, 403):
        # Our credentials for the backend are wrong: the caller cannot fix that.
        return BackendUnavailable(
            f"backend {backend} refused our credentials ({status}): {message}",
            backend=backend,
            status=status,
        )
    if status == 404:
        return BackendUnavailable(
            f"backend {backend} has no such endpoint (404; check base_url): {message}",
            backend=backend,
            status=status,
        )
    if status == 408:
        return BackendTimeout(
            f"backend {backend} timed out the request (408): {message}", backend=backend
        )
    if 400 <= status < 500:
        return BackendRejected(message, status=status, backend=backend)
    return BackendUnavailable(
        f"backend {backend} failed ({status}): {message}", backend=backend, status=status
    )
