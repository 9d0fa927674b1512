"""`curator`: the Curator multi-tenant index (DESIGN §4) behind the Index port.

The algorithm lives in the pure `curator` package (it knows nothing of the service); this
adapter validates parameters, maps them to `curator.CuratorIndex` and wraps search results in
`SearchResult`. Thread safety comes from CuratorIndex's own readers-writer lock.

Build parameters: τ = `max_sl_size` (shortlist split threshold), b0 = `branching` (root
fan-out of the global clustering tree), `max_depth`, `train_size` (collection size at which
the tree is first trained; below it search is exact). Search parameters: γ1 = `gamma1`
(traversal stops at γ1·γ2·k collected ids), γ2 = `gamma2` (the recall knob: the nearest
buckets up to γ2·k ids are scored exactly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np

from curacache.index.base import RAW_METRICS, SearchResult
from curacache.index.params import Param, resolve_params
from curator import CuratorIndex

BUILD_PARAMS: Mapping[str, Param] = MappingProxyType(
    {
        "max_sl_size": Param(256, 8, 65536, integer=True, doc="τ: a shortlist longer than this is split one level down"),
        "branching": Param(32, 4, 256, integer=True, doc="b0: fan-out of the tree root (children branch max(b/2, 4))"),
        "max_depth": Param(8, 1, 16, integer=True, doc="deepest level of the global clustering tree"),
        "train_size": Param(20000, 64, 1e9, integer=True, doc="train the tree when the collection first holds this many vectors"),
    }
)
SEARCH_PARAMS: Mapping[str, Param] = MappingProxyType(
    {
        "gamma1": Param(2, 1, 64, doc="γ1: stop the traversal after γ1·γ2·k candidate ids"),
        "gamma2": Param(128, 1, 4096, doc="γ2: score the nearest buckets up to γ2·k ids exactly (recall knob)"),
    }
)


class CuratorAdapter:
    """The Index protocol over a `curator.CuratorIndex` (`.core` exposes it for diagnostics)."""

    kind = "curator"

    def __init__(self, core: CuratorIndex) -> None:
        self.core = core
        self.dim = core.dim
        self.metric = core.metric
        # The single-label grant is a few µs in all; calling the core's bound method directly
        # spares it one Python frame (same signature and behaviour as the method below).
        self.grant = core.grant  # type: ignore[method-assign]

    def add(self, labels: np.ndarray, vectors: np.ndarray, access: Sequence[Sequence[str]]) -> None:
        self.core.add(labels, vectors, access)

    def grant(self, labels: np.ndarray, tenant: str) -> None:
        self.core.grant(labels, tenant)

    def revoke(self, labels: np.ndarray, tenant: str) -> None:
        self.core.revoke(labels, tenant)

    def remove(self, labels: np.ndarray) -> None:
        self.core.remove(labels)

    def search(self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]) -> SearchResult:
        gamma1 = params.get("gamma1", SEARCH_PARAMS["gamma1"].default)
        gamma2 = params.get("gamma2", SEARCH_PARAMS["gamma2"].default)
        labels, scores = self.core.search(tenant, queries, k, gamma1=gamma1, gamma2=gamma2)
        return SearchResult(labels, scores)

    def memory_bytes(self) -> dict[str, int]:
        return self.core.memory_bytes()

    def snapshot(self) -> bytes | None:
        return self.core.snapshot()

    def restore(self, data: bytes) -> None:
        self.core.restore(data)

    def labels(self) -> np.ndarray:
        """Present labels, to reconcile a restored snapshot with the store."""
        return self.core.labels()

    def retrain_due(self) -> bool:
        return self.core.retrain_due()

    def retrain(self) -> bool:
        """Retrain the clustering tree on the current vectors (k-means outside the lock)."""
        return self.core.retrain()

    def __len__(self) -> int:
        return len(self.core)


class CuratorKind:
    """The `curator` IndexKind."""

    name = "curator"
    build_params: Mapping[str, Param] = BUILD_PARAMS
    search_params: Mapping[str, Param] = SEARCH_PARAMS

    def __init__(self, *, use_gpu: bool | None = None) -> None:
        self.use_gpu = use_gpu  # FAISS k-means on GPU; None = when faiss sees one

    def create(self, *, dim: int, metric: str, params: Mapping[str, float]) -> CuratorAdapter:
        if metric not in RAW_METRICS:
            raise ValueError(f"metric must be one of {RAW_METRICS}, got {metric!r}")
        p = resolve_params(self.build_params, params, field="index_params")
        core = CuratorIndex(
            dim=dim,
            metric=metric,
            max_sl_size=int(p["max_sl_size"]),
            branching=int(p["branching"]),
            max_depth=int(p["max_depth"]),
            train_size=int(p["train_size"]),
            use_gpu=self.use_gpu,
        )
        return CuratorAdapter(core)


CURATOR = CuratorKind()
