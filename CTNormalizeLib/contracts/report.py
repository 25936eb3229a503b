"""The run report: provenance, plan, steps, QC and timings of one normalization (``done`` and ``--report``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

REPORT_VERSION = "4"  # 3: output_type; 4: changes (what the method changes)
RESEARCH_NOTE = "Research use, not for diagnosis."
#: The ``texture`` of an output whose method leaves the noise as it was (a kernel- or thickness-only
#: method): the source's noise, neither the clean nor the target texture the plan asked for.
SOURCE_TEXTURE = "source"


@dataclass
class RunReport:
    """What a normalization run did and why.

    Attributes
    ----------
    engine_version : str
    method : str
        The method table row that ran (``classical``, ``mtf_ratio``, a model name, ...).
    method_kind : str
        ``classical`` or ``model``.
    method_reason : str
        Why that method (``auto``'s measured comparison, or "requested").
    model_sha256 : str or None
    device : str
    texture : str
        The output's noise texture: the plan's (``clean`` or ``target``), or ``source``
        (:data:`SOURCE_TEXTURE`) when the method does not change the noise.
    plan : dict
        :meth:`CTNormalizeLib.plan.Plan.to_dict`: source and target protocols with the
        provenance of every field, both signatures, the noise-equivalent dose.
    steps, warnings : list of dict
    qc, timings : dict
    output_shape, output_spacing : list
        In array order **(z, y, x)** (voxels; mm), as ``Volume.shape`` and ``Volume.spacing``;
        ``ctnormalize info`` prints x, y, z (ITK order) and says so.
    input : str or None
    output : str or None
    output_type : str or None
        The voxel type the output file stores: ``int16`` (whole HU; a DICOM series too) or
        ``float32``; None when no file was written (a library call).
    changes : list of str
        The aspects the method normalizes towards the target (its method row's ``changes``: ``kernel``,
        ``noise``, ``thickness``, ``histogram``); the output is labelled with the target's value of
        each whether or not a step ran for it (``steps`` say what ran: a step with nothing to do, or
        that could not run, is ``done: false``; the ``clean`` texture leaves less noise than the
        target's). An aspect not listed keeps the source's (the DICOM writer labels the output so).
        Empty in reports written before this field.
    """

    engine_version: str
    method: str
    method_kind: str
    method_reason: str
    model_sha256: Optional[str]
    device: str
    texture: str
    plan: dict
    steps: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    qc: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    output_shape: list = field(default_factory=list)
    output_spacing: list = field(default_factory=list)
    input: Optional[str] = None
    output: Optional[str] = None
    output_type: Optional[str] = None
    report_version: str = REPORT_VERSION
    note: str = RESEARCH_NOTE
    changes: list = field(default_factory=list)

    @property
    def source_spec(self) -> str:
        return self.plan.get("source_spec", "")

    @property
    def target_spec(self) -> str:
        return self.plan.get("target_spec", "")

    @property
    def protocol_summary(self) -> str:
        """The plan's one line (:meth:`CTNormalizeLib.plan.Plan.summary`); the two specs for older reports."""
        return self.plan.get("summary") or f"{self.source_spec or '?'} -> {self.target_spec or '?'}"

    @property
    def noise_summary(self) -> str:
        return self.plan.get("noise_summary", "")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunReport":
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (a contract, not a guess)."""
        names = set(cls.__dataclass_fields__)
        extra = set(d) - names
        if extra:
            raise ValueError(f"unknown run-report keys: {sorted(extra)}")
        return cls(**d)
