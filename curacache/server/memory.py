"""Process-wide memory settings, applied once by `curacache serve` before it allocates much."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("curacache.server")

# glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _mallopt(param: int, value: int, name: str) -> bool:
    """glibc's mallopt(param, value); False where the C library has no mallopt or refuses."""
    libname = ctypes.util.find_library("c")
    if libname is None:
        return False
    mallopt = getattr(ctypes.CDLL(libname), "mallopt", None)
    if mallopt is None:
        return False
    applied = bool(mallopt(param, value))
    if not applied:
        log.debug("mallopt(%s, %d) refused", name, value)
    return applied


def limit_malloc_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` (what MALLOC_ARENA_MAX=count does); False where the
    C library has no such setting (not glibc).

    Why: glibc gives threads their own arenas and keeps each one's high-water mark. Snapshots,
    retrains and store reads run in pool threads and each allocates tens of MB for a moment,
    so with the default (8 per core) the server's RSS climbed by about that much per new
    thread that did one, and did not come back (bench/load/README.md, "Soak").
    """
    return _mallopt(_M_ARENA_MAX, count, "M_ARENA_MAX")


def fix_mmap_threshold(size: int) -> bool:
    """Serve every allocation of at least `size` bytes from its own mapping, returned to the
    system when freed (what MALLOC_MMAP_THRESHOLD_=size does); False where not applied.

    Why: glibc's threshold starts at 128 KiB but rises to the size of each large block freed,
    up to 32 MiB, after which blocks that size come from the heap and their pages stay with
    the process when freed. A snapshot or a retrain frees tens of MB of such blocks, so each
    left the RSS higher (bench/load/README.md, "Soak"). Setting the threshold fixes it.
    """
    return _mallopt(_M_MMAP_THRESHOLD, size, "M_MMAP_THRESHOLD")
