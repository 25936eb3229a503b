"""Device names a user may give, resolved to what torch can use, with a clear error when absent."""

from __future__ import annotations

from ..errors import BadInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "gpu", "mps")


def available_devices() -> list[str]:
    """What torch sees here: ``cpu``, ``cuda:0``..., ``mps``."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def device_name(device) -> str:
    """The user's device name as the engine spells it (None or blank: ``auto``); imports no torch."""
    return str(device or "auto").strip().lower()


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> the first GPU (CUDA, else Apple MPS), else ``cpu``; ``gpu``/``cuda`` -> ``cuda:0``.

    Raises
    ------
    BadInputError
        An unknown name, or a device torch does not see here (the message lists what it sees).
    """
    d = device_name(device)
    seen = available_devices()
    if d == "auto":
        gpus = [x for x in seen if x != "cpu"]
        return gpus[0] if gpus else "cpu"
    if d in ("gpu", "cuda"):
        d = "cuda:0"
    valid = d == "cpu" or d == "mps" or (d.startswith("cuda:") and d[5:].isdigit())
    if not valid:
        raise BadInputError(f"Unknown device {device!r}; use one of {', '.join(DEVICE_CHOICES)}.")
    if d not in seen:
        raise BadInputError(f"Device {device!r} is not available here; PyTorch sees: {', '.join(seen)}.")
    return d
