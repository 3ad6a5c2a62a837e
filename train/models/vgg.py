"""VGG19 encoder for DoubleU-Net and DL-UNet, written in-project (no torchvision).

``VGG19Encoder.features`` is an ``nn.Sequential`` indexed exactly like torchvision's
``vgg19().features`` (convs at 0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34,
a ReLU after each, MaxPool at 4, 9, 18, 27, 36), truncated after the last layer a network
needs, so a torchvision VGG19 state dict (``features.N.weight`` / ``features.N.bias``) loads
into it with :func:`load_vgg19_weights`.

Keras layer names map to torchvision slice ends as in spec §4.6: block1_conv2 -> [:4],
block2_conv2 -> [:9], block3_conv3 -> [:16], block3_conv4 -> [:18], block4_conv3 -> [:25],
block4_conv4 -> [:27], block5_conv4 -> [:36]; each output is taken after its ReLU.

Keras' VGG19 convs have bias and no BatchNorm. Without a weights file the encoder keeps the
Glorot-uniform/zero-bias init of the rest of the model (spec §4.6: random-init default, since
ImageNet weights cannot be downloaded where the project is developed).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from train.errors import UserError

log = logging.getLogger(__name__)

VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, 256, "M",
    512, 512, 512, 512, "M",
    512, 512, 512, 512, "M",
)  # fmt: skip
"""torchvision's configuration "E" (VGG19): conv widths, "M" = 2x2 max pool."""

VGG19_LAYER_ENDS: dict[str, int] = {
    "block1_conv2": 4,
    "block2_conv2": 9,
    "block3_conv3": 16,
    "block3_conv4": 18,
    "block4_conv3": 25,
    "block4_conv4": 27,
    "block5_conv4": 36,
}
"""Keras layer name -> end of the torchvision ``features`` slice that produces its post-ReLU output."""

VGG19_LAYER_CHANNELS: dict[str, int] = {
    "block1_conv2": 64,
    "block2_conv2": 128,
    "block3_conv3": 256,
    "block3_conv4": 256,
    "block4_conv3": 512,
    "block4_conv4": 512,
    "block5_conv4": 512,
}
"""Keras layer name -> its number of output channels."""


