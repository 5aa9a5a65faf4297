"""Keep the memory a frame frees for the next frame (glibc's malloc, Linux).

Why: the predictor cuts and filters a frame's tiles on helper threads (``autofocus.predictor``,
"Threads"). glibc gives such a thread an arena of its own and, with its default (dynamic)
thresholds, hands the arena's free memory back to the kernel as soon as the frame's tiles and the
blank filter's work arrays are freed; the next frame then takes every page back with a page fault.
On a full 2592x1944 frame (2 cores, AMD EPYC) that was about 2,000 page faults and 10-14 ms a
frame (tiling 15 -> 5.5 ms, blank filter 18 -> 13 ms with the thresholds below;
``docs/autofocus.md``). A single-threaded predictor took none.

``keep_freed_memory`` fixes the two thresholds: blocks up to ``MMAP_THRESHOLD_BYTES`` (32 MiB,
glibc's largest) come from the arenas instead of fresh mappings, and an arena keeps up to
``TRIM_THRESHOLD_BYTES`` (128 MiB) free at its top. The process keeps the memory its largest frame
needed instead of returning it between frames; its peak is unchanged. The setting is process-wide,
like ``torch.set_num_threads``: the predictor calls it when it runs on more than one thread.
Elsewhere (macOS, Windows, musl) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "keep_freed_memory"]

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Fix glibc's trim and mmap thresholds for this process (once); ``True`` when they were set.

    ``False`` where the C library is not glibc or refuses a setting (logged; nothing else changes).
    """
    libc_name, _version = platform.libc_ver()
    if platform.system() != "Linux" or libc_name != "glibc":
        log.debug("keep_freed_memory: the C library is not glibc (%s %s); left as it is", platform.system(), libc_name)
        return False
    libc = ctypes.CDLL(None)
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # The mmap threshold first: setting either one turns off glibc's dynamic adjustment of both.
    for param, value, name in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES, "M_MMAP_THRESHOLD"),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES, "M_TRIM_THRESHOLD"),
    ):
        if mallopt(param, value) != 1:
            log.warning("keep_freed_memory: glibc refused mallopt(%s, %d); frames may page-fault", name, value)
            return False
    log.debug("keep_freed_memory: glibc keeps up to %d MiB free per arena", TRIM_THRESHOLD_BYTES >> 20)
    return True
