"""2D U-Net for kernel normalization (after the emphysema kernel-normalization paper).

One network per (source kernel -> target kernel) family, trained with L1, slice by
slice at the source's own thickness. Built from MONAI's ``BasicUNet``; the output is a
residual added to the input slice.
"""

from __future__ import annotations


def build_unet2d(features=(16, 32, 64, 128, 256, 16), context: int = 1, norm=None):
    """A residual 2D ``monai.networks.nets.BasicUNet``; ``forward(x [B, context, H, W], cond=None)``.

    Parameters
    ----------
    features : sequence of 6 ints
        BasicUNet feature sizes.
    context : int
        Number of input slices (1 = pure 2D); the output is the centre slice.
    norm : str or tuple, optional
        MONAI norm spec. Default None: instance norm computed on 64-px training patches
        does not transfer to whole-slice inference (its statistics depend on the field of view).
    """
    from monai.networks.nets import BasicUNet
    from torch import nn

    class ResidualUNet2D(nn.Module):
        multiple = 16

        def __init__(self):
            super().__init__()
            self.context = context
            self.net = BasicUNet(spatial_dims=2, in_channels=context, out_channels=1,
                                 features=tuple(features), act=("LeakyReLU", {"negative_slope": 0.1}),
                                 norm=tuple(norm) if isinstance(norm, list) else norm)

        def forward(self, x, cond=None):
            c = self.context // 2
            return x[:, c:c + 1] + self.net(x)

    return ResidualUNet2D()
