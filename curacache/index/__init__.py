"""Index kinds behind one Protocol (see base.py); pick one by name through `get_kind`."""

from curacache.index.base import Index, IndexKind, SearchResult
from curacache.index.params import Param, resolve_params
from curacache.index.registry import DEFAULT_INDEX_KIND, INDEX_KINDS, get_kind

__all__ = [
    "DEFAULT_INDEX_KIND",
    "INDEX_KINDS",
    "Index",
    "IndexKind",
    "Param",
    "SearchResult",
    "get_kind",
    "resolve_params",
]
