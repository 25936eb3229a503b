"""Volume nodes <-> files, geometry, provenance attributes, subject hierarchy, scratch nodes.

Volumes go to the engine as NRRD written with SimpleITK from the node's voxels and LPS
geometry, with the DICOM tags (:mod:`.tags`) as header keys the engine reads. Results come
back through a volume archetype storage node that is not added to the scene, so the result
node does not point at a temp file that is about to be removed.
"""

from __future__ import annotations

import json
from typing import Optional

from .i18n import _

ATTRIBUTE_PREFIX = "CTNormalize."
#: node reference role from a normalized volume to the volume it was made from (saved with the scene)
INPUT_REFERENCE = "CTNormalizeInput"

def lps_geometry(volume_node):
    """``(spacing_xyz, origin_lps, direction_lps_row_major)`` of a volume node, as ITK wants them."""
    import numpy as np
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(m)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    d = ras_to_lps @ np.array([[m.GetElement(i, j) for j in range(3)] for i in range(3)])
    origin = ras_to_lps @ np.array(volume_node.GetOrigin())
    return tuple(volume_node.GetSpacing()), tuple(float(v) for v in origin), tuple(float(v) for v in d.ravel())


def write_volume(volume_node, path: str, tags: Optional[dict] = None) -> str:
    """Write a scalar (or labelmap) volume node to a NRRD file for the engine; returns path.

    Voxels keep their type; ``tags`` (DICOM tag name -> value) become NRRD header keys
    (``ConvolutionKernel:=B70f``) that ``CTNormalizeLib.io.read_volume`` puts in ``Volume.meta``.
    Only the names the engine knows are written. Uncompressed, for speed.
    """
    import SimpleITK as sitk
    import slicer

    if volume_node is None or volume_node.GetImageData() is None:
        raise ValueError(_("The input volume has no image data."))
    from CTNormalizeLib.io.dicom import META_TAGS

    image = sitk.GetImageFromArray(slicer.util.arrayFromVolume(volume_node))
    spacing, origin, direction = lps_geometry(volume_node)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    for name, value in (tags or {}).items():
        text = str(value).strip().replace("\n", " ")
        if name in META_TAGS and text:
            image.SetMetaData(name, text)
    try:
        sitk.WriteImage(image, str(path), useCompression=False)
    except RuntimeError as exc:
        raise RuntimeError(_("Could not write the volume {name} to {path}: {error}").format(
            name=repr(volume_node.GetName()), path=path, error=exc)) from None
    return str(path)


def read_volume(path: str, volume_node) -> None:
    """Read ``path`` into an existing volume node (image data + IJK-to-RAS)."""
    import slicer

    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetSingleFile(True)
    if not storage.ReadData(volume_node):
        raise RuntimeError(_("Could not read the engine output {path}.").format(path=path))
    if volume_node.GetDisplayNode() is None:
        volume_node.CreateDefaultDisplayNodes()


def same_grid(a, b, tol: float = 1e-3) -> bool:
    """True when two volume nodes have the same dimensions and IJK-to-RAS (within ``tol``)."""
    import vtk

    if a.GetImageData() is None or b.GetImageData() is None:
        return False
    if a.GetImageData().GetDimensions() != b.GetImageData().GetDimensions():
        return False
    ma, mb = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    a.GetIJKToRASMatrix(ma)
    b.GetIJKToRASMatrix(mb)
    return all(abs(ma.GetElement(i, j) - mb.GetElement(i, j)) <= tol for i in range(4) for j in range(4))


def adopt_geometry(output_node, input_node) -> None:
    """Give the output the input's parent transform, and its exact IJK-to-RAS on the same grid.

    The NRRD round trip prints matrices in decimal, which changes the last bits; on the same
    grid we copy the input's matrix so both volumes overlay exactly.
    """
    import vtk

    output_node.SetAndObserveTransformNodeID(input_node.GetTransformNodeID())
    if same_grid(output_node, input_node):
        m = vtk.vtkMatrix4x4()
        input_node.GetIJKToRASMatrix(m)
        output_node.SetIJKToRASMatrix(m)


