"""Train the shipped category classifier and report its held-out accuracy.

    python -m bench.cache_quality.train_classifier            # writes cache/data/classifier.npz
    python -m bench.cache_quality.train_classifier --dry-run  # accuracy only

Multinomial logistic regression (scikit-learn) on MiniLM embeddings with balanced class
weights (CLINC dwarfs the hand-written prompts). The confidence floor stored with the weights
is chosen on the training split: the lowest floor at which the prompts sent to a specific
category are right at least `--floor-precision` of the time (the rest fall to `default`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from bench.cache_quality.labelled_prompts import DATA_DIR, Labelled, split
from cache.classifier import DEFAULT_CATEGORY, LinearClassifier
from curacache.embed.minilm import MiniLMEmbedder

OUT = Path(__file__).resolve().parents[2] / "cache" / "data" / "classifier.npz"


def embed(texts: list[str]) -> np.ndarray:
    async def run() -> np.ndarray:
        embedder = MiniLMEmbedder()
        try:
            return await embedder.embed(texts)
        finally:
            await embedder.aclose()

    return asyncio.run(run())


def choose_floor(model: LinearClassifier, x: np.ndarray, y: list[str], precision: float) -> float:
    p = model.probabilities(x)
    best = p.argmax(axis=1)
    conf = p[np.arange(len(y)), best]
    right = np.array([model.labels[j] == label for j, label in zip(best.tolist(), y)])
    for floor in np.arange(0.0, 0.96, 0.05):
        kept = conf >= floor
        if kept.any() and right[kept].mean() >= precision:
            return float(round(floor, 2))
    return 0.95


def accuracy(model: LinearClassifier, items: list[Labelled], x: np.ndarray) -> dict[str, float]:
    """Accuracy by source; a prompt sent to `default` counts as wrong (it lost its policy)."""
    got = [c for c, _ in model.classify_batch(x)]
    by: dict[str, list[bool]] = {}
    for item, g in zip(items, got):
        by.setdefault(item.source, []).append(g == item.category)
        by.setdefault("all", []).append(g == item.category)
    out = {k: float(np.mean(v)) for k, v in by.items()}
    out["to_default"] = float(np.mean([g == DEFAULT_CATEGORY for g in got]))
    return out


def train(
    train_items: list[Labelled], x: np.ndarray, *, c: float, floor_precision: float
) -> LinearClassifier:
    y = [i.category for i in train_items]
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    lr.fit(x, y)
    model = LinearClassifier(
        tuple(str(label) for label in lr.classes_),
        lr.coef_.astype(np.float32),
        lr.intercept_.astype(np.float32),
        0.0,
    )
    floor = choose_floor(model, x, y, floor_precision)
    return LinearClassifier(model.labels, model.coef, model.intercept, floor)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA_DIR)
    ap.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    ap.add_argument("--floor-precision", type=float, default=0.97)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    train_items, test_items = split(data_dir=args.data)
    print(f"train {len(train_items)} prompts {dict(Counter(i.category for i in train_items))}")
    x_train = embed([i.text for i in train_items])
    x_test = embed([i.text for i in test_items])
    model = train(train_items, x_train, c=args.c, floor_precision=args.floor_precision)
    report = {
        "floor": model.floor,
        "labels": list(model.labels),
        "train": accuracy(model, train_items, x_train),
        "test": accuracy(model, test_items, x_test),
    }
    print(json.dumps(report, indent=2))
    if not args.dry_run:
        args.out.write_bytes(model.to_bytes())
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
