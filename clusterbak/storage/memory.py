"""Peak memory of the stream stages: glibc's malloc arenas.

glibc gives threads that allocate at the same time their own malloc arena (up to 8 per core), and an arena keeps
the heap it once grew to. The stages hand MiB-sized chunks between threads (the transport's reader, zstd, the age
thread, the part uploads of every file in flight), so the process's peak RSS grew with the number of threads rather
than with the data: 154 MB for a 256 MB backup to S3, 181-188 MB with age, of which the part buffers are 48 MiB.
Two arenas are enough for a handful of streaming threads (measured in docs/object-storage.md). Other C libraries
(musl) have no arenas: nothing to do there.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc's mallopt() parameter number
ARENAS = 2
_done: list[bool] = []


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Once per process; True when the C library accepted the cap (glibc), False elsewhere."""
    if _done:
        return _done[0]
    try:
        ok = bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        ok = False
    _done.append(ok)
    return ok
