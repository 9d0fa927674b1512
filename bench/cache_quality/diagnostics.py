"""Where the cache protocol loses F1 against the plain pairwise protocol (for the report).

- pairwise: the anchor's protocol, each pair on its own: hit iff cos(a, b) >= threshold,
  correct iff labelled duplicate; no other stored prompts compete and no category split.
- one index: the cache protocol with every entry and lookup in a single category (no
  classifier): other stored prompts compete, but a duplicate filed under another category
  can no longer be missed.
Both choose the threshold on half A and report half B, like the main rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.cache_quality import calibrate
from bench.cache_quality.data import Qqp
from bench.cache_quality.simulate import Lookups, simulate, summarise
from cache.classifier import DEFAULT_CATEGORY, LinearClassifier


def _pairwise(sim: np.ndarray, dup: np.ndarray, t: float) -> dict[str, float]:
    hit = sim >= t
    return summarise(hit, hit & dup, dup)


def pairwise(qqp: Qqp, half_a: np.ndarray, half_b: np.ndarray, target_fhr: float) -> dict[str, Any]:
    sim = np.einsum("ij,ij->i", qqp.vectors[qqp.a], qqp.vectors[qqp.b]).astype(np.float64)
    sweep = [
        {"threshold": float(t), **_pairwise(sim[half_a], qqp.duplicate[half_a], t)}
        for t in calibrate.GRID
    ]
    best, fhr = calibrate.best_f1(sweep), calibrate.lowest_within(sweep, target_fhr)
    return {
        name: {
            "threshold": row["threshold"],
            "B": _pairwise(sim[half_b], qqp.duplicate[half_b], row["threshold"]),
        }
        for name, row in (("best_f1", best), ("fhr_target", fhr))
    }


def one_index(
    qqp: Qqp,
    clf: LinearClassifier,
    half_a: np.ndarray,
    half_b: np.ndarray,
    target_fhr: float,
    *,
    progress: bool,
) -> dict[str, Any]:
    look: Lookups = simulate(
        texts=qqp.texts,
        vectors=qqp.vectors,
        cluster=qqp.cluster,
        stored=qqp.a.tolist(),
        lookups=qqp.b.tolist(),
        clf=clf,
        categories=(DEFAULT_CATEGORY,),
        progress=progress,
    )
    look_a, look_b = look.subset(half_a), look.subset(half_b)
    sweep = calibrate.global_sweep(look_a)
    out: dict[str, Any] = {}
    for name, row in (
        ("best_f1", calibrate.best_f1(sweep)),
        ("fhr_target", calibrate.lowest_within(sweep, target_fhr)),
    ):
        b = calibrate.global_sweep(look_b, np.array([row["threshold"]]))[0]
        out[name] = {
            "threshold": row["threshold"],
            "B": {k: v for k, v in b.items() if k != "threshold"},
        }
    out["curve_B"] = [
        {k: r[k] for k in ("threshold", "hit_rate", "false_hit_rate", "recall", "f1")}
        for r in calibrate.global_sweep(look_b)
    ]
    return out
