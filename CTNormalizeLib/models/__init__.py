"""Learned-normalization architectures, losses and the model registry.

Architectures: :mod:`.conditioned` (the default protocol-conditioned 2.5D network),
:mod:`.unet2d` (kernel-normalization U-Net), :mod:`.s0_reference` (3D EDSR-style GAN
baseline). :func:`build_model` makes any of them from a card's ``architecture`` entry.
"""

from .factory import ARCHITECTURES, build_model  # noqa: F401
