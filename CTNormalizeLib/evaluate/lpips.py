"""LPIPS, only from a backbone weights file the user gives; nothing is ever downloaded.

The backbone is AlexNet's convolutional trunk with torchvision's parameter names
(``features.{0,3,6,8,10}.weight/bias``), loaded from ``.safetensors`` or a plain
``state_dict`` (``torch.load(weights_only=True)``, never a pickled model). When the file
also holds the LPIPS linear heads (``lin{0..4}.model.1.weight``, as in the ``lpips``
package) they weight the channels; otherwise every channel weighs the same (the
"baseline" variant of Zhang et al. 2018) and the result says so. AlexNet is defined
here because torchvision is not a dependency.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import BadInputError

ABSENT_NOTE = "absent: no backbone weights given (LPIPS never downloads weights)"
_CONV = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_IDX = (0, 3, 6, 8, 10)


def absent() -> dict:
    """The result recorded when no weights file was given."""
    return {"lpips": None, "lpips_note": ABSENT_NOTE}


def _load_state(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
        raise BadInputError(f"Cannot read LPIPS backbone weights {path}: {exc}") from None
    return state.get("state_dict", state) if isinstance(state, dict) else {}


class _LPIPS:
    def __init__(self, path):
        import torch

        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"LPIPS backbone weights file {path} does not exist.")
        state = {k.replace("net.", "").replace("module.", ""): v for k, v in _load_state(path).items()}
        self.convs = []
        for (cin, cout, k, s, p), i in zip(_CONV, _IDX):
            w, b = state.get(f"features.{i}.weight"), state.get(f"features.{i}.bias")
            if w is None or tuple(w.shape) != (cout, cin, k, k):
                raise BadInputError(
                    f"{path} is not an AlexNet backbone: features.{i}.weight missing or of the wrong shape.")
            self.convs.append((w.float(), b.float(), s, p))
        lins = [state.get(f"lin{j}.model.1.weight") for j in range(5)]
        self.lins = [x.float() for x in lins] if all(x is not None for x in lins) else None
        self.variant = "lpips-alex (linear heads from file)" if self.lins else \
            "lpips-alex baseline (uniform channel weights: no linear heads in file)"
        self._torch = torch

    def _feats(self, x):
        F = self._torch.nn.functional
        out = []
        for j, (w, b, s, p) in enumerate(self.convs):
            x = F.relu(F.conv2d(x, w, b, stride=s, padding=p))
            out.append(x)
            if j in (0, 1):
                x = F.max_pool2d(x, 3, 2)
        return out

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        torch = self._torch
        ta = torch.from_numpy(np.repeat(a[:, None], 3, 1).astype(np.float32))
        tb = torch.from_numpy(np.repeat(b[:, None], 3, 1).astype(np.float32))
        with torch.no_grad():
            d = 0.0
            for j, (fa, fb) in enumerate(zip(self._feats(ta), self._feats(tb))):
                fa = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
                fb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
                diff = (fa - fb) ** 2
                if self.lins is not None:
                    diff = (diff * self.lins[j].view(1, -1, 1, 1)).sum(1)
                else:
                    diff = diff.mean(1)
                d += diff.mean(dim=(1, 2))
        return float(d.mean())


@lru_cache(maxsize=2)
def _net(path: str) -> _LPIPS:
    return _LPIPS(path)


def lpips_metric(test: np.ndarray, reference: np.ndarray, weights, window=(-1350.0, 150.0),
                 max_slices: int = 16) -> dict:
    """LPIPS of ``test`` vs ``reference`` on axial slices windowed to [-1, 1].

    Parameters
    ----------
    weights : path or None
        AlexNet backbone weights file; None gives :func:`absent`.

    Returns
    -------
    dict
        ``{"lpips": value or None, "lpips_note": text}``.
    """
    if weights is None:
        return absent()
    net = _net(str(weights))
    lo, hi = window
    n = test.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(n, max_slices)).round().astype(int))

    def scale(x):
        return 2.0 * (np.clip(x[idx], lo, hi) - lo) / (hi - lo) - 1.0

    return {"lpips": net.distance(scale(test), scale(reference)),
            "lpips_note": f"{net.variant}; {len(idx)} axial slices, window {lo:g}..{hi:g} HU"}
