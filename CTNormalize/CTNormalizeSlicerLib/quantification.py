"""Radiomics and the emphysema index on the original and the normalized volume, in a child process.

Results are read through the engine's typed contracts (``CTNormalizeLib.contracts.results``),
never by guessing keys or file names. Every temporary node is removed again; emphysema and
lung masks go into a new segmentation per volume, each shown only in its own slice view.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from . import engine, nodes, process, segments, tables, views
from .i18n import _
from .process import EngineRun

log = logging.getLogger(__name__)

FEATURE_CLASSES = ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm")


@dataclass
class RadiomicsSettings:
    """The panel's radiomics choices. ``paramsFile`` wins over the other fields when set.

    Defaults are the engine's CT preset (``Resources/Radiomics/CT.yaml``).
    """

    paramsFile: str = ""
    featureClasses: Sequence[str] = field(default_factory=lambda: list(FEATURE_CLASSES))
    binWidth: float = 25.0
    resampledSpacing: float = 1.0  # mm, isotropic; 0 = no resampling

    def write_params(self, folder: str) -> str:
        """A pyradiomics params file for these settings (the given file itself when set)."""
        if self.paramsFile:
            if not os.path.isfile(self.paramsFile):
                raise ValueError(_("The radiomics parameter file {path} does not exist.").format(path=self.paramsFile))
            return self.paramsFile
        unknown = [c for c in self.featureClasses if c not in FEATURE_CLASSES]
        if unknown or not self.featureClasses:
            raise ValueError(_("Choose feature classes among {classes}.").format(classes=", ".join(FEATURE_CLASSES)))
        if self.binWidth <= 0:
            raise ValueError(_("The bin width must be positive (in HU)."))
        import yaml

        from CTNormalizeLib.quantify.radiomics import default_params_path

        with open(default_params_path(), encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
        params["featureClass"] = {c: None for c in self.featureClasses}
        params["setting"]["binWidth"] = float(self.binWidth)
        if self.resampledSpacing and self.resampledSpacing > 0:
            params["setting"]["resampledPixelSpacing"] = [float(self.resampledSpacing)] * 3
        else:
            params["setting"].pop("resampledPixelSpacing", None)
        path = os.path.join(folder, "radiomics_params.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(params, fh, sort_keys=False)
        return path


#: node attribute of the tables the measurements made (what "Save results" writes; kept in saved scenes)
RESULT_TABLE_ATTRIBUTE = "CTNormalize.resultTable"


class QuantificationMixin:
    """``startRadiomics`` / ``startEmphysema`` (needs ``scene``, ``runs``, ``makeTempDir``, ``python``)."""

    def _quantRun(self, kind, args, tmp, importer, onEvent, onFinished) -> EngineRun:
        def on_event(run, event):
            # the panel hears of the import before it happens: the import ends the run (its "done" comes last)
            if onEvent is not None:
                onEvent(run, event)
            if event.get("event") == "import":
                before = nodes.node_ids(self.scene)
                try:
                    if not self.runs.is_current(run):
                        raise RuntimeError(_("The scene was closed during the run; the results were discarded."))
                    doc = process.parse_json_document(
                        [line for line in run.output_lines if process.parse_event_line(line) is None])
                    if doc is None:
                        raise RuntimeError(_("The engine printed no result.") + "\n" + "\n".join(run.log_lines[-5:]))
                    importer(run, doc)
                except Exception as exc:
                    log.exception("CTNormalize: importing quantification results failed")
                    nodes.remove_nodes_added_since(self.scene, before)  # no half-made table or masks stay
                    run.set_failed("IMPORT", _("Could not read the results: {error}").format(error=exc))
                    return
                run.set_completed()

        run = EngineRun(args, env=engine.engine_environment("cpu"), cwd=engine.engine_package_parent(),
                        on_event=on_event, on_finished=onFinished, cleanup=lambda: process.remove_dir(tmp))
        run.tempDir, run.result = tmp, None
        self.runs.watch(self.scene)
        self.runs.add(run, kind)
        return run

    def resultTables(self) -> list:
        """The radiomics and emphysema tables in the scene, in the order they were made (also after a scene
        was saved and loaded again, or the module reloaded)."""
        scene = self.scene
        found = [scene.GetNthNodeByClass(i, "vtkMRMLTableNode")
                 for i in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode"))]
        return [t for t in found if t is not None and t.GetAttribute(RESULT_TABLE_ATTRIBUTE)]

    def _checkPair(self, originalNode, normalizedNode):
        if originalNode is None or normalizedNode is None:
            raise ValueError(_("Select the original and the normalized volume."))
        if self.runs.live("radiomics") or self.runs.live("emphysema"):
            raise RuntimeError(_("A measurement is already running; cancel it first."))

    def startRadiomics(self, originalNode, normalizedNode, segmentationNode, segmentIds=None,
                       settings: Optional[RadiomicsSettings] = None, tableNode=None,
                       onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None) -> EngineRun:
        """Radiomics of the chosen segments (IDs; all when empty) on both volumes, same settings.

        The result fills ``tableNode`` (new when None; ``run.tableNode``) with
        segment | feature | original | normalized | difference | % difference; ``run.result`` is the
        engine's :class:`RadiomicsReport`.
        """
        self._checkPair(originalNode, normalizedNode)
        if segmentationNode is None:
            raise ValueError(_("Select a segmentation."))
        ids = segments.check_segment_ids(segmentationNode, segmentIds)
        if not ids:
            raise ValueError(_("The segmentation has no segments."))
        settings = settings or RadiomicsSettings()
        tmp = self.makeTempDir("CTNormalize-radiomics-")
        try:
            orig = nodes.write_volume(originalNode, os.path.join(tmp, "original.nrrd"))
            norm = nodes.write_volume(normalizedNode, os.path.join(tmp, "normalized.nrrd"))
            names = segments.export_labelmap(segmentationNode, ids, originalNode, os.path.join(tmp, "segments.nrrd"))
            params = settings.write_params(tmp)
        except Exception:
            process.remove_dir(tmp)
            raise
        cmd = engine.engine_command("radiomics", "--image", f"original={orig}", "--image", f"normalized={norm}",
                                    "--segments", os.path.join(tmp, "segments.nrrd"), "--params", params, "--json",
                                    python=self.python)
        scene = self.scene
        shownParams = settings.paramsFile or "panel settings (" + ", ".join(
            [f"bin width {settings.binWidth:g} HU", f"resampled to {settings.resampledSpacing:g} mm",
             "classes " + "/".join(settings.featureClasses)]) + ")"

        def importer(run, doc):
            from CTNormalizeLib.contracts.results import RadiomicsReport

            report = RadiomicsReport.from_dict(doc)
            table = run.tableNode if run.tableNode is not None and scene.IsNodePresent(run.tableNode) else \
                scene.AddNewNodeByClass("vtkMRMLTableNode", f"Radiomics {originalNode.GetName()}")
            tables.radiomics_table(table, report, params_file=shownParams, segment_names=names)
            table.SetAttribute(RESULT_TABLE_ATTRIBUTE, "radiomics")
            run.tableNode, run.result = table, report

        run = self._quantRun("radiomics", cmd, tmp, importer, onEvent, onFinished)
        run.tableNode = tableNode
        return run.start()

    def startEmphysema(self, originalNode, normalizedNode, segmentationNode=None, lungSegmentId: str = "",
                       threshold: float = -950.0, tableNode=None, addMaskSegments: bool = True,
                       onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None) -> EngineRun:
        """LAA%, Perc15 and lung volume per lung and zone, on both volumes, in the background.

        The lung mask is the chosen segment (by ID) when given, else the engine's own lung
        mask. With ``addMaskSegments`` each volume gets a new segmentation "Emphysema <volume>"
        (lungs and emphysema, standard terminology) shown only in that volume's view
        (``run.maskSegmentationNodes``: original, normalized).
        """
        self._checkPair(originalNode, normalizedNode)
        tmp = self.makeTempDir("CTNormalize-emphysema-")
        try:
            orig = nodes.write_volume(originalNode, os.path.join(tmp, "original.nrrd"))
            norm = nodes.write_volume(normalizedNode, os.path.join(tmp, "normalized.nrrd"))
            args = [orig, norm, "--threshold", f"{float(threshold):g}", "--json"]
            if segmentationNode is not None and lungSegmentId:
                ids = segments.check_segment_ids(segmentationNode, [lungSegmentId])
                lung = os.path.join(tmp, "lung.nrrd")
                segments.export_labelmap(segmentationNode, ids, originalNode, lung)
                args += ["--lung-mask", lung]
                if not nodes.same_grid(originalNode, normalizedNode):
                    # a thickness change gives the normalized volume its own z grid
                    lung_n = os.path.join(tmp, "lung_normalized_grid.nrrd")
                    segments.export_labelmap(segmentationNode, ids, normalizedNode, lung_n)
                    args += ["--lung-mask", lung_n]
            if addMaskSegments:
                args += ["--mask-out", os.path.join(tmp, "masks")]
        except Exception:
            process.remove_dir(tmp)
            raise
        cmd = engine.engine_command("emphysema", *args, python=self.python)
        scene = self.scene

        def importer(run, doc):
            from CTNormalizeLib.contracts.results import EmphysemaReport

            report = EmphysemaReport.from_dict(doc)
            res_o, res_n = report.for_input(orig), report.for_input(norm)
            table = run.tableNode if run.tableNode is not None and scene.IsNodePresent(run.tableNode) else \
                scene.AddNewNodeByClass("vtkMRMLTableNode", f"Emphysema {originalNode.GetName()}")
            tables.emphysema_table(table, res_o, res_n)
            table.SetAttribute(RESULT_TABLE_ATTRIBUTE, "emphysema")
            run.tableNode, run.result = table, report
            if addMaskSegments:
                run.maskSegmentationNodes = [
                    self._maskSegmentation(volume, res, threshold, view)
                    for volume, res, view in ((originalNode, res_o, views.SIDE_BY_SIDE_VIEWS[0]),
                                              (normalizedNode, res_n, views.SIDE_BY_SIDE_VIEWS[1]))]

        run = self._quantRun("emphysema", cmd, tmp, importer, onEvent, onFinished)
        run.tableNode, run.maskSegmentationNodes = tableNode, []
        return run.start()

    def _maskSegmentation(self, volume, measurement, threshold: float, view_name: str):
        """A new segmentation on ``volume`` with its lungs and emphysema, shown in one view only."""
        scene = self.scene
        view = views.slice_node(scene, view_name)
        seg = segments.new_segmentation(scene, f"Emphysema {volume.GetName()}", volume,
                                        [view.GetID()] if view is not None else [])
        masks = measurement.masks or {}
        if masks.get("lung"):
            for label, name, color in ((1, "right lung", (0.5, 0.7, 1.0)), (2, "left lung", (0.4, 0.9, 0.6))):
                segments.import_mask_as_segment(masks["lung"], seg, name.capitalize(), color,
                                                terminology=segments.TERMINOLOGY[name], label=label)
        if masks.get("emphysema"):
            segments.import_mask_as_segment(masks["emphysema"], seg, f"Emphysema (< {threshold:g} HU)",
                                            (1.0, 0.9, 0.1), terminology=segments.TERMINOLOGY["emphysema"])
        nodes.place_next_to(seg, volume)
        return seg
