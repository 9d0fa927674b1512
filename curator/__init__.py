"""Curator: multi-tenant vector index over one shared clustering tree (DESIGN §4).

Pure algorithm (numpy, FAISS k-means, numba kernels in `curator._kernels`); it knows nothing
of the service. `CuratorIndex` is the entry point.
"""

from curator.index import CuratorIndex
from curator.tenants import TenantTree
from curator.tree import Tree, train_tree

__all__ = ["CuratorIndex", "TenantTree", "Tree", "train_tree"]
