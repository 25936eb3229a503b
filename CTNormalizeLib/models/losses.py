"""Training losses: L1, spectral-norm PatchGAN hinge, discriminator feature matching, HU-window curriculum.

- L1 in HU-scaled units (the emphysema U-Net, and the main term everywhere).
- Hinge GAN (the S0 reference: D hinge, G adversarial weight alpha2 = 5e-3 next to L1 alpha1 = 1).
- Feature matching (STAN-CT): L1 between discriminator features of output and target.
- HU-window curriculum (RadiomicGAN's dynamic window training): the L1 is computed on
  HU clipped to a window that starts narrow (lung + soft tissue) and widens each time the
  loss plateaus, until it reaches the model's full input window.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def l1_loss(pred, target, mask=None):
    """Mean absolute error, optionally inside ``mask`` (same shape, 0/1)."""
    diff = (pred - target).abs()
    if mask is None:
        return diff.mean()
    return (diff * mask).sum() / mask.sum().clamp_min(1.0)


def windowed_l1(pred, target, lo: float, hi: float):
    """L1 after clipping both images to ``[lo, hi]`` (in the model's scaled units)."""
    return (pred.clamp(lo, hi) - target.clamp(lo, hi)).abs().mean()


def hinge_d_loss(real_scores, fake_scores):
    """Discriminator hinge loss: mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))."""
    import torch

    return torch.relu(1.0 - real_scores).mean() + torch.relu(1.0 + fake_scores).mean()


def hinge_g_loss(fake_scores):
    """Generator hinge (adversarial) loss: -mean(D(fake))."""
    return -fake_scores.mean()


def feature_matching_loss(real_feats, fake_feats):
    """STAN-CT feature matching: mean over layers of L1(D_l(fake), D_l(real).detach())."""
    total = 0.0
    for r, f in zip(real_feats, fake_feats):
        total = total + (f - r.detach()).abs().mean()
    return total / max(1, len(real_feats))


@dataclass
class WindowCurriculum:
    """RadiomicGAN-style dynamic HU window: start narrow, widen when the loss plateaus.

    Parameters
    ----------
    windows : list of (lo, hi)
        HU windows from narrow to the full window.
    patience : int
        Steps without ``min_delta`` relative improvement of the smoothed loss before widening.
    min_delta : float
        Relative improvement that counts as progress.
    """

    windows: list = field(default_factory=lambda: [(-1000.0, 200.0), (-1050.0, 500.0), (-1100.0, 900.0)])
    patience: int = 150
    min_delta: float = 0.01
    stage: int = 0
    best: float = float("inf")
    since_best: int = 0
    ema: float | None = None

    def window(self) -> tuple[float, float]:
        return tuple(self.windows[self.stage])

    @property
    def final(self) -> bool:
        return self.stage >= len(self.windows) - 1

    def update(self, loss: float) -> bool:
        """Record one step's loss; returns True when the window was widened."""
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        if self.ema < self.best * (1 - self.min_delta):
            self.best, self.since_best = self.ema, 0
            return False
        self.since_best += 1
        if self.since_best >= self.patience and not self.final:
            self.stage += 1
            self.best, self.since_best, self.ema = float("inf"), 0, None
            return True
        return False

    def state(self) -> dict:
        return {"stage": self.stage, "best": self.best if self.best != float("inf") else None,
                "since_best": self.since_best, "ema": self.ema}

    def load_state(self, s: dict):
        self.stage = int(s["stage"])
        self.best = float("inf") if s.get("best") is None else float(s["best"])
        self.since_best = int(s["since_best"])
        self.ema = s.get("ema")
