"""Can a learned hit verifier beat cosine thresholds on QQP? (a probe for the recall target)

    python -m bench.cache_quality.separability            # ~2 min on the 2-core VM
    python -m bench.cache_quality.separability --max-pairs 4000

The cache's hit rule is a cosine threshold per category. The recall target (>= 0.50 at a
false-hit rate <= 2%) is beyond every threshold setting on this data, so this probe asks
whether a verifier on top of the nearest few entries would get there, as GPTCache's QQP-trained
"similarity evaluation" does. Each verifier re-scores a lookup's top-`--candidates` stored
entries (all `a` stored, as in the main benchmark); the lookup hits on its best-scored
candidate when that score clears a threshold, swept on half B for the recall reachable at the
target false-hit rate (an upper bound for any threshold chosen on A):

- `cosine`: the nearest entry's cosine (the shipped rule with one global threshold);
- `lexical_gbm`: gradient boosting on cosine, rank, gap to the best, and lexical features
  (token Jaccard, symmetric difference, length difference, differing numbers);
- `pair_logreg`: logistic regression on [cosine, rank, gap, lexical, |u - v|, u * v] (the
  InferSent pair head on frozen MiniLM vectors).

Halves are split by connected component of the pair graph (pairs sharing a text go to the same
half), so no B lookup or its duplicates is ever a training example; the main benchmark's random pair split would let
a verifier memorise texts. Writes `separability.json` under --out.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.cache_quality import data
from bench.cache_quality.labelled_prompts import DATA_DIR
from cache.fingerprint import normalise_prompt

RESULTS = Path(__file__).resolve().parents[1] / "results"
_TOKEN = re.compile(r"[a-z0-9]+")


def component_halves(qqp: data.Qqp, seed: int) -> np.ndarray:
    """Per pair: True when in half A. Every text's pairs land in one half."""
    uf = data.UnionFind(len(qqp.texts))
    for x, y in zip(qqp.a.tolist(), qqp.b.tolist()):
        uf.union(x, y)
    comp = uf.labels()
    side = (
        np.random.default_rng(seed).random(len(comp)) < 0.5
    )  # indexed by the component's root text
    return side[comp[qqp.a]]


