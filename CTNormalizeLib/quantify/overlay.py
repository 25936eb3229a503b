"""Lung-mask overlay pictures (matplotlib Agg), for checks, the report and the README."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..imaging.lungs import LungMask
from ..imaging.orientation import superior_is_last

LUNG_WINDOW = (-1350.0, 150.0)  # level -600, width 1500


def _aspect(spacing_row: float, spacing_col: float) -> float:
    return float(spacing_row) / float(spacing_col)


def lung_overlay_figure(hu: np.ndarray, mask: LungMask, spacing, direction=None,
                        z: Optional[int] = None, y: Optional[int] = None, title: str = ""):
    """A matplotlib figure: axial and coronal lung-window views with the lungs coloured.

    Right lung in blue, left lung in orange, removed airways in green. Axial is shown in
    radiological convention (patient right on the image left, as stored in LPS arrays);
    coronal with superior at the top.

    Parameters
    ----------
    hu : np.ndarray
        HU ``[z, y, x]``.
    mask : LungMask
    spacing : tuple
        ``(z, y, x)`` mm.
    direction : tuple of 9 float, optional
        ITK direction (decides which slice is superior).
    z, y : int, optional
        Axial slice and coronal row; default: through the lungs' centre of mass.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    if mask.lungs.any():
        cz, cy, _ = (int(round(c)) for c in np.argwhere(mask.lungs).mean(axis=0))
    else:
        cz, cy = hu.shape[0] // 2, hu.shape[1] // 2
    z = cz if z is None else z
    y = cy if y is None else y
    lab = mask.labelmap().astype(np.int8)
    if mask.airways is not None:
        lab[mask.airways & (lab == 0)] = 3
    cmap = ListedColormap([(0, 0, 0, 0), (0.2, 0.5, 1.0, 0.45), (1.0, 0.55, 0.1, 0.45), (0.1, 0.9, 0.2, 0.6)])
    vmin, vmax = LUNG_WINDOW

    ax_img, ax_lab = hu[z], lab[z]
    co_img, co_lab = hu[:, y, :], lab[:, y, :]
    if superior_is_last(direction):
        co_img, co_lab = co_img[::-1], co_lab[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 6), dpi=100)
    for ax, img, lb, asp, name in (
        (axes[0], ax_img, ax_lab, _aspect(spacing[1], spacing[2]), f"axial z={z}"),
        (axes[1], co_img, co_lab, _aspect(spacing[0], spacing[2]), f"coronal y={y}"),
    ):
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, aspect=asp, interpolation="nearest")
        ax.imshow(lb, cmap=cmap, vmin=0, vmax=3, aspect=asp, interpolation="nearest")
        ax.contour(lb == 1, levels=[0.5], colors=[(0.2, 0.5, 1.0)], linewidths=0.8)
        ax.contour(lb == 2, levels=[0.5], colors=[(1.0, 0.55, 0.1)], linewidths=0.8)
        ax.set_title(name)
        ax.set_axis_off()
        ax.text(0.01, 0.99, "R", color="w", transform=ax.transAxes, va="top", fontsize=12)
        ax.text(0.99, 0.99, "L", color="w", transform=ax.transAxes, va="top", ha="right", fontsize=12)
    fig.suptitle(title or f"Lung mask (blue = right, orange = left, green = airways removed); "
                 f"{mask.volume_ml():.0f} ml")
    fig.tight_layout()
    return fig


def save_lung_overlay(path, hu: np.ndarray, mask: LungMask, spacing, direction=None, **kwargs) -> Path:
    """Save :func:`lung_overlay_figure` as a PNG, atomically; returns the path."""
    import matplotlib.pyplot as plt

    from ..io.atomic import atomic_output

    fig = lung_overlay_figure(hu, mask, spacing, direction, **kwargs)
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
