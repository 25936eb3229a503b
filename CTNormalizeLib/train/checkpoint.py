"""Resumable checkpoints without pickle: safetensors for tensors, JSON for everything else.

``<dir>/model.safetensors``, ``<dir>/disc.safetensors`` (GAN only), ``<dir>/optim.safetensors``
(+ ``optim_d.safetensors``) hold tensors; ``<dir>/state.json`` holds the step, the
optimizers' non-tensor state and param groups, the curriculum and the best validation.
A checkpoint is written into a temporary folder that replaces ``<dir>`` only when complete,
so a run killed while saving keeps its previous checkpoint whole (never new weights with an
old step).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..io.atomic import atomic_output, atomic_output_dir, atomic_write_text


def _save_tensors(tensors: dict, path: Path):
    from safetensors.torch import save_file

    with atomic_output(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def optimizer_to_parts(opt) -> tuple[dict, dict]:
    """Split an optimizer's state dict into (tensors, JSON-able rest)."""
    import torch

    sd = opt.state_dict()
    tensors, meta = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}/{k}"] = v
            else:
                meta.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "state_meta": meta}


def optimizer_from_parts(opt, tensors: dict, rest: dict):
    """Inverse of :func:`optimizer_to_parts`; loads into ``opt``."""
    state: dict = {}
    for key, v in tensors.items():
        pid, k = key.split("/", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in rest.get("state_meta", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save_checkpoint(ckpt_dir, model, opt, state: dict, disc=None, opt_d=None) -> Path:
    """Write a checkpoint; ``state`` is any JSON-able dict (step, curriculum, ...)."""
    d = Path(ckpt_dir)
    with atomic_output_dir(d) as tmp:
        _save_tensors(model.state_dict(), tmp / "model.safetensors")
        t, rest = optimizer_to_parts(opt)
        _save_tensors(t, tmp / "optim.safetensors")
        full = {"state": state, "optim": rest}
        if disc is not None:
            _save_tensors(disc.state_dict(), tmp / "disc.safetensors")
            td, rest_d = optimizer_to_parts(opt_d)
            _save_tensors(td, tmp / "optim_d.safetensors")
            full["optim_d"] = rest_d
        atomic_write_text(tmp / "state.json", json.dumps(full, indent=1))  # fsynced
    return d


def load_checkpoint(ckpt_dir, model, opt, disc=None, opt_d=None) -> dict:
    """Load a checkpoint into the given objects; returns the saved ``state`` dict."""
    from safetensors.torch import load_file

    d = Path(ckpt_dir)
    full = json.loads((d / "state.json").read_text(encoding="utf-8"))
    model.load_state_dict(load_file(str(d / "model.safetensors")))
    optimizer_from_parts(opt, load_file(str(d / "optim.safetensors")), full["optim"])
    if disc is not None and (d / "disc.safetensors").is_file():
        disc.load_state_dict(load_file(str(d / "disc.safetensors")))
        optimizer_from_parts(opt_d, load_file(str(d / "optim_d.safetensors")), full["optim_d"])
    return full["state"]


def has_checkpoint(ckpt_dir) -> bool:
    return (Path(ckpt_dir) / "state.json").is_file()