def nearest(
    vectors: np.ndarray, lookups: np.ndarray, entries: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """(text index, cosine) of each lookup's m nearest entries, best first."""
    ids, sims = np.empty((len(lookups), m), np.int64), np.empty((len(lookups), m), np.float32)
    matrix = vectors[entries]
    for s in range(0, len(lookups), 4096):
        scores = vectors[lookups[s : s + 4096]] @ matrix.T
        top = np.argpartition(-scores, m, axis=1)[:, :m]
        top_s = np.take_along_axis(scores, top, 1)
        order = np.argsort(-top_s, axis=1)
        ids[s : s + 4096] = entries[np.take_along_axis(top, order, 1)]
        sims[s : s + 4096] = np.take_along_axis(top_s, order, 1)
    return ids, sims


def features(qqp: data.Qqp, lookups: np.ndarray, ids: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Cosine, rank, gap and lexical features: one row per (lookup, candidate), lookup-major."""
    words = {}

    def tokens(i: int) -> set[str]:
        if i not in words:
            words[i] = set(_TOKEN.findall(qqp.texts[i].lower()))
        return words[i]

    n, m = ids.shape
    rows = []
    for r in range(n):
        a = tokens(int(lookups[r]))
        for j in range(m):
            b = tokens(int(ids[r, j]))
            digits_differ = {x for x in a if x.isdigit()} != {x for x in b if x.isdigit()}
            rows.append(
                [
                    sims[r, j],
                    j,
                    sims[r, 0] - sims[r, j],
                    len(a & b) / max(1, len(a | b)),
                    len(a ^ b),
                    abs(len(a) - len(b)),
                    float(digits_differ),
                ]
            )
    return np.asarray(rows, np.float32)


def pair_features(qqp: data.Qqp, lookups: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """[|u - v|, u * v] of the MiniLM vectors, rows as in `features`."""
    u = np.repeat(qqp.vectors[lookups], ids.shape[1], axis=0)
    v = qqp.vectors[ids.ravel()]
    return np.hstack([np.abs(u - v), u * v])


def reachable(
    score: np.ndarray,
    correct: np.ndarray,
    exact: np.ndarray,
    has_dup: np.ndarray,
    target_fhr: float,
) -> dict[str, float]:
    """Best-scored candidate per lookup; sweep the score threshold: recall at FHR <= target, best F1.
    Exact-text lookups always hit (the cache's fast path); they are correct by construction."""
    n, n_exact, dup = len(exact), int(exact.sum()), int(has_dup.sum())
    s, ok = score[~exact], correct[~exact]
    order = np.argsort(-s, kind="stable")
    good = np.cumsum(ok[order]) + n_exact
    false = np.cumsum(~ok[order])
    hits = np.arange(1, len(order) + 1) + n_exact
    recall, precision = good / dup, good / hits
    f1 = 2 * precision * recall / (precision + recall)
    within = np.flatnonzero(false / n <= target_fhr)
    i = int(within.max()) if len(within) else -1
    return {
        "recall_at_target": float(recall[i]) if i >= 0 else n_exact / dup,
        "false_hit_rate": float(false[i] / n) if i >= 0 else 0.0,
        "best_f1": float(f1.max()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    qqp = data.load(args.data, max_pairs=args.max_pairs)
    in_a = component_halves(qqp, args.seed)
    m = args.candidates
    everything = np.unique(qqp.a)
    keys = {normalise_prompt(qqp.texts[t]) for t in everything.tolist()}
    stored = set(qqp.cluster[everything].tolist())

    def side(mask: np.ndarray):
        lookups = qqp.b[mask]
        exact = np.array([normalise_prompt(qqp.texts[t]) in keys for t in lookups.tolist()])
        ids, sims = nearest(qqp.vectors, lookups, everything, m)
        correct = qqp.cluster[ids] == qqp.cluster[lookups][:, None]
        has_dup = np.array([c in stored for c in qqp.cluster[lookups].tolist()])
        return lookups, exact, ids, sims, correct, has_dup

    # Training rows are A's lookups against every stored entry, as at evaluation (against A's
    # entries alone the candidates are sparser and the verifiers fit the wrong distribution).
    # B's stored texts can appear there only as wrong candidates of A lookups: if anything that
    # teaches a verifier to refuse them, which can only lower its recall on B.
    la, ea, ia, sa, ca, _ = side(in_a)
    lb, eb, ib, sb, cb, hb = side(~in_a)
    la, ia, sa, ca = la[~ea], ia[~ea], sa[~ea], ca[~ea]  # exact lookups never reach a verifier
    xa, xb = features(qqp, la, ia, sa), features(qqp, lb, ib, sb)
    out: dict[str, Any] = {
        "pairs": {"A": int(in_a.sum()), "B": int((~in_a).sum())},
        "candidates": m,
        "target_fhr": args.target_fhr,
    }
    rows = np.arange(len(lb))
    out["cosine"] = reachable(sb[:, 0], cb[:, 0], eb, hb, args.target_fhr)
    models = {
        "lexical_gbm": (
            lambda: HistGradientBoostingClassifier(max_iter=300, random_state=args.seed),
            xa,
            xb,
        ),
        "pair_logreg": (
            lambda: make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)),
            np.hstack([xa, pair_features(qqp, la, ia)]),
            np.hstack([xb, pair_features(qqp, lb, ib)]),
        ),
    }
    for name, (make, train, test) in models.items():
        started = time.perf_counter()
        model = make().fit(train, ca.ravel())
        p = model.predict_proba(test)[:, 1].reshape(-1, m)
        best = p.argmax(axis=1)
        out[name] = {
            **reachable(p[rows, best], cb[rows, best], eb, hb, args.target_fhr),
            "seconds": time.perf_counter() - started,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA_DIR)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument(
        "--candidates", type=int, default=5, help="nearest entries each verifier re-scores"
    )
    ap.add_argument("--target-fhr", type=float, default=0.02)
    args = ap.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "separability.json").write_text(json.dumps(result, indent=2))
    print(f"half B, recall reachable at false-hit rate <= {args.target_fhr:.0%} (best F1):")
    for name in ("cosine", "lexical_gbm", "pair_logreg"):
        r = result[name]
        print(
            f"  {name:12s} recall {r['recall_at_target']:.3f} (FHR {r['false_hit_rate']:.4f})  best F1 {r['best_f1']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
