"""Building blocks shared by the mn-seg networks.

Every block mirrors the Keras numerics of the authors' code
(``/work/shared/docs/paper-code-spec.md`` §0 "Conventions" and §4 item 10):

- ``Conv2d`` 3x3 with 'same' padding, stride 1, **bias on** (also before BatchNorm),
  Glorot/Xavier-uniform kernel and zero bias (:func:`keras_init_`);
- ``BatchNorm2d(momentum=0.01, eps=1e-3)`` (Keras momentum 0.99), order Conv -> BN -> ReLU;
- MaxPool 2x2 stride 2; bilinear x2 upsampling with half-pixel centres
  (``align_corners=False``, the TF2 ``UpSampling2D(interpolation='bilinear')``);
- squeeze-and-excitation with ratio 8 and bias-free fully connected layers;
- ASPP with 64 filters and rates 1/6/12/18 (pool-branch conv with bias, the others without).

The networks themselves live in :mod:`train.models.unet`, :mod:`train.models.lunet` and
:mod:`train.models.double`; they all derive from :class:`SegmentationNet`.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from train.errors import UserError

BN_MOMENTUM = 0.01
"""PyTorch momentum equal to Keras' ``BatchNormalization(momentum=0.99)`` (spec §0)."""
BN_EPS = 1e-3
"""Keras' default BatchNorm epsilon (spec §0)."""
SE_RATIO = 8
"""Squeeze-and-excitation reduction ratio (spec §0)."""
ASPP_FILTERS = 64
"""Filters of every ASPP branch and of its projection (spec §0)."""
ASPP_RATES = (6, 12, 18)
"""Dilation rates of the three 3x3 ASPP branches (the 1x1 branch is rate 1)."""


def keras_batchnorm(num_features: int) -> nn.BatchNorm2d:
    """``BatchNorm2d`` with Keras' defaults: momentum 0.99 (PyTorch 0.01), eps 1e-3 (spec §0)."""
    return nn.BatchNorm2d(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)


