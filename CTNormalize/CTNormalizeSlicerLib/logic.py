"""The behaviour of the CTNormalize module, without any Qt widget.

:class:`NormalizationLogic` is the base of ``CTNormalizeLogic`` in ``CTNormalize.py``; it works
on the scene given (or ``slicer.mrmlScene``), so it runs inside Slicer and headless against
the ``slicer-core`` wheel. Long work runs in child processes (:mod:`.process`); the caller
drives them with a Qt timer (GUI) or :meth:`EngineRun.wait` (scripts, tests).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tempfile
from typing import Callable, Optional

from . import engine, nodes, process, segments, tables, views
from .process import EngineRun, RunState

log = logging.getLogger(__name__)

#: Tooltips of the classical methods (the engine's CLASSICAL_METHODS names).
CLASSICAL_TOOLTIPS = {
    "auto": "The best learned model covering the protocol pair, else the classical pipeline.",
    "mtf_ratio": "Kernel change by the ratio of target to source MTF in the frequency domain "
                 "(regularised where the source MTF is small).",
    "frequency_decomposition": "Splits the image into frequency bands and rescales each band "
                               "toward the target kernel's response.",
    "histogram_match": "Matches the HU histogram inside the body to a reference scan.",
    "denoise": "Noise reduction toward a higher dose (edge-preserving), no kernel change.",
    "z_profile": "Slice-thickness change by resampling with the target slice profile.",
}
PROTOCOL_FIELDS = ("kernel", "dose", "thickness")


class NormalizationLogic:
    """Normalization, comparison and quantification on MRML nodes.

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Defaults to ``slicer.mrmlScene``.
    appLogic : vtkMRMLApplicationLogic, optional
        Used to fit slice views; defaults to ``slicer.app.applicationLogic()`` when there is one.
    python : str, optional
        Interpreter for the engine (default: PythonSlicer in Slicer, else this interpreter).
    """

    def __init__(self, scene=None, appLogic=None, python: Optional[str] = None):
        self._scene = scene
        self._appLogic = appLogic
        self.python = python
        self.tempRoot: Optional[str] = None
        self.currentRun: Optional[EngineRun] = None

    # -- environment -----------------------------------------------------------------------
    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    @property
    def appLogic(self):
        if self._appLogic is not None:
            return self._appLogic
        import slicer

        app = getattr(slicer, "app", None)
        return app.applicationLogic() if app is not None else None

    def makeTempDir(self, prefix: str = "CTNormalize-") -> str:
        """A fresh folder under Slicer's temporary path (or the system's)."""
        root = self.tempRoot
        if root is None:
            try:
                import slicer

                root = slicer.app.temporaryPath
            except (ImportError, AttributeError):
                root = None
        return tempfile.mkdtemp(prefix=prefix, dir=root)

    # -- choices shown in the panel ---------------------------------------------------------
    @staticmethod
    def presets() -> dict:
        """``{name: (description, spec)}`` of the target presets, in file order."""
        from CTNormalizeLib.protocols import load_presets

        return {name: (p.description, p.protocol.spec()) for name, p in load_presets().items()}

    @staticmethod
    def kernelChoices() -> list[str]:
        """Kernel classes, then known vendor kernel names (for the source override)."""
        from CTNormalizeLib.protocols import KERNEL_CLASSES, known_kernel_names

        return list(KERNEL_CLASSES) + [n for n in known_kernel_names() if n not in KERNEL_CLASSES]

    @staticmethod
    def methods() -> list[tuple[str, str]]:
        """``[(name, tooltip)]`` from the engine's method table: auto, then every row that runs
        without a reference volume (a reference selector is not offered here)."""
        from CTNormalizeLib.methods import method_table

        out = [("auto", CLASSICAL_TOOLTIPS["auto"])]
        for m in method_table().values():
            if m.needs_reference:
                continue
            out.append((m.name, model_tooltip(m) if m.kind == "model" else m.summary))
        return out

    @staticmethod
    def methodNeedsTorch(method: str) -> bool:
        """True when ``method`` may run a learned model (a model row, or auto when a model row is complete)."""
        from CTNormalizeLib.methods import method_table

        table = method_table()
        if method == "auto":
            return any(m.needs_torch and m.complete for m in table.values())
        return bool(table.get(method) and table[method].needs_torch)

    def startGpuCheck(self, onFinished: Callable[[bool], None]) -> Optional[EngineRun]:
        """Ask a child Python whether torch sees a GPU; ``onFinished(bool)`` gets the answer.

        torch is never imported in Slicer's process for this; without torch the answer is
        False at once (returns None then).
        """
        from .dependencies import torch_installed

        if not torch_installed():
            onFinished(False)
            return None
        code = "import torch; print('CTN_GPU', int(torch.cuda.is_available()))"
        args = [self.python or engine.python_executable(), "-c", code]

        def finished(run):
            onFinished(any(line.strip() == "CTN_GPU 1" for line in run.output_lines))

        return EngineRun(args, on_finished=finished, auto_complete=True).start()

    # -- source protocol -------------------------------------------------------------------
    def detectSourceProtocol(self, volumeNode):
        """Detect the source protocol of a volume node (DICOM tags + image noise).

        Returns a ``CTNormalizeLib.protocols.Protocol`` whose ``sources`` say where each
        field came from. Runs in this process (seconds on a full chest CT).
        """
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError("Select an input volume with image data.")
        from CTNormalizeLib.plan import resolve_source

        vol = nodes.volume_for_engine(volumeNode, nodes.dicom_tags(volumeNode))
        protocol, _signature = resolve_source(vol, None)
        return protocol

    @staticmethod
    def protocolRows(protocol) -> list[tuple[str, str, str, str]]:
        """``[(field, value, source, detail)]`` for showing a protocol in the panel."""
        rows = []
        for field in ("kernel", "dose", "thickness", "mas", "ctdivol", "spacing"):
            value = getattr(protocol, field, None)
            if value is None and field not in PROTOCOL_FIELDS:
                continue
            if field == "kernel" and getattr(protocol, "kernel_name", None):
                text = f"{protocol.kernel_name} ({value})"
            elif value is None:
                text = "unknown"
            elif isinstance(value, float):
                text = f"{value:g}"
            else:
                text = str(value)
            src = (getattr(protocol, "sources", {}) or {}).get(field)
            source = f"{src.source} ({src.confidence:.0%})" if src is not None else ""
            rows.append((field, text, source, getattr(src, "detail", "") if src is not None else ""))
        return rows

    @staticmethod
    def sourceSpec(kernel: str = "", dose: float = 0.0, thickness: float = 0.0) -> str:
        """The ``--source`` argument: user overrides (empty/0 = detect), or ``auto``."""
        parts = []
        if kernel and kernel.strip().lower() not in ("", "auto"):
            parts.append(f"kernel={kernel.strip()}")
        if dose and dose > 0:
            parts.append(f"dose={dose:g}")
        if thickness and thickness > 0:
            parts.append(f"thickness={thickness:g}")
        if not parts:
            return "auto"
        from CTNormalizeLib.protocols import parse_spec

        spec = ",".join(parts)
        parse_spec(spec)  # raises BadInputError with the engine's sentence on a bad kernel name
        return spec

    @staticmethod
    def outputName(inputNode, target: str) -> str:
        """Default output name: ``<input> → <target preset>``."""
        return f"{inputNode.GetName()} \u2192 {target}"

    # -- normalization ---------------------------------------------------------------------
    def startNormalization(self, inputNode, target: str, source: str = "auto", method: str = "auto",
                           device: str = "auto", outputNode=None, onEvent: Optional[Callable] = None,
                           onFinished: Optional[Callable] = None) -> EngineRun:
        """Launch the engine on ``inputNode`` in a child process; returns the running EngineRun.

        When the child finishes, the result is loaded into ``outputNode`` (a new volume named
        "<input> → <target>" when None), with the input's geometry, provenance attributes and
        subject-hierarchy place. ``onEvent(run, event)`` sees every engine event;
        ``onFinished(run)`` is called once at the end (``run.state``, ``run.outputNode``,
        ``run.error_message``). The temp folder is removed whatever happens.
        """
        if inputNode is None or inputNode.GetImageData() is None:
            raise ValueError("Select an input volume with image data.")
        if not target or not str(target).strip():
            raise ValueError("Select a target protocol (preset or spec).")
        if outputNode is not None and outputNode is inputNode:
            raise ValueError("The output volume must differ from the input: CTNormalize never overwrites its input.")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, not {device!r}.")
        if self.currentRun is not None and self.currentRun.state.running:
            raise RuntimeError("A normalization is already running; cancel it first.")
        tmp = self.makeTempDir()
        try:
            in_path = nodes.write_volume(inputNode, os.path.join(tmp, "input.nrrd"))
        except Exception:
            process.remove_dir(tmp)
            raise
        out_path = os.path.join(tmp, "output.nrrd")
        args = engine.normalize_command(in_path, out_path, source=source, target=target, method=method,
                                        device=device, python=self.python)
        inputID = inputNode.GetID()

        def on_event(run, event):
            if event.get("event") == "import":
                self._importNormalized(run, inputID, outputNode, target)
            if onEvent is not None:
                onEvent(run, event)

        run = EngineRun(args, env=engine.engine_environment(device), cwd=engine.engine_package_parent(),
                        on_event=on_event, on_finished=onFinished, cleanup=lambda: process.remove_dir(tmp))
        run.tempDir = tmp
        run.outputNode = None
        run.inputNode = inputNode
        self.currentRun = run
        run.start()
        return run

    def _importNormalized(self, run: EngineRun, inputID: str, outputNode, target: str):
        scene = self.scene
        inputNode = scene.GetNodeByID(inputID)
        try:
            if inputNode is None:
                raise RuntimeError("The input volume was removed from the scene during the run.")
            done = run.done_event or {}
            path = done.get("output")
            if not path or not os.path.isfile(path):
                raise RuntimeError(f"The engine reported success but wrote no output ({path}).")
            created = outputNode is None
            if created:
                outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", self.outputName(inputNode, target))
            nodes.read_volume(path, outputNode)
            nodes.adopt_geometry(outputNode, inputNode)
            report = dict(done.get("report") or {})
            nodes.set_provenance(outputNode, report, extra={"inputNodeID": inputID, "targetName": target})
            nodes.place_next_to(outputNode, inputNode)
            run.outputNode = outputNode
            run.report = report
        except Exception as exc:
            log.exception("CTNormalize: importing the result failed")
            run.set_failed("IMPORT", f"Could not load the result: {exc}")
            return
        run.set_completed()

    def runNormalization(self, inputNode, target: str, source: str = "auto", method: str = "auto",
                         device: str = "auto", outputNode=None, timeout: Optional[float] = None):
        """Blocking variant (scripts, self-test): returns the output node or raises RuntimeError."""
        run = self.startNormalization(inputNode, target, source, method, device, outputNode)
        try:
            run.wait(timeout)
        except TimeoutError:
            run.cancel()
            run.wait(30)
            raise
        if run.state is not RunState.COMPLETED:
            raise RuntimeError(f"Normalization {run.state.value}: [{run.error_code}] {run.error_message}")
        return run.outputNode

    def cancel(self, run: Optional[EngineRun] = None):
        """Cancel a run (default: the current one); kills its whole process tree."""
        run = run or self.currentRun
        if run is not None:
            run.cancel()

    # -- views -----------------------------------------------------------------------------
    def compare(self, originalNode, normalizedNode, layout: str = "sideBySide", orientation: str = "Axial",
                window: Optional[str] = "lung", fit: bool = True) -> list:
        """Show original (left/top) and normalized (right/bottom), linked, in a CT window.

        ``layout`` is ``"sideBySide"`` (one orientation) or ``"grid"`` (2x3: both volumes in
        axial, coronal, sagittal). Returns the slice composite nodes that were set.
        """
        if originalNode is None or normalizedNode is None:
            raise ValueError("Select both the original and the normalized volume to compare.")
        if layout == "grid":
            comps = views.show_grid(self.scene, originalNode, normalizedNode, window=window)
        elif layout == "sideBySide":
            comps = views.show_side_by_side(self.scene, originalNode, normalizedNode, orientation, window)
        else:
            raise ValueError(f"layout must be sideBySide or grid, not {layout!r}.")
        if fit:
            views.fit_slices(self.appLogic)
        return comps

    @staticmethod
    def setWindowPreset(volumeNodes, preset: str):
        return views.apply_window(volumeNodes, preset)

    # -- quantification --------------------------------------------------------------------
    def _quantRun(self, args, tmp, importer, onEvent, onFinished) -> EngineRun:
        def on_event(run, event):
            if event.get("event") == "import":
                try:
                    doc = process.parse_json_document(
                        [line for line in run.output_lines if process.parse_event_line(line) is None])
                    if doc is None:
                        raise RuntimeError("The engine printed no JSON result.\n" + "\n".join(run.log_lines[-5:]))
                    run.result = doc
                    importer(run, doc)
                except Exception as exc:
                    log.exception("CTNormalize: importing quantification results failed")
                    run.set_failed("IMPORT", f"Could not read the results: {exc}")
                    return
                run.set_completed()
            if onEvent is not None:
                onEvent(run, event)

        run = EngineRun(args, env=engine.engine_environment("cpu"), cwd=engine.engine_package_parent(),
                        on_event=on_event, on_finished=onFinished, cleanup=lambda: process.remove_dir(tmp))
        run.tempDir = tmp
        run.result = None
        return run.start()

    def startRadiomics(self, originalNode, normalizedNode, segmentationNode, segmentNames=None,
                       paramsFile: Optional[str] = None, tableNode=None,
                       onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None) -> EngineRun:
        """Radiomics of the chosen segments on both volumes, same settings, in the background.

        The result fills ``tableNode`` (new when None; ``run.tableNode``) with
        segment | feature | original | normalized | % difference.
        """
        if originalNode is None or normalizedNode is None:
            raise ValueError("Select the original and the normalized volume.")
        if segmentationNode is None:
            raise ValueError("Select a segmentation.")
        ids = segments.segment_ids_by_name(segmentationNode, segmentNames)
        if not ids:
            raise ValueError("The segmentation has no segments.")
        tmp = self.makeTempDir("CTNormalize-radiomics-")
        try:
            orig = nodes.write_volume(originalNode, os.path.join(tmp, "original.nrrd"))
            norm = nodes.write_volume(normalizedNode, os.path.join(tmp, "normalized.nrrd"))
            names = segments.export_labelmap(segmentationNode, ids, originalNode, os.path.join(tmp, "segments.nrrd"))
        except Exception:
            process.remove_dir(tmp)
            raise
        args = ["--image", f"original={orig}", "--image", f"normalized={norm}",
                "--segments", os.path.join(tmp, "segments.nrrd"), "--json"]
        if paramsFile:
            args += ["--params", paramsFile]
        cmd = engine.engine_command("radiomics", *args, python=self.python)
        scene = self.scene
        if tableNode is None:
            tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", f"Radiomics {originalNode.GetName()}")

        def importer(run, doc):
            from CTNormalizeLib import __version__

            prov = doc.get("provenance", {}) if isinstance(doc, dict) else {}
            used = paramsFile or prov.get("params_path") or "engine default (CT preset)"
            tables.radiomics_table(tableNode, doc, params_file=used, engine_version=__version__, segment_names=names)

        run = self._quantRun(cmd, tmp, importer, onEvent, onFinished)
        run.tableNode = tableNode
        return run

    def startEmphysema(self, originalNode, normalizedNode, segmentationNode=None, lungSegmentName: str = "",
                       threshold: float = -950.0, tableNode=None, addMaskSegments: bool = True,
                       onEvent: Optional[Callable] = None, onFinished: Optional[Callable] = None) -> EngineRun:
        """LAA%, Perc15 and lung volume per lung and zone, on both volumes, in the background.

        The lung mask is the chosen segment when given, else the engine's own lung mask. With
        ``addMaskSegments`` the two emphysema masks become segments of ``segmentationNode`` (a
        new "Emphysema" segmentation when None; ``run.maskSegmentationNode``).
        """
        if originalNode is None or normalizedNode is None:
            raise ValueError("Select the original and the normalized volume.")
        tmp = self.makeTempDir("CTNormalize-emphysema-")
        try:
            orig = nodes.write_volume(originalNode, os.path.join(tmp, "original.nrrd"))
            norm = nodes.write_volume(normalizedNode, os.path.join(tmp, "normalized.nrrd"))
            args = [orig, norm, "--threshold", f"{float(threshold):g}", "--json"]
            if segmentationNode is not None and lungSegmentName:
                ids = segments.segment_ids_by_name(segmentationNode, [lungSegmentName])
                lung = os.path.join(tmp, "lung.nrrd")
                segments.export_labelmap(segmentationNode, ids, originalNode, lung)
                args += ["--lung-mask", lung]
                if not nodes.same_grid(originalNode, normalizedNode):
                    # a thickness change gives the normalized volume its own z grid
                    lung_n = os.path.join(tmp, "lung_normalized_grid.nrrd")
                    segments.export_labelmap(segmentationNode, ids, normalizedNode, lung_n)
                    args += ["--lung-mask", lung_n]
            mask_dir = os.path.join(tmp, "masks")
            os.makedirs(mask_dir)
            if addMaskSegments:
                args += ["--mask-out", mask_dir]
        except Exception:
            process.remove_dir(tmp)
            raise
        cmd = engine.engine_command("emphysema", *args, python=self.python)
        scene = self.scene
        if tableNode is None:
            tableNode = scene.AddNewNodeByClass("vtkMRMLTableNode", f"Emphysema {originalNode.GetName()}")

        def importer(run, doc):
            res_o, res_n = _emphysema_pair(doc, orig, norm)
            tables.emphysema_table(tableNode, res_o, res_n)
            if addMaskSegments:
                seg = segmentationNode
                if seg is None:
                    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"Emphysema {originalNode.GetName()}")
                    seg.CreateDefaultDisplayNodes()
                    seg.SetReferenceImageGeometryParameterFromVolumeNode(originalNode)
                for stem, label, color in (("original", "original", (1.0, 0.9, 0.1)),
                                           ("normalized", "normalized", (0.1, 0.8, 1.0))):
                    path = _find_mask(mask_dir, stem)
                    if path:
                        segments.import_mask_as_segment(path, seg, f"Emphysema ({label}, < {threshold:g} HU)", color)
                run.maskSegmentationNode = seg

        run = self._quantRun(cmd, tmp, importer, onEvent, onFinished)
        run.tableNode = tableNode
        run.maskSegmentationNode = None
        return run


def model_tooltip(package) -> str:
    """A learned model's card, in a few lines: coverage, architecture, metrics, sha256, use."""
    card = getattr(package, "card", {}) or {}
    lines = [f"Learned model {getattr(package, 'name', '?')}"]
    try:
        lines.append("Covers: " + package.coverage_text())
    except Exception:
        pass
    arch = (card.get("architecture") or {}).get("name")
    if arch:
        lines.append(f"Architecture: {arch}")
    metrics = card.get("metrics") or {}
    if isinstance(metrics, dict) and metrics:
        shown = [f"{k}={v:.3g}" if isinstance(v, (int, float)) else f"{k}={v}"
                 for k, v in list(metrics.items())[:4] if not isinstance(v, (dict, list))]
        if shown:
            lines.append("Benchmark: " + ", ".join(shown))
    sha = card.get("sha256")
    if sha:
        lines.append(f"Weights sha256: {sha[:16]}...")
    lines.append(str(card.get("intended_use") or "Research use, not for diagnosis."))
    return "\n".join(lines)


