"""Named target presets, stored as YAML in ``Resources/Presets/protocols.yaml``."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache

import yaml

from ..errors import BadInputError
from ..resources import resource_path
from .protocol import FieldSource, Protocol, parse_spec


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    protocol: Protocol


@lru_cache(maxsize=1)
def load_presets() -> dict[str, Preset]:
    """All presets, by name, in file order."""
    with open(resource_path("Presets", "protocols.yaml"), encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    out = {}
    for name, entry in data["presets"].items():
        spec = ",".join(f"{k}={entry[k]}" for k in ("kernel", "dose", "thickness", "profile", "spacing") if k in entry)
        p = parse_spec(spec, source="preset")
        p = Protocol(**{**p.__dict__, "sources": {k: FieldSource("preset", 1.0, name) for k in p.sources}})
        out[name] = Preset(name, entry.get("description", ""), p)
    return out


def resolve_protocol(text: str) -> Protocol:
    """A preset name, a spec string, or a preset with overrides (``emphysema-reference,thickness=5``: the
    preset with the fields the spec sets taken from it), as a :class:`Protocol`."""
    presets = load_presets()
    by_lower = {name.lower(): name for name in presets}  # preset names are lower case; typed ones may not be

    def preset(name: str):
        return presets.get(by_lower.get(name.strip().lower(), ""))

    key = str(text).strip()
    if preset(key):
        return preset(key).protocol
    head, _, rest = key.partition(",")
    if preset(head) and rest.strip():
        return preset(head).protocol.merged(parse_spec(rest))
    late = [part.strip() for part in key.split(",")[1:] if preset(part)]
    if late:
        raise BadInputError(f"In {key!r} the preset {late[0]!r} is not first: write it first, then the fields it "
                            f"overrides (e.g. '{late[0]},thickness=5').")
    if head.strip() and "=" not in head:  # a spec may start with an empty part (",kernel=smooth")
        close = difflib.get_close_matches(head.strip().lower(), list(presets), n=2, cutoff=0.6)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise BadInputError(
            f"{key!r} is neither a preset nor a spec like 'kernel=smooth,dose=1,thickness=1'.{hint} "
            f"Presets: {', '.join(presets)}."
        )
    return parse_spec(key)
