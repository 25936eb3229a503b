"""Engine errors in the panel's words: no command-line syntax ever reaches a dialog.

The engine's messages are written for its command line ("give it explicitly, e.g.
--source kernel=sharp,..."). :func:`panel_message` keeps their content, says what to do in
terms of the panel's fields, and removes option names and spec examples.
"""

from __future__ import annotations

import re

from .i18n import _

#: What to do, per error code, in the panel's terms.
ADVICE = {
    "BAD_INPUT": "",
    "NOT_CT": _("CT Normalize works on CT scans in Hounsfield units only."),
    "NO_MODEL": _("No installed learned model covers this protocol pair. Choose 'Auto' or a classical method."),
    "OOM": _("The computer ran out of memory. Choose the CPU device, close other programs, or crop the volume."),
    "KILLED": "",
    "INTERNAL": _("This is a bug in CT Normalize; the log box shows the details."),
    "IMPORT": "",
    "CANCELLED": "",
    "PROTOCOL": "",
}
#: Command-line option -> the panel field it corresponds to.
OPTION_WORDS = {
    "--source": "the Source protocol fields",
    "--target": "the Target protocol",
    "--target-like": "the reference scan",
    "--method": "the Method",
    "--device": "the Device",
    "--lung-mask": "the lung segment",
    "--params": "the radiomics parameter file",
    "--threshold": "the emphysema threshold",
    "--reference": "the reference volume",
    "--series-uid": "the series",
}
_FIELD = {"kernel": "Kernel", "dose": "Dose", "thickness": "Thickness", "profile": "slice profile",
          "spacing": "spacing"}
_EXAMPLE = re.compile(r"[;,]?\s*(?:give it explicitly,\s*)?(?:e\.g\.|for example|like)\s*--[a-z-]+\s+\S+", re.I)
_SPEC = re.compile(r"\b(?:kernel|dose|thickness|profile|spacing)=[^\s,;)']+"
                   r"(?:,(?:kernel|dose|thickness|profile|spacing)=[^\s,;)']+)*")
_OPTION = re.compile(r"--[a-z][a-z-]*")
_MISSING_SOURCE = re.compile(r"Could not determine the source ([a-z, ]+?) from the image or its tags", re.I)


def _fields(text: str) -> str:
    names = [_FIELD.get(w.strip(), w.strip()) for w in re.split(r",|\band\b", text) if w.strip()]
    return ", ".join(names)


def panel_message(code: str | None, message: str | None) -> str:
    """The sentence to show for an engine error ``(code, message)``."""
    code = (code or "INTERNAL").upper()
    text = (message or "").strip()
    m = _MISSING_SOURCE.search(text)
    if m:
        return _("The source {fields} could not be detected from the image or its DICOM tags. Set {Fields} under "
                 "'Source protocol' and press Apply again.").format(fields=_fields(m.group(1)).lower(),
                                                                   Fields=_fields(m.group(1)))
    text = _EXAMPLE.sub("", text)
    text = _SPEC.sub(lambda s: _spec_words(s.group(0)), text)
    text = _OPTION.sub(lambda o: OPTION_WORDS.get(o.group(0), "a setting"), text)
    text = re.sub(r"\s+([.,;])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()
    advice = ADVICE.get(code, "")
    if not text:
        return advice or _("The engine failed.")
    if advice and advice not in text:
        text = f"{text.rstrip('.')}. {advice}"
    return text


def _spec_words(spec: str) -> str:
    parts = []
    for item in spec.split(","):
        key, _, value = item.partition("=")
        parts.append(f"{_FIELD.get(key, key).lower()} {value}")
    return ", ".join(parts)


def contains_cli_syntax(text: str) -> bool:
    """True when ``text`` still shows an option name or a spec (used by the tests)."""
    return bool(_OPTION.search(text) or _SPEC.search(text))
