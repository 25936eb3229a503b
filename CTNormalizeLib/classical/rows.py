"""The classical rows of the method table (the ``classical`` chain registers itself in :mod:`.chain`)."""

from __future__ import annotations

from ..method_rows import Method, register
from . import denoise, frequency, histogram, mtf_ratio, thickness

register(Method(
    name="mtf_ratio", kind="classical",
    summary="in-plane kernel conversion by the ratio of the measured source and target MTFs (Wiener-limited "
            "where it sharpens)", changes=("kernel",), run=mtf_ratio.run))
register(Method(
    name="frequency_decomposition", kind="classical",
    summary="band energies inside the lungs scaled to the target's (Gallardo-Estrella et al. 2016); the target's "
            "energies predicted by the physics chain, or from a reference", changes=("kernel", "noise"),
    run=frequency.run, texture="target"))
register(Method(
    name="denoise", kind="classical",
    summary="non-local means calibrated from the measured noise down to the target's noise (dose only)",
    changes=("noise",), run=denoise.run))
def z_profile_run(volume, plan, progress=None, reference=None, options: dict | None = None):
    """The ``z_profile`` method: the slice-profile step alone (here, not in :mod:`.thickness`, which the
    chain's state imports for the z step's noise gain)."""
    from .state import finish, partial_warning, start

    state = start(volume, plan)
    thickness.z_step(state, plan, progress, options=options)
    partial_warning(state, plan, "z_profile", ("thickness",))
    return finish(volume, state, plan, "z_profile")


register(Method(
    name="z_profile", kind="classical",
    summary="slice-thickness and z-spacing change through the slice-sensitivity profile (exact thin -> thick)",
    changes=("thickness",), run=z_profile_run))
register(Method(
    name="histogram_match", kind="classical",
    summary="HU histogram in the body matched to a reference volume of the target protocol",
    changes=("histogram",), run=histogram.run, needs_reference=True))