def make_vgg19_features(end: int) -> nn.Sequential:
    """torchvision-indexed VGG19 ``features`` truncated to ``[:end]`` (in_channels 3)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=True))
            in_ch = int(v)
    if not 0 < end <= len(layers):
        raise ValueError(f"VGG19 features have {len(layers)} layers, cannot cut at {end}")
    return nn.Sequential(*layers[:end])


class VGG19Encoder(nn.Module):
    """VGG19 ``features`` cut after Keras layer ``out``, returning the skips named in ``skips``.

    Args:
        skips: Keras layer names whose post-ReLU outputs are returned, shallow to deep.
        out: Keras layer name of the encoder output (the features end after its ReLU).

    ``forward(x)`` takes a 3-channel batch and returns ``(output, [skip, ...])``.
    """

    def __init__(self, skips: Sequence[str], out: str) -> None:
        super().__init__()
        unknown = [n for n in (*skips, out) if n not in VGG19_LAYER_ENDS]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {list(VGG19_LAYER_ENDS)}")
        self.skip_names = tuple(skips)
        self.out_name = out
        self.features = make_vgg19_features(VGG19_LAYER_ENDS[out])
        self._skip_ends = frozenset(VGG19_LAYER_ENDS[n] for n in skips)
        if any(e > len(self.features) for e in self._skip_ends):
            raise ValueError(f"skip layers {skips} lie beyond the output layer {out}")

    @property
    def skip_channels(self) -> list[int]:
        """Channels of each skip, in the order of :attr:`skip_names`."""
        return [VGG19_LAYER_CHANNELS[n] for n in self.skip_names]

    @property
    def out_channels(self) -> int:
        """Channels of the encoder output."""
        return VGG19_LAYER_CHANNELS[self.out_name]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # noqa: D102 - see class docstring
        skips: list[Tensor] = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i + 1 in self._skip_ends:
                skips.append(x)
        return x, skips


def find_vgg19_encoder(model_or_encoder: nn.Module) -> VGG19Encoder:
    """The :class:`VGG19Encoder` of a model (or the encoder itself); :class:`UserError` if none."""
    if isinstance(model_or_encoder, VGG19Encoder):
        return model_or_encoder
    found = [m for m in model_or_encoder.modules() if isinstance(m, VGG19Encoder)]
    if len(found) != 1:
        name = getattr(model_or_encoder, "name", type(model_or_encoder).__name__)
        raise UserError(
            f"model {name} has {'no' if not found else len(found)} VGG19 encoder(s); "
            "encoder weights only apply to dbunet, dlunet and dlunet-b4c3"
        )
    return found[0]


def _strip_prefix(state: Mapping[str, object]) -> dict[str, object]:
    """Drop a DataParallel ``module.`` prefix if every key has it."""
    keys = list(state)
    if keys and all(k.startswith("module.") for k in keys):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_vgg19_weights(model_or_encoder: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a torchvision-format VGG19 state dict into the model's VGG19 encoder (spec §4.6).

    Accepts the state dict of a torchvision ``vgg19()`` (keys ``features.N.weight/bias``;
    ``classifier.*`` keys are ignored) or an encoder-only state dict with the same
    ``features.N.*`` keys. Layers beyond the encoder's cut are ignored. The file is read with
    ``torch.load(weights_only=True)``; it is never trusted to run code.

    Raises:
        UserError: the file is missing or unreadable, is not a state dict, lacks a
            ``features.N`` tensor the encoder needs, or has a tensor of the wrong shape.
            The message names the file and what was expected.
    """
    encoder = find_vgg19_encoder(model_or_encoder)
    path_str = os.fspath(path)
    expected = (
        "a torchvision VGG19 state dict (torch.save(torchvision.models.vgg19(weights=...).state_dict(), PATH)) "
        "with keys features.N.weight / features.N.bias"
    )
    if not os.path.isfile(path_str):
        raise UserError(f"VGG19 weights file {path_str} does not exist; expected {expected}")
    try:
        obj = torch.load(path_str, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a user error here
        raise UserError(
            f"cannot read VGG19 weights {path_str} with torch.load(weights_only=True): {exc}; expected {expected}"
        ) from exc
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise UserError(f"VGG19 weights {path_str} hold a {type(obj).__name__}, not a state dict; expected {expected}")
    state = _strip_prefix(obj)
    target = encoder.state_dict()
    missing: list[str] = []
    mismatched: list[str] = []
    new_state: dict[str, Tensor] = {}
    for key, ref in target.items():
        value = state.get(key)
        if value is None:
            missing.append(key)
        elif not isinstance(value, Tensor):
            mismatched.append(f"{key}: a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(ref.shape):
            mismatched.append(f"{key}: shape {tuple(value.shape)}, expected {tuple(ref.shape)}")
        else:
            new_state[key] = value.to(dtype=ref.dtype)
    if missing or mismatched:
        n_features = sum(1 for k in state if k.startswith("features."))
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if mismatched:
            parts.append(f"wrong shape: {'; '.join(mismatched[:6])}{' ...' if len(mismatched) > 6 else ''}")
        hint = " (a vgg19_bn state dict? only plain vgg19 fits)" if n_features > 32 else ""
        raise UserError(
            f"VGG19 weights {path_str} do not fit the encoder (cut after {encoder.out_name}, "
            f"{len(target)} tensors): {'; '.join(parts)}; the file has {n_features} features.* tensors{hint}; "
            f"expected {expected}"
        )
    encoder.load_state_dict(new_state, strict=True)
    ignored = len(state) - len(new_state)
    log.info(
        "loaded %d VGG19 tensors from %s into the encoder (cut after %s); %d other tensors ignored",
        len(new_state),
        path_str,
        encoder.out_name,
        ignored,
    )
