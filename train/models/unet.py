"""U-Net as in the authors' ``modules/models/unet.py`` (spec §1.1, decision §4.1).

Not the classic paper U-Net: 32 -> 512 filters, BatchNorm after every conv, bilinear
upsampling (no 2x2 up-conv), concat ``[up, skip]``, and the shared 2-channel head.
7,858,405 parameters Keras-style (trainable 7,852,517), equal to Table II.

:class:`PlainUNet` is also the base of :class:`train.models.lunet.LUNet`.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

from torch import Tensor, nn

from train.models.layers import ConvPair, Head2, SegmentationNet, UpBlock, keras_init_


class PlainUNet(SegmentationNet):
    """Single encoder-decoder: ``len(filters)`` levels of :class:`ConvPair` + pool, a bottleneck pair,
    bilinear-up decoder with concat skips, :class:`Head2`.

    Args:
        filters: encoder filters per level; the decoder mirrors them.
        bottleneck: filters of the bottleneck pair.
        bn2: BatchNorm after the second conv of every block (BN after the first is always on).
        dropout: dropout rate after the bottleneck (0 = none).
    """

    def __init__(
        self, filters: Sequence[int], bottleneck: int, *, bn2: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.encoder = nn.ModuleList()
        in_ch = 1
        for f in filters:
            self.encoder.append(ConvPair(in_ch, f, bn2=bn2))
            in_ch = f
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvPair(in_ch, bottleneck, bn2=bn2)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList()
        in_ch = bottleneck
        for f in reversed(filters):
            self.decoder.append(UpBlock(in_ch, [f], f, bn2=bn2))
            in_ch = f
        self.head = Head2(in_ch)
        keras_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, 1, H, W]`` for a ``[N, 1, H, W]`` grey batch."""
        self.check_input(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip)
        return self.head(x)


class UNet(PlainUNet):
    """The paper's U-Net (spec §1.1): filters 32/64/128/256, bottleneck 512, BN on every conv."""

    name: ClassVar[str] = "unet"
    stride: ClassVar[int] = 16
    has_vgg_encoder: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__((32, 64, 128, 256), 512, bn2=True, dropout=0.0)
