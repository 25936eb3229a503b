"""Dask worker preload of batch's LocalCluster: its worker processes ignore SIGINT.

A Ctrl-C on a terminal reaches the whole foreground process group. The batch process
cancels the run and closes the cluster; without this, each worker process also raised
KeyboardInterrupt in its event loop and printed a traceback (or the nanny reported the
worker dead) over the batch's own "cancelled" line.
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    """Called by distributed in each worker process as it starts (see ``preload``)."""
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
        signal.signal(signal.SIGINT, signal.SIG_IGN)
