"""Process-wide malloc settings for long inference runs (standard library only).

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults a tiled run
returns most of that memory to the kernel after every tile and asks for it again for the next:
blocks over 32 MiB (the upsampling layers of an x4 tile) are separate ``mmap``s, and each thread
(the engine's tile workers, the OpenMP pool) gets its own arena, whose heaps are unmapped as soon
as they are empty. Every page of the new mapping then costs a page fault and a page of zeroing
in the kernel: about half as much system time as user time on a large x4 upscale
(docs/backends.md, "Memory churn"). :func:`keep_freed_memory` makes glibc keep freed memory for
reuse instead: one arena, no ``mmap`` for large blocks, no trimming. The price is that the
process keeps its peak memory until it exits, which suits a command that runs one job.

It must run before other threads allocate (arenas already made stay in use), so the command line
calls it first thing; a library user calls it at the start of their program, or sets the same
``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` environment before starting it.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# Largest trim threshold mallopt takes (an int): in practice, never trim.
_NEVER_TRIM = 2**31 - 1
# Settings a user made themselves, which we leave alone.
_USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse (see the module doc); True when applied.

    Does nothing (False) off Linux, with another C library, or when the environment already
    carries malloc settings of the user's own.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it: musl's mallopt ignores these)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    results = [
        mallopt(_M_ARENA_MAX, 1),
        mallopt(_M_MMAP_MAX, 0),
        mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM),
    ]
    return all(r == 1 for r in results)
