"""Hand the C heap's free pages back to the operating system between the phases of a training step on a CPU.

On Linux, glibc's malloc serves every block below its mmap threshold from heaps it can shrink only from the top,
and it raises that threshold, up to 32 MB, each time a larger mapped block is freed; so after the first step most
of a CPU step's activations and temporaries live in those heaps. Packed batches change shape from step to step and
blocks are freed in another order than they were made, so pages freed between live blocks pile up: at the 128k-
vocabulary shape of bench/RESULTS.md the process's resident memory grew by about 50 MB a step, to some 1.4 GB
above the bytes torch held. `malloc_trim(0)` gives back every whole free page, wherever it lies in the heap; the
engine calls it after each forward pass and after each optimizer step (peak RSS 3,708 -> 3,329 MB there, at about
4% of the time: bench/RESULTS.md, "The C heap between the phases of a step"). Elsewhere (no glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def give_back_free_pages() -> None:
    """Return the C heap's whole free pages to the operating system (glibc), keeping every live block."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
