"""A target-texture output read back: its noise must read as the target's kernel class, else a warning."""

import pytest

from CTNormalizeLib.method_rows import Method, MethodResult, register, unregister
from CTNormalizeLib.normalization import normalize
from CTNormalizeLib.plan import make_plan
from CTNormalizeLib.protocols import Protocol
from CTNormalizeLib.signature.readback import KERNEL_NOT_REACHED, kernel_not_reached_warning
from CTNormalizeLib.volume import Volume

SPEC = "kernel=standard,dose=0.5,thickness=2"


@pytest.fixture(scope="module")
def standard_scan():
    from CTNormalizeLib.simulate import make_phantom, simulate_scan

    truth = make_phantom(5, shape=(16, 256, 256), spacing=(1.0, 0.7, 0.7)).volume
    v = simulate_scan(truth, Protocol(kernel="standard", dose=0.5, thickness=2.0), seed=1)
    return Volume(v.hu, v.spacing, meta={"Modality": "CT"})


def test_an_output_in_another_kernel_is_flagged(standard_scan):
    sharp = make_plan(standard_scan, SPEC, "kernel=sharp,dose=0.5,thickness=2", method="classical").target_signature
    same = make_plan(standard_scan, SPEC, SPEC, method="classical").target_signature
    w = kernel_not_reached_warning(standard_scan, sharp, "toy")
    assert w is not None and w["code"] == KERNEL_NOT_REACHED and set(w) == {"code", "message"}
    assert "standard" in w["message"] and "sharp" in w["message"] and "toy" in w["message"]
    assert kernel_not_reached_warning(standard_scan, same, "toy") is None


def test_normalize_reads_a_target_texture_output_back(standard_scan):
    """A method that leaves the kernel as it was, asked for the sharp kernel's texture, gets the warning; the
    clean texture (too little noise left to read a kernel) is not checked."""
    def run(v, p, pr=None, ref=None):
        return MethodResult(Volume(v.hu.copy(), v.spacing, v.origin, v.direction, dict(v.meta)))

    register(Method("toy-keeps-kernel", "classical", "toy", ("kernel", "noise", "thickness"), run=run))
    try:
        codes = {}
        for texture in ("target", "clean"):
            out = normalize(standard_scan, SPEC, "kernel=sharp,dose=0.5,thickness=2", method="toy-keeps-kernel",
                            texture=texture)
            codes[texture] = [w["code"] for w in out.result.warnings]
        assert KERNEL_NOT_REACHED in codes["target"] and KERNEL_NOT_REACHED not in codes["clean"]
    finally:
        unregister("toy-keeps-kernel")
