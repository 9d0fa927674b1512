"""Self-labelling calibration on a drifting stream (issue 13, deliverable 2).

    python -m bench.cache_quality.selfcal                   # ~5,000 QQP pairs, a few minutes
    python -m bench.cache_quality.selfcal --pairs 500 --grid 0.93,0.96   # a quick slice

The real `SemanticCache` (shipped classifier and policies, one search over every entry) runs
Generate on a stream of QQP prompts: each pair's `a`, then a little later its `b`. Embeddings
come from the stored MiniLM file; the repository is an exact in-memory search. The backend is
simulated: its answer is a function of the prompt's QQP duplicate cluster, and 5% of its
answers are perturbed, so the agreement the cache sees (fresh answer vs cached one) is a noisy
label. The category mix drifts: pairs of `default`, `knowledge`, `code` and `time_sensitive`
come mostly early, the others mostly late.

Compared, per category, after warm-up (the first `--warmup` share of the stream):
- the calibrated cache (self-labels from misses within the band below the threshold; no
  explicit feedback, no exploration): observed false-hit rate (false hits / lookups of the
  category) per window vs the target, and recall (correct hits / lookups whose cluster has an
  entry at that moment);
- the same stream with calibration off at fixed thresholds (`--grid`, every category alike):
  the best fixed threshold in hindsight is the lowest whose false-hit rate meets the target.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.cache_quality import data
from bench.cache_quality.labelled_prompts import DATA_DIR
from cache.classifier import DEFAULT_CATEGORY, LinearClassifier
from cache.options import CacheOptions
from cache.policy import default_policies
from cache.service import SemanticCache
from cache.testing import FakeClock
from cache.types import CacheEntry, Chunk, FinalResult, LookupRequest, StoreReason

RESULTS = Path(__file__).resolve().parents[1] / "results"
EARLY = frozenset({"default", "knowledge", "code", "time_sensitive"})
TENANT = "stream"


class ExactRepository:
    """Every entry in one float32 matrix; exact search (the oracle every index is tested against)."""

    def __init__(self, dim: int) -> None:
        self._matrix = np.zeros((1024, dim), dtype=np.float32)
        self._rows: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._entries: dict[str, CacheEntry] = {}

    async def put(self, entry: CacheEntry, vector: np.ndarray) -> None:
        row = self._rows.get(entry.entry_id)
        if row is None:
            row = self._rows[entry.entry_id] = len(self._ids)
            self._ids.append(entry.entry_id)
            if row >= len(self._matrix):
                self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
        self._matrix[row] = vector
        self._entries[entry.entry_id] = entry

    async def get(self, entry_ids: Sequence[str]) -> dict[str, CacheEntry]:
        return {i: self._entries[i] for i in entry_ids if i in self._entries}

    async def delete(self, entry_ids: Sequence[str]) -> int:
        n = 0
        for i in entry_ids:
            row = self._rows.pop(i, None)
            if row is not None:
                self._ids[row] = None
                self._matrix[row] = 0.0
                del self._entries[i]
                n += 1
        return n

    async def search(self, vector: np.ndarray, tenant: str, k: int) -> list[tuple[str, float]]:
        n = len(self._ids)
        if not n:
            return []
        scores = self._matrix[:n] @ vector
        top = np.argsort(-scores)[: k + 8]
        out = []
        for row in top.tolist():
            entry_id = self._ids[row]
            if entry_id is not None and self._entries[entry_id].visible_to(tenant):
                out.append((entry_id, float(scores[row])))
        return out[:k]

    async def scan(self) -> AsyncIterator[CacheEntry]:
        for entry in list(self._entries.values()):
            yield entry


class NoEmbedder:
    """Never called: every request of the stream carries its stored MiniLM embedding."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        # Requests carry their embedding and are deterministic (answers compared as text).
        raise AssertionError(
            f"the stream never needs an embedding computed ({len(texts)} texts asked)"
        )


class ClusterBackend:
    """Answer = a function of the prompt's duplicate cluster; `noise` of the answers perturbed."""

    def __init__(
        self, index: dict[str, int], cluster: np.ndarray, *, noise: float, seed: int
    ) -> None:
        self._index, self._cluster, self._noise = index, cluster, noise
        self._rng = np.random.default_rng(seed)
        self.calls = 0

    def load(self, model: str | None) -> float:
        return 0.0

    async def stream(self, request: LookupRequest) -> AsyncIterator[Chunk | FinalResult]:
        self.calls += 1
        text = f"answer for cluster {self._cluster[self._index[request.query_text]]}"
        if self._rng.random() < self._noise:
            text += f" (variant {self._rng.integers(1 << 30)})"
        yield Chunk(text=text)
        yield FinalResult(finish_reason="stop", usage={"completion_tokens": 5})


@dataclass(frozen=True, slots=True)
class Event:
    text: int  # text index
    category: str  # the classifier's category of the prompt


