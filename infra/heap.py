"""Give the heap's free pages back to the system: glibc's `malloc_trim(0)`.

glibc returns freed memory to the kernel only from the top of the heap (and the launcher's
MALLOC_ARENA_MAX=2 bounds the arenas, scripts/launcher.py MALLOC_ENV); pages freed in the middle
of an arena stay resident until `malloc_trim` releases them. After a flash crowd of 1,000
patients it took booking's RSS from 176 to 137 MB. The database pools' reaper (infra/db.py)
calls it once a tick, so a process that has finished a burst shrinks without a restart.

Where the C library has no `malloc_trim` (musl, macOS) `trim_heap` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["trim_heap", "can_trim"]


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_malloc_trim = _find_malloc_trim()


def can_trim() -> bool:
    """Whether this process's C library has malloc_trim."""
    return _malloc_trim is not None


def trim_heap() -> bool:
    """Release free heap pages to the system; answers whether glibc released any."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
