"""Two-network models with a VGG19 first encoder: DoubleU-Net and DL-UNet (spec §1.3, §1.4, §4.4, §4.5).

Both run network 1 (VGG19 encoder -> ASPP -> decoder with SE blocks -> output 1, a sigmoid
map), multiply the 1-channel input by output 1, and run network 2 (its own encoder with SE
blocks -> ASPP [-> bottleneck pair] -> decoder concatenating ``[up, VGG skip, net-2 skip]``)
whose output is the model's only output (no deep supervision of output 1).

- ``dbunet`` (:class:`DoubleUNet`): VGG19 to block5_conv4, 4 levels (32..256), 1x1 output
  convs, no bottleneck. 29,296,994 parameters Keras-style (trainable 29,289,698).
- ``dlunet`` (:class:`DLUNet`, the proposed model): VGG19 cut after block4_conv4, 3 levels
  (32..128), 2-channel heads, ASPP + two 256-filter bottleneck convs in network 2.
  14,774,698 (trainable 14,769,450).
- ``dlunet-b4c3`` (:class:`DLUNetB4C3`, Table III's "VGG16"): VGG19 cut at block4_conv3, third
  skip from block3_conv3 (block3_conv4 is still on the path), no BN on the second conv of
  every block of decoder 1 and network 2 nor on the second bottleneck conv.
  12,411,178 (trainable 12,407,786).

The input is 1-channel ``[N, 1, H, W]``; the VGG encoder gets it replicated into 3 identical
channels, with no ImageNet preprocessing (spec §1.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from train.models.layers import (
    ASPP,
    ASPP_FILTERS,
    ConvBNReLU,
    ConvPair,
    Head1,
    Head2,
    SegmentationNet,
    UpBlock,
    keras_init_,
)
from train.models.vgg import VGG19Encoder


@dataclass(frozen=True)
class DoubleNetConfig:
    """Topology of a two-network model.

    Attributes:
        vgg_skips: Keras VGG19 layers used as skips, shallow to deep (one per level).
        vgg_out: Keras VGG19 layer feeding network 1's ASPP.
        filters: network-2 encoder filters per level; both decoders use them reversed.
        head: ``"head1"`` (1x1 conv, DoubleU-Net) or ``"head2"`` (2-channel head, DL-UNet).
        bottleneck: filters of the conv pair after network 2's ASPP, ``None`` for none.
        bn2: BatchNorm after the second conv of the decoder-1 / network-2 blocks and of the
            bottleneck pair.
    """

    vgg_skips: tuple[str, ...]
    vgg_out: str
    filters: tuple[int, ...]
    head: str
    bottleneck: int | None
    bn2: bool


def _make_head(kind: str, in_channels: int) -> nn.Module:
    if kind == "head1":
        return Head1(in_channels)
    if kind == "head2":
        return Head2(in_channels)
    raise ValueError(f"unknown head {kind!r}")


class DoubleNet(SegmentationNet):
    """Generic two-network model built from a :class:`DoubleNetConfig` (see the module docstring).

    ``forward(x)`` returns the logits of output 2; :meth:`forward_details` also returns
    output 1 and the multiply layer's output.
    """

    config: ClassVar[DoubleNetConfig]
    has_vgg_encoder: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        cfg = self.config
        if len(cfg.vgg_skips) != len(cfg.filters):
            raise ValueError("one VGG skip per level is needed")
        # Network 1: VGG19 -> ASPP -> decoder 1 (+SE) -> output 1.
        self.encoder = VGG19Encoder(cfg.vgg_skips, cfg.vgg_out)
        self.aspp1 = ASPP(self.encoder.out_channels)
        vgg_skip_ch = self.encoder.skip_channels
        self.decoder1 = nn.ModuleList()
        in_ch = ASPP_FILTERS
        for f, skip_ch in zip(reversed(cfg.filters), reversed(vgg_skip_ch)):
            self.decoder1.append(UpBlock(in_ch, [skip_ch], f, bn2=cfg.bn2, se=True))
            in_ch = f
        self.head1 = _make_head(cfg.head, in_ch)
        # Network 2: encoder (+SE) -> pool -> ASPP [-> bottleneck] -> decoder 2 (+SE) -> output 2.
        self.encoder2 = nn.ModuleList()
        in_ch = 1
        for f in cfg.filters:
            self.encoder2.append(ConvPair(in_ch, f, bn2=cfg.bn2, se=True))
            in_ch = f
        self.pool = nn.MaxPool2d(2)
        self.aspp2 = ASPP(in_ch)
        in_ch = ASPP_FILTERS
        if cfg.bottleneck is not None:
            self.bottleneck: nn.Module = nn.Sequential(
                ConvBNReLU(in_ch, cfg.bottleneck),
                ConvBNReLU(cfg.bottleneck, cfg.bottleneck, bn=cfg.bn2),
            )
            in_ch = cfg.bottleneck
        else:
            self.bottleneck = nn.Identity()
        self.decoder2 = nn.ModuleList()
        for f, skip_ch in zip(reversed(cfg.filters), reversed(vgg_skip_ch)):
            self.decoder2.append(UpBlock(in_ch, [skip_ch, f], f, bn2=cfg.bn2, se=True))
            in_ch = f
        self.head2 = _make_head(cfg.head, in_ch)
        keras_init_(self)

    def _run(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(output-2 logits, output-1 probability, multiply output)."""
        self.check_input(x)
        feats, vgg_skips = self.encoder(x.expand(-1, 3, -1, -1))
        y = self.aspp1(feats)
        for block, skip in zip(self.decoder1, reversed(vgg_skips)):
            y = block(y, skip)
        output1 = torch.sigmoid(self.head1(y))
        multiplied = x * output1
        z = multiplied
        skips2: list[Tensor] = []
        for block in self.encoder2:
            z = block(z)
            skips2.append(z)
            z = self.pool(z)
        z = self.bottleneck(self.aspp2(z))
        for block, skip1, skip2 in zip(self.decoder2, reversed(vgg_skips), reversed(skips2)):
            z = block(z, skip1, skip2)
        return self.head2(z), output1, multiplied

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, 1, H, W]`` of output 2 (the model's output) for a ``[N, 1, H, W]`` batch."""
        return self._run(x)[0]

    def forward_details(self, x: Tensor) -> dict[str, Tensor]:
        """``{"output1", "multiply", "output2"}``, all ``[N, 1, H, W]``.

        ``output1`` and ``output2`` are sigmoid probabilities; ``multiply`` is network 2's
        input (the grey input times ``output1``).
        """
        logits, output1, multiplied = self._run(x)
        return {"output1": output1, "multiply": multiplied, "output2": torch.sigmoid(logits)}


class DoubleUNet(DoubleNet):
    """DB-UNet: the DoubleU-Net of ``modules/models/doubleunet.py`` with output 2 only (spec §1.3)."""

    name: ClassVar[str] = "dbunet"
    stride: ClassVar[int] = 16
    config: ClassVar[DoubleNetConfig] = DoubleNetConfig(
        vgg_skips=("block1_conv2", "block2_conv2", "block3_conv4", "block4_conv4"),
        vgg_out="block5_conv4",
        filters=(32, 64, 128, 256),
        head="head1",
        bottleneck=None,
        bn2=True,
    )


class DLUNet(DoubleNet):
    """DL-UNet, the proposed model of ``modules/models/dbunet_BN.py`` (spec §1.4)."""

    name: ClassVar[str] = "dlunet"
    stride: ClassVar[int] = 8
    config: ClassVar[DoubleNetConfig] = DoubleNetConfig(
        vgg_skips=("block1_conv2", "block2_conv2", "block3_conv4"),
        vgg_out="block4_conv4",
        filters=(32, 64, 128),
        head="head2",
        bottleneck=256,
        bn2=True,
    )


class DLUNetB4C3(DoubleNet):
    """Table III's "VGG16" DL-UNet, ``modules/models/dbunet_BN_vgg16.py`` (spec §1.4): still VGG19 weights."""

    name: ClassVar[str] = "dlunet-b4c3"
    stride: ClassVar[int] = 8
    config: ClassVar[DoubleNetConfig] = DoubleNetConfig(
        vgg_skips=("block1_conv2", "block2_conv2", "block3_conv3"),
        vgg_out="block4_conv3",
        filters=(32, 64, 128),
        head="head2",
        bottleneck=256,
        bn2=False,
    )
