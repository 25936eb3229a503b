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

from .kernel_class import classify_transfer, describe_sharpness
from .measure import measure_signature

KERNEL_NOT_REACHED = "OUTPUT_KERNEL_NOT_REACHED"
#: Besides another class, the MTF50s (each capped at the output's Nyquist) must differ by this fraction: a
#: reading near a class boundary, or two classes the pixel grid cannot tell apart, is not flagged.
MTF50_GAP = 0.15


def kernel_not_reached_warning(output, target_signature, method: str) -> Optional[dict]:
    """A :data:`KERNEL_NOT_REACHED` warning when ``output``'s measured kernel is not the target's.

    Flagged when the output's noise reads as another kernel class than the target's and their
    MTF50s (each capped at the output's Nyquist frequency) differ by more than :data:`MTF50_GAP`.

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
        ``{"code", "message"}`` (the message names both classes and MTF50s), or None when the kernels
        agree or the output's kernel could not be read from its pixels.
    """
    sig = measure_signature(output, with_edge=False)
    if not sig.transfer_measured or not sig.kernel:
        return None
    nyq = sig.nyquist
    want = target_signature.kernel or classify_transfer(target_signature.transfer, nyq)[0]
    got50, want50 = min(float(sig.mtf50), nyq), min(float(target_signature.transfer.mtf50), nyq)
    if sig.kernel == want or abs(got50 - want50) <= MTF50_GAP * want50:
        return None
    if method == "classical":
        why = ("the chain's kernel step limits its gain where it would amplify the noise beyond what the Wiener "
               "prior allows, and the noise it inserts cannot sharpen the anatomy")
    else:
        why = ("the classical chain converts the kernel by the measured transfers (--method classical); compare "
               "its run")
    return {"code": KERNEL_NOT_REACHED,
            "message": f"The output's noise texture reads as a {sig.kernel} kernel "
                       f"({describe_sharpness(sig.transfer, nyq)}), not the target's {want} "
                       f"({describe_sharpness(target_signature.transfer, nyq)}): {method} did not carry the scan all "
                       f"the way to the target kernel, so texture features and the emphysema index will read as a "
                       f"{sig.kernel} scan's; {why}."}
