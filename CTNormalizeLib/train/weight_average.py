"""A model package whose weights are the uniform average of other packages' (stochastic weight averaging).

Continued training runs (ctn-denoise-v2 -> v2b -> v2c -> v2d) each end a cosine learning-rate cycle
from the previous one's weights, so their end points lie in one basin of the loss; the average of
such end points is the SWA estimate (Izmailov et al., 2018), which tends to sit nearer the basin's
centre than any one of them. The denoisers have no batch normalization, so the average needs no
statistics recomputed. ``torch.optim.swa_utils`` averages a module *during* training; here the
end points already exist as packages, so the average is taken over their state dicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from ..errors import BadInputError
from ..io.outputs import OutputGuard
from ..models.registry import CARD, WEIGHTS, ModelPackage, read_package, sha256_file
from .package import INTENDED_USE, LICENSE

#: card fields that describe the ingredients' own measurements, not the average's
_NOT_INHERITED = ("sha256", "metrics", "selection", "chain", "recipe", "training", "hyperparameters")


def averaged_state(packages: Sequence[ModelPackage]) -> dict:
    """The element-wise mean of the packages' weights (accumulated in float64, stored in each tensor's dtype).

    Raises
    ------
    BadInputError
        Fewer than two packages, or packages whose architectures, tensor names or shapes differ.
    """
    import torch
    from safetensors.torch import load_file

    if len(packages) < 2:
        raise BadInputError("Averaging weights needs at least two model packages.")
    arch = packages[0].card.get("architecture")
    for pkg in packages[1:]:
        if pkg.card.get("architecture") != arch:
            raise BadInputError(f"{pkg.name} has another architecture than {packages[0].name}; "
                                "only weights of the same network can be averaged.")
    total, dtypes = None, {}
    for pkg in packages:
        state = load_file(str(pkg.weights_path))
        if total is None:
            if any(not v.is_floating_point() for v in state.values()):
                raise BadInputError(f"{pkg.name} holds integer tensors; only floating-point weights are averaged.")
            total = {k: v.to(torch.float64) for k, v in state.items()}
            dtypes = {k: v.dtype for k, v in state.items()}
            continue
        if set(state) != set(total) or any(state[k].shape != total[k].shape or state[k].dtype != dtypes[k]
                                           for k in state):
            raise BadInputError(f"{pkg.name}'s tensors differ in names, shapes or types from {packages[0].name}'s.")
        for k, v in state.items():
            total[k] += v.to(torch.float64)
    n = float(len(packages))
    return {k: (v / n).to(dtypes[k]).contiguous() for k, v in total.items()}


def average_packages(paths: Sequence, out_dir, name: str, chain_from: Optional[str] = None,
                     command: Optional[str] = None) -> Path:
    """Write a package ``out_dir`` holding the uniform weight average of the packages at ``paths``.

    Parameters
    ----------
    paths : sequence of path-like
        Package folders (``card.json`` + ``model.safetensors``) of one architecture.
    out_dir : path-like
        The new package's folder; must not exist yet (it is not one of the inputs).
    name : str
        The new model's name.
    chain_from : str, optional
        The ingredient whose chain settings (NLM blend, flips) the average starts from, until
        ``scripts/choose_nlm_blend.py`` rechooses them; default: the last one.
    command : str, optional
        The command that made it, recorded in the card's recipe.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from safetensors.torch import save_file

    from .denoiser import chain_from_card

    out = Path(out_dir)
    if out.exists():
        raise BadInputError(f"{out} exists already; give a new folder for the averaged package.")
    if not name or not name.strip() or any(c in name for c in "/\\"):
        raise BadInputError(f"A model name must be non-empty and without slashes, not {name!r}.")
    guard = OutputGuard(inputs=paths)  # refuses an output that is, or lies inside, an input package
    guard.add(out, kind="dir", what="-o")
    guard.check()
    packages = [read_package(Path(p)) for p in paths]
    for pkg in packages:
        if not pkg.weights_path.is_file():
            raise BadInputError(f"{pkg.name}: no {WEIGHTS} in {pkg.path}.")
    if len({p.name for p in packages}) != len(packages):
        raise BadInputError("The same model package is listed twice.")
    for pkg in packages:
        if sha256_file(pkg.weights_path) != pkg.sha256:
            raise BadInputError(f"{pkg.name}: {WEIGHTS} does not match its card's sha256.")
    state = averaged_state(packages)
    base = next((p for p in packages if p.name == chain_from), None) if chain_from else packages[-1]
    if base is None:
        raise BadInputError(f"--chain-from {chain_from!r} is not one of the averaged packages.")
    card = {k: v for k, v in base.card.items() if k not in _NOT_INHERITED}
    names = ", ".join(p.name for p in packages)
    card.update({
        "name": name,
        "description": f"the uniform average of the weights of {names} (stochastic weight averaging over the end "
                       f"points of their training cycles); otherwise as {base.name}: "
                       + str(base.card.get("description", "")),
        "recipe": {
            "command": command or f"scripts/average_weights.py {' '.join(str(p) for p in paths)} -o OUT --name {name}",
            "method": "uniform average of the ingredients' weights, accumulated in float64; no training",
            "ingredients": [{"name": p.name, "sha256": p.sha256, "command": (p.card.get("recipe") or {}).get("command"),
                             "time_s": (p.card.get("recipe") or {}).get("time_s")} for p in packages],
            "code": "CTNormalizeLib/train/weight_average.py",
            "device": "cpu",
        },
        "metrics": {},
    })
    chain = chain_from_card(base.card)
    if chain:
        card["chain"] = chain
    card.setdefault("license", LICENSE)
    card.setdefault("intended_use", INTENDED_USE)
    with guard:
        staging = guard.stage(out)
        staging.mkdir()
        save_file(state, str(staging / WEIGHTS))
        card["sha256"] = sha256_file(staging / WEIGHTS)
        (staging / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        read_package(staging)  # publish only a card the registry accepts
        guard.commit()
    return out
