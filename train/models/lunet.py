"""L-UNet, the lightweight U-Net of the paper (spec §1.2, decision §4.2).

Four levels (3 pools): filters 32/64/128, bottleneck 256, decoder 128/64/32, 2-channel head.
Two variants of the authors' code:

- ``"table2"`` (default): the older ``lw_unet`` whose count is Table II's -- BatchNorm after
  both convs of every block, no dropout. 1,952,485 parameters Keras-style (trainable 1,949,669).
- ``"head"``: the HEAD ``lightweight_unet.py`` that the final notebook trained -- BatchNorm only
  after the first conv of each block, Dropout 0.2 after the bottleneck. 1,949,669 (trainable 1,948,261).
"""

from __future__ import annotations

from typing import ClassVar

from train.errors import UserError
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

    def __init__(self, variant: str = "table2") -> None:
        if variant not in LUNET_VARIANTS:
            raise UserError(
                f"unknown lunet variant {variant!r}; valid variants: {', '.join(sorted(LUNET_VARIANTS))}"
            )
        opts = LUNET_VARIANTS[variant]
        super().__init__((32, 64, 128), 256, bn2=bool(opts["bn2"]), dropout=float(opts["dropout"]))
        self.variant = variant

    def extra_repr(self) -> str:  # noqa: D102
        return f"variant={self.variant!r}"
