"""An output read back: does a target-texture output's noise read as the target's kernel?

The target texture promises a scan that is statistically one of the target protocol: its
noise texture should read as the target's kernel class when measured the way any scan is
(:func:`~.measure.measure_signature`). A method that leaves the noise in another kernel's
texture (e.g. a learned normalizer that does not sharpen as far as a sharp target asks)
gives texture features and an emphysema index of that other kernel, silently; this check
says so. The clean texture leaves too little noise to read a kernel from, so it is not
checked.
"""

from __future__ import annotations

from typing import Optional

from .kernel_class import classify_transfer
from .measure import measure_signature

KERNEL_NOT_REACHED = "OUTPUT_KERNEL_NOT_REACHED"


def kernel_not_reached_warning(output, target_signature, method: str) -> Optional[dict]:
    """A :data:`KERNEL_NOT_REACHED` warning when ``output``'s measured kernel class is not the target's.

    Parameters
    ----------
    output : Volume
        The normalized volume (target texture).
    target_signature : Signature
        The plan's target signature (nominal or measured on a reference scan).
    method : str
        The method that made ``output`` (named in the message).

    Returns
    -------
    dict or None
        ``{"code", "message"}`` (the message names both classes and MTF50s), or None when the classes
        agree or the output's kernel could not be read from its pixels.
    """
    sig = measure_signature(output, with_edge=False)
    if not sig.transfer_measured or not sig.kernel:
        return None
    want = target_signature.kernel or classify_transfer(target_signature.transfer, sig.nyquist)[0]
    if sig.kernel == want:
        return None
    got_mtf, want_mtf = float(sig.mtf50), float(target_signature.transfer.mtf50)
    return {"code": KERNEL_NOT_REACHED,
            "message": f"The output's noise texture reads as a {sig.kernel} kernel (MTF50 {got_mtf:.2f} c/mm), not the "
                       f"target's {want} ({want_mtf:.2f} c/mm): {method} did not carry the scan all the way to the "
                       f"target kernel, so texture features and the emphysema index will read as a {sig.kernel} "
                       "scan's. The classical chain converts the kernel by the measured transfers (--method "
                       "classical); compare its run."}
