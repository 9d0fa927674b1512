"""Snapshot format of a CuratorIndex: one `np.savez` archive, no pickle.

Why npz: arrays round-trip bit-exactly and fast; `allow_pickle=False` on load means a
snapshot can never execute code. Scalars and tenant names travel as one JSON document stored
as a uint8 array. Labels travel as one GCT leaf each (-1 = absent); paths are the tree's
`ancestors` (derived, not stored). A tenant travels as the sorted labels it sees: its rows
and lists are rebuilt from them in canonical form, which is what they were.

The interface is `Snapshot` (what the index hands over and gets back) with `dump` and
`load`; this module knows nothing of the index. VERSION 5 (older ones are rejected: the
service then rebuilds the index from its store).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np

from curator.tree import Tree

FORMAT = "curator-snapshot"
VERSION = 5
PARAMS = ("max_sl_size", "branching", "max_depth", "train_size", "train_at")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a CuratorIndex is restored from (labels < len(leaf))."""

    params: dict[str, int]  # the PARAMS
    tree: Tree
    vectors: np.ndarray  # float32 (n, dim)
    norms: np.ndarray  # float32 (n,) for "l2", (0,) for "ip"
    leaf: np.ndarray  # int32 (n,), -1 = absent
    tenants: dict[str, np.ndarray]  # name -> the labels it sees (int32, ascending)


def dump(snap: Snapshot, *, dim: int, metric: str) -> bytes:
    """The npz bytes of `snap`."""
    names = list(snap.tenants)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dim": dim,
        "metric": metric,
        **snap.params,
        "tenants": names,
    }
    parts = [snap.tenants[name] for name in names]
    arrays: dict[str, np.ndarray] = {f"tree_{k}": v for k, v in snap.tree.arrays().items()}
    arrays.update(
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        vectors=snap.vectors,
        norms=snap.norms,
        leaf=snap.leaf,
        t_offsets=np.cumsum([0] + [len(p) for p in parts]).astype(np.int64),
        t_ids=np.concatenate(parts).astype(np.int32) if parts else np.empty(0, np.int32),
    )
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def load(data: bytes, *, dim: int, metric: str) -> Snapshot:
    """Parse and check a snapshot for an index of this dim and metric (ValueError if it is
    not one, or is inconsistent: checked whole, so that installing it cannot fail half-way)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a curator snapshot: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError("not a curator snapshot of a supported version")
    if meta["dim"] != dim or meta["metric"] != metric:
        raise ValueError(f"snapshot is for dim={meta['dim']} metric={meta['metric']!r}")
    if not {"leaf", "vectors", "norms", "t_offsets", "t_ids"} <= arrays.keys():
        raise ValueError("curator snapshot is missing arrays")
    tree = Tree.from_arrays({k[5:]: arrays.pop(k) for k in list(arrays) if k.startswith("tree_")})
    leaf, offsets, ids = arrays["leaf"], arrays["t_offsets"], arrays["t_ids"]
    hi = leaf.shape[0]
    live = leaf[leaf >= 0]
    ok = (
        leaf.ndim == 1
        and leaf.dtype == np.int32
        and arrays["vectors"].shape == (hi, dim)
        and arrays["norms"].shape == ((hi,) if metric == "l2" else (0,))
        and bool(np.all(leaf >= -1))
        and (
            live.size == 0
            or (int(live.max()) < tree.n_nodes and not np.any(tree.child_count[live]))
        )
        and offsets.shape == (len(meta["tenants"]) + 1,)
        and int(offsets[0]) == 0
        and bool(np.all(np.diff(offsets) > 0))
        and int(offsets[-1]) == ids.shape[0]
        and (ids.size == 0 or 0 <= int(ids.min()) <= int(ids.max()) < hi)
        and bool(np.all(leaf[ids] >= 0))
    )
    if not ok:
        raise ValueError("curator snapshot arrays are inconsistent")
    tenants = {}
    for t, name in enumerate(meta["tenants"]):
        labels = ids[int(offsets[t]) : int(offsets[t + 1])].astype(np.int32)
        if np.any(np.diff(labels) <= 0):
            raise ValueError("curator snapshot tenant labels are not ascending")
        tenants[name] = labels
    return Snapshot(
        {k: int(meta[k]) for k in PARAMS}, tree, arrays["vectors"], arrays["norms"], leaf, tenants
    )
