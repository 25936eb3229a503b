"""The default model: a light protocol-conditioned 2.5D network (FiLM).

Input: ``context`` neighbouring slices of the source volume *already resampled onto the
target z grid* (see :mod:`CTNormalizeLib.inference.zgrid`), as channels; output: the
centre slice in the target protocol. The z change (thick -> thin or thin -> thick) is done
by the slice-profile resampler in front of the network, so one network serves every
thickness pair and any up-sampling factor; the network then restores sharpness, noise
and the thin-slice detail the interpolation cannot.

The body is a two-level U-Net made of pixel-unshuffle / pixel-shuffle (cheap, exact
down/up sampling) with FiLM residual blocks at 1/4 resolution, where most of the
computation runs on 1/16 of the pixels. That is what makes it fast on a CPU.
"""

from __future__ import annotations

from .conditioning import PAIR_FEATURES


def _torch():
    import torch
    from torch import nn

    return torch, nn


def build_conditioned(context: int = 5, width: int = 48, blocks: int = 3, head: int = 16,
                      cond_dim: int = PAIR_FEATURES, cond_hidden: int = 64):
    """Build :class:`ConditionedNet` (torch imported lazily).

    Parameters
    ----------
    context : int
        Number of input slices (odd); the output is the centre one.
    width : int
        Channels at 1/4 resolution.
    blocks : int
        FiLM residual blocks at 1/4 resolution.
    head : int
        Channels at full resolution.
    cond_dim : int
        Length of the conditioning vector (:func:`~.conditioning.pair_features`).
    cond_hidden : int
        Hidden size of the conditioning MLP.
    """
    torch, nn = _torch()
    F = torch.nn.functional

    class FiLMBlock(nn.Module):
        def __init__(self, ch, cond):
            super().__init__()
            self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
            self.c2 = nn.Conv2d(ch, ch, 3, padding=1)
            self.film = nn.Linear(cond, 2 * ch)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

        def forward(self, x, c):
            gamma, beta = self.film(c).chunk(2, dim=1)
            h = F.silu(self.c1(x))
            h = h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
            return x + self.c2(h)

        def forward_inplace(self, x, c):
            """:meth:`forward` with the element-wise steps in place (the same arithmetic, bit for bit)."""
            gamma, beta = self.film(c).chunk(2, dim=1)
            h = F.silu(self.c1(x), inplace=True)
            h.mul_(1 + gamma[:, :, None, None]).add_(beta[:, :, None, None])
            return self.c2(h).add_(x)

    class ConditionedNet(nn.Module):
        """2.5D FiLM U-Net; ``forward(x [B, context, H, W], cond [B, cond_dim]) -> [B, 1, H, W]``.

        H and W must be multiples of 4 (the inference engine pads).
        """

        multiple = 4

        def __init__(self):
            super().__init__()
            self.context = context
            self.cond = nn.Sequential(nn.Linear(cond_dim, cond_hidden), nn.SiLU(),
                                      nn.Linear(cond_hidden, cond_hidden), nn.SiLU())
            self.head = nn.Conv2d(context, head, 3, padding=1)
            self.down1 = nn.Conv2d(4 * head, 2 * head, 1)
            self.mid1 = nn.Conv2d(2 * head, 2 * head, 3, padding=1)
            self.down2 = nn.Conv2d(8 * head, width, 1)
            self.blocks = nn.ModuleList(FiLMBlock(width, cond_hidden) for _ in range(blocks))
            self.up2 = nn.Conv2d(width, 8 * head, 1)
            self.fuse1 = nn.Conv2d(2 * head, 2 * head, 3, padding=1)
            self.up1 = nn.Conv2d(2 * head, 4 * head, 1)
            self.film_out = nn.Linear(cond_hidden, 2 * head)
            self.tail = nn.Conv2d(head, 1, 3, padding=1)
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)
            nn.init.zeros_(self.film_out.weight)
            nn.init.zeros_(self.film_out.bias)

        def forward(self, x, cond):
            if not torch.is_grad_enabled():
                return self._forward_inplace(x, cond)
            c = self.cond(cond)
            centre = x[:, self.context // 2: self.context // 2 + 1]
            f0 = F.silu(self.head(x))                                 # H
            f1 = F.silu(self.down1(F.pixel_unshuffle(f0, 2)))         # H/2
            f1 = f1 + F.silu(self.mid1(f1))
            f2 = self.down2(F.pixel_unshuffle(f1, 2))                 # H/4
            for blk in self.blocks:
                f2 = blk(f2, c)
            g1 = F.pixel_shuffle(self.up2(F.silu(f2)), 2) + f1        # H/2
            g1 = F.silu(self.fuse1(g1))
            g0 = F.pixel_shuffle(self.up1(g1), 2) + f0                # H
            gamma, beta = self.film_out(c).chunk(2, dim=1)
            g0 = F.silu(g0) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
            return centre + self.tail(g0)

        def _forward_inplace(self, x, cond):
            # Inference only (no autograd): the same operations in the same order, but
            # element-wise steps overwrite their inputs. On a CPU most of this network's
            # time is memory traffic of those steps, not convolution; IEEE addition and
            # multiplication commute, so a + b -> b.add_(a) changes no bit.
            c = self.cond(cond)
            k = self.context // 2
            centre = x[:, k: k + 1]
            f0 = F.silu(self.head(x), inplace=True)
            f1 = F.silu(self.down1(F.pixel_unshuffle(f0, 2)), inplace=True)
            f1 = F.silu(self.mid1(f1), inplace=True).add_(f1)
            f2 = self.down2(F.pixel_unshuffle(f1, 2))
            for blk in self.blocks:
                f2 = blk.forward_inplace(f2, c)
            g1 = F.pixel_shuffle(self.up2(F.silu(f2, inplace=True)), 2).add_(f1)
            g1 = F.silu(self.fuse1(g1), inplace=True)
            g0 = F.pixel_shuffle(self.up1(g1), 2).add_(f0)
            gamma, beta = self.film_out(c).chunk(2, dim=1)
            g0 = F.silu(g0, inplace=True).mul_(1 + gamma[:, :, None, None]).add_(beta[:, :, None, None])
            return self.tail(g0).add_(centre)

    return ConditionedNet()
