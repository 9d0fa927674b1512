"""The embedder contract, plus a deterministic hashing embedder for unit tests.

Everything that turns text into vectors (the offline MiniLM model, a remote GPU embedding
server, the batching wrapper) satisfies `Embedder`, so the cache and the server depend on
this Protocol only. Rows are always float32 and L2-normalised: the cache compares prompts
by cosine, and normalised rows make cosine a plain dot product everywhere downstream.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

_TOKEN = re.compile(r"\w+", re.UNICODE)

MAX_EMBED_CHARS = 8192
"""How much of a text an embedder reads: a prefix, so the cost of embedding a request is
bounded whatever its size. MiniLM keeps 256 tokens anyway; 8192 characters is 32 per token,
far above real text (QQP: ~4.5), so only pathological texts (runs of whitespace, 100-character
words) are cut before the model's own truncation."""


@runtime_checkable
class Embedder(Protocol):
    """Text → (n, dim) float32 rows of unit L2 norm, in input order."""

    dim: int
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    async def aclose(self) -> None: ...


def l2_normalise(rows: np.ndarray) -> np.ndarray:
    """Scale each row to unit length in place-safe fashion; all-zero rows stay zero
    (dividing by 0 would put NaN into an index, which the server rejects)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return rows / norms


def empty_rows(dim: int) -> np.ndarray:
    """The answer to embedding zero texts: shape (0, dim), so callers never special-case it."""
    return np.zeros((0, dim), dtype=np.float32)


class HashingEmbedder:
    """Deterministic feature hashing: no model, no randomness, same vector on every machine.

    Why it exists: unit tests of the cache and server need an embedder that is instant and
    reproducible, yet behaves like a real one in the one way tests rely on — texts sharing
    most words get nearby vectors, unrelated texts get near-orthogonal ones. Each lower-cased
    word and each word bigram is hashed (blake2b, not Python's salted `hash`) to a bucket
    and a sign; counts are summed and the row normalised. Texts with no words map to a
    fixed unit vector rather than zero, so every row stays a valid cosine operand.
    """

    def __init__(self, *, dim: int = 384, bigrams: bool = True) -> None:
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._bigrams = bigrams

    def _features(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        feats = list(words)
        if self._bigrams:
            feats += [f"{a} {b}" for a, b in itertools.pairwise(words)]
        return feats

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """The synchronous core; cheap enough to call on the event loop."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            feats = self._features(text)
            if not feats:
                out[i, 0] = 1.0
                continue
            for feat in feats:
                bucket, sign = self._bucket(feat)
                out[i, bucket] += sign
            if not out[i].any():  # every feature cancelled out: keep the row valid
                out[i, 0] = 1.0
        return l2_normalise(out) if len(texts) else empty_rows(self.dim)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_sync(as_text_list(texts))

    async def aclose(self) -> None:
        return None


def prefixes(texts: Sequence[str], max_chars: int) -> list[str]:
    """Each text cut to its first `max_chars` characters (see MAX_EMBED_CHARS)."""
    return [t if len(t) <= max_chars else t[:max_chars] for t in texts]


def as_text_list(texts: Sequence[str]) -> list[str]:
    """Reject a bare string early: `embed("hello")` would otherwise embed five letters."""
    if isinstance(texts, str):
        raise TypeError("embed() takes a sequence of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return out
