"""Embedding failures, as one exception type the callers (cache lookup, server) can catch.

It derives from `curacache.errors.Unavailable` because every way an embedder fails at run
time (remote server down, bad reply, model files missing) means "cannot serve this now",
which the server maps to UNAVAILABLE without knowing about embedders.
"""

from __future__ import annotations

from curacache.errors import Unavailable


class EmbeddingError(Unavailable):
    """An embedder could not produce vectors; the message says which embedder and why."""
