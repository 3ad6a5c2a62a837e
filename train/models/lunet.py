"""L-UNet, the lightweight U-Net of the paper (spec §1.2, decision §4.2).

Four levels (3 pools): filters 32/64/128, bottleneck 256, decoder 128/64/32, 2-channel head.
Two variants of the authors' code:

- ``"table2"`` (default): the older ``lw_unet`` whose count is Table II's -- BatchNorm after
  both convs of every block, no dropout. 1,952,485 parameters Keras-style (trainable 1,949,669).
- ``"head"``: the HEAD ``lightweight_unet.py`` that the final notebook trained -- BatchNorm only
  after the first conv of each block, Dropout 0.2 after the bottleneck. 1,949,669 (trainable 1,948,261).

``width`` scales every filter count (mn-seg's addition for the real-time models; 1.0 is the
paper's network). :class:`CoarseLUNet` (``lunet-coarse``) is the cascade's localiser: a 4x4
average pool, a (narrow) L-UNet at a quarter of the resolution, and a bilinear x4 upsampling
back to the input size, so it takes and returns full-size frames; :class:`CoarseLUNet2`
(``lunet-coarse2``) the same with a 2x2 pool.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from train.errors import UserError
from train.models.layers import SegmentationNet
from train.models.unet import PlainUNet

LUNET_VARIANTS: dict[str, dict[str, float | bool]] = {
    "table2": {"bn2": True, "dropout": 0.0},
    "head": {"bn2": False, "dropout": 0.2},
}
"""Variant name -> (BN after the second conv, dropout after the bottleneck)."""


class LUNet(PlainUNet):
    """L-UNet (spec §1.2). ``variant`` is ``"table2"`` (default) or ``"head"``."""

    name: ClassVar[str] = "lunet"
    stride: ClassVar[int] = 8
    has_vgg_encoder: ClassVar[bool] = False

    def __init__(self, variant: str = "table2", width: float = 1.0) -> None:
        if variant not in LUNET_VARIANTS:
            raise UserError(
                f"unknown lunet variant {variant!r}; valid variants: {', '.join(sorted(LUNET_VARIANTS))}"
            )
        filters, bottleneck = scaled_filters(width)
        opts = LUNET_VARIANTS[variant]
        super().__init__(filters, bottleneck, bn2=bool(opts["bn2"]), dropout=float(opts["dropout"]))
        self.variant = variant
        self.width = float(width)

    def extra_repr(self) -> str:  # noqa: D102
        return f"variant={self.variant!r}" + (f", width={self.width:g}" if self.width != 1.0 else "")


def scaled_filters(width: float) -> tuple[tuple[int, ...], int]:
    """L-UNet's filters (32, 64, 128) and bottleneck 256 times ``width`` (at least 4 each)."""
    try:
        width = float(width)
    except (TypeError, ValueError):
        raise UserError(f"lunet width must be a number, got {width!r}") from None
    if not 0.0 < width <= 4.0:
        raise UserError(f"lunet width must be in (0, 4], got {width:g} (1.0 is the paper's network)")
    filters = tuple(max(4, int(round(f * width))) for f in (32, 64, 128))
    return filters, max(4, int(round(256 * width)))


class CoarseLUNet(SegmentationNet):
    """The cascade's localiser: ``AvgPool(pool)`` -> L-UNet(``width``) -> bilinear x``pool``.

    Input and output are full-size (``[N,1,H,W]`` in, logits ``[N,1,H,W]`` out) while the
    network runs at ``H/pool x W/pool``: at 384x288 with the defaults it costs about 1/20 of
    an L-UNet at that size. H and W must be multiples of ``8 * pool`` (:attr:`stride`).
    """

    name: ClassVar[str] = "lunet-coarse"
    stride: ClassVar[int] = 32
    has_vgg_encoder: ClassVar[bool] = False
    pool: ClassVar[int] = 4

    def __init__(self, width: float = 0.5, variant: str = "table2") -> None:
        super().__init__()
        self.down = nn.AvgPool2d(self.pool)
        self.net = LUNet(variant=variant, width=width)
        self.width = float(width)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, 1, H, W]`` at the input's size."""
        self.check_input(x)
        logits = self.net(self.down(x))
        return F.interpolate(logits, scale_factor=float(self.pool), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:  # noqa: D102
        return f"pool={self.pool}, width={self.width:g}"


class CoarseLUNet2(CoarseLUNet):
    """``lunet-coarse`` at twice the resolution: ``AvgPool(2)`` -> L-UNet(``width``) -> bilinear x2.

    Four times the localiser's work (at 384x288, about a fifth of an L-UNet at that size) for a nerve
    that a 4x4 pool flattens to a few rows (a compressed or superficial nerve is 8-12 rows of a 288-row
    frame). H and W must be multiples of 16.
    """

    name: ClassVar[str] = "lunet-coarse2"
    stride: ClassVar[int] = 16
    pool: ClassVar[int] = 2
