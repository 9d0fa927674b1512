"""End to end: a sample of pairs through a real server with the project's own MiniLM embedder.

A real `curacache` server (sqlite store, `cache.embedder = "minilm"`, shipped classifier and
policies) on port 0, driven by the SDK: every sampled `a` stored with `store`, every `b`
looked up with `lookup`, no embeddings sent (the server embeds). The same sample is then
simulated offline from the stored float16 embeddings (`simulate_single`: one search over every
entry, as the service does; same store set and thresholds) and the two sets of decisions compared: hit/miss agreement, and for lookups that
both call a hit, whether they returned the same entry.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bench.cache_quality.simulate import SingleSearch, served_single, summarise
from curacache.client import AsyncClient
from curacache.server.app import create_server
from curacache.server.config import load_config

TENANT = "bench"


async def _serve_and_run(
    data_dir: Path, texts: Sequence[str], a: Sequence[int], b: Sequence[int], progress: bool
) -> list[tuple[bool, int, float]]:
    config = load_config(
        env={},
        overrides={
            "host": "127.0.0.1",
            "port": 0,
            "storage.kind": "sqlite",
            "storage.data_dir": data_dir,
            "grace_seconds": 1.0,
            "cache.embedder": "minilm",
        },
    )
    server, port = await create_server(config)
    await server.start()
    try:
        client = AsyncClient(f"127.0.0.1:{port}")
        try:
            entry_text: dict[str, int] = {}
            for t in tqdm(a, desc="e2e store (server)", unit="entry", disable=not progress):
                stored = await client.store(texts[t], "cached answer", TENANT)
                if not stored.stored:
                    raise RuntimeError(f"store refused: {stored.reason}")
                entry_text[stored.entry_id] = t
            out = []
            for t in tqdm(b, desc="e2e lookup (server)", unit="lookup", disable=not progress):
                r = await client.lookup(texts[t], TENANT)
                out.append(
                    (
                        bool(r.hit),
                        entry_text.get(r.entry_id, -1) if r.hit else -1,
                        float(r.similarity),
                    )
                )
            return out
        finally:
            await client.close()
    finally:
        await server.stop(grace=1.0)


def run(
    texts: Sequence[str],
    cluster: np.ndarray,
    a: Sequence[int],
    b: Sequence[int],
    offline: SingleSearch,
    thresholds: np.ndarray,
    *,
    progress: bool = True,
) -> dict[str, object]:
    """`offline`: simulate_single() of the same sample (stored = a, lookups = b); `thresholds` as shipped."""
    with tempfile.TemporaryDirectory(prefix="cache-quality-e2e-") as tmp:
        served = asyncio.run(_serve_and_run(Path(tmp), texts, a, b, progress))
    hit_off, correct_off, entry_off, sim_off = served_single(offline, thresholds)
    hit_srv = np.array([h for h, _, _ in served], dtype=bool)
    entry_srv = np.array([e for _, e, _ in served], dtype=np.int64)
    sim_srv = np.array([s for _, _, s in served])
    both = hit_off & hit_srv
    # the server's hit is correct when its entry's prompt is in the lookup's cluster (as offline)
    same_entry = both & (entry_srv == entry_off)
    correct_srv = hit_srv & (cluster[np.maximum(entry_srv, 0)] == cluster[np.asarray(b)])
    disagree = np.flatnonzero(hit_off != hit_srv)
    need = np.maximum(thresholds[offline.category][:, None], thresholds[offline.entry_category])
    gap = np.abs(offline.sim - need).min(axis=1)  # the candidate nearest to its threshold
    return {
        "pairs": len(b),
        "hit_agreement": float((hit_off == hit_srv).mean()) if len(b) else 1.0,
        "same_entry_when_both_hit": float(same_entry.sum() / both.sum()) if both.sum() else 1.0,
        "disagreements": len(disagree),
        "disagreement_max_distance_to_threshold": float(gap[disagree].max())
        if len(disagree)
        else 0.0,
        "max_similarity_difference_on_same_entry": float(
            np.abs(sim_srv - sim_off)[same_entry & ~offline.exact].max()
        )
        if (same_entry & ~offline.exact).any()
        else 0.0,
        "offline": summarise(hit_off, correct_off, offline.has_dup),
        "server": summarise(hit_srv, correct_srv, offline.has_dup),
    }
