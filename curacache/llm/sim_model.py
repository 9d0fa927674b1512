"""The pure parts of the backend simulator (`curacache fake-llm`): deterministic "generation",
token counting, fault specs and a FIFO of decode slots.

Output is a function of (model, messages/prompt, temperature, seed) only, cut at max_tokens, so
a test can compute what a cache hit must return; it is NOT a language model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A fixed vocabulary: words are drawn from it by hash, so the text looks like text in logs.
VOCABULARY: tuple[str, ...] = (
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "was",
    "by",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "which",
    "not",
    "have",
    "has",
    "had",
    "but",
    "all",
    "can",
    "will",
    "one",
    "were",
    "their",
    "there",
    "more",
    "when",
    "what",
    "so",
    "if",
    "out",
    "up",
    "about",
    "into",
    "than",
    "them",
    "some",
    "could",
    "time",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "cache",
    "vector",
    "tenant",
    "index",
    "query",
    "token",
    "model",
    "shard",
    "cluster",
    "search",
    "prompt",
    "answer",
    "latency",
    "memory",
    "thread",
    "kernel",
    "tensor",
    "batch",
    "stream",
    "queue",
    "server",
    "client",
    "backend",
    "request",
    "response",
    "policy",
    "category",
    "threshold",
    "budget",
    "signal",
    "window",
    "metric",
    "record",
    "payload",
    "document",
    "store",
    "grant",
    "revoke",
)
MIN_WORDS, MAX_WORDS = 8, 64
_MARKER = re.compile(r"\[\[fake-fault:([^\]]+)\]\]")
FAULT_KINDS = ("429", "500", "503", "drop", "hang")


@dataclass(frozen=True, slots=True)
class Generated:
    tokens: tuple[str, ...]  # each includes its leading space; "".join(tokens) is the text
    finish_reason: str  # "length" when max_tokens cut the natural answer, "tool_calls", "stop"
    prompt_tokens: int
    # A function call instead of text: (call id, function name); `tokens` are then the pieces
    # of its JSON arguments, streamed as tool_call deltas.
    tool_call: tuple[str, str] | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)


def _tool_to_call(body: Mapping[str, Any]) -> str | None:
    """The function a request makes the simulator call: the one `tool_choice` names, else the
    first of `tools`; None without tools or with tool_choice "none"."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, Mapping):
        return str((choice.get("function") or {}).get("name") or "")
    first = tools[0] if isinstance(tools[0], Mapping) else {}
    return str((first.get("function") or {}).get("name") or "")


def _text_of(body: Mapping[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(str(m.get("content") or "") for m in body["messages"])
    prompt = body.get("prompt")
    return "\n".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt or "")


def count_prompt_tokens(body: Mapping[str, Any]) -> int:
    """Whitespace words of all content, plus one per chat message for its role."""
    words = len(_text_of(body).split())
    return max(1, words + len(body.get("messages") or ()))


def generate(body: Mapping[str, Any]) -> Generated:
    """The deterministic answer to an OpenAI-style request body."""
    tool = _tool_to_call(body)
    key = json.dumps(
        [
            body.get("model"),
            body.get("messages") if "messages" in body else body.get("prompt"),
            body.get("temperature"),
            body.get("seed"),
        ]
        + ([body.get("tools"), body.get("tool_choice")] if tool is not None else []),
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    digest = hashlib.blake2b(key, digest_size=32).digest()
    natural = MIN_WORDS + int.from_bytes(digest[:4], "little") % (MAX_WORDS - MIN_WORDS + 1)
    words: list[str] = []
    block = 0
    while len(words) < natural:
        stream = hashlib.blake2b(digest + block.to_bytes(4, "little"), digest_size=64).digest()
        words.extend(
            VOCABULARY[int.from_bytes(stream[i : i + 2], "little") % len(VOCABULARY)]
            for i in range(0, 64, 2)
        )
        block += 1
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words[:natural])]
    if tool is not None:  # the call's JSON arguments, in pieces of about a token
        arguments = json.dumps({"query": "".join(tokens)})
        pieces = tuple(arguments[i : i + 6] for i in range(0, len(arguments), 6))
        call_id = "call_" + digest[:12].hex()
        return Generated(pieces, "tool_calls", count_prompt_tokens(body), (call_id, tool))
    finish = "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if max_tokens is not None and int(max_tokens) < len(tokens):
        tokens, finish = tokens[: int(max_tokens)], "length"
    stops = body.get("stop")
    stops = [stops] if isinstance(stops, str) else list(stops or ())
    if stops:
        text = "".join(tokens)
        cut = min((text.find(s) for s in stops if s and s in text), default=-1)
        if cut >= 0:
            kept, length = [], 0
            for tok in tokens:
                if length + len(tok) > cut:
                    break
                kept.append(tok)
                length += len(tok)
            tokens, finish = kept, "stop"
    return Generated(tuple(tokens), finish, count_prompt_tokens(body))


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """`KIND[,times=N][,retry-after=S]` from the `x-fake-fault` header or a prompt marker
    `[[fake-fault:...]]`. `times=N` faults only the first N identical requests (so a retry
    succeeds); without it every such request faults."""

    kind: str
    times: int | None = None
    retry_after: float | None = None

    @classmethod
    def parse(cls, spec: str) -> FaultSpec:
        kind, *options = [part.strip() for part in spec.split(",")]
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault must be one of {', '.join(FAULT_KINDS)}, not {kind!r}")
        values = {}
        for option in options:
            name, _, value = option.partition("=")
            if name not in ("times", "retry-after") or not value:
                raise ValueError(f"unknown fault option {option!r} (times=N, retry-after=S)")
            values[name] = value
        times = int(values["times"]) if "times" in values else None
        retry_after = float(values["retry-after"]) if "retry-after" in values else None
        return cls(kind, times, retry_after)


def fault_in(body: Mapping[str, Any], header: str | None) -> str | None:
    """The raw fault spec a request asks for: the header wins over a prompt marker."""
    if header:
        return header.strip()
    match = _MARKER.search(_text_of(body))
    return match.group(1) if match else None


def request_key(body: Mapping[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


class FifoSlots:
    """`capacity` decode slots handed out strictly first come, first served (a GPU batch with a
    waiting queue). `queued` is how many wait now."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def free(self) -> bool:
        return self._busy < self._capacity and not self._waiters

    async def acquire(self) -> None:
        if self.free:
            self._busy += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed to us just as we were cancelled
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self._busy -= 1


def split_due(tokens: Sequence[str], emitted: int, elapsed_s: float, tokens_per_s: float) -> int:
    """How many tokens should have been emitted after `elapsed_s` of decoding (≥ emitted)."""
    return max(emitted, min(len(tokens), int(elapsed_s * tokens_per_s) + 1))
