"""Normalizing a volume node in a child engine process and loading the result next to it."""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from . import choices, dependencies, engine, nodes, process, tags
from .i18n import _
from .process import EngineRun, RunState

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda", "mps")


class NormalizationMixin:
    """``startNormalization`` / ``runNormalization`` / ``cancel`` (needs ``scene``, ``runs``, ``makeTempDir``)."""

    def inputTags(self, volumeNode) -> dict:
        """The DICOM tags found for ``volumeNode`` (database, subject hierarchy, node attributes)."""
        return tags.volume_tags(volumeNode)

    def checkInput(self, volumeNode, role: str = "input") -> dict:
        """Refuse a missing or non-CT volume in plain words; returns the volume's tags.

        ``role``: ``input`` or ``reference`` (a scan to look like), for the message.
        """
        found = self.inputTags(volumeNode) if volumeNode is not None else {}
        tags.check_ct(volumeNode, found, role)
        return found

    def detectSourceProtocol(self, volumeNode):
        """Detect the source protocol of a volume node (DICOM tags + image noise), in this process.

        Returns a ``CTNormalizeLib.protocols.Protocol`` whose ``sources`` say where each field
        came from.
        """
        if volumeNode is None or volumeNode.GetImageData() is None:
            raise ValueError(_("Select an input volume with image data."))
        from CTNormalizeLib.plan import resolve_source

        protocol, _signature = resolve_source(nodes.volume_for_engine(volumeNode, self.inputTags(volumeNode)), None)
        return protocol

    def methodNeedsTorch(self, method: str, volumeNode=None, source: str = "auto", target: str = "",
                         targetLikeNode=None) -> bool:
        """True when the run will use a learned model (so torch must be installed).

        A named method answers from the method table; for "auto" the engine's own planner
        decides on the detected source and the target (False when that cannot be told yet:
        the engine then reports what is missing).
        """
        named = choices.method_needs_torch(method)
        if named is not None:
            return named
        if volumeNode is None or not (target or targetLikeNode is not None) or not any(
                r.kind == "model" for r in choices.method_table()):
            return False
        try:
            from CTNormalizeLib.methods import get_method
            from CTNormalizeLib.plan import make_plan

            vol = nodes.volume_for_engine(volumeNode, self.inputTags(volumeNode))
            like = None if targetLikeNode is None else nodes.volume_for_engine(targetLikeNode,
                                                                              self.inputTags(targetLikeNode))
            plan = make_plan(vol, source, target or None, target_like=like, method="auto",
                             device="cpu")  # what the engine will choose
            return bool(get_method(plan.method).needs_torch)
        except Exception:  # undetectable source, bad target: the engine run will say so
            log.debug("CTNormalize: could not plan the method in process", exc_info=True)
            return False

    def modelPackagesToInstall(self, method: str, volumeNode=None, source: str = "auto", target: str = "",
                               targetLikeNode=None) -> bool:
        """True when the run would use a learned model whose packages (torch, MONAI) are not installed yet.

        With them installed the answer is False at once: "auto" is then not planned here, which
        measures the input (and a reference scan) on Slicer's main thread for seconds; the
        engine process plans the run anyway.
        """
        if dependencies.model_dependencies_installed():
            return False
        return self.methodNeedsTorch(method, volumeNode, source, target, targetLikeNode)

    def startNormalization(self, inputNode, target: str, source: str = "auto", method: str = "auto",
                           device: str = "auto", outputNode=None, onEvent: Optional[Callable] = None,
                           onFinished: Optional[Callable] = None, targetLikeNode=None) -> EngineRun:
        """Launch the engine on ``inputNode`` in a child process; returns the running EngineRun.

        ``targetLikeNode``: a reference CT whose measured kernel, noise and thickness are the
        target ("make it look like that scan", ``--target-like``); ``target`` may then be
        empty, or a spec that only sets the thickness.

        The volume travels with its DICOM tags. When the child finishes, the result is loaded
        into ``outputNode`` (a new volume "<input> → <target>" when None), with the input's
        geometry, provenance attributes (``CTNormalize.runId`` among them) and subject-hierarchy
        place. ``onEvent(run, event)`` sees every engine event; ``onFinished(run)`` is called
        once at the end. The temp folder is removed whatever happens.
        """
        if inputNode is None or inputNode.GetImageData() is None:
            raise ValueError(_("Select an input volume with image data."))
        target = str(target or "").strip()
        if not target and targetLikeNode is None:
            raise ValueError(_("Select a target protocol (preset or spec) or a reference scan to look like."))
        if outputNode is not None and outputNode is inputNode:
            raise ValueError(_("The output volume must differ from the input: CTNormalize never overwrites its input."))
        if outputNode is not None and outputNode is targetLikeNode:
            raise ValueError(_("The output volume must differ from the reference scan: CTNormalize never "
                               "overwrites its inputs."))
        if device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}.")
        if self.runs.live("normalize"):
            raise RuntimeError(_("A normalization is already running; cancel it first."))
        found = self.checkInput(inputNode)
        likeTags = None if targetLikeNode is None else self.checkInput(targetLikeNode, "reference")
        tmp = self.makeTempDir()
        try:
            in_path = nodes.write_volume(inputNode, os.path.join(tmp, "input.nrrd"), tags=found)
            like_path = None
            if targetLikeNode is not None:
                # the engine's report names the target "like <file>": the reference's own name reads better;
                # a folder of its own, so no node name can clash with input.nrrd / output.nrrd
                os.makedirs(os.path.join(tmp, "reference"))
                like_path = nodes.write_volume(targetLikeNode, os.path.join(
                    tmp, "reference", choices.reference_file_name(targetLikeNode.GetName())), tags=likeTags)
        except Exception:
            process.remove_dir(tmp)
            raise
        args = engine.normalize_command(in_path, os.path.join(tmp, "output.nrrd"), source=source, target=target,
                                        method=method, device=device, python=self.python, target_like=like_path)
        label = choices.target_label(target, None if targetLikeNode is None else targetLikeNode.GetName())

        def on_event(run, event):
            # the panel hears of the import before it happens: the import ends the run (its "done" comes last)
            if onEvent is not None:
                onEvent(run, event)
            if event.get("event") == "import":
                self._importNormalized(run, outputNode, label)

        run = EngineRun(args, env=engine.engine_environment(device, self.modelsDirectory), cwd=engine.engine_package_parent(),
                        on_event=on_event, on_finished=onFinished, cleanup=lambda: process.remove_dir(tmp))
        run.tempDir, run.outputNode, run.inputNode, run.report = tmp, None, inputNode, None
        run.inputTags = found
        self.runs.watch(self.scene)
        self.runs.add(run, "normalize")
        self.currentRun = run
        run.start()
        return run

    def _importNormalized(self, run: EngineRun, outputNode, target: str):
        """Load the engine's output into ``outputNode`` (or a new node) with its provenance.

        The report is checked before any node is touched, and the nodes made here are removed again
        when loading fails: a failed import leaves no volume without provenance in the scene.
        """
        from CTNormalizeLib.contracts.report import RunReport

        scene = self.scene
        inputNode = run.inputNode
        before = nodes.node_ids(scene)
        try:
            if not self.runs.is_current(run):
                raise RuntimeError(_("The scene was closed during the run; the result was discarded."))
            if inputNode is None or not scene.IsNodePresent(inputNode):
                raise RuntimeError(_("The input volume was removed from the scene during the run."))
            done = run.done_event
            path = done.output if done is not None else None
            if not path or not os.path.isfile(path):
                raise RuntimeError(_("The engine reported success but wrote no output ({path}).").format(path=path))
            raw = dict(done.report or {})
            try:
                report = RunReport.from_dict(raw)  # parsed here once; the run keeps it
            except (TypeError, KeyError, ValueError) as exc:
                raise RuntimeError(_("the engine's run report is not readable by this module ({error})").format(
                    error=exc)) from None
            if outputNode is not None and not scene.IsNodePresent(outputNode):
                outputNode = None  # the chosen output was deleted meanwhile: make a new one
            if outputNode is None:
                outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", choices.output_name(inputNode, target))
            nodes.read_volume(path, outputNode)
            nodes.adopt_geometry(outputNode, inputNode)
            nodes.set_input_of(outputNode, inputNode)
            nodes.set_provenance(outputNode, report, extra={"runId": run.id, "inputName": inputNode.GetName(),
                                                            "targetName": target}, raw=raw)
            nodes.place_next_to(outputNode, inputNode)
            run.outputNode = outputNode
            run.report = report
        except Exception as exc:
            log.exception("CTNormalize: importing the result failed")
            nodes.remove_nodes_added_since(scene, before)  # the volume and the display nodes made for it
            run.set_failed("IMPORT", _("Could not load the result: {error}").format(error=exc))
            return
        run.set_completed()

    def runNormalization(self, inputNode, target: str, source: str = "auto", method: str = "auto",
                         device: str = "auto", outputNode=None, timeout: Optional[float] = None,
                         targetLikeNode=None):
        """Blocking variant (scripts, self-test): returns the output node or raises RuntimeError."""
        run = self.startNormalization(inputNode, target, source, method, device, outputNode,
                                      targetLikeNode=targetLikeNode)
        try:
            run.wait(timeout)
        except TimeoutError:
            run.abandon("Timed out.")
            raise
        if run.state is not RunState.COMPLETED:
            raise RuntimeError(_("Normalization {state}: [{code}] {message}").format(
                state=run.state.value, code=run.error_code, message=run.error_message))
        return run.outputNode

    def cancel(self, run: Optional[EngineRun] = None):
        """Cancel a run (default: the current normalization); kills its whole process tree."""
        run = run or self.currentRun
        if run is not None:
            run.cancel()

    def shutdown(self, reason: str = "Cancelled: the module was closed.") -> int:
        """Stop every run now, removing their temp folders (module reload, application exit)."""
        return self.runs.abandon_all(reason)
