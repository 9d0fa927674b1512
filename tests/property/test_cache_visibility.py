"""Random store/lookup sequences by several tenants with private and shared entries: a tenant
never receives another tenant's private entry, whether the repository filters correctly or
(a bug) returns every tenant's entries from search."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import CachedResponse, FinalResult, LookupRequest, StoreReason
from cache.testing import FakePorts, InMemoryRepository

TENANTS = ("ann", "ben", "cat")
PROMPTS = tuple(f"prompt {i}" for i in range(5))
TABLE = {p: np.eye(4, dtype=np.float32)[i % 4] + 0.2 * i for i, p in enumerate(PROMPTS)}


class LeakyRepository(InMemoryRepository):
    """A repository bug: search ignores the tenant."""

    async def search(self, vector: np.ndarray, tenant: str, k: int) -> list[tuple[str, float]]:
        return await super().search(vector, "*", k) + [
            (i, float(np.dot(v, vector)))
            for i, (_, v, access) in self._docs.items()
            if "*" not in access
        ]


ops = st.lists(
    st.tuples(
        st.sampled_from(("store", "lookup", "generate")),
        st.sampled_from(TENANTS),
        st.sampled_from(PROMPTS),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)


Op = tuple[str, str, str, bool]  # (operation, tenant, prompt, shared)


@settings(max_examples=60, deadline=None)
@given(sequence=ops, leaky=st.booleans())
def test_no_private_entry_reaches_another_tenant(sequence: list[Op], leaky: bool) -> None:
    asyncio.run(_run(sequence, leaky))


async def _run(sequence: list[Op], leaky: bool) -> None:
    p = FakePorts(table=TABLE)
    if leaky:
        p.repo = LeakyRepository(clock=p.clock)
    cache = p.cache()
    owner: dict[str, tuple[str, bool]] = {}  # response text -> (tenant, shared)
    for n, (op, tenant, prompt, shared) in enumerate(sequence):
        req = LookupRequest(tenant=tenant, prompt=prompt, category="default")
        if op == "store":
            text = f"{tenant}:{prompt}:{n}"
            stored = await cache.store(
                req, CachedResponse(text=text, finish_reason="stop"), shared=shared
            )
            assert stored.stored
            owner[text] = (tenant, shared)
        elif op == "lookup":
            found = await cache.lookup(req)
            if found.hit:
                assert found.response is not None
                _check(owner, found.response.text, tenant)
        else:
            p.backend.text = f"{tenant}:{prompt}:{n}"
            async for item in cache.generate(req):
                if not isinstance(item, FinalResult):
                    continue
                if item.cached:
                    _check(owner, item.text, tenant)
                elif item.store_reason is StoreReason.STORED:
                    owner[item.text] = (tenant, False)


def _check(owner: dict[str, tuple[str, bool]], text: str, tenant: str) -> None:
    who, shared = owner[text]
    assert shared or who == tenant, f"{tenant} received {who}'s private entry {text!r}"
