"""Value types of a generation call, independent of the HTTP wire format.

They are frozen so a request can be shared between the cache (which fingerprints it), the
single-flight table and the backend call without anyone mutating it underneath the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn. `content` is plain text; multi-part content is out of scope here."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class GenerationRequest:
    """A chat (`messages`) or a plain completion (`prompt`) request; exactly one is set.

    `params` holds the OpenAI sampling fields passed through as-is (temperature, top_p,
    max_tokens, seed, stop, ...); it is copied into a read-only mapping. `stream` records what
    the caller asked for; `BackendClient.complete` / `.stream` decide the wire mode themselves.
    """

    model: str
    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be set")
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("exactly one of messages and prompt must be set")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(self.messages))
        for reserved in ("model", "messages", "prompt", "stream", "stream_options"):
            if reserved in self.params:
                raise ValueError(f"params must not contain {reserved!r}; it is a request field")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of call `index` carries its id and
    name, later ones only append to its arguments."""

    index: int
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of the answer as it arrives: text, or (`tool_call` set, `text` "") a piece of a
    tool call. `index` counts the chunks of one response from 0."""

    text: str
    index: int
    tool_call: ToolCallDelta | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call in a response (`tool_calls[]`); `arguments` is the backend's JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole response. From `stream()` it is the last item and `text` joins all chunks;
    `tool_calls` are whole (a stream's argument deltas joined)."""

    text: str
    finish_reason: str | None
    usage: Usage
    model: str
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class ForwardHead:
    """The status line of a forwarded request's response; its body follows as bytes."""

    status: int
    content_type: str
    retry_after: str | None
