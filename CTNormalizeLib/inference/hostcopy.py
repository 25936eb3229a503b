"""Host <-> device copies of volumes in slice chunks, through a ring of pinned buffers on a side stream.

Pageable numpy memory cannot be copied asynchronously; pinning a whole volume costs as much
as the copy. So each chunk is copied into one of a few page-locked buffers (a host memcpy)
and from there to the device on a copy stream, while the next chunk fills the next buffer
and the compute stream keeps working. Downloads run the other way and are drained while
the device computes later chunks. On the CPU (tests, no accelerator) tensors share the
numpy memory and the copies are plain ones.
"""

from __future__ import annotations

import numpy as np

_RINGS: dict = {}


class HostCopies:
    """Chunked, overlapped copies of ``[z, y, x]`` float32 volumes between the host and ``device``.

    Parameters
    ----------
    device : torch.device
    slice_shape : tuple
        ``(y, x)`` of every slice copied.
    chunk : int
        Slices per copy.
    depth : int
        Pinned buffers in the ring (8 x 16 slices: two 64-slice network chunks in flight).
    """

    def __init__(self, device, slice_shape, chunk: int = 16, depth: int = 8):
        import torch

        self.device = device
        self.cuda = device.type == "cuda"
        self.chunk = int(chunk)
        self._pending: list = []
        if not self.cuda:
            return
        key = (str(device), tuple(slice_shape), self.chunk, depth)
        if key not in _RINGS:  # pinned buffers are slow to allocate: keep them for the process
            _RINGS[key] = [torch.empty((self.chunk,) + tuple(slice_shape), dtype=torch.float32, pin_memory=True)
                           for _ in range(depth)]
        self.ring = _RINGS[key]
        self.events = [None] * depth
        self.stream = torch.cuda.Stream(device=device)
        self._k = 0

    def _next(self):
        k = self._k
        self._k = (k + 1) % len(self.ring)
        if any(p[0] == k for p in self._pending):
            self._drain_until(k)
        elif self.events[k] is not None:
            self.events[k].synchronize()
        return k

    def upload(self, arr: np.ndarray):
        """``arr`` (float32 ``[z, y, x]``) as a tensor on the device (on the CPU: sharing ``arr``'s memory)."""
        import torch

        if not self.cuda:
            return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        out = torch.empty(arr.shape, dtype=torch.float32, device=self.device)
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for z0 in range(0, arr.shape[0], self.chunk):
            z1 = min(arr.shape[0], z0 + self.chunk)
            k = self._next()
            buf = self.ring[k][: z1 - z0]
            buf.numpy()[...] = arr[z0:z1]
            with torch.cuda.stream(self.stream):
                out[z0:z1].copy_(buf, non_blocking=True)
                self.events[k] = torch.cuda.Event()
                self.events[k].record(self.stream)
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return out

    def download_async(self, t, dst: np.ndarray) -> None:
        """Copy the device tensor ``t [n, y, x]`` into ``dst`` (a numpy view); done at :meth:`finish` at the latest."""
        import torch

        if not self.cuda:
            dst[...] = t.numpy()
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        for z0 in range(0, t.shape[0], self.chunk):
            z1 = min(t.shape[0], z0 + self.chunk)
            k = self._next()
            buf = self.ring[k][: z1 - z0]
            with torch.cuda.stream(self.stream):
                buf.copy_(t[z0:z1], non_blocking=True)
                t[z0:z1].record_stream(self.stream)
                ev = torch.cuda.Event()
                ev.record(self.stream)
            self.events[k] = ev
            self._pending.append((k, ev, buf, dst[z0:z1]))

    def _drain_until(self, k=None) -> None:
        """Finish the pending downloads in order, up to the one that uses buffer ``k`` (None: all)."""
        while self._pending:
            kk, ev, buf, dst = self._pending.pop(0)
            ev.synchronize()
            dst[...] = buf.numpy()
            if kk == k:
                break

    def finish(self) -> None:
        """Wait for every download and copy it into its destination."""
        self._drain_until(None)