def _emphysema_pair(doc, orig_path: str, norm_path: str) -> tuple[dict, dict]:
    """The (original, normalized) results of an ``emphysema --json`` document."""
    items = doc
    if isinstance(doc, dict):
        for key in ("results", "inputs", "cases"):
            if isinstance(doc.get(key), (list, dict)):
                items = doc[key]
                break
    if isinstance(items, dict):
        if "laa_percent" in items:
            raise RuntimeError("The engine returned one result for two volumes.")
        by_name = {}
        for k, v in items.items():
            by_name[os.path.basename(str(k))] = v
        o = by_name.get(os.path.basename(orig_path))
        n = by_name.get(os.path.basename(norm_path))
        if o is None or n is None:
            vals = list(items.values())
            o, n = vals[0], vals[1]
        return o, n
    if isinstance(items, list) and len(items) >= 2:
        def key(item):
            p = str(item.get("input") or item.get("path") or item.get("image") or "")
            return os.path.basename(p)

        named = {key(i): i for i in items if isinstance(i, dict)}
        o = named.get(os.path.basename(orig_path), items[0])
        n = named.get(os.path.basename(norm_path), items[1])
        return o, n
    raise RuntimeError("Unexpected emphysema result from the engine.")


def _find_mask(folder: str, stem: str) -> Optional[str]:
    hits = sorted(p for p in glob.glob(os.path.join(folder, "**", f"*{stem}*"), recursive=True)
                  if os.path.isfile(p) and "lung" not in os.path.basename(p).lower())
    emph = [p for p in hits if "emph" in os.path.basename(p).lower()]
    return (emph or hits or [None])[0]
