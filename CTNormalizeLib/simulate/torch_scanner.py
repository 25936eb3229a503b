"""The simulator's slice physics in torch, for training pairs made on a GPU on the fly.

The finufft reference (:mod:`.projector`, :mod:`.scanner`) runs on the CPU; a GPU recipe
that draws fresh scans for every batch needs the same physics on the device. This module
has it, with the operators torch offers (why not a torch NUFFT or torch-radon: neither is a
well-kept package on PyPI for current torch; ray sampling with ``grid_sample`` is exact
enough, see below):

- **forward projection**: the slice is up-sampled 2x by zero-padding its spectrum (a
  band-limited interpolant, as the reference treats pixels as band-limited samples), then
  sampled along every ray with bicubic interpolation at half-pixel steps and summed
  (bilinear sampling blurred: MTF50 8 % low for the standard kernel);
- **noise**: Poisson + electronic counts as :func:`.scanner._noisy_rows` (one normal draw
  above 100 expected photons, exact Poisson below), with the reference's AEC and calibration
  (:class:`.scanner.ScannerConfig`), floored and logged;
- **FBP**: the reference's band-limited Ram-Lak filter times the window ``W(f)`` by FFT; the
  filtered projections are up-sampled 4x by zero-padding their spectrum and back-projected
  pixel by pixel with linear interpolation (``pi / views`` times the sum over views).

Geometry and constants are the reference's (:class:`.projector.ParallelGeometry`: detector
bin ``dt = min(dx, dy)``, centre of rotation at pixel ``(ny // 2, nx // 2)``, views over 180
degrees). Checked against the reference in ``Testing/Python/test_torch_scanner.py`` (128^2 at
0.8 mm, the issue's tolerance 10 %; measured: projections 0.5 % RMS, noise std within 2 %, NPS
mean frequency within 1 %, MTF50 within 1 % for the smooth and standard kernels). Slices are
independent in :func:`simulate_slices`; :func:`project_volume` and :func:`reconstruct_scan` do a
whole scan as :func:`.scanner.simulate_scan` does (each thick slice the slice profile's weighted
sum of the fine rows' noisy log projections, the reference's row counts, AEC and z grid). On a CPU it is about ten
times slower than the reference (ray sampling is O(N^3) per slice, the NUFFTs O(N^2 log N)):
use it on a GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .projector import ParallelGeometry, _ramp, fbp_frequencies, fbp_pad_length
from ..protocols import kernel_mtf
from .scanner import DEFAULT_SCANNER, POISSON_BELOW, ScannerConfig

#: Views handled at once (bounds the sample grids' memory: views x detector x samples).
VIEW_CHUNK = 16


@dataclass
class TorchGeometry:
    """A :class:`~.projector.ParallelGeometry` with its angles and filter on a torch device."""

    geom: ParallelGeometry
    device: str = "cpu"

    def __post_init__(self):
        import torch

        g = self.geom
        self.angles = torch.tensor(g.angles, dtype=torch.float32, device=self.device)
        self.n_pad = fbp_pad_length(g)
        self.ramp = torch.tensor(_ramp(self.n_pad, g.dt)[: self.n_pad // 2 + 1], dtype=torch.float32, device=self.device)
        self.freqs = fbp_frequencies(g)[: self.n_pad // 2 + 1]  # cycles/mm, rfft order

    @property
    def t(self):
        """Detector bin centres (mm), the reference's order."""
        import torch

        g = self.geom
        return (torch.arange(g.n_det, device=self.device, dtype=torch.float32) - g.n_det // 2) * g.dt


def _upsample2(x):
    """``[b, h, w]`` -> ``[b, 2h, 2w]``: periodic band-limited interpolation (zero-padded spectrum)."""
    import torch

    b, h, w = x.shape
    f = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    big = torch.zeros((b, 2 * h, 2 * w), dtype=f.dtype, device=x.device)
    big[:, h - h // 2:h - h // 2 + h, w - w // 2:w - w // 2 + w] = f
    return torch.fft.ifft2(torch.fft.ifftshift(big, dim=(-2, -1))).real * 4.0


def forward_project(mu, tg: TorchGeometry):
    """Line integrals ``[b, views, n_det]`` of attenuation images ``mu`` ``[b, ny, nx]`` (1/mm), on ``tg.device``."""
    import torch
    import torch.nn.functional as F

    g = tg.geom
    mu = torch.as_tensor(mu, dtype=torch.float32, device=tg.device)
    b, ny, nx = mu.shape
    up = _upsample2(mu)[:, None]  # [b, 1, 2ny, 2nx]
    ds = g.dt / 2.0
    half = 0.5 * math.hypot(ny * g.dy, nx * g.dx) + g.dt
    s = torch.arange(-half, half + ds / 2, ds, device=tg.device, dtype=torch.float32)
    t = tg.t
    out = torch.empty((b, g.n_views, g.n_det), dtype=torch.float32, device=tg.device)
    for v0 in range(0, g.n_views, VIEW_CHUNK):
        th = tg.angles[v0:v0 + VIEW_CHUNK]
        c, sn = torch.cos(th)[:, None, None], torch.sin(th)[:, None, None]
        x = t[None, :, None] * c - s[None, None, :] * sn  # [v, det, s] mm
        y = t[None, :, None] * sn + s[None, None, :] * c
        # pixel index (original grid) -> index on the 2x grid -> grid_sample's [-1, 1] (align_corners)
        gx = 2.0 * (x / g.dx + nx // 2) / (2 * nx - 1) * 2.0 - 1.0
        gy = 2.0 * (y / g.dy + ny // 2) / (2 * ny - 1) * 2.0 - 1.0
        grid = torch.stack((gx, gy), dim=-1).reshape(1, -1, s.numel(), 2).expand(b, -1, -1, -1)
        vals = F.grid_sample(up, grid, mode="bicubic", padding_mode="zeros", align_corners=True)
        out[:, v0:v0 + len(th)] = vals[:, 0].sum(-1).reshape(b, len(th), g.n_det) * ds
    return out


def row_counts(hu, tg: TorchGeometry, dose, row_mm: float, det: ScannerConfig = DEFAULT_SCANNER) -> np.ndarray:
    """Unattenuated counts per bin for each slice ``[b]``, each with its own AEC (the slices are independent here):
    the reference's :func:`.scanner.counts_per_bin` of the slices' water-equivalent diameters."""
    import torch

    from .scanner import _water_equivalent_diameter, counts_per_bin

    g = tg.geom
    hu = np.asarray(torch.as_tensor(hu, dtype=torch.float32).cpu())
    return counts_per_bin(_water_equivalent_diameter(hu, g.dy, g.dx), float(dose), g, row_mm, det)


def noisy_log(sino, n0, generator=None, det: ScannerConfig = DEFAULT_SCANNER):
    """Noisy log projections: counts ``n0 exp(-sino)`` with Poisson and electronic noise, floored and logged."""
    import torch

    n0 = torch.as_tensor(n0, dtype=torch.float32, device=sino.device).reshape(-1, 1, 1)
    lam = n0 * torch.exp(-sino)
    z = torch.randn(lam.shape, generator=generator, device=sino.device, dtype=torch.float32)
    counts = lam + torch.sqrt(lam + det.electronic_std ** 2) * z
    low = lam < POISSON_BELOW
    if bool(low.any()):
        counts = torch.where(low, torch.poisson(torch.where(low, lam, torch.zeros_like(lam)), generator=generator)
                             + det.electronic_std * z, counts)
    return -torch.log(torch.clamp(counts, min=det.count_floor) / n0)


def fbp(sino, tg: TorchGeometry, window=None):
    """Filtered back-projection of ``sino`` ``[b, views, n_det]`` -> ``[b, ny, nx]`` attenuation (1/mm).

    ``window``: ``W(f)`` as a callable of cycles/mm (None: the plain ramp), as in :func:`.projector.fbp`.
    """
    import torch
    import torch.nn.functional as F

    g = tg.geom
    sino = torch.as_tensor(sino, dtype=torch.float32, device=tg.device)
    b, a, d = sino.shape
    filt = tg.ramp
    if window is not None:
        filt = filt * torch.as_tensor(np.asarray(window(tg.freqs), np.float32), device=tg.device)
    spec = torch.fft.rfft(sino, n=tg.n_pad, dim=-1) * filt
    up = 4
    q = torch.fft.irfft(spec, n=up * tg.n_pad, dim=-1)[..., : up * d] * up  # band-limited, 4x finer in t
    yy = (torch.arange(g.ny, device=tg.device, dtype=torch.float32) - g.ny // 2) * g.dy
    xx = (torch.arange(g.nx, device=tg.device, dtype=torch.float32) - g.nx // 2) * g.dx
    out = torch.zeros((b, g.ny, g.nx), dtype=torch.float32, device=tg.device)
    n_fine = up * d
    for v0 in range(0, a, VIEW_CHUNK):
        th = tg.angles[v0:v0 + VIEW_CHUNK]
        tt = xx[None, None, :] * torch.cos(th)[:, None, None] + yy[None, :, None] * torch.sin(th)[:, None, None]
        idx = (tt / g.dt + d // 2) * up  # fine-grid index of each pixel's ray, per view
        gx = idx / (n_fine - 1) * 2.0 - 1.0
        # each view's filtered projection is one row of a [views] x [n_fine] image; sample row v at gx
        gy = (torch.arange(len(th), device=tg.device, dtype=torch.float32) / max(len(th) - 1, 1) * 2.0 - 1.0)
        grid = torch.stack((gx, gy[:, None, None].expand_as(gx)), dim=-1).reshape(1, len(th) * g.ny, g.nx, 2)
        rows = q[:, v0:v0 + len(th)][:, None]  # [b, 1, v, n_fine]
        vals = F.grid_sample(rows, grid.expand(b, -1, -1, -1), mode="bilinear", padding_mode="zeros",
                             align_corners=True)
        out += vals[:, 0].reshape(b, len(th), g.ny, g.nx).sum(1)
    return out * (math.pi / a)


def simulate_slices(hu, spacing_yx, dose: float, transfer=None, seed: int = 0, row_mm: float = 1.0,
                    det: ScannerConfig = DEFAULT_SCANNER, device: str = "cpu", noise: bool = True, views=None):
    """Scan each slice of ``hu`` ``[b, ny, nx]`` (HU) on ``device``; returns float32 HU ``[b, ny, nx]`` (a torch tensor).

    Parameters
    ----------
    hu : array or tensor
        Noise-free slices in HU.
    spacing_yx : (float, float)
        Pixel size in mm.
    dose : float
        Relative to the simulator's full dose (as :class:`~CTNormalizeLib.protocols.Protocol`'s).
    transfer : callable, optional
        ``W(f)`` (cycles/mm) of the reconstruction; None: the plain ramp.
    row_mm : float
        The slice's thickness for the photon count (the reference's fine-row spacing).
    views : int, optional
        Views over 180 degrees (default: the reference's for this grid).
    """
    import torch

    hu = torch.as_tensor(hu, dtype=torch.float32, device=device)
    _, ny, nx = hu.shape
    tg = TorchGeometry(ParallelGeometry(ny, nx, float(spacing_yx[0]), float(spacing_yx[1]), views=views), device)
    mu = torch.clamp(det.mu_water * (1.0 + hu / 1000.0), min=0.0)
    sino = forward_project(mu, tg)
    if noise:
        gen = torch.Generator(device=device)
        gen.manual_seed(int(seed))
        sino = noisy_log(sino, row_counts(hu, tg, dose, row_mm, det), gen, det)
    return (fbp(sino, tg, transfer) / det.mu_water - 1.0) * 1000.0


@dataclass
class DeviceProjections:
    """:class:`~.scanner.Projections` whose ``sino`` is a tensor on ``geometry.device``."""

    projections: object
    geometry: TorchGeometry


def project_volume(truth, det: ScannerConfig = DEFAULT_SCANNER, device: str = "cpu") -> DeviceProjections:
    """:func:`.scanner.project_truth` on ``device`` (the reference's geometry and AEC diameters)."""
    import torch

    from .scanner import Projections, truth_wed

    nz, ny, nx = truth.hu.shape
    tg = TorchGeometry(ParallelGeometry(ny, nx, float(truth.spacing[1]), float(truth.spacing[2]), views=det.views),
                       device)
    sino = torch.empty((nz, tg.geom.n_views, tg.geom.n_det), dtype=torch.float32, device=device)
    for z0 in range(0, nz, 8):
        hu = torch.as_tensor(np.asarray(truth.hu[z0:z0 + 8], np.float32), device=device)
        sino[z0:z0 + len(hu)] = forward_project(torch.clamp(det.mu_water * (1.0 + hu / 1000.0), min=0.0), tg)
    return DeviceProjections(Projections(sino, tg.geom, truth_wed(truth), truth.hu.shape, truth.spacing, det), tg)


def reconstruct_scan(truth, dproj: DeviceProjections, protocol, seed: int = 0, transfer=None, noise: bool = True,
                     det: ScannerConfig | None = None):
    """A scan of ``truth`` with ``protocol`` from :func:`project_volume`'s projections, on their device.

    The reference's :func:`.scanner.simulate_scan` (z grid, slice profile, row counts, AEC,
    filter) with this module's noise and FBP. ``det`` overrides the noise settings (electronic
    noise, AEC strength) as :meth:`~.randomized.RandomPhysics.detector` does; views and water
    attenuation are the projections'. Returns float32 HU ``[n_out, ny, nx]`` (a tensor).
    """
    import torch

    from . import scanner as reference

    proj, tg = dproj.projections, dproj.geometry
    det = det or proj.detector
    prot = reference.complete_protocol(protocol, truth)
    _, weights = reference.slab_weights(truth, prot)
    used = np.flatnonzero(weights.sum(axis=0) > 0)
    rows = proj.sino[torch.as_tensor(used, device=tg.device)]
    if noise:
        gen = torch.Generator(device=tg.device)
        gen.manual_seed(int(seed))
        rows = noisy_log(rows, reference.row_counts(proj, float(prot.dose), det)[used], gen, det)
    w = torch.as_tensor(weights[:, used].astype(np.float32), device=tg.device)
    window = transfer if transfer is not None else (lambda f: kernel_mtf(prot.kernel, f))
    out = torch.empty((w.shape[0], tg.geom.ny, tg.geom.nx), dtype=torch.float32, device=tg.device)
    for j0 in range(0, w.shape[0], 8):
        sino = torch.tensordot(w[j0:j0 + 8], rows, dims=([1], [0]))
        out[j0:j0 + len(sino)] = (fbp(sino, tg, window) / det.mu_water - 1.0) * 1000.0
    return out
