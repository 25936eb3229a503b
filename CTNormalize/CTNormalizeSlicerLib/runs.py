"""The runs a logic has started, and stopping all of them when their scene goes away.

Each run is kept by its identity (``EngineRun.id``) together with the scene *generation*
it was started in. Closing the scene, reloading the module or quitting Slicer abandons
every live run synchronously: its process tree is ended and its temp folder (patient
data) removed before the call returns, and its result is never imported into whatever
scene comes next, even if Slicer reuses the same node IDs there.
"""

from __future__ import annotations

import logging
from typing import Optional

from .process import EngineRun, RunState

log = logging.getLogger(__name__)


class RunRegistry:
    """Live runs by identity, with the scene generation each belongs to."""

    def __init__(self):
        self._runs: dict[str, EngineRun] = {}
        self.generation = 0
        self._observed = None
        self._tag = None

    def add(self, run: EngineRun, kind: str) -> EngineRun:
        run.kind = kind
        run.generation = self.generation
        self._runs[run.id] = run
        return run

    def get(self, run_id: str) -> Optional[EngineRun]:
        return self._runs.get(run_id)

    def live(self, kind: Optional[str] = None) -> list:
        """Runs not finished yet (optionally of one kind: normalize, radiomics, emphysema)."""
        self._runs = {k: r for k, r in self._runs.items() if not r.state.finished}
        return [r for r in self._runs.values() if kind is None or r.kind == kind]

    def is_current(self, run: EngineRun) -> bool:
        """True while the run's scene is the one it was started in."""
        return getattr(run, "generation", None) == self.generation and run.id in self._runs

    def abandon_all(self, reason: str) -> int:
        """Stop every live run now (synchronously); returns how many were stopped."""
        runs = self.live()
        for run in runs:
            try:
                run.abandon(reason)
            except Exception:  # one failing kill must not keep the others running
                log.exception("CTNormalize: could not stop run %s", run.id)
        self._runs.clear()
        return len(runs)

    # -- the scene ------------------------------------------------------------------------
    def watch(self, scene) -> None:
        """Abandon every run when ``scene`` starts closing (and start a new generation)."""
        if self._observed is scene:
            return
        self.unwatch()
        import slicer

        self._observed = scene
        self._tag = scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self._on_scene_close)

    def unwatch(self) -> None:
        if self._observed is not None and self._tag is not None:
            self._observed.RemoveObserver(self._tag)
        self._observed, self._tag = None, None

    def _on_scene_close(self, caller=None, event=None) -> None:
        n = self.abandon_all("Cancelled: the scene was closed.")
        self.generation += 1
        if n:
            log.info("CTNormalize: stopped %d run(s) because the scene was closed", n)


def is_running(run: Optional[EngineRun]) -> bool:
    return run is not None and run.state.running and run.state is not RunState.IDLE
