"""Self-labelling calibration (DESIGN §5): free labels for the per-category calibrator.

On a miss whose nearest entry lies within `label_band` below the threshold it needed, and on
hits chosen for exploration (`verify_hits`, off by default: each costs a backend call), the
backend's fresh answer is compared with the answer that entry would have served: equal text
after normalisation for deterministic requests, response-embedding similarity otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from cache.categories import Categories
from cache.fingerprint import Prepared, normalise_prompt
from cache.options import CacheOptions
from cache.ports import Embedder, EntryRepository
from cache.types import CachedResponse, LookupResult, Reason, ToolCall


class Labeller:
    def __init__(
        self,
        *,
        repository: EntryRepository,
        embedder: Embedder,
        categories: Categories,
        options: CacheOptions,
    ) -> None:
        self._repo = repository
        self._embedder = embedder
        self._categories = categories
        self._options = options
        self._rng = random.Random(options.seed)

    def verify(self, result: LookupResult) -> bool:
        """Exploration: verify this semantic hit against the backend (options.verify_hits)."""
        return (
            result.reason is Reason.SEMANTIC
            and self._options.verify_hits > 0.0
            and self._rng.random() < self._options.verify_hits
        )

    async def label(self, prep: Prepared, result: LookupResult, fresh: CachedResponse) -> None:
        """A free calibration label: the backend's fresh answer compared with the answer the
        nearest entry would have served. Taken from misses whose nearest entry lies within
        `label_band` below the threshold it needed, and from hits chosen for exploration;
        it goes to the category whose threshold decided (the stricter of the two)."""
        if result.entry_id is None or result.similarity is None or result.threshold is None:
            return
        if result.reason is Reason.BELOW_THRESHOLD:
            if result.similarity < result.threshold - self._options.label_band:
                return
        elif result.reason is not Reason.SEMANTIC:
            return
        entry = (await self._repo.get([result.entry_id])).get(result.entry_id)
        if (
            entry is None
            or not entry.visible_to(prep.req.tenant)
            or entry.model != prep.model
            or entry.context_fp != prep.context_fp
            or prep.category is None
        ):
            return  # gone, or a different model / conversation: its answer says nothing here
        agree = _same_calls(entry.tool_calls, fresh.tool_calls) and await self._agree(
            entry.response_text, fresh.text, prep.deterministic
        )
        categories = self._categories
        load = categories.load(prep.req.model)
        category = prep.category
        if entry.category in categories.policies and categories.threshold(
            entry.category, load
        ) > categories.threshold(category, load):
            category = entry.category
        categories.feedback.rate(category, result.similarity, agree, categories.policies[category])

    async def _agree(self, cached: str, fresh: str, deterministic: bool) -> bool:
        if deterministic:
            return normalise_prompt(cached) == normalise_prompt(fresh)
        rows = await self._embedder.embed([cached, fresh])
        return float(np.dot(rows[0], rows[1])) >= self._options.agreement_similarity


def _same_calls(a: Sequence[ToolCall], b: Sequence[ToolCall]) -> bool:
    """The same functions with the same arguments (call ids are the backend's own)."""
    return [(c.name, c.arguments) for c in a] == [(c.name, c.arguments) for c in b]
