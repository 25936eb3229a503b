"""The panel's choices, saved with the scene (a ``parameterNodeWrapper`` class and its enums)."""

from __future__ import annotations

import enum
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper


class KernelChoice(enum.Enum):
    DETECTED = "detected"
    SMOOTH = "smooth"
    STANDARD = "standard"
    SHARP = "sharp"
    VERY_SHARP = "very-sharp"

    def label(self):
        return _("Detected") if self is KernelChoice.DETECTED else self.value


class ProfileChoice(enum.Enum):
    DETECTED = "detected"
    HELICAL = "gaussian"
    AXIAL = "rect"

    def label(self):
        return {"detected": _("Detected"), "gaussian": _("Helical (Gaussian)"),
                "rect": _("Axial (rectangular)")}[self.value]


class DeviceChoice(enum.Enum):
    AUTO = "auto"
    GPU = "cuda"
    MPS = "mps"
    CPU = "cpu"

    def label(self):
        return {"auto": _("Auto"), "cuda": _("GPU (CUDA)"), "mps": _("Apple GPU (MPS)"), "cpu": _("CPU")}[self.value]


class CompareView(enum.Enum):
    AXIAL = "Axial"
    CORONAL = "Coronal"
    SAGITTAL = "Sagittal"
    GRID = "grid"

    def label(self):
        return {"Axial": _("Axial"), "Coronal": _("Coronal"), "Sagittal": _("Sagittal"),
                "grid": _("2x3: all three, both volumes")}[self.value]


@parameterNodeWrapper
class CTNormalizeParameterNode:
    """Choices of the panel, saved with the scene.

    sourceKernel/sourceKernelName/sourceDose/sourceThickness/sourceProfile override detection
    (empty, 0 or Detected = detected; a profile needs the thickness it shapes). targetPreset is a preset name, "custom" (then targetSpec) or "like" (then
    targetLikeVolume: a reference CT whose measured protocol is the target). method is "auto", a
    model name or a classical method. The radiomics fields default to the engine's CT preset.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    sourceKernel: KernelChoice = KernelChoice.DETECTED
    sourceKernelName: str = ""
    sourceDose: Annotated[float, WithinRange(0.0, 4.0)] = 0.0
    sourceThickness: Annotated[float, WithinRange(0.0, 20.0)] = 0.0
    sourceProfile: ProfileChoice = ProfileChoice.DETECTED
    targetPreset: str = "emphysema-reference"
    targetSpec: str = ""
    targetLikeVolume: vtkMRMLScalarVolumeNode
    method: str = "auto"
    device: DeviceChoice = DeviceChoice.AUTO
    compareOriginal: vtkMRMLScalarVolumeNode
    compareNormalized: vtkMRMLScalarVolumeNode
    compareView: CompareView = CompareView.AXIAL
    emphysemaThreshold: Annotated[float, WithinRange(-1100.0, -800.0)] = -950.0
    radiomicsParamsFile: str = ""
    radiomicsFeatureClasses: str = "shape, firstorder, glcm, glrlm, glszm, gldm, ngtdm"
    radiomicsBinWidth: Annotated[float, WithinRange(1.0, 500.0)] = 25.0
    radiomicsResampling: Annotated[float, WithinRange(0.0, 10.0)] = 1.0
