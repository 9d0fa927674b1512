"""Snapshot format of a CuratorIndex: one `np.savez` archive, no pickle.

Why npz: arrays round-trip bit-exactly and fast; `allow_pickle=False` on load means a
snapshot can never execute code. Scalars and tenant names travel as one JSON document stored
as a uint8 array. Labels travel as one GCT leaf each (-1 = absent); paths are the tree's
`ancestors` and the leaves' member slots are rebuilt from the leaves (derived, not stored).
Lists travel as sorted ids, leaf bitmaps included (re-encoded against the rebuilt slots).

VERSION 4 (sparse per-tenant counts; 3: 8-bit quantized centroids; 2: a leaf per label instead
of a path per label). Older snapshots are rejected: the service then rebuilds the index from
its store.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from curator.members import LeafMembers
from curator.tenants import TenantTree
from curator.tree import Tree

if TYPE_CHECKING:
    from curator.index import CuratorIndex

FORMAT = "curator-snapshot"
VERSION = 4


def dump(index: CuratorIndex) -> bytes:
    """Serialise `index` (caller holds its read lock)."""
    leaf = index._leaf
    live = np.flatnonzero(leaf >= 0)
    hi = int(live[-1]) + 1 if live.size else 0
    names: list[str] = []
    e_nodes: list[np.ndarray] = []
    e_counts: list[np.ndarray] = []
    tenant_entries = [0]
    tenant_lists = [0]
    nodes: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    base = 0
    for _, name, tt in index._tenants.live():
        names.append(name)
        rows = tt.rows()
        e_nodes.append(rows[:, 0].copy())
        e_counts.append(rows[:, 1].copy())
        tenant_entries.append(tenant_entries[-1] + rows.shape[0])
        n, off, i = tt.export()
        nodes.append(n)
        offsets.append(off[:-1] + base)
        ids.append(i)
        base += int(off[-1])
        tenant_lists.append(tenant_lists[-1] + len(n))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dim": index.dim,
        "metric": index.metric,
        "max_sl_size": index.max_sl_size,
        "branching": index.branching,
        "max_depth": index.max_depth,
        "train_size": index.train_size,
        "train_at": index._train_at,
        "tenants": names,
    }
    arrays: dict[str, np.ndarray] = {f"tree_{k}": v for k, v in index._tree.arrays().items()}
    arrays.update(
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        vectors=index._vectors[:hi],
        norms=index._norms[:hi],
        leaf=leaf[:hi],
        t_entries=np.asarray(tenant_entries, dtype=np.int64),
        e_nodes=np.concatenate(e_nodes) if e_nodes else np.empty(0, np.int32),
        e_counts=np.concatenate(e_counts) if e_counts else np.empty(0, np.int32),
        t_lists=np.asarray(tenant_lists, dtype=np.int64),
        l_nodes=np.concatenate(nodes) if nodes else np.empty(0, np.int32),
        l_offsets=np.append(np.concatenate(offsets) if offsets else np.empty(0, np.int64), base),
        l_ids=np.concatenate(ids) if ids else np.empty(0, np.int32),
    )
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


@dataclass
class State:
    meta: dict[str, Any]
    tree: Tree
    arrays: dict[str, np.ndarray]


def load(data: bytes, *, dim: int, metric: str) -> State:
    """Parse and check a snapshot for an index of this dim and metric (ValueError if not)."""
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
    need = {"leaf", "vectors", "norms", "t_entries", "e_nodes", "e_counts", "t_lists", "l_nodes", "l_offsets", "l_ids"}
    if not need <= arrays.keys():
        raise ValueError("curator snapshot is missing arrays")
    tree = Tree.from_arrays({k[5:]: arrays.pop(k) for k in list(arrays) if k.startswith("tree_")})
    n_nodes = tree.n_nodes
    leaf = arrays["leaf"]
    hi = leaf.shape[0]
    live = leaf[leaf >= 0]
    ok = (
        leaf.ndim == 1
        and leaf.dtype == np.int32
        and arrays["vectors"].shape == (hi, dim)
        and arrays["norms"].shape == ((hi,) if metric == "l2" else (0,))
        and bool(np.all(leaf >= -1))
        and (live.size == 0 or (int(live.max()) < n_nodes and not np.any(tree.child_count[live])))
        and arrays["t_entries"].shape == (len(meta["tenants"]) + 1,)
        and arrays["e_nodes"].shape == arrays["e_counts"].shape == (int(arrays["t_entries"][-1]),)
        and (arrays["e_nodes"].size == 0 or 0 <= int(arrays["e_nodes"].min()) <= int(arrays["e_nodes"].max()) < n_nodes)
        and bool(np.all(arrays["e_counts"] > 0))
        and arrays["t_lists"].shape == (len(meta["tenants"]) + 1,)
        and arrays["l_offsets"].shape == (arrays["l_nodes"].shape[0] + 1,)
        and (arrays["l_ids"].size == 0 or int(arrays["l_ids"].max()) < hi)
        and (arrays["l_ids"].size == 0 or int(arrays["l_ids"].min()) >= 0)
        and bool(np.all(leaf[arrays["l_ids"]] >= 0))
        and int(arrays["l_offsets"][-1]) == arrays["l_ids"].shape[0]
        and (arrays["l_nodes"].size == 0 or int(arrays["l_nodes"].max()) < n_nodes)
    )
    if not ok:
        raise ValueError("curator snapshot arrays are inconsistent")
    t_entries, e_nodes, t_lists, l_nodes = arrays["t_entries"], arrays["e_nodes"], arrays["t_lists"], arrays["l_nodes"]
    for t in range(len(meta["tenants"])):  # checked here so that apply() cannot fail half-way
        nodes = e_nodes[int(t_entries[t]) : int(t_entries[t + 1])]
        lists = l_nodes[int(t_lists[t]) : int(t_lists[t + 1])]
        if np.any(np.diff(nodes) <= 0) or not np.all(np.isin(lists, nodes)):
            raise ValueError("curator snapshot tenant counts are inconsistent")
    return State(meta, tree, arrays)


def apply(index: CuratorIndex, state: State) -> None:
    """Install a loaded snapshot into `index` (caller holds its write lock)."""
    meta, a = state.meta, state.arrays
    index.max_sl_size = int(meta["max_sl_size"])
    index.branching = int(meta["branching"])
    index.max_depth = int(meta["max_depth"])
    index.train_size = int(meta["train_size"])
    index._train_at = int(meta["train_at"])
    index._tree = state.tree
    index._reset_rows()
    index._reset_tenants()
    hi = a["leaf"].shape[0]
    if hi:
        index._resize(index._grown(hi))  # after _reset_rows: exactly hi
        index._vectors[:hi] = a["vectors"]
        if index.metric == "l2":
            index._norms[:hi] = a["norms"]
        index._leaf[:hi] = a["leaf"]
    index._n = int(np.count_nonzero(a["leaf"] >= 0))
    index._members = LeafMembers.build(index._leaf, state.tree.child_count)
    t_lists, nodes, offsets, ids = a["t_lists"], a["l_nodes"], a["l_offsets"], a["l_ids"]
    t_entries, e_nodes, e_counts = a["t_entries"], a["e_nodes"].astype(np.int32), a["e_counts"].astype(np.int32)
    for t, name in enumerate(meta["tenants"]):
        lo, up = int(t_lists[t]), int(t_lists[t + 1])
        off = offsets[lo : up + 1] - offsets[lo]
        tids = ids[int(offsets[lo]) : int(offsets[up])]
        e0, e1 = int(t_entries[t]), int(t_entries[t + 1])
        tt = TenantTree.from_lists(
            index._members, e_nodes[e0:e1], e_counts[e0:e1], nodes[lo:up].astype(np.int32), off, tids
        )
        index._tenants.add(name, tt)

