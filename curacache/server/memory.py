"""Process-wide memory settings, applied once by `curacache serve` before it allocates much."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("curacache.server")

_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` (what MALLOC_ARENA_MAX=count does); False where the
    C library has no such setting (not glibc).

    Why: glibc gives threads their own arenas and keeps each one's high-water mark. Snapshots,
    retrains and store reads run in pool threads and each allocates tens of MB for a moment,
    so with the default (8 per core) the server's RSS climbed by about that much per new
    thread that did one, and did not come back (bench/load/README.md, "Soak").
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    applied = bool(mallopt(_M_ARENA_MAX, count))
    if not applied:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", count)
    return applied
