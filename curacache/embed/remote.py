"""An OpenAI-compatible `/v1/embeddings` client: the GPU embedding-server alternative.

Any server speaking the OpenAI embeddings API works (vLLM, TEI, infinity, llama.cpp,
OpenAI itself). We send `{"model", "input": [...]}` and read `data[i].embedding`, ordering
rows by `data[i].index` because the API does not promise response order. Rows are
re-normalised here: not every server normalises, and the cache relies on unit rows.

Every failure (connection, timeout, HTTP status, malformed body, wrong dimension) becomes
one `EmbeddingError` whose message names the URL and the cause, so the server can map it
to UNAVAILABLE without knowing about HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from curacache.embed.base import MAX_EMBED_CHARS, as_text_list, empty_rows, l2_normalise, prefixes
from curacache.embed.errors import EmbeddingError


class OpenAIEmbedder:
    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dim: int,
        api_key: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_chars: int = MAX_EMBED_CHARS,
    ) -> None:
        """`base_url` is the server root, with or without a trailing `/v1`.

        `transport` exists for tests (httpx.MockTransport) and custom networking.
        """
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        if max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        self.max_chars = max_chars  # a prefix is sent: bounded request size and server cost
        root = base_url.rstrip("/")
        self.url = root + ("/embeddings" if root.endswith("/v1") else "/v1/embeddings")
        self.model = model
        self.dim = dim
        self.name = f"openai:{model}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = as_text_list(texts)
        if not texts:
            return empty_rows(self.dim)
        try:
            response = await self._client.post(
                self.url, json={"model": self.model, "input": prefixes(texts, self.max_chars)}
            )
        except httpx.TimeoutException as exc:
            raise EmbeddingError(f"embedding server {self.url} timed out: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embedding server {self.url} unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"embedding server {self.url} returned HTTP {response.status_code}: {_snippet(response)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise EmbeddingError(
                f"embedding server {self.url} sent invalid JSON: {_snippet(response)}"
            ) from exc
        return l2_normalise(self._rows(body, len(texts)))

    def _rows(self, body: Any, n: int) -> np.ndarray:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != n:
            got = len(data) if isinstance(data, list) else "no"
            raise EmbeddingError(
                f"embedding server {self.url} returned {got} embeddings for {n} inputs"
            )
        out = np.empty((n, self.dim), dtype=np.float32)
        seen = set()
        for pos, item in enumerate(data):
            try:
                index = int(item.get("index", pos))
                vector = np.asarray(item["embedding"], dtype=np.float32)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise EmbeddingError(
                    f"embedding server {self.url}: malformed data[{pos}]: {exc!r}"
                ) from exc
            if not 0 <= index < n or index in seen:
                raise EmbeddingError(f"embedding server {self.url}: bad or repeated index {index}")
            if vector.shape != (self.dim,):
                raise EmbeddingError(
                    f"embedding server {self.url}: data[{pos}] has shape {vector.shape}, expected ({self.dim},)"
                )
            if not np.isfinite(vector).all():
                raise EmbeddingError(
                    f"embedding server {self.url}: data[{pos}] contains NaN or Inf"
                )
            seen.add(index)
            out[index] = vector
        return out

    async def aclose(self) -> None:
        await self._client.aclose()


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text
    return text if len(text) <= limit else text[:limit] + "…"
