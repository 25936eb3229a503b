"""Domain-randomized CT-like noise fields for training the learned denoiser (torch, on the fly).

Reconstructed CT noise is, to first order, filtered white noise: its power spectrum is
``|f|^p W(f)^2`` (the ramp times the reconstruction window and the blur of detector and
interpolation), often anisotropic (streaks along the most attenuating directions) and
non-stationary (noisier where paths through the body are long). Each field here draws
all of that at random from ranges much wider than any one scanner's:

- a window from a continuous family (ramp, Shepp-Logan, cosine, Hamming, Hann,
  Butterworth, Gaussian) with a random cut-off, times a Gaussian blur of random width;
- a ramp exponent around 1 and a low-frequency floor;
- an angular modulation of the power (random strength and direction);
- a smooth random amplitude map (log-normal, random strength);
- a pixel std drawn log-uniformly over 1.7 decades.

The denoiser is conditioned on the noise std and the transfer ``W`` as the signature would
measure them, each with a random error, so it learns not to trust them blindly. No code
is shared with the sinogram simulators (:mod:`CTNormalizeLib.simulate`, the evaluation-only
:mod:`CTNormalizeLib.evaluate.independent_sim`): nothing here projects or reconstructs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

WINDOWS = ("ramp", "shepp-logan", "cosine", "hamming", "hann", "butterworth", "gaussian")


@dataclass(frozen=True)
class NoiseRanges:
    """Ranges the noise physics is drawn from (recorded in the model card)."""

    sigma_hu: tuple = (3.0, 150.0)          # pixel std, log-uniform
    cutoff: tuple = (0.16, 0.5)             # window cut-off, cycles/pixel
    blur: tuple = (0.18, 1.2)               # Gaussian blur's 1/e frequency, cycles/pixel
    ramp_power: tuple = (0.7, 1.3)
    low_floor: tuple = (0.0, 0.04)          # added to |f| (cycles/pixel)
    anisotropy: tuple = (0.0, 0.6)
    amplitude_log_std: tuple = (0.0, 0.35)  # smooth non-stationarity
    cond_sigma_error: float = 0.15          # log-normal error of the std given to the network
    cond_freq_error: float = 0.15           # log-normal error of the transfer's frequency scale

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _window_on(xp, name: str, x):
    """The window at ``x = f / fc >= 0`` with array module ``xp`` (numpy, or torch for the device path)."""
    inside = (x <= 1.0) * 1.0
    if name == "ramp":
        return inside
    if name == "shepp-logan":
        return xp.sinc(x / 2.0) * inside
    if name == "cosine":
        return xp.cos(math.pi * x / 2.0) * inside
    if name == "hamming":
        return (0.54 + 0.46 * xp.cos(math.pi * x)) * inside
    if name == "hann":
        return (0.5 + 0.5 * xp.cos(math.pi * x)) * inside
    if name == "butterworth":
        return 1.0 / xp.sqrt(1.0 + x ** 8)
    if name == "gaussian":
        return xp.exp(-(x ** 2))
    raise ValueError(f"unknown window {name!r}")


def _power(xp, w, r, theta, blur, low_floor, ramp_power, anisotropy, angle):
    """Noise power ``(|f| + floor)^p (W G)^2 (1 + a cos 2(theta - angle))`` from the window values ``w``.

    The parameters are numbers (numpy) or per-field ``[B, 1, 1]`` tensors (torch).
    """
    t = w * xp.exp(-((r / blur) ** 2))
    return (r + low_floor) ** ramp_power * t ** 2 * (1.0 + anisotropy * xp.cos(2.0 * (theta - angle)))


def window(name: str, f: np.ndarray, fc: float) -> np.ndarray:
    """Reconstruction window ``W(f)`` (``f`` in cycles/pixel, cut-off ``fc``)."""
    return _window_on(np, name, np.clip(np.asarray(f, float) / fc, 0.0, None))


@dataclass(frozen=True)
class NoisePhysics:
    """One draw of the noise physics."""

    sigma_hu: float
    window: str
    cutoff: float
    blur: float
    ramp_power: float
    low_floor: float
    anisotropy: float
    angle: float
    amplitude_log_std: float

    def transfer(self, f) -> np.ndarray:
        """The in-plane transfer ``W(f) G(f)`` (``f`` cycles/pixel): what the signature measures as the MTF."""
        f = np.asarray(f, float)
        return window(self.window, f, self.cutoff) * np.exp(-((f / self.blur) ** 2))

    def nps(self, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
        """Unnormalized 2D noise power on the frequency grid ``(fy, fx)`` (cycles/pixel)."""
        r = np.hypot(fy, fx)
        return _power(np, window(self.window, r, self.cutoff), r, np.arctan2(fy, fx), self.blur, self.low_floor,
                      self.ramp_power, self.anisotropy, self.angle)


def draw_physics(rng: np.random.Generator, ranges: NoiseRanges = NoiseRanges()) -> NoisePhysics:
    """A random :class:`NoisePhysics` from ``ranges``."""
    u = lambda r: float(rng.uniform(*r))  # noqa: E731
    lo, hi = ranges.sigma_hu
    return NoisePhysics(
        sigma_hu=float(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
        window=str(rng.choice(WINDOWS)), cutoff=u(ranges.cutoff), blur=u(ranges.blur),
        ramp_power=u(ranges.ramp_power), low_floor=u(ranges.low_floor), anisotropy=u(ranges.anisotropy),
        angle=float(rng.uniform(0, math.pi)), amplitude_log_std=u(ranges.amplitude_log_std))


def noise_field(phys: NoisePhysics, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size x size`` float32 noise field with ``phys``'s spectrum and amplitude map, pixel std ~ ``sigma_hu``."""
    f = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    amp = np.sqrt(np.maximum(phys.nps(fy, fx), 0.0))
    white = rng.standard_normal((size, size))
    n = np.fft.ifft2(np.fft.fft2(white) * amp).real
    n /= max(float(n.std()), 1e-12)
    if phys.amplitude_log_std > 0:
        coarse = rng.standard_normal((max(2, size // 32),) * 2)
        from scipy.ndimage import zoom

        g = zoom(coarse, size / coarse.shape[0], order=3)[:size, :size]
        g = (g - g.mean()) / max(float(g.std()), 1e-6)
        a = np.exp(phys.amplitude_log_std * g)
        n *= a / math.sqrt(float(np.mean(a ** 2)))
    return (n * phys.sigma_hu).astype(np.float32)


def conditioning(phys: NoisePhysics, rng: np.random.Generator, ranges: NoiseRanges = NoiseRanges()) -> list:
    """What the network is told about ``phys``, with the measurement errors the signature makes.

    Returns :func:`~CTNormalizeLib.models.conditioning.denoise_features` of a noise std and
    transfer off by log-normal errors (``cond_sigma_error``, ``cond_freq_error``).
    """
    from ..models.conditioning import denoise_features

    s = phys.sigma_hu * math.exp(rng.normal(0.0, ranges.cond_sigma_error))
    k = math.exp(rng.normal(0.0, ranges.cond_freq_error))
    return denoise_features(s, lambda f: phys.transfer(np.asarray(f) / k), 1.0)


def noise_fields_torch(physics: list, size: int, generator, device="cpu"):
    """:func:`noise_field` for a batch, on ``device`` (torch): ``[len(physics), size, size]`` float32.

    The same spectrum, amplitude map and std as the numpy reference (not the same random
    numbers); for training on a GPU, where drawing noise on the host would starve it.
    ``generator`` is a ``torch.Generator`` on ``device`` (seed it per step to resume exactly).
    """
    import torch
    import torch.nn.functional as F

    n = len(physics)
    f = torch.fft.fftfreq(size, device=device, dtype=torch.float32)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    r = torch.hypot(fy, fx)
    theta = torch.atan2(fy, fx)
    col = lambda name: torch.tensor([float(getattr(p, name)) for p in physics], device=device,  # noqa: E731
                                    dtype=torch.float32)[:, None, None]
    # one tensor op per window type over the whole batch (a Python loop per field would starve a GPU)
    x = r[None] / col("cutoff")
    w = torch.zeros((n, size, size), device=device, dtype=torch.float32)
    for name in {p.window for p in physics}:
        sel = torch.tensor([p.window == name for p in physics], device=device)
        w[sel] = _window_on(torch, name, x[sel])
    nps = _power(torch, w, r[None], theta[None], col("blur"), col("low_floor"), col("ramp_power"),
                 col("anisotropy"), col("angle"))
    amp = torch.sqrt(torch.clamp(nps, min=0.0))
    white = torch.randn((n, size, size), generator=generator, device=device)
    field = torch.fft.ifft2(torch.fft.fft2(white) * amp).real
    field = field / field.flatten(1).std(1).clamp_min(1e-12)[:, None, None]
    log_std = torch.tensor([p.amplitude_log_std for p in physics], device=device, dtype=torch.float32)
    k = max(2, size // 32)
    coarse = torch.randn((n, 1, k, k), generator=generator, device=device)
    g = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0]
    g = (g - g.flatten(1).mean(1)[:, None, None]) / g.flatten(1).std(1).clamp_min(1e-6)[:, None, None]
    a = torch.exp(log_std[:, None, None] * g)
    a = a / torch.sqrt((a ** 2).flatten(1).mean(1))[:, None, None]
    sigma = torch.tensor([p.sigma_hu for p in physics], device=device, dtype=torch.float32)
    return field * a * sigma[:, None, None]
