"""The background-process events (DESIGN.md section 4) as typed records.

The engine writes them (``cli/events.EventStream``) and the Slicer module reads them
(``CTNormalizeSlicerLib/process.py``) through :func:`parse_event`; a line that is not one
of these is a protocol error, not something to guess at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Union


@dataclass
class Started:
    steps: int
    device: str
    method: str
    model_sha256: Optional[str] = None
    source: str = ""
    target: str = ""
    method_reason: str = ""
    texture: str = ""
    noise: str = ""
    plan: dict = field(default_factory=dict)
    protocol: str = ""  # simulate: the protocol simulated
    event: str = "started"


@dataclass
class Progress:
    step: Optional[int]
    steps: int
    stage: str
    fraction: float
    eta_s: Optional[float] = None
    event: str = "progress"


@dataclass
class Warning:
    code: str
    message: str
    event: str = "warning"


@dataclass
class Done:
    output: Optional[str]
    report: dict
    event: str = "done"


@dataclass
class Error:
    code: str
    message: str
    event: str = "error"


Event = Union[Started, Progress, Warning, Done, Error]
KINDS = {"started": Started, "progress": Progress, "warning": Warning, "done": Done, "error": Error}
ERROR_CODES = ("BAD_INPUT", "NOT_CT", "NO_MODEL", "OOM", "CANCELLED", "INTERNAL")


def parse_event(d: dict) -> Event:
    """The typed event of one decoded JSON line; ``ValueError`` for anything else."""
    kind = d.get("event") if isinstance(d, dict) else None
    if kind not in KINDS:
        raise ValueError(f"not a CTNormalize event: {str(d)[:200]}")
    cls = KINDS[kind]
    names = set(cls.__dataclass_fields__)
    extra = set(d) - names
    if extra:
        raise ValueError(f"{kind} event with unknown keys {sorted(extra)}")
    try:
        return cls(**d)
    except TypeError as exc:
        raise ValueError(f"{kind} event missing fields: {exc}") from None


def to_dict(event: Event) -> dict:
    return asdict(event)
