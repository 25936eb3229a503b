"""S0 reference: 3D EDSR-style generator with z up-sampling and a 3D spectral-norm discriminator.

The speed and quality baseline from the seed work (3D spectral-norm GAN for dose and
thickness). Generator: residual blocks of 64 channels without batch norm (EDSR), z
up-sampling x2 by nearest-neighbour + conv. Patches 16x64x64 in, 32x64x64 out. Trained
with hinge loss for D and L1 + adversarial for G (alpha1 = 1, alpha2 = 5e-3), see
:mod:`.losses`.
"""

from __future__ import annotations


def build_s0_generator(channels: int = 64, blocks: int = 8, res_scale: float = 0.1, z_up: int = 2):
    """3D EDSR generator; ``forward(x [B, 1, D, H, W], cond=None) -> [B, 1, z_up*D, H, W]``."""
    import torch
    from torch import nn

    class ResBlock3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv3d(channels, channels, 3, padding=1)
            self.c2 = nn.Conv3d(channels, channels, 3, padding=1)

        def forward(self, x):
            return x + res_scale * self.c2(torch.relu(self.c1(x)))

    class S0Generator(nn.Module):
        multiple = 1

        def __init__(self):
            super().__init__()
            self.z_up = z_up
            self.head = nn.Conv3d(1, channels, 3, padding=1)
            self.body = nn.Sequential(*[ResBlock3D() for _ in range(blocks)])
            self.body_tail = nn.Conv3d(channels, channels, 3, padding=1)
            self.up = nn.Conv3d(channels, channels, 3, padding=1)
            self.tail = nn.Conv3d(channels, 1, 3, padding=1)

        def forward(self, x, cond=None):
            h = self.head(x)
            h = h + self.body_tail(self.body(h))
            if self.z_up > 1:
                h = nn.functional.interpolate(h, scale_factor=(self.z_up, 1, 1), mode="nearest")
            h = torch.relu(self.up(h))
            base = nn.functional.interpolate(x, scale_factor=(self.z_up, 1, 1), mode="nearest") if self.z_up > 1 else x
            return base + self.tail(h)

    return S0Generator()


def build_s0_discriminator(channels: int = 32, layers: int = 4, in_channels: int = 1):
    """3D PatchGAN discriminator with spectral norm on every conv; returns a score map.

    ``forward(x)`` returns ``(scores, features)`` where ``features`` are the intermediate
    activations used by the feature-matching loss.
    """
    from torch import nn
    from torch.nn.utils import spectral_norm

    convs, ch_in = [], in_channels
    for i in range(layers):
        ch_out = channels * (2 ** min(i, 3))
        stride = (1, 2, 2) if i < layers - 1 else 1
        convs.append(spectral_norm(nn.Conv3d(ch_in, ch_out, 3, stride=stride, padding=1)))
        ch_in = ch_out
    return _feature_discriminator(convs, spectral_norm(nn.Conv3d(ch_in, 1, 3, padding=1)))


def build_patch_discriminator_2d(channels: int = 32, layers: int = 3, in_channels: int = 1):
    """2D spectral-norm PatchGAN (for the 2.5D/2D models); ``forward(x) -> (scores, features)``."""
    from torch import nn
    from torch.nn.utils import spectral_norm

    convs, ch_in = [], in_channels
    for i in range(layers):
        ch_out = channels * (2 ** i)
        convs.append(spectral_norm(nn.Conv2d(ch_in, ch_out, 4, stride=2, padding=1)))
        ch_in = ch_out
    return _feature_discriminator(convs, spectral_norm(nn.Conv2d(ch_in, 1, 3, padding=1)))


def _feature_discriminator(convs, out):
    """A discriminator from its convs (leaky ReLU after each) and a scoring conv.

    ``forward(x) -> (scores, features)``: the activations feed the feature-matching loss.
    Parameter names (``convs.N``, ``out``) are those of the earlier per-architecture classes.
    """
    from torch import nn

    class FeatureDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList(convs)
            self.out = out

        def forward(self, x):
            feats = []
            for c in self.convs:
                x = nn.functional.leaky_relu(c(x), 0.2)
                feats.append(x)
            return self.out(x), feats

    return FeatureDiscriminator()
