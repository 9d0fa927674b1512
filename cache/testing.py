"""In-memory fakes of the ports, for unit tests here and in the server's own tests.

They behave like the real wiring described in `cache.ports` (payloads round-trip through
`CacheEntry.to_bytes`, shared entries are visible through the reserved tenant "*"), with
knobs to make backends slow, failing or counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence

import numpy as np

from cache.options import CacheOptions
from cache.policy import CategoryPolicy, default_policies
from cache.ports import Leases
from cache.service import SemanticCache
from cache.types import SHARED_TENANT, CacheEntry, Chunk, FinalResult, LookupRequest


def reference_policies() -> dict[str, CategoryPolicy]:
    """DESIGN §5's starting (threshold, min_threshold) pairs: fixed numbers for tests built on
    hand-made vectors, independent of the data-tuned shipped thresholds."""
    start = {
        "default": (0.88, 0.85),
        "code": (0.90, 0.88),
        "conversation": (0.85, 0.82),
        "knowledge": (0.88, 0.85),
        "time_sensitive": (0.95, 0.93),
        "health": (0.95, 0.95),
        "legal": (0.95, 0.95),
        "assistant": (0.92, 0.90),
    }
    return {
        name: dataclasses.replace(policy, threshold=start[name][0], min_threshold=start[name][1])
        for name, policy in default_policies().items()
    }


class FakeClock:
    """Time moves only when a test says so."""

    def __init__(self, *, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds


class FakeEmbedder:
    """Hand-made vectors for known texts, a deterministic hashed bag of words otherwise."""

    def __init__(
        self,
        *,
        dim: int,
        table: Mapping[str, Sequence[float]] | None = None,
        clock: FakeClock | None = None,
        cost_s: float = 0.0,
    ) -> None:
        self.dim = dim
        self._table = {k: _unit(np.asarray(v, dtype=np.float32)) for k, v in (table or {}).items()}
        self._clock = clock
        self._cost = cost_s
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self._clock is not None:
            self._clock.advance(self._cost)
        return np.stack([self._table[t] if t in self._table else self._hash(t) for t in texts])

    def _hash(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in text.lower().split():
            h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            vec[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        return _unit(vec) if vec.any() else _unit(np.ones(self.dim, dtype=np.float32))


class InMemoryRepository:
    """Every category's entries; exact cosine search over what the tenant may see."""

    def __init__(self, *, clock: FakeClock | None = None, search_cost_s: float = 0.0) -> None:
        self._docs: dict[str, tuple[bytes, np.ndarray, tuple[str, ...]]] = {}
        self._clock = clock
        self._cost = search_cost_s
        self.gets = 0

    def __len__(self) -> int:
        return len(self._docs)

    def count(self, category: str) -> int:
        """Entries stored under `category` (tests check where admission and eviction put things)."""
        return sum(
            CacheEntry.from_bytes(payload).category == category
            for payload, _, _ in self._docs.values()
        )

    async def put(self, entry: CacheEntry, vector: np.ndarray) -> None:
        self._docs[entry.entry_id] = (
            entry.to_bytes(),
            _unit(np.asarray(vector, np.float32)),
            entry.access_list(),
        )

    async def get(self, entry_ids: Sequence[str]) -> dict[str, CacheEntry]:
        self.gets += 1
        return {i: CacheEntry.from_bytes(self._docs[i][0]) for i in entry_ids if i in self._docs}

    async def delete(self, entry_ids: Sequence[str]) -> int:
        return sum(self._docs.pop(i, None) is not None for i in set(entry_ids))

    async def search(self, vector: np.ndarray, tenant: str, k: int) -> list[tuple[str, float]]:
        if self._clock is not None:
            self._clock.advance(self._cost)
        scored = [
            (i, float(np.dot(vec, vector)))
            for i, (_, vec, access) in self._docs.items()
            if tenant in access or SHARED_TENANT in access
        ]
        scored.sort(key=lambda p: -p[1])
        return scored[:k]

    async def scan(self) -> AsyncIterator[CacheEntry]:
        for payload, _, _ in list(self._docs.values()):
            yield CacheEntry.from_bytes(payload)


class FakeClassifier:
    """Keyword -> category, with a fixed confidence; `default` otherwise."""

    def __init__(
        self, *, vectors: Mapping[str, Sequence[float]] | None = None, confidence: float = 0.9
    ) -> None:
        self._centroids = {k: _unit(np.asarray(v, np.float32)) for k, v in (vectors or {}).items()}
        self._confidence = confidence

    def classify(self, vector: np.ndarray) -> tuple[str, float]:
        if not self._centroids:
            return "default", 1.0
        best = max(self._centroids, key=lambda c: float(np.dot(self._centroids[c], vector)))
        return best, self._confidence


class FakeBackend:
    """Answers `answer(request)`, in chunks; can wait on a gate, fail, or truncate. Counts calls."""

    def __init__(
        self,
        *,
        chunks: int = 3,
        load: float = 0.0,
        clock: FakeClock | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self.calls = 0
        self.load_value = load
        self.gate: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.finish_reason = "stop"
        self.text: str | None = None
        self._chunks = chunks
        self._clock = clock
        self._latency = latency_s

    def load(self, model: str | None) -> float:
        return self.load_value

    @staticmethod
    def answer(request: LookupRequest) -> str:
        return f"answer to: {request.query_text} (model={request.model or '-'})"

    async def stream(self, request: LookupRequest) -> AsyncIterator[Chunk | FinalResult]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self._clock is not None:
            self._clock.advance(self._latency)
        text = self.text if self.text is not None else self.answer(request)
        size = max(1, -(-len(text) // self._chunks))
        for i in range(0, len(text), size):
            if self.error is not None and i > 0:
                raise self.error
            yield Chunk(text=text[i : i + size])
            await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        yield FinalResult(
            finish_reason=self.finish_reason, usage={"completion_tokens": len(text.split())}
        )


def _unit(vec: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vec))
    return (vec / norm).astype(np.float32) if norm else vec.astype(np.float32)


class FakePorts:
    """Fakes wired together (one repository for every category, shared clock) plus a builder
    for a SemanticCache over them, so each test states only what it varies."""

    def __init__(
        self,
        *,
        dim: int = 4,
        table: Mapping[str, Sequence[float]] | None = None,
        classifier: FakeClassifier | None = None,
    ) -> None:
        self.clock = FakeClock()
        self.embedder = FakeEmbedder(dim=dim, table=table, clock=self.clock)
        self.backend = FakeBackend(clock=self.clock)
        self.classifier = classifier
        self.repo: InMemoryRepository = InMemoryRepository(clock=self.clock)

    def cache(
        self,
        *,
        policies: Mapping[str, CategoryPolicy] | None = None,
        options: CacheOptions | None = None,
        confidence_floor: float = 0.5,
        leases: Leases | None = None,
    ) -> SemanticCache:
        return SemanticCache(
            repository=self.repo,
            embedder=self.embedder,
            classifier=self.classifier,
            backend=self.backend,
            clock=self.clock,
            policies=policies or reference_policies(),
            confidence_floor=confidence_floor,
            options=options or CacheOptions(),
            leases=leases,
        )
