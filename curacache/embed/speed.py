"""Measure the MiniLM backends: `python -m curacache.embed.speed [--texts N] [--batch B]`.

Why it lives here: the numbers quoted in minilm.py's docstring must be reproducible by
anyone with the repo and shared/data, on their own machine, without the bench harness.
Prints, per backend, throughput over the first N QQP texts (best of 3) and the p50 / p99
latency of embedding one text at a time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from curacache.embed.bert_onnx import onnx_available
from curacache.embed.minilm import MiniLMEmbedder

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "qqp_texts.json.gz"


def measure(embedder: MiniLMEmbedder, texts: list[str], single: int) -> dict[str, float]:
    embedder.embed_sync(texts[: embedder.batch_size])  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        embedder.embed_sync(texts)
        best = min(best, time.perf_counter() - start)
    lat = []
    for text in texts[:single]:
        start = time.perf_counter()
        embedder.embed_sync([text])
        lat.append(time.perf_counter() - start)
    return {
        "texts_per_s": len(texts) / best,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--single", type=int, default=200, help="texts timed one at a time")
    parser.add_argument(
        "--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = all)"
    )
    args = parser.parse_args()
    with gzip.open(args.data, "rt") as fh:
        texts = json.load(fh)[: args.texts]
    backends = ["numpy"] + (["onnxruntime"] if onnx_available() else [])
    for backend in backends:
        emb = MiniLMEmbedder(backend=backend, batch_size=args.batch, threads=args.threads)
        r = measure(emb, texts, args.single)
        print(
            f"{backend:12s} {len(texts)} texts batch {args.batch}: {r['texts_per_s']:7.1f} texts/s | "
            f"1 text p50 {r['p50_ms']:6.2f} ms p99 {r['p99_ms']:6.2f} ms"
        )


if __name__ == "__main__":
    main()
