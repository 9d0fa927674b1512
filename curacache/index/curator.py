"""`curator`: the Curator multi-tenant index (DESIGN §4) behind the Index port.

The algorithm lives in the pure `curator` package (no service concerns, no lock). This kind
adds what the service needs: named, bounded parameters (their defaults are `curator.index`'s,
their one home), search results as `SearchResult`, and a retrain that takes its owner's lock
only around the steps that touch the index (k-means runs without it). Everything else of the
port is the core's own methods, bound as they are. Locking is the owner's: see
docs/architecture.md.

Build parameters: τ = `max_sl_size` (shortlist split threshold), b0 = `branching` (root
fan-out of the global clustering tree), `max_depth`, `train_size` (collection size at which
the tree is first trained; below it search is exact). Search parameters: γ1 = `gamma1`
(traversal stops at γ1·γ2·k collected ids in γ1·γ2 buckets), γ2 = `gamma2` (the recall
knob: the nearest buckets up to γ2·k ids and at least γ2 buckets are the candidates),
ε0 = `epsilon` (of more than k candidates, only those whose score estimated from their 1-bit
sign codes, within ε0 times its error bound, may reach the top k are scored exactly; what keeps
a large tenant's many candidates cheap).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from curacache.index.base import RAW_METRICS, SearchResult
from curacache.index.params import Param, resolve_params
from curacache.index.rwlock import RWLock
from curator import CuratorIndex
from curator.index import (
    BRANCHING,
    EPSILON,
    GAMMA1,
    GAMMA2,
    MAX_DEPTH,
    MAX_SL_SIZE,
    TRAIN_SIZE,
)

BUILD_PARAMS: Mapping[str, Param] = MappingProxyType(
    {
        "max_sl_size": Param(
            MAX_SL_SIZE,
            8,
            65536,
            integer=True,
            doc="τ: a shortlist longer than this is split one level down",
        ),
        "branching": Param(
            BRANCHING,
            4,
            256,
            integer=True,
            doc="b0: fan-out of the tree root (children branch max(b/2, 4))",
        ),
        "max_depth": Param(
            MAX_DEPTH, 1, 16, integer=True, doc="deepest level of the global clustering tree"
        ),
        "train_size": Param(
            TRAIN_SIZE,
            64,
            1e9,
            integer=True,
            doc="train the tree when the collection first holds this many vectors",
        ),
    }
)
SEARCH_PARAMS: Mapping[str, Param] = MappingProxyType(
    {
        "gamma1": Param(
            GAMMA1, 1, 64, doc="γ1: stop the traversal after γ1·γ2·k candidate ids in γ1·γ2 buckets"
        ),
        "gamma2": Param(
            GAMMA2,
            1,
            4096,
            doc="γ2, the recall/latency knob: the candidates are the nearest buckets up to γ2·k "
            "ids and at least γ2 buckets. A tenant seeing up to ~γ2·k ids is searched whole; a "
            "larger one gets its nearest γ2 lists (≤ τ ids each), so its recall does not fall "
            "with its size and its cost grows with its ids per list. Lower it for speed on "
            "large tenants, raise it for recall",
        ),
        "epsilon": Param(
            EPSILON,
            0,
            1e6,
            doc="ε0, the width of the 1-bit sign codes' error bound in standard errors: of more "
            "than k candidates only those whose estimated score, within ε0 standard errors, "
            "may reach the top k are scored exactly (an estimate costs ~1/4 of an exact "
            "score). 0 scores k of them, 1e6 all",
        ),
    }
)


class CuratorAdapter:
    """The Index and Retrainable ports over a `curator.CuratorIndex` (`.core`)."""

    kind = "curator"

    def __init__(self, core: CuratorIndex) -> None:
        self.core = core
        self.dim = core.dim
        self.metric = core.metric
        # The port's writes, snapshots and introspection are the core's methods as they are
        # (same signatures); no wrapper frame on a single-label grant of a few µs.
        self.add = core.add
        self.grant = core.grant
        self.revoke = core.revoke
        self.remove = core.remove
        self.memory_bytes = core.memory_bytes
        self.snapshot = core.snapshot
        self.restore = core.restore
        self.labels = core.labels
        self.retrain_due = core.retrain_due

    def search(
        self, tenant: str, queries: np.ndarray, k: int, params: Mapping[str, float]
    ) -> SearchResult:
        """`params`: γ1 / γ2 by name (validated by `SEARCH_PARAMS`; an absent one is the core's default)."""
        labels, scores = self.core.search(tenant, queries, k, **params)
        return SearchResult(labels, scores)

    def retrain(self, lock: RWLock) -> bool:
        """Retrain the clustering tree: the sample is read under `lock`'s read side, k-means
        runs without it (searches and writes go on), the install takes its write side."""
        with lock.read():
            sample = self.core.training_sample()
        fitted = self.core.fit(sample)
        with lock.write():
            return self.core.install(fitted)

    def __len__(self) -> int:
        return len(self.core)


class CuratorKind:
    """The `curator` IndexKind."""

    name = "curator"
    bounded_search = True  # γ1·γ2·k candidates at most
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
            auto_train=False,  # the owner retrains in the background (`retrain_due`)
        )
        return CuratorAdapter(core)


CURATOR = CuratorKind()
