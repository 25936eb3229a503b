"""What to try after an out-of-memory: fewer slices per chunk, smaller tiles, then the CPU."""

from __future__ import annotations

import logging

from ..errors import ResourceExhaustedError

log = logging.getLogger(__name__)

MIN_TILE = 64


def after_oom(exc, dev: str, tile: int, chunk: int, warnings: list) -> tuple[str, int, int]:
    """Next ``(device, tile, chunk)`` after an out-of-memory, or raise :class:`ResourceExhaustedError`.

    Order: halve the slices per chunk, then halve the tile down to :data:`MIN_TILE`, then (on
    a GPU) move to the CPU with a warning; on the CPU at the floor, give up.
    """
    if not dev.startswith("cpu"):
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - best effort
            pass
    if chunk > 1 or tile > MIN_TILE:
        new_chunk = max(1, chunk // 2)
        new_tile = tile if chunk > 1 else max(MIN_TILE, tile // 2)
        warnings.append({"code": "OOM_RETRY", "message":
                         f"Out of memory on {dev} with {chunk} slices x {tile}px tiles; retrying with "
                         f"{new_chunk} x {new_tile}px."})
        log.warning(warnings[-1]["message"])
        return dev, new_tile, new_chunk
    if not dev.startswith("cpu"):
        warnings.append({"code": "CUDA_OOM_CPU_FALLBACK", "message":
                         f"The GPU ran out of memory even at {tile}px tiles; continuing on the CPU (slower)."})
        log.warning(warnings[-1]["message"])
        return "cpu", 512, 4
    raise ResourceExhaustedError(
        f"Out of memory on the CPU even with 1 slice and {tile}px tiles; free memory or use a smaller volume."
    ) from exc
