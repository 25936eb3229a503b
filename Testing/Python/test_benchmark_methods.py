"""Which benchmark rows ``--methods`` selects (both benchmarks read :func:`select_methods`)."""

import pytest

from CTNormalizeLib.benchmark_methods import select_methods
from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.evaluate.benchmark import MethodProvider


def _rows():
    names = ["classical:classical", "classical:classical[target]", "classical:mtf_ratio",
             "model:ctn-denoise-v2c", "model:ctn-denoise-v2c[target]", "bm4d"]
    return [MethodProvider(n, lambda *a, **k: None) for n in names]


def test_a_name_runs_in_every_texture_asked_and_name_target_in_that_one_only():
    """`--textures clean,target --methods x` once ran x's clean texture only (the target texture had to be
    named x[target]); a name now selects every texture built, x[target] that texture only."""
    rows = _rows()
    names = lambda sel: [m.name for m in select_methods(rows, sel)]  # noqa: E731
    assert names("ctn-denoise-v2c") == ["model:ctn-denoise-v2c", "model:ctn-denoise-v2c[target]"]
    assert names("model:ctn-denoise-v2c[target]") == ["model:ctn-denoise-v2c[target]"]
    assert names("ctn-denoise-v2c[target],bm4d") == ["model:ctn-denoise-v2c[target]", "bm4d"]
    assert names("classical:mtf_ratio,classical") == ["classical:mtf_ratio", "classical:classical",
                                                      "classical:classical[target]"]
    assert names("classical, classical:classical[target]") == ["classical:classical", "classical:classical[target]"]
    with pytest.raises(BadInputError, match="Unknown method.*magic.*known: classical:classical"):
        select_methods(rows, "classical,magic")
