"""Name -> IndexKind registry: adding a kind is one entry here, never an if/elif on names."""

from __future__ import annotations

from collections.abc import Mapping

from curacache.errors import InvalidArgument
from curacache.index.base import IndexKind
from curacache.index.curator import CURATOR
from curacache.index.flat import FLAT
from curacache.index.hnsw import HNSW

INDEX_KINDS: Mapping[str, IndexKind] = {
    CURATOR.name: CURATOR,
    FLAT.name: FLAT,
    HNSW.name: HNSW,
}

DEFAULT_INDEX_KIND = "curator"


def get_kind(name: str, *, field: str) -> IndexKind:
    """The kind called `name`; an unknown name raises InvalidArgument naming `field`."""
    kind = INDEX_KINDS.get(name)
    if kind is None:
        accepted = ", ".join(sorted(INDEX_KINDS))
        raise InvalidArgument(field, f"unknown index kind {name!r}; accepted: {accepted}")
    return kind
