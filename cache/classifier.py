"""Category classifier over prompt embeddings: a linear softmax model, run in numpy.

Why linear: on MiniLM embeddings a multinomial logistic regression separates the shipped
categories about as well as anything heavier (the measured accuracy is in
bench/cache_quality), costs one (c × 384) matrix-vector product per prompt, and its weights
(~12 KB) ship with the package. It is trained by `python -m bench.cache_quality.train_classifier`
(scikit-learn, a dev/bench dependency only) from CLINC150 domains, domain questions and the
prompts in `cache/data/extra_prompts.jsonl`; at run time only numpy is needed.

Below the confidence floor the prompt goes to `default`: a wrong specific category is worse
than the generic policy (a health prompt under the looser conversation threshold is exactly
the false hit users complain about).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from cache.errors import InvalidRequest

DEFAULT_CATEGORY = "default"
WEIGHTS_FILE = "classifier.npz"


@dataclass(frozen=True, slots=True)
class LinearClassifier:
    """softmax(coef · x + intercept) over `labels`; below `floor` → DEFAULT_CATEGORY."""

    labels: tuple[str, ...]
    coef: np.ndarray  # float32 (n_labels, dim)
    intercept: np.ndarray  # float32 (n_labels,)
    floor: float = 0.5

    def __post_init__(self) -> None:
        if self.coef.ndim != 2 or self.coef.shape[0] != len(self.labels):
            raise InvalidRequest("coef", f"must be (len(labels), dim), got {self.coef.shape}")
        if self.intercept.shape != (len(self.labels),):
            raise InvalidRequest(
                "intercept", f"must be ({len(self.labels)},), got {self.intercept.shape}"
            )
        if not 0.0 <= self.floor <= 1.0:
            raise InvalidRequest("floor", f"must be in [0, 1], got {self.floor}")

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(n, n_labels) class probabilities for (n, dim) embeddings."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidRequest(
                "embedding", f"must have {self.dim} dimensions, got shape {vectors.shape}"
            )
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        probabilities: np.ndarray = p / p.sum(axis=1, keepdims=True)
        return probabilities

    def classify_batch(self, vectors: np.ndarray) -> list[tuple[str, float]]:
        """(category, confidence) per row; confidence is the top class probability."""
        p = self.probabilities(vectors)
        best = p.argmax(axis=1)
        out = []
        for row, j in enumerate(best.tolist()):
            conf = float(p[row, j])
            out.append((self.labels[j] if conf >= self.floor else DEFAULT_CATEGORY, conf))
        return out

    def classify(self, vector: np.ndarray) -> tuple[str, float]:
        """The Classifier port: (category, confidence) of one embedding."""
        return self.classify_batch(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]

    # -- persistence ---------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = json.dumps({"labels": list(self.labels), "floor": self.floor}).encode()
        np.savez(
            buf,
            allow_pickle=False,
            meta=np.frombuffer(meta, dtype=np.uint8),
            coef=self.coef,
            intercept=self.intercept,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, floor: float | None = None) -> LinearClassifier:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            coef = np.ascontiguousarray(z["coef"], dtype=np.float32)
            intercept = np.ascontiguousarray(z["intercept"], dtype=np.float32)
        return cls(
            tuple(meta["labels"]), coef, intercept, float(meta["floor"] if floor is None else floor)
        )

    @classmethod
    def load(cls, path: Path | None = None, *, floor: float | None = None) -> LinearClassifier:
        """The shipped weights (or those at `path`); `floor` overrides the trained default."""
        if path is None:
            data = resources.files("cache").joinpath("data", WEIGHTS_FILE).read_bytes()
        else:
            data = Path(path).read_bytes()
        return cls.from_bytes(data, floor=floor)
