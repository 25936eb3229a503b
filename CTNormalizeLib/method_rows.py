"""The rows of the method table and where methods register them (the ground floor of :mod:`..methods`).

Kept apart from :mod:`CTNormalizeLib.methods` (which builds the table, adds the
installed models and makes ``auto``'s choice) so that the layers holding the methods'
maths can register their rows without importing anything above them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .volume import Volume

#: What a method can change; a method that changes all of these is "complete" (auto may pick it).
ASPECTS = ("kernel", "noise", "thickness")


@dataclass
class MethodResult:
    """What a method's run function returns."""

    volume: Volume
    steps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    qc: dict = field(default_factory=dict)
    device: str = "cpu"
    model_sha256: Optional[str] = None
    timings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One row of the method table.

    Attributes
    ----------
    name : str
        What ``--method`` takes.
    kind : str
        ``"classical"`` or ``"model"``.
    summary : str
        One line for help texts and the Slicer tooltip.
    changes : tuple of str
        Aspects of the protocol it normalizes (subset of :data:`ASPECTS`, or ``"histogram"``,
        ``"bands"``).
    run : callable
        ``run(volume, plan, progress, reference) -> MethodResult``.
    needs_reference : bool
        Needs a reference volume (offered in Slicer only with a reference selector).
    needs_torch : bool
    covers : callable, optional
        ``covers(plan) -> None | str``: None when it can run this plan, else why not.
    figures : dict
        Benchmark figures (``{"l1_gap_closed": {"in_distribution": x, "heldout_physics": y}, ...}``)
        that ``auto`` compares; empty when never benchmarked.
    card : dict
        The model card (learned rows) or the method card.
    texture : str, optional
        The noise texture its output has whatever ``--texture`` asks (``frequency_decomposition``
        scales every band to the target's energy, noise included: ``target``). None: the
        plan's texture, or ``source`` for a method that does not change the noise.
    """

    name: str
    kind: str
    summary: str
    changes: tuple
    run: Callable
    needs_reference: bool = False
    needs_torch: bool = False
    covers: Optional[Callable] = None
    figures: dict = field(default_factory=dict, compare=False, hash=False)
    card: dict = field(default_factory=dict, compare=False, hash=False)
    texture: Optional[str] = None

    @property
    def complete(self) -> bool:
        return all(a in self.changes for a in ASPECTS)

    def why_not(self, plan) -> Optional[str]:
        return None if self.covers is None else self.covers(plan)

    def row(self) -> dict:
        """JSON-ready row (no callables) for listings and the Slicer panel."""
        return {"name": self.name, "kind": self.kind, "summary": self.summary, "changes": list(self.changes),
                "needs_reference": self.needs_reference, "needs_torch": self.needs_torch,
                "complete": self.complete, "figures": self.figures}


_REGISTERED: dict = {}


def register(method: Method) -> Method:
    """Add a row to the table (a later row with the same name replaces the earlier one)."""
    _REGISTERED[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a row (tests that register a toy method)."""
    _REGISTERED.pop(name, None)


def registered_rows() -> dict:
    """The registered rows by name, in registration order."""
    return dict(_REGISTERED)