def stream(qqp: data.Qqp, clf: LinearClassifier, pairs: int, seed: int) -> list[Event]:
    """`pairs` pairs in drifting order: each `a`, then its `b` a few events later."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(qqp.n_pairs, size=min(pairs, qqp.n_pairs), replace=False)
    known = set(default_policies())
    texts = np.unique(np.concatenate([qqp.a[chosen], qqp.b[chosen]]))
    labels = {}
    for t, (label, confidence) in zip(texts.tolist(), clf.classify_batch(qqp.vectors[texts])):
        labels[t] = label if confidence >= clf.floor and label in known else DEFAULT_CATEGORY
    when = []
    for p in chosen.tolist():
        a, b = int(qqp.a[p]), int(qqp.b[p])
        t = rng.beta(2, 5) if labels[a] in EARLY else rng.beta(5, 2)
        when += [(t, 0, a), (t + rng.uniform(0.0005, 0.005), 1, b)]
    when.sort()
    return [Event(t, labels[t]) for _, _, t in when]


async def run_stream(
    qqp: data.Qqp,
    events: list[Event],
    *,
    fixed: float | None,
    target: float,
    noise: float,
    seed: int,
    progress: bool,
    desc: str,
    min_threshold: float | None = None,
    verify_hits: float = 0.0,
) -> list[dict[str, Any]]:
    """One pass; per event: category, hit, correct, whether a duplicate was cached.
    `min_threshold`: lowers every non-strict category's bound to it (what-if for re-tuning)."""
    index = {qqp.texts[e.text]: e.text for e in events}
    policies = {
        c: replace(p, quota_per_tenant=p.quota_total, target_false_hit_rate=target)
        for c, p in default_policies().items()
    }
    if min_threshold is not None:
        policies = {
            c: p if p.strict else replace(p, min_threshold=min(min_threshold, p.threshold))
            for c, p in policies.items()
        }
    if fixed is not None:  # calibration off, every category at the same threshold
        policies = {
            c: replace(
                p,
                threshold=fixed,
                min_threshold=min(fixed, p.min_threshold),
                target_false_hit_rate=None,
                relax=0.0,
            )
            for c, p in policies.items()
        }
    repo = ExactRepository(qqp.vectors.shape[1])
    cache = SemanticCache(
        repository=repo,
        embedder=NoEmbedder(qqp.vectors.shape[1]),
        classifier=LinearClassifier.load(),
        backend=ClusterBackend(index, qqp.cluster, noise=noise, seed=seed),
        clock=FakeClock(),
        policies=policies,
        confidence_floor=LinearClassifier.load().floor,
        options=CacheOptions(seed=seed, verify_hits=verify_hits),
    )
    cached_clusters: set[int] = set()
    out = []
    for e in tqdm(events, desc=desc, unit="request", disable=not progress):
        text = qqp.texts[e.text]
        had_dup = int(qqp.cluster[e.text]) in cached_clusters
        final = None
        async for item in cache.generate(
            LookupRequest(tenant=TENANT, prompt=text, embedding=qqp.vectors[e.text])
        ):
            if isinstance(item, FinalResult):
                final = item
        assert final is not None
        correct = False
        if final.cached and final.entry_id is not None:
            entry = (await repo.get([final.entry_id]))[final.entry_id]
            correct = int(qqp.cluster[index[entry.prompt]]) == int(qqp.cluster[e.text])
        elif final.store_reason is StoreReason.STORED:
            cached_clusters.add(int(qqp.cluster[e.text]))
        out.append(
            {
                "category": e.category,
                "hit": bool(final.cached),
                "correct": correct,
                "had_dup": had_dup,
            }
        )
    thresholds = {c: s.effective_threshold for c, s in cache.stats().items()}
    out.append({"final_thresholds": thresholds})
    return out


