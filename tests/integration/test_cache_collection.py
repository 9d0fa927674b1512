"""The cache's one internal collection: entries of every category in one index, and the
per-category collections of earlier versions adopted into it at start-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cache.types import CacheEntry
from curacache.server.cache_ports import COLLECTION, CollectionRepository, adopt_legacy_collections
from curacache.server.vectordb import VectorDB
from storage.sqlite import SqliteStore

DIM = 8


def _entry(entry_id: str, category: str, tenant: str, shared: bool = False) -> CacheEntry:
    return CacheEntry(
        entry_id=entry_id,
        category=category,
        tenant=tenant,
        shared=shared,
        prompt=f"p {entry_id}",
        context_fp="",
        model="m",
        params_fp="x",
        core_params_fp="x",
        response_text="r",
        finish_reason="stop",
        created_at=1.0,
        expires_at=2e9,
    )


def _unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    v[(i + 1) % DIM] = 0.1 * i
    return v / np.linalg.norm(v)


async def test_one_search_covers_every_category_and_legacy_collections_are_adopted(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        db = VectorDB(store)
        for n, (category, tenant, shared) in enumerate(
            [
                ("code", "ann", False),
                ("health", "ann", False),
                ("code", "ben", False),
                ("default", "ben", True),
            ]
        ):
            legacy = CollectionRepository(
                db=db, dim=DIM, index_kind="flat", name=f"cache:{category}"
            )
            await legacy.put(_entry(f"e{n}", category, tenant, shared), _unit(n))
        repo = CollectionRepository(db=db, dim=DIM, index_kind="flat")
        assert adopt_legacy_collections(db, repo) == 4
        assert [s.name for s in db.list(internal=True)] == [COLLECTION]
        assert sorted(e.entry_id for e in [e async for e in repo.scan()]) == [
            "e0",
            "e1",
            "e2",
            "e3",
        ]
        found = {i for i, _ in await repo.search(_unit(0), "ann", 10)}
        assert found == {"e0", "e1", "e3"}  # both of ann's categories, and the shared entry
        assert {i for i, _ in await repo.search(_unit(0), "cat", 10)} == {"e3"}
        await repo.delete(["e3"])
        assert {i for i, _ in await repo.search(_unit(0), "cat", 10)} == set()
        assert adopt_legacy_collections(db, repo) == 0
    finally:
        store.close()
