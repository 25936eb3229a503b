"""Render the Slicer module's documentation pictures, icons and sample thumbnail headless.

Slice views are what Slicer's slice logic computes (the blended, windowed image a slice view
shows), from the slicer-core wheel: the simulated sample is normalized by the real engine
through the module's logic, compared side by side, and the Red/Yellow views are captured.
Overlays that Slicer draws with displayable managers (segmentations) and plots are drawn with
matplotlib from the same arrays and tables. Usage::

    PYTHONPATH=. python scripts/slicer_screenshots.py   # -> docs/screenshots, Resources/Icons, ...
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "CTNormalize"), str(ROOT / "CTNormalizeReaderStudy"), str(ROOT / "Testing" / "Python")]
SHOTS = ROOT / "docs" / "screenshots"


def view_rgb(slice_logic, volume, size=384, fraction=0.5):
    """The RGB image a slice view shows (compositing as set by the module), at ``fraction`` of the z extent."""
    from vtk.util.numpy_support import vtk_to_numpy

    slice_logic.GetSliceNode().SetDimensions(size, size, 1)
    slice_logic.FitSliceToAll(size, size)
    b = [0.0] * 6
    volume.GetRASBounds(b)
    slice_logic.SetSliceOffset(b[4] + fraction * (b[5] - b[4]))
    alg = slice_logic.GetImageDataConnection().GetProducer()
    alg.Update()
    img = alg.GetOutputDataObject(0)
    nx, ny, _ = img.GetDimensions()
    rgba = vtk_to_numpy(img.GetPointData().GetScalars()).reshape(ny, nx, -1)
    return rgba[::-1, :, :3]


def main():
    import slicer

    from CTNormalizeSlicerLib import sampledata, segments, tables, views
    from CTNormalizeSlicerLib.logic import NormalizationLogic
    from CTNormalizeSlicerLib.process import RunState
    from mrml_scene import make_mrml_scene

    SHOTS.mkdir(parents=True, exist_ok=True)
    m = make_mrml_scene()
    work = tempfile.mkdtemp(prefix="ctn-shots-")
    logic = NormalizationLogic(scene=m.scene, appLogic=m.app)
    logic.tempRoot = work
    chest = sampledata.load_simulated_chest(m.scene, folder=Path(work) / "cache")
    run = logic.startNormalization(chest, "emphysema-reference", device="cpu")  # the defaults
    assert run.wait(timeout=900) is RunState.COMPLETED, run.error_message
    out = run.outputNode
    logic.compare(chest, out, layout="sideBySide", fit=False)
    red, yellow = m.slice_logics[0], m.slice_logics[1]
    a, b = view_rgb(red, chest), view_rgb(yellow, out)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.3))
    for ax, im, title in zip(axes, (a, b), (f"Red: {chest.GetName()} (sharp, 25 % dose, 2 mm)",
                                            "Yellow: normalized to emphysema-reference")):
        ax.imshow(im)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("CT Normalize: linked side-by-side views, lung window W1400/L-500", fontsize=11)
    fig.tight_layout()
    fig.savefig(SHOTS / "compare.png", dpi=100)
    plt.close(fig)

    # emphysema-reference changes the slice thickness (2 -> 1 mm), so the voxel-wise tools use a
    # second run that keeps the grid (kernel and dose only)
    same = logic.startNormalization(chest, "kernel=smooth,dose=1", device="cpu")
    assert same.wait(timeout=900) is RunState.COMPLETED, same.error_message
    diff = logic.differenceVolume(chest, same.outputNode)
    board = logic.checkerboardVolume(chest, same.outputNode)
    emph = logic.startEmphysema(chest, out)
    assert emph.wait(timeout=900) is RunState.COMPLETED, emph.error_message
    hist = logic.histogramPlot(chest, out)
    fig, axes = plt.subplots(1, 4, figsize=(20, 5.2))
    views.show_side_by_side(m.scene, board, diff, "Axial", window=None)
    views.apply_window([board], "mediastinum")  # soft tissue shows the noise texture of each square
    axes[0].imshow(view_rgb(yellow, diff))
    axes[0].set_title("Difference volume (smooth, full dose - original), W300/L0", fontsize=9)
    axes[3].imshow(view_rgb(red, board))
    axes[3].set_title("Checkerboard volume (20 mm squares), W350/L40", fontsize=9)
    axes[0].axis("off")
    axes[3].axis("off")
    for k, (vol, mseg) in enumerate(((chest, emph.maskSegmentationNodes[0]), (out, emph.maskSegmentationNodes[1]))):
        arr = slicer.util.arrayFromVolume(vol)
        z = arr.shape[0] // 2
        sid = segments.all_segment_ids(mseg)[-1]
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(mseg, sid, vol)[z]
        ax = axes[1] if k == 0 else None
        if ax is None:
            continue
        lo, hi = -500 - 700, -500 + 700
        ax.imshow(np.clip((arr[z] - lo) / (hi - lo), 0, 1), cmap="gray")
        ax.imshow(np.ma.masked_where(~mask.astype(bool), mask), cmap="autumn", alpha=0.8)
        ax.set_title("Emphysema segment (< -950 HU) on the original, own view only", fontsize=9)
        ax.axis("off")
    rows = np.array([[float(v) for v in r] for r in tables.iter_rows(hist["table"])])
    axes[2].plot(rows[:, 0], rows[:, 1], label="original")
    axes[2].plot(rows[:, 0], rows[:, 2], label="normalized")
    axes[2].set_xlabel("HU")
    axes[2].set_ylabel("% of lung voxels")
    axes[2].set_title("Lung HU histogram (plot chart node)", fontsize=9)
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(SHOTS / "differences.png", dpi=90)
    plt.close(fig)

    # table of the emphysema result, as the results layout's table view lists it
    t = [r for r in tables.iter_rows(emph.tableNode)][:9]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.axis("off")
    tab = ax.table(cellText=[[r[0], r[1], r[2]] + [f"{float(v):.2f}" for v in r[3:]] for r in t],
                   colLabels=tables.column_names(emph.tableNode), loc="center")
    tab.scale(1, 1.2)
    ax.set_title("Emphysema table (results layout, below the side-by-side views)", fontsize=10)
    fig.savefig(SHOTS / "emphysema_table.png", dpi=100, bbox_inches="tight")
    plt.close(fig)

    # icon and sample thumbnail from the views: left half original, right half normalized
    n = min(a.shape[0], a.shape[1])
    half = np.concatenate([a[:, : n // 2], b[:, n // 2: n]], axis=1)
    half[:, n // 2 - 1: n // 2 + 1] = (240, 170, 40)
    plt.imsave(ROOT / "Resources" / "Icons" / "CTNormalize.png", _resize(half, 128))
    plt.imsave(ROOT / "Resources" / "Icons" / "SampleSimulatedChest.png", _resize(a, 256))
    _reader_study(m, SHOTS, work)
    print("wrote", sorted(p.name for p in SHOTS.iterdir()))


def _resize(rgb, size):
    from scipy.ndimage import zoom

    f = size / rgb.shape[0]
    return np.clip(zoom(rgb.astype(np.float32) / 255.0, (f, f, 1), order=1), 0, 1)


def _reader_study(m, shots, work):
    """The Reader Study's pair view (A | B) from its logic, and its icon."""
    import csv

    import SimpleITK as sitk

    from CTNormalizeLib.readerstudy import create_study
    from CTNormalizeReaderStudyLib.logic import ReaderStudyLogic

    root = Path(work) / "study"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(2):
        row = {"case": f"c{i}"}
        for variant, noise in (("original", 60), ("normalized", 15)):
            arr = np.full((6, 96, 96), -1000.0)
            yy, xx = np.mgrid[:96, :96]
            body = (yy - 48) ** 2 / 40 ** 2 + (xx - 48) ** 2 / 44 ** 2 < 1
            lung = ((yy - 45) ** 2 / 26 ** 2 + (xx - 30) ** 2 / 12 ** 2 < 1) | \
                   ((yy - 45) ** 2 / 26 ** 2 + (xx - 66) ** 2 / 12 ** 2 < 1)
            arr[:, body] = 40
            arr[:, lung] = -850
            arr += rng.normal(0, noise, arr.shape)
            path = root / f"{variant}{i}.nrrd"
            sitk.WriteImage(sitk.GetImageFromArray(arr.astype(np.int16)), str(path))
            row[variant] = str(path)
        rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    create_study(root / "manifest.csv", root / "pair", "pair", 1)
    logic = ReaderStudyLogic(m.scene, m.app)
    logic.openStudy(str(root / "pair"), "docs")
    for sl in m.slice_logics[:2]:  # Slicer's layout manager sets this from the layout; headless we do
        sl.GetSliceNode().SetOrientation("Axial")
    a = view_rgb(m.slice_logics[0], logic.nodes["A"], 256)
    b = view_rgb(m.slice_logics[1], logic.nodes["B"], 256)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
    for ax, im, t in zip(axes, (a, b), ("A", "B")):
        ax.imshow(im)
        ax.set_title(f"Side {t} (blinded)", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"CTNormalize Reader Study: {logic.progressText()}", fontsize=11)
    fig.tight_layout()
    fig.savefig(shots / "readerstudy.png", dpi=100)
    plt.close(fig)
    icon = np.concatenate([a[:, :128], b[:, 128:]], axis=1)
    icon[:, 126:130] = (240, 170, 40)
    plt.imsave(ROOT / "CTNormalizeReaderStudy" / "Resources" / "Icons" / "CTNormalizeReaderStudy.png", _resize(icon, 128))
    logic.closeStudy()


if __name__ == "__main__":
    main()