def set_provenance(node, rr, extra: Optional[dict] = None, raw: Optional[dict] = None) -> dict:
    """Store the run's provenance as ``CTNormalize.*`` node attributes; returns what was set.

    ``rr`` is the engine's run report (:class:`CTNormalizeLib.contracts.report.RunReport`), ``raw`` the
    dictionary it was read from (stored as the engine wrote it; ``rr.to_dict()`` when not given).
    Keys: engineVersion, method, methodReason, modelSha256, device, texture, sourceProtocol,
    targetProtocol, protocolPair, noise, sourceProvenance (JSON), qc (JSON), warnings (JSON),
    report (JSON), plus ``extra``.
    """
    attrs = {
        "engineVersion": rr.engine_version,
        "method": rr.method,
        "methodReason": rr.method_reason,
        "modelSha256": rr.model_sha256 or "",
        "device": rr.device,
        "texture": rr.texture,
        "sourceProtocol": rr.source_spec,
        "targetProtocol": rr.target_spec,
        "protocolPair": rr.protocol_summary,
        "noise": rr.noise_summary,
        "sourceProvenance": json.dumps(rr.plan.get("source", {}).get("sources", {}), sort_keys=True),
        "qc": json.dumps(rr.qc, sort_keys=True),
        "warnings": json.dumps(rr.warnings),
        "report": json.dumps(rr.to_dict() if raw is None else raw, sort_keys=True, default=str),
    }
    attrs.update({k: str(v) for k, v in (extra or {}).items()})
    for key, value in attrs.items():
        node.SetAttribute(ATTRIBUTE_PREFIX + key, str(value))
    return attrs


def provenance(node) -> dict:
    """The ``CTNormalize.*`` attributes of a node, without the prefix."""
    out = {}
    for name in node.GetAttributeNames() or ():
        if name.startswith(ATTRIBUTE_PREFIX):
            out[name[len(ATTRIBUTE_PREFIX):]] = node.GetAttribute(name)
    return out


def place_next_to(node, reference_node) -> None:
    """Put ``node`` under the same subject-hierarchy parent (study) as ``reference_node``."""
    import slicer

    scene = node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    ref_item = sh.GetItemByDataNode(reference_node)
    if not ref_item:
        return
    parent = sh.GetItemParent(ref_item)
    item = sh.GetItemByDataNode(node)
    if not item:  # Slicer's subject hierarchy plugins add items; a bare scene does not
        sh.CreateItem(parent, node)
    elif parent:
        sh.SetItemParent(item, parent)


def volume_for_engine(volume_node, meta: Optional[dict] = None):
    """A ``CTNormalizeLib.Volume`` view of a node's voxels (for in-process detection).

    Geometry is ITK/LPS as the engine expects; ``meta`` carries the DICOM tags.
    """
    import numpy as np
    import slicer

    from CTNormalizeLib import Volume

    arr = slicer.util.arrayFromVolume(volume_node)
    (sx, sy, sz), origin, direction = lps_geometry(volume_node)
    return Volume(hu=np.asarray(arr, dtype=np.float32), spacing=(sz, sy, sx), origin=origin,
                  direction=direction, meta=dict(meta or {}))


def node_ids(scene) -> set:
    """The IDs of the nodes now in ``scene``."""
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def remove_nodes_added_since(scene, before: set, kept=frozenset()) -> None:
    """Remove the nodes added to ``scene`` since :func:`node_ids` gave ``before``, but the IDs in ``kept``
    (scratch work, an import that failed halfway)."""
    new = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    # data nodes first, so their display nodes are not re-created or left dangling
    new = [n for n in new if n.GetID() not in before and n.GetID() not in kept]
    new.sort(key=lambda n: n.IsA("vtkMRMLDisplayNode") or n.IsA("vtkMRMLStorageNode") or n.IsA("vtkMRMLColorNode"))
    for node in new:
        if scene.IsNodePresent(node):
            scene.RemoveNode(node)


class scratch_nodes:
    """Remove every node added to ``scene`` inside the ``with`` block, except those kept.

    Slicer adds display, storage and color-table nodes on its own when a labelmap is created
    or exported; removing only the labelmap would leave those behind (saved with the scene).
    """

    def __init__(self, scene):
        self.scene = scene
        self.kept: set = set()

    def keep(self, node):
        self.kept.add(node.GetID())
        for getter in ("GetDisplayNode", "GetStorageNode"):
            dep = getattr(node, getter, lambda: None)()
            if dep is not None:
                self.kept.add(dep.GetID())
        return node

    def __enter__(self):
        self._before = node_ids(self.scene)
        return self

    def __exit__(self, *exc):
        remove_nodes_added_since(self.scene, self._before, self.kept)
        return False


def set_input_of(output_node, input_node) -> None:
    """Record on ``output_node`` which volume it was made from (a node reference, kept in saved scenes)."""
    output_node.SetNodeReferenceID(INPUT_REFERENCE, input_node.GetID() if input_node is not None else None)


def input_of(output_node):
    """The volume ``output_node`` was made from (:func:`set_input_of`), or None when it is not in the scene."""
    return output_node.GetNodeReference(INPUT_REFERENCE)
