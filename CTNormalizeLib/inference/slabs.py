"""Run per-slice numpy/scipy work on z slabs in threads (scipy.ndimage and numpy release the GIL).

In-plane operations give the same values whichever slabs they run on, so splitting along
z changes no bit; it only uses every core for the parts of the pipeline outside torch.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

_POOL: dict = {}


def workers() -> int:
    """Threads for slab work: torch's thread setting when torch is loaded (a Dask worker's share), else the CPUs.

    ``CTNORMALIZE_THREADS`` overrides both.
    """
    if os.environ.get("CTNORMALIZE_THREADS"):
        return max(1, int(os.environ["CTNORMALIZE_THREADS"]))
    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    return max(1, os.cpu_count() or 1)


def _pool(n: int) -> ThreadPoolExecutor:
    if n not in _POOL:
        _POOL[n] = ThreadPoolExecutor(n, thread_name_prefix="ctn-slab")
    return _POOL[n]


def for_slabs(fn, z0: int, z1: int, n: int | None = None, min_slices: int = 2) -> None:
    """Call ``fn(a, b)`` on contiguous sub-ranges of ``[z0, z1)``, one per thread, and wait for all.

    Exceptions from any slab are raised here.
    """
    n = workers() if n is None else n
    total = z1 - z0
    parts = max(1, min(n, total // max(1, min_slices)))
    if parts == 1:
        fn(z0, z1)
        return
    edges = [z0 + (total * k) // parts for k in range(parts + 1)]
    futures = [_pool(parts).submit(fn, a, b) for a, b in zip(edges[:-1], edges[1:])]
    for f in futures:
        f.result()


def map_slices(fn, arr, out=None, n: int | None = None):
    """``out[z] = fn(arr[a:b])[z - a]`` over slabs: an in-plane function applied slab by slab in threads."""
    import numpy as np

    first = None
    if out is None:
        first = fn(arr[:1])
        out = np.empty(arr.shape[:1] + first.shape[1:], first.dtype)

    def run(a, b):
        out[a:b] = fn(arr[a:b])

    for_slabs(run, 0, arr.shape[0], n)
    return out
