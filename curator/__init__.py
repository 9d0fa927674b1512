"""Curator: multi-tenant vector index over one shared clustering tree (DESIGN §4).

Pure algorithm (numpy; numba kernels in `curator._kernels` and `curator._writes`; FAISS
k-means in `curator.tree`); it knows nothing of the service and holds no lock.
`CuratorIndex` is the entry point; docs/architecture.md draws its structures.
"""

from curator.index import CuratorIndex
from curator.store import TenantStore, TenantView
from curator.tree import Tree, train_tree

__all__ = ["CuratorIndex", "TenantStore", "TenantView", "Tree", "train_tree"]
