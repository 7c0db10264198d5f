"""Give freed host memory back to the OS between layers (glibc only; a no-op elsewhere).

glibc serves allocations above M_MMAP_THRESHOLD with mmap and unmaps them on free, but by default the
threshold grows to the size of any mmapped block that gets freed (up to 32 MiB). After the first layer's
26 MB Hessians are freed, every later Hessian and expert weight comes from the heap arenas instead, and
freed arena memory mostly stays with the process: the real-shape benchmark's resident memory grew by
~3 GB per layer that way. A fixed threshold keeps large tensors on mmap, and `trim()` after each layer
returns what the arenas hold free.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 8 << 20  # per-column temporaries stay on the heap; tensors >= 8 MiB are mmapped

_libc = None
_configured = False


def _glibc():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") else False
        except OSError:
            _libc = False
    return _libc or None


def keep_large_allocations_on_mmap() -> bool:
    """Fix glibc's mmap threshold (idempotent); True if it took effect."""
    global _configured
    lib = _glibc()
    if lib is None:
        return False
    if not _configured:
        _configured = bool(lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    return _configured


def trim() -> bool:
    """Return free arena memory to the OS (malloc_trim); True if anything was released."""
    lib = _glibc()
    return bool(lib.malloc_trim(0)) if lib is not None else False