def keras_init_(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases on every ``Conv2d`` and ``Linear`` (spec §0).

    Keras' ``GlorotUniform`` uses fan_in = k*k*C_in and fan_out = k*k*C_out, which is what
    :func:`torch.nn.init.xavier_uniform_` computes for a ``[C_out, C_in, k, k]`` kernel.
    BatchNorm keeps PyTorch's init (gamma 1, beta 0, mean 0, var 1), identical to Keras'.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling, TF2 half-pixel convention (spec §0: never a transposed conv)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def nearest_valid_size(size_wh: tuple[int, int], stride: int) -> tuple[int, int]:
    """The multiple of ``stride`` nearest to each side (ties round up, never below ``stride``)."""
    return tuple(max(stride, ((s + stride // 2) // stride) * stride) for s in size_wh)  # type: ignore[return-value]


def check_size_divisible(size_wh: tuple[int, int], stride: int, model_name: str) -> None:
    """Raise :class:`UserError` unless both W and H are positive multiples of ``stride``.

    The message names the nearest valid size, e.g. ``size 380x288 is not divisible by 16
    (the stride of unet); the nearest valid size is 384x288``.
    """
    try:
        w, h = (int(v) for v in size_wh)
    except (TypeError, ValueError) as exc:
        raise UserError(f"size {size_wh!r} is not a (width, height) pair of integers") from exc
    if w <= 0 or h <= 0:
        raise UserError(f"size {w}x{h} must be positive; {model_name} needs multiples of {stride}")
    if w % stride or h % stride:
        nw, nh = nearest_valid_size((w, h), stride)
        raise UserError(
            f"size {w}x{h} is not divisible by {stride} (the stride of {model_name}); "
            f"the nearest valid size is {nw}x{nh}"
        )


def _is_tracing() -> bool:
    """True while the model is traced, scripted, compiled or exported (skip Python-side checks)."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is None:
        return False
    if compiler.is_compiling():
        return True
    is_exporting = getattr(compiler, "is_exporting", None)
    return bool(is_exporting()) if is_exporting is not None else False


class SegmentationNet(nn.Module):
    """Base class of the mn-seg networks.

    Input: ``[N, 1, H, W]`` float32 (per-image z-scored grey, spec §3.1), H and W multiples
    of :attr:`stride`. ``forward`` returns the **logits** ``[N, 1, H, W]`` of the final output
    (the head's last 1x1 conv without its sigmoid; train with BCE-with-logits).
    """

    name: ClassVar[str] = "?"
    """Registry name, used in error messages."""
    stride: ClassVar[int] = 1
    """Total downsampling factor: H and W must be multiples of it."""
    has_vgg_encoder: ClassVar[bool] = False
    """True if the network embeds a VGG19 encoder (see :func:`train.models.vgg.load_vgg19_weights`)."""

    def check_input(self, x: Tensor) -> None:
        """Raise :class:`UserError` for an input the network cannot take (skipped while tracing)."""
        if _is_tracing():
            return
        if x.dim() != 4 or x.shape[1] != 1:
            raise UserError(
                f"{self.name} expects a [N, 1, H, W] grey batch, got shape {tuple(x.shape)}"
            )
        check_size_divisible((int(x.shape[3]), int(x.shape[2])), self.stride, self.name)


class _SingleValueBatchNorm2d(nn.BatchNorm2d):
    """Keras-default BatchNorm that, like Keras, also trains on one value per channel.

    Used after ASPP's global-pool branch, whose map is 1x1: with a batch of one image
    PyTorch's BatchNorm refuses to train ("Expected more than 1 value per channel"), while
    Keras normalises the single value to 0 (output = beta) and moves the running mean
    towards it and the running variance towards 0. This reproduces that case; every other
    case is plain ``BatchNorm2d``.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
                with torch.no_grad():
                    value = x.detach().reshape(-1)
                    self.running_mean.mul_(1.0 - self.momentum).add_(value, alpha=self.momentum)
                    self.running_var.mul_(1.0 - self.momentum)
                    if self.num_batches_tracked is not None:
                        self.num_batches_tracked.add_(1)
            out = self.bias.view(1, -1, 1, 1).expand_as(x) if self.affine else torch.zeros_like(x)
            return out + 0.0 * x  # keep the graph connected to x (its gradient is exactly 0)
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """Conv2d ('same') -> optional BatchNorm -> ReLU, Keras-style (spec §0).

    Children are named ``conv``, ``bn`` (only if ``bn``) and ``relu``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        bn: bool = True,
        bias: bool = True,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size - 1) // 2,
            dilation=dilation,
            bias=bias,
        )
        if bn:
            self.bn = keras_batchnorm(out_channels)
        self.relu = nn.ReLU(inplace=True)


class SEBlock(nn.Module):
    """Squeeze-and-excitation, ratio 8 (spec §0): GAP -> FC C->C/8 + ReLU -> FC C/8->C + sigmoid -> scale.

    Both fully connected layers are bias-free, so the block has C²/4 parameters.
    """

    def __init__(self, channels: int, ratio: int = SE_RATIO) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // ratio, bias=False)
        self.fc2 = nn.Linear(channels // ratio, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class ConvPair(nn.Module):
    """The 'conv block': two 3x3 :class:`ConvBNReLU` (BN flags per conv), then an optional SE.

    ``bn2=False`` gives L-UNet's HEAD block (spec §1.2) and the second conv of the "VGG16"
    DL-UNet variant (spec §1.4); ``se=True`` gives the DoubleU-Net ``conv_block`` (spec §1.3).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, bn1: bool = True, bn2: bool = True, se: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels, bn=bn1)
        self.conv2 = ConvBNReLU(out_channels, out_channels, bn=bn2)
        self.se: nn.Module = SEBlock(out_channels) if se else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.se(self.conv2(self.conv1(x)))


class UpBlock(nn.Module):
    """Decoder step: bilinear x2 up -> concat ``[up, *skips]`` along channels -> :class:`ConvPair`."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: Sequence[int],
        out_channels: int,
        *,
        bn2: bool = True,
        se: bool = False,
    ) -> None:
        super().__init__()
        self.block = ConvPair(in_channels + sum(skip_channels), out_channels, bn2=bn2, se=se)

    def forward(self, x: Tensor, *skips: Tensor) -> Tensor:  # noqa: D102
        return self.block(torch.cat([upsample2x(x), *skips], dim=1))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in DoubleU-Net's Keras code (spec §0).

    Branches at the input resolution, each followed by BN -> ReLU: (a) global average pool ->
    1x1 conv **with** bias -> broadcast back to H x W (Keras upsamples the 1x1 map
    bilinearly, which is a constant map); (b) 1x1 conv; (c, d, e) 3x3 convs with dilation
    6/12/18; (b-e) without bias. Concat 5x64 = 320 -> 1x1 conv 64 (no bias) -> BN -> ReLU.
    Parameters (Keras-style total): 1856·C + 22,080.
    """

    def __init__(self, in_channels: int, filters: int = ASPP_FILTERS, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.pool_conv = nn.Conv2d(in_channels, filters, 1, bias=True)
        self.pool_bn = _SingleValueBatchNorm2d(filters)
        self.branch1 = ConvBNReLU(in_channels, filters, 1, bias=False)
        self.atrous = nn.ModuleList(
            ConvBNReLU(in_channels, filters, 3, bias=False, dilation=r) for r in rates
        )
        self.project = ConvBNReLU(filters * (2 + len(rates)), filters, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h, w = x.shape[2], x.shape[3]
        pooled = F.relu(self.pool_bn(self.pool_conv(x.mean(dim=(2, 3), keepdim=True))))
        branches = [pooled.expand(-1, -1, h, w), self.branch1(x)]
        branches.extend(conv(x) for conv in self.atrous)
        return self.project(torch.cat(branches, dim=1))


class Head2(nn.Module):
    """The shared '2-channel head' (spec §0): 3x3 conv to 2 + ReLU, then 1x1 conv to 1 (logits).

    578 + 3 parameters from 32 channels. The sigmoid of the Keras model is left to the caller.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, 3, padding=1)
        self.out = nn.Conv2d(2, 1, 1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.out(F.relu(self.conv(x)))


class Head1(nn.Module):
    """DoubleU-Net's output block (spec §0): a single 1x1 conv to 1 channel (logits)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out = nn.Conv2d(in_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.out(x)
