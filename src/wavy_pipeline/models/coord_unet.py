"""``CoordUNet``: Stable Diffusion's UNet with coordinate channels (the diffusion stand-in's).

Its own module because diffusers loads a pipeline component of a class it does not know by
importing the module that ``model_index.json`` names (``wavy_pipeline.models.coord_unet``)
and looking up its loader there: the module must also have ``ModelMixin`` as a name.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from diffusers import ModelMixin, UNet2DConditionModel


class CoordUNet(UNet2DConditionModel):
    """``UNet2DConditionModel`` whose ``conv_in`` also sees two coordinate channels (x and y,
    -1 at the left/top to 1 at the right/bottom): "CoordConv" (Liu et al. 2018).

    The config is ``UNet2DConditionModel``'s (``in_channels`` counts the latent channels
    only), so ``save_pretrained``/``from_pretrained`` work unchanged; a pipeline saved with
    it names this class in ``model_index.json`` and loads it back from this module.
    """

    @functools.wraps(UNet2DConditionModel.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conv = self.conv_in
        self.conv_in = torch.nn.Conv2d(
            conv.in_channels + 2, conv.out_channels, conv.kernel_size, padding=conv.padding
        )

    def forward(self, sample: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return super().forward(torch.cat([sample, coordinate_grid(sample)], 1), *args, **kwargs)


def coordinate_grid(sample: torch.Tensor) -> torch.Tensor:
    """``(batch, 2, H, W)``: x then y, each from -1 to 1 across ``sample``'s last two axes."""
    b, _, h, w = sample.shape
    ys = torch.linspace(-1, 1, h, device=sample.device, dtype=sample.dtype)
    xs = torch.linspace(-1, 1, w, device=sample.device, dtype=sample.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None].expand(b, 2, h, w)


__all__ = ["CoordUNet", "ModelMixin", "coordinate_grid"]
