"""Contenders behind one small interface: build, a parameter sweep, search, memory, writes.

- `KindContender`: a registered curacache index kind (curator, hnsw = PT-HNSW, flat) driven
  through the Index protocol with labels = row numbers, metric "ip".
- `MFHNSW` / `MFIVF` (bench-only): one shared FAISS index over every vector, searched with
  the tenant's IDSelector (SearchParametersHNSW / SearchParametersIVF). Each tenant's access
  list *is* its selector: an IDSelectorBitmap over all labels, or an IDSelectorBatch (hash set
  + bloom filter) when that is smaller (small tenants); grant/revoke flip a bit or rebuild a
  small tenant's batch selector. FAISS HNSW cannot remove vectors, so MF-HNSW deletes by
  dropping the label from every selector (a tombstone); MF-IVF removes it from its list.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import faiss
import numpy as np
from tqdm import tqdm

from bench.curator.data import Workload
from curacache.index.base import Retrainable
from curacache.index.rwlock import RWLock

K = 10
BUILD_BATCH = 4096

# kind -> (candidate names of the swept search param, values, fixed extras if accepted)
KIND_SWEEPS: dict[str, tuple[tuple[str, ...], list[int], dict[str, float]]] = {
    "curator": (("gamma2",), [8, 16, 32, 64, 128, 256], {"gamma1": 2}),
    "hnsw": (("ef", "ef_search", "efSearch"), [10, 20, 40, 80, 160, 320], {}),
}
MF_HNSW_EF = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
MF_HNSW_M = 32
MF_HNSW_EF_CONSTRUCTION = 128
MF_IVF_NPROBE = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]  # capped at nlist

LABELS = {
    "curator": "curator",
    "hnsw": "PT-HNSW",
    "mf-hnsw": "MF-HNSW",
    "mf-ivf": "MF-IVF",
    "flat": "flat",
}


class Contender(Protocol):
    name: str
    label: str
    notes: list[str]
    defaults: dict[str, float] | None = None  # the sweep point at the kind's default params

    def build(self, wl: Workload) -> dict[str, float]: ...
    def sweep(self) -> list[dict[str, float]]: ...
    def search(self, tenant: str, q: np.ndarray, k: int, param: dict[str, float]) -> np.ndarray: ...
    def memory(self, raw_bytes: int) -> dict[str, Any]: ...
    def insert(self, label: int, vec: np.ndarray, tenant: str) -> None: ...
    def grant(self, label: int, tenant: str) -> None: ...
    def revoke(self, label: int, tenant: str) -> None: ...
    def delete(self, label: int) -> None: ...


class KindContender(Contender):
    def __init__(self, name: str, kind: Any, build_params: dict[str, float] | None = None) -> None:
        self.name, self.label, self.kind, self.notes = name, LABELS.get(name, name), kind, []
        self.build_params = dict(build_params or {})
        if self.build_params:
            self.notes.append(f"build params {self.build_params}")
        self.index: Any = None

    def build(self, wl: Workload) -> dict[str, float]:
        n, d = wl.X.shape
        self.index = self.kind.create(dim=d, metric="ip", params=self.build_params)
        labels = np.arange(n, dtype=np.int64)
        t0 = time.perf_counter()
        with tqdm(total=n, desc=f"build {self.label}", unit="vec", leave=False) as bar:
            index = self.index
            for s in range(0, n, BUILD_BATCH):
                e = min(n, s + BUILD_BATCH)
                index.add(labels[s:e], wl.X[s:e], wl.access[s:e])
                if isinstance(index, Retrainable) and index.retrain_due():
                    index.retrain(RWLock())  # as the service's collection does, inline
                bar.update(e - s)
        return {"build_s": time.perf_counter() - t0}

    def sweep(self) -> list[dict[str, float]]:
        spec = KIND_SWEEPS.get(self.name)
        accepted = dict(getattr(self.kind, "search_params", {}) or {})
        if spec is None:
            return [{}]
        names, values, extras = spec
        pname = next((p for p in names if p in accepted), None)
        if pname is None:
            self.notes.append(
                f"search param {names[0]} not accepted ({sorted(accepted)}); one default point"
            )
            return [{}]
        lo, hi = accepted[pname].low, accepted[pname].high
        fixed = {p: float(v) for p, v in extras.items() if p in accepted}
        default = float(accepted[pname].default)
        if all(float(accepted[p].default) == v for p, v in fixed.items()):
            self.defaults = {**fixed, pname: default}
            points = sorted({*map(float, values), default})  # the default is always a point
        else:
            points = sorted(map(float, values))
        return [{**fixed, pname: v} for v in points if lo <= v <= hi]

    def search(self, tenant: str, q: np.ndarray, k: int, param: dict[str, float]) -> np.ndarray:
        return self.index.search(tenant, q, k, param).labels[0]

    def memory(self, raw_bytes: int) -> dict[str, Any]:
        """Every component but the one shared vector store ("vectors", whose spare capacity
        is an allocation policy, not index structure); total - raw is kept for reference."""
        comp = {str(c): int(b) for c, b in self.index.memory_bytes().items()}
        total = sum(comp.values())
        beyond = total - comp["vectors"] if "vectors" in comp else total - raw_bytes
        return {"beyond_raw": beyond, "total_minus_raw": total - raw_bytes, "components": comp}

    def insert(self, label: int, vec: np.ndarray, tenant: str) -> None:
        self.index.add(np.array([label], dtype=np.int64), vec, [[tenant]])

    def grant(self, label: int, tenant: str) -> None:
        self.index.grant(np.array([label], dtype=np.int64), tenant)

    def revoke(self, label: int, tenant: str) -> None:
        self.index.revoke(np.array([label], dtype=np.int64), tenant)

    def delete(self, label: int) -> None:
        self.index.remove(np.array([label], dtype=np.int64))


def _batch_selector_bytes(n_ids: int) -> int:
    """Estimated heap of faiss.IDSelectorBatch: unordered_set node (~32 B) + bucket (8 B) per
    id, and its bloom filter of 2^(ceil(log2 n) + 2) bytes."""
    return 40 * n_ids + (1 << (max(0, math.ceil(math.log2(max(1, n_ids)))) + 2))


class TenantSelectors:
    """Per-tenant access lists as FAISS IDSelectors (bitmap or batch, whichever is smaller)."""

    def __init__(self, members: dict[str, np.ndarray], capacity: int) -> None:
        self.capacity = capacity
        self.bitmap_bytes = (capacity + 7) // 8
        self.bitmaps: dict[str, np.ndarray] = {}
        self.batches: dict[str, np.ndarray] = {}  # small tenants: sorted ids (rebuild source)
        self.sel: dict[str, Any] = {}
        self.on_change: Callable[[str], None] = lambda t: None
        for t, ids in members.items():
            if self.bitmap_bytes <= _batch_selector_bytes(len(ids)):
                bits = np.zeros(capacity, dtype=bool)
                bits[ids] = True
                self.bitmaps[t] = np.packbits(bits, bitorder="little")
                self.sel[t] = faiss.IDSelectorBitmap(capacity, faiss.swig_ptr(self.bitmaps[t]))
            else:
                self._set_batch(t, np.asarray(ids, dtype=np.int64))

    def _set_batch(self, t: str, ids: np.ndarray) -> None:
        self.batches[t] = ids
        self.sel[t] = faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))
        self.on_change(t)

    def grant(self, t: str, label: int) -> None:
        bm = self.bitmaps.get(t)
        if bm is not None:
            bm[label >> 3] |= np.uint8(1 << (label & 7))
        else:
            ids = self.batches.get(t, np.empty(0, np.int64))
            self._set_batch(t, np.append(ids, np.int64(label)))

    def revoke(self, t: str, label: int) -> None:
        bm = self.bitmaps.get(t)
        if bm is not None:
            bm[label >> 3] &= np.uint8(0xFF ^ (1 << (label & 7)))
        elif t in self.batches:
            ids = self.batches[t]
            self._set_batch(t, ids[ids != label])

    def nbytes(self) -> int:
        return len(self.bitmaps) * self.bitmap_bytes + sum(
            _batch_selector_bytes(len(ids)) for ids in self.batches.values()
        )


class _MF(Contender):
    """Shared FAISS index + per-tenant selectors; subclasses build the index and params."""

    param_name = ""

    def __init__(self, name: str) -> None:
        self.name, self.label, self.notes = name, LABELS[name], []
        self.values: list[int] = []
        self.index: Any = None
        self.acl: TenantSelectors | None = None
        self.access: list[set[str]] = []
        self._params: dict[tuple[str, float], Any] = {}

    def _make_index(self, wl: Workload) -> tuple[Any, float]:
        raise NotImplementedError

    def _search_params(self, sel: Any, value: float) -> Any:
        raise NotImplementedError

    def build(self, wl: Workload) -> dict[str, float]:
        n = len(wl.X)
        self.index, train_s = self._make_index(wl)
        t0 = time.perf_counter()
        with tqdm(total=n, desc=f"build {self.label}", unit="vec", leave=False) as bar:
            for s in range(0, n, BUILD_BATCH):
                e = min(n, s + BUILD_BATCH)
                self._add(np.arange(s, e, dtype=np.int64), wl.X[s:e])
                bar.update(e - s)
        self.access = [set(a) for a in wl.access]
        self.acl = TenantSelectors(wl.members, capacity=n + 4096)
        self.acl.on_change = self._forget_params
        return {"train_s": train_s, "build_s": time.perf_counter() - t0 + train_s}

    def _add(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        self.index.add_with_ids(vecs, labels)

    def _forget_params(self, tenant: str) -> None:
        for key in [k for k in self._params if k[0] == tenant]:
            del self._params[key]

    def sweep(self) -> list[dict[str, float]]:
        return [{self.param_name: float(v)} for v in self.values]

    def search(self, tenant: str, q: np.ndarray, k: int, param: dict[str, float]) -> np.ndarray:
        value = param[self.param_name]
        sp = self._params.get((tenant, value))
        if sp is None:
            sel = self.acl.sel.get(tenant)  # type: ignore[union-attr]
            if sel is None:
                return np.full(k, -1, dtype=np.int64)
            sp = self._params[(tenant, value)] = self._search_params(sel, value)
        _, labels = self.index.search(q, k, params=sp)
        return labels[0]

    def memory(self, raw_bytes: int) -> dict[str, Any]:
        index_bytes = int(faiss.serialize_index(self.index).size)
        sel = self.acl.nbytes()  # type: ignore[union-attr]
        comp = {"index_serialized": index_bytes, "tenant_selectors": sel}
        beyond = index_bytes - raw_bytes + sel
        return {"beyond_raw": beyond, "total_minus_raw": beyond, "components": comp}

    def insert(self, label: int, vec: np.ndarray, tenant: str) -> None:
        self._add(np.array([label], dtype=np.int64), vec)
        self.access.append({tenant})
        assert len(self.access) == label + 1, "inserts must use consecutive labels"
        self.acl.grant(tenant, label)  # type: ignore[union-attr]

    def grant(self, label: int, tenant: str) -> None:
        if tenant not in self.access[label]:
            self.access[label].add(tenant)
            self.acl.grant(tenant, label)  # type: ignore[union-attr]

    def revoke(self, label: int, tenant: str) -> None:
        if tenant in self.access[label]:
            self.access[label].discard(tenant)
            self.acl.revoke(tenant, label)  # type: ignore[union-attr]

    def delete(self, label: int) -> None:
        for t in self.access[label]:
            self.acl.revoke(t, label)  # type: ignore[union-attr]
        self.access[label] = set()


class MFHNSW(_MF):
    param_name = "efSearch"

    def __init__(self) -> None:
        super().__init__("mf-hnsw")
        self.values = list(MF_HNSW_EF)

    def _make_index(self, wl: Workload) -> tuple[Any, float]:
        index = faiss.IndexHNSWFlat(wl.X.shape[1], MF_HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = MF_HNSW_EF_CONSTRUCTION
        self.notes.append(
            f"M={MF_HNSW_M}, efConstruction={MF_HNSW_EF_CONSTRUCTION}; "
            "delete = tombstone (label dropped from every selector); the "
            "label -> tenants map used by delete is bench-side, not counted"
        )
        return index, 0.0

    def _add(self, labels: np.ndarray, vecs: np.ndarray) -> None:
        assert int(labels[0]) == self.index.ntotal, "HNSW ids are sequential"
        self.index.add(vecs)

    def _search_params(self, sel: Any, value: float) -> Any:
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(value))


class MFIVF(_MF):
    param_name = "nprobe"

    def __init__(self) -> None:
        super().__init__("mf-ivf")
        self.values = list(MF_IVF_NPROBE)

    def _make_index(self, wl: Workload) -> tuple[Any, float]:
        n, d = wl.X.shape
        nlist = max(1, round(4 * math.sqrt(n)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.own_fields = True
        quantizer.this.disown()
        sample = wl.X
        if n > 64 * nlist:
            sample = wl.X[np.random.default_rng(0).choice(n, 64 * nlist, replace=False)]
        t0 = time.perf_counter()
        index.train(sample)
        train_s = time.perf_counter() - t0
        self.values = [v for v in MF_IVF_NPROBE if v < nlist] + [nlist]  # nlist = exhaustive
        self.notes.append(
            f"nlist={nlist}, trained on {len(sample)} vectors; "
            "delete = remove_ids (list scan, no direct map) + selector updates"
        )
        return index, train_s

    def _search_params(self, sel: Any, value: float) -> Any:
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(value))

    def delete(self, label: int) -> None:
        self.index.remove_ids(faiss.IDSelectorArray(np.array([label], dtype=np.int64)))
        super().delete(label)


def available(
    names: list[str], build_params: dict[str, dict[str, float]] | None = None
) -> tuple[dict[str, Callable[[], Contender]], list[str]]:
    """name -> factory for the requested contenders that exist now, and notes on the rest."""
    from curacache.index import registry

    INDEX_KINDS = registry.INDEX_KINDS
    build_params = build_params or {}
    for name in build_params:
        if name not in INDEX_KINDS:
            raise ValueError(f"--build-params: {name!r} is not a registered index kind")

    out: dict[str, Callable[[], Contender]] = {}
    notes = []
    for name in names:
        if name == "mf-hnsw":
            out[name] = MFHNSW
        elif name == "mf-ivf":
            out[name] = MFIVF
        elif name in INDEX_KINDS:
            out[name] = functools.partial(
                KindContender, name, INDEX_KINDS[name], build_params.get(name)
            )
        else:
            notes.append(
                f"skipping {name!r}: not registered in INDEX_KINDS "
                f"({', '.join(sorted(INDEX_KINDS))}) and not a bench baseline"
            )
    return out, notes