def _per_category(
    rows: list[dict[str, Any]], start: int, windows: int
) -> dict[str, dict[str, Any]]:
    body = rows[start:]
    cats = sorted({str(r["category"]) for r in body})
    bounds = np.linspace(0, len(body), windows + 1).astype(int)
    out: dict[str, dict[str, Any]] = {}
    for c in cats:
        mine = [r for r in body if r["category"] == c]
        hits = sum(bool(r["hit"]) for r in mine)
        good = sum(bool(r["correct"]) for r in mine)
        dups = sum(bool(r["had_dup"]) for r in mine)
        per_window = []
        for lo, hi in itertools.pairwise(bounds):
            w = [r for r in body[lo:hi] if r["category"] == c]
            false = sum(bool(r["hit"]) and not bool(r["correct"]) for r in w)
            per_window.append({"lookups": len(w), "false_hit_rate": false / len(w) if w else None})
        out[c] = {
            "lookups": len(mine),
            "hits": hits,
            "false_hits": hits - good,
            "false_hit_rate": (hits - good) / len(mine) if mine else 0.0,
            "recall": good / dups if dups else 0.0,
            "windows": per_window,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA_DIR)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--target", type=float, default=0.02, help="target false-hit rate of every category"
    )
    ap.add_argument("--noise", type=float, default=0.05, help="share of backend answers perturbed")
    ap.add_argument("--warmup", type=float, default=0.2, help="share of the stream not scored")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument(
        "--grid",
        default="0.90,0.91,0.92,0.93,0.94,0.95,0.96,0.97,0.98,0.99",
        help="fixed thresholds for the hindsight baseline",
    )
    ap.add_argument(
        "--min-threshold",
        type=float,
        default=None,
        help="what-if: lower every non-strict category's min_threshold to this (calibrated pass)",
    )
    ap.add_argument(
        "--verify-hits",
        type=float,
        default=0.0,
        help="exploration: share of semantic hits verified against the backend (calibrated pass)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    qqp = data.load(args.data)
    events = stream(qqp, LinearClassifier.load(), args.pairs, args.seed)
    start = int(len(events) * args.warmup)
    common = {
        "target": args.target,
        "noise": args.noise,
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    calibrated = asyncio.run(
        run_stream(
            qqp,
            events,
            fixed=None,
            desc="calibrated",
            min_threshold=args.min_threshold,
            verify_hits=args.verify_hits,
            **common,
        )
    )
    result: dict[str, Any] = {
        "pairs": args.pairs,
        "events": len(events),
        "warmup_events": start,
        "target": args.target,
        "noise": args.noise,
        "seed": args.seed,
        "min_threshold": args.min_threshold,
        "verify_hits": args.verify_hits,
        "calibrated": {
            "final_thresholds": calibrated[-1]["final_thresholds"],
            "per_category": _per_category(calibrated[:-1], start, args.windows),
        },
        "fixed": {},
    }
    for t in (float(x) for x in args.grid.split(",")):
        rows = asyncio.run(run_stream(qqp, events, fixed=t, desc=f"fixed {t:.2f}", **common))
        result["fixed"][f"{t:.2f}"] = _per_category(rows[:-1], start, args.windows)
    result["summary"] = summarise(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cache_selfcal.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (args.out / "cache_selfcal_summary.md").write_text(text)
    print(text)
    return 0


def summarise(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per category: the calibrated run against the best fixed threshold in hindsight."""
    target = float(r["target"])
    out = {}
    for c, m in r["calibrated"]["per_category"].items():
        meeting = [
            (float(t), rows[c])
            for t, rows in r["fixed"].items()
            if c in rows and rows[c]["false_hit_rate"] <= target
        ]
        best_t, best = min(meeting, default=(None, None), key=lambda tm: tm[0])
        worst_window = max(
            (w["false_hit_rate"] for w in m["windows"] if w["false_hit_rate"] is not None),
            default=0.0,
        )
        out[c] = {
            "lookups": m["lookups"],
            "false_hit_rate": m["false_hit_rate"],
            "worst_window_false_hit_rate": worst_window,
            "within_target_plus_half_point": worst_window <= target + 0.005,
            "recall": m["recall"],
            "threshold_at_end": r["calibrated"]["final_thresholds"].get(c),
            "best_fixed_threshold": best_t,
            "best_fixed_recall": best["recall"] if best else None,
            "recall_ratio": (m["recall"] / best["recall"]) if best and best["recall"] else None,
        }
    return out


def report(r: dict[str, Any]) -> str:
    lines = [
        "# Self-labelling calibration on a drifting QQP stream",
        "",
        f"{r['pairs']} pairs, {r['events']} Generate requests ({r['warmup_events']} warm-up not scored); target "
        f"false-hit rate {float(r['target']):.1%} per category; {float(r['noise']):.0%} of backend answers perturbed; "
        f"seed {r['seed']}. Labels: self-labels"
        + (
            f" and exploration ({float(r['verify_hits']):.0%} of hits verified, a backend call each)"
            if r.get("verify_hits")
            else " only (no feedback, no exploration)"
        )
        + (
            f"; non-strict min_threshold lowered to {r['min_threshold']}"
            if r.get("min_threshold")
            else ""
        )
        + ".",
        "",
        "| category | lookups | FHR | worst window FHR | within target + 0.5 pt | recall | threshold at end | "
        "best fixed t (hindsight) | its recall | recall ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c, s in r["summary"].items():
        best = (
            "none meets the target"
            if s["best_fixed_threshold"] is None
            else f"{s['best_fixed_threshold']:.2f}"
        )
        ratio = "-" if s["recall_ratio"] is None else f"{s['recall_ratio']:.2f}"
        fixed_recall = "-" if s["best_fixed_recall"] is None else f"{s['best_fixed_recall']:.3f}"
        lines.append(
            f"| {c} | {s['lookups']} | {s['false_hit_rate']:.2%} | {s['worst_window_false_hit_rate']:.2%} | "
            f"{'yes' if s['within_target_plus_half_point'] else 'NO'} | {s['recall']:.3f} | "
            f"{s['threshold_at_end']:.3f} | {best} | {fixed_recall} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
