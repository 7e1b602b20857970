"""The C allocator set up for tensors on the CPU: a batch's buffers are reused by the next batch, not mapped anew.

glibc serves an allocation above its mmap threshold (128 KB, rising with what is freed to at most 32 MB) from fresh
pages, and gives the top of its heap back beyond a trim threshold. A backbone forward on a batch of tiles allocates
and frees hundreds of MB of activations (one MobileNetV2 layer of 25 tiles is 120 MB), so every batch faulted in —
and the kernel zeroed — the same memory again: 154,000 page faults and over half the time of a forward on 2 CPU
cores (``python -m benchmarks.allocator``: 0.39 s → 0.17 s for 25 tiles of 224 px, 2,000 faults, the same peak RSS).
Buffers up to ``_MMAP_THRESHOLD`` now come from the heap, and up to ``_TRIM_THRESHOLD`` of freed heap stays with the
process for the next batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

_MMAP_THRESHOLD = 128 << 20
_TRIM_THRESHOLD = 512 << 20
# mallopt's parameter numbers, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_tuned = False


def tune() -> bool:
    """Set glibc's thresholds once per process; False where the C library is not glibc (nothing to set)."""
    global _tuned
    if _tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    _tuned = bool(mapped and trimmed)
    return _tuned
