"""From a request to what the cache decides on (DESIGN §5 steps 1, 2 and 5): the boundary
checks and size limits, the normalised prompt and fingerprints (`Prepared`), the category and
the embedding. The lookup and store paths share it, so both see a request the same way.
"""

from __future__ import annotations

import asyncio

import numpy as np

from cache.admission import utf8_size
from cache.bookkeeping import Bookkeeping
from cache.categories import DEFAULT_CATEGORY, Categories
from cache.errors import InvalidRequest
from cache.fingerprint import Prepared
from cache.options import CacheOptions
from cache.ports import Classifier, Clock, Embedder
from cache.types import SHARED_TENANT, LookupRequest

_PREPARE_INLINE_BYTES = 16 << 10


class Resolver:
    def __init__(
        self,
        *,
        embedder: Embedder,
        classifier: Classifier | None,
        clock: Clock,
        categories: Categories,
        book: Bookkeeping,
        confidence_floor: float,
        options: CacheOptions,
    ) -> None:
        self._embedder = embedder
        self._classifier = classifier
        self._clock = clock
        self._categories = categories
        self._book = book
        self._floor = confidence_floor
        self._options = options

    async def prepare(self, req: LookupRequest) -> Prepared:
        """Check the request (embedding size, known category, prompt size) and prepare it."""
        if not isinstance(req, LookupRequest):
            raise InvalidRequest("request", "must be a LookupRequest")
        if req.embedding is not None and req.embedding.shape[0] != self._embedder.dim:
            raise InvalidRequest(
                "embedding", f"has {req.embedding.shape[0]} dims, expected {self._embedder.dim}"
            )
        if req.category is not None:
            self._categories.policy(req.category)
        field, size = (
            ("prompt", utf8_size(req.prompt))
            if req.prompt is not None
            else ("messages", sum(utf8_size(content) for _, content in req.messages))
        )
        limit = self._options.max_prompt_bytes
        if size > limit:
            raise InvalidRequest(
                field, f"{size} bytes, above the limit of {limit} (max_prompt_bytes)"
            )
        if size > _PREPARE_INLINE_BYTES:
            # Normalising and fingerprinting a long prompt takes milliseconds: off the event
            # loop, in pieces that let the GIL go (see normalise_prompt), so the other
            # tenants' lookups keep flowing meanwhile.
            return await asyncio.to_thread(Prepared, req)
        return Prepared(req)

    async def category(self, prep: Prepared, steps: dict[str, float]) -> str:
        """The caller's category, else the one this exact prompt was stored under, else the
        classifier's (confidence below the floor, or a category not configured: `default`)."""
        if prep.category is None:
            tenant = prep.req.tenant
            prep.category = (
                prep.req.category
                or self._book.route(prep.route_key(tenant))
                or self._book.route(prep.route_key(SHARED_TENANT))
            )
        if prep.category is None:
            vector = await self.vector(prep, steps)
            t0 = self._clock.monotonic()
            category, confidence = (
                (DEFAULT_CATEGORY, 0.0)
                if self._classifier is None
                else self._classifier.classify(vector)
            )
            steps["classify"] = ms(self._clock.monotonic() - t0)
            prep.category = (
                category
                if confidence >= self._floor and category in self._categories.policies
                else DEFAULT_CATEGORY
            )
        return prep.category

    async def vector(self, prep: Prepared, steps: dict[str, float]) -> np.ndarray:
        """The query's embedding (the request's own, else embedded once and kept)."""
        if prep.vector is None:
            t0 = self._clock.monotonic()
            rows = await self._embedder.embed([prep.query])
            steps["embed"] = ms(self._clock.monotonic() - t0)
            prep.vector = rows[0]
        return prep.vector


def ms(seconds: float) -> float:
    return seconds * 1000.0
