"""The paper's networks and a registry to build them by name (spec §0, §1; DESIGN.md conventions).

Every model takes a ``[N, 1, H, W]`` float32 grey batch (per-image z-scored), with H and W
multiples of its :attr:`stride`, and returns the logits ``[N, 1, H, W]`` of its final output.
Two-network models (``has_vgg_encoder``) also have ``forward_details(x)``.

Registering a new model means adding one :class:`ModelEntry` to :data:`_REGISTRY`.
Model keyword arguments are JSON-able (they go into checkpoints), e.g.
``build_model("lunet", variant="head")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from train.models.double import DLUNet, DLUNetB4C3, DoubleUNet
from train.models.layers import SegmentationNet, check_size_divisible
from train.models.lunet import CoarseLUNet, CoarseLUNet2, LUNet
from train.models.unet import UNet


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: its class (builder) and a one-line description."""

    cls: type[SegmentationNet]
    description: str

    @property
    def builder(self) -> Callable[..., SegmentationNet]:
        """Callable building the model from keyword arguments."""
        return self.cls


_REGISTRY: dict[str, ModelEntry] = {
    "unet": ModelEntry(
        UNet, "U-Net 32-512, BN on every conv, bilinear up, 2-channel head (spec §1.1; 7,858,405 params)"
    ),
    "lunet": ModelEntry(
        LUNet,
        "L-UNet 32-256, 3 pools; variant='table2' (BN on both convs, Table II, 1,952,485) "
        "or 'head' (BN on first conv + Dropout 0.2, 1,949,669) (spec §1.2); width scales the filters",
    ),
    "dbunet": ModelEntry(
        DoubleUNet,
        "DB-UNet: DoubleU-Net, VGG19 to block5_conv4 + ASPP + SE, output 2 only (spec §1.3; 29,296,994 params)",
    ),
    "dlunet": ModelEntry(
        DLUNet,
        "DL-UNet (proposed): VGG19 cut at block4_conv4 + ASPP + SE, L-UNet-like net 2 "
        "with 256 bottleneck (spec §1.4; 14,774,698 params)",
    ),
    "lunet-coarse": ModelEntry(
        CoarseLUNet,
        "cascade localiser (mn-seg): 4x4 average pool, L-UNet of width 0.5 at 1/4 resolution, bilinear x4 back",
    ),
    "lunet-coarse2": ModelEntry(
        CoarseLUNet2,
        "cascade localiser (mn-seg): 2x2 average pool, L-UNet of width 0.5 at 1/2 resolution, bilinear x2 back",
    ),
    "dlunet-b4c3": ModelEntry(
        DLUNetB4C3,
        "Table III 'VGG16' DL-UNet: VGG19 cut at block4_conv3, skip block3_conv3, "
        "no BN on second convs (spec §1.4; 12,411,178 params)",
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
"""Registered architecture names, in registry order."""

_COMPOSITES: dict[str, ModelEntry] = {}
"""Models assembled from trained networks (e.g. ``cascade``, :mod:`train.cascade_net`): buildable from
a checkpoint's config, but neither trainable by mn-train nor offered with random weights. They register
themselves (:func:`register_model`); this registry never imports them (a composite sits above its parts)."""


def register_model(name: str, entry: ModelEntry, composite: bool = False) -> None:
    """Add a model to the registry; ``composite``: assembled from other registered networks, and so left
    out of :func:`list_models` (a composite's module calls this when it is imported).

    Raises:
        ValueError: ``name`` is registered already with another entry.
    """
    known = _REGISTRY.get(name) or _COMPOSITES.get(name)
    if known is not None and known != entry:
        raise ValueError(f"model {name!r} is registered already")
    (_COMPOSITES if composite else _REGISTRY)[name] = entry


def list_models() -> list[str]:
    """Names accepted by :func:`build_model` (composites aside), in registry order."""
    return list(_REGISTRY)


def _entry(name: str) -> ModelEntry:
    entry = _REGISTRY.get(name) or _COMPOSITES.get(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(_REGISTRY)}")
    return entry


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model with Keras-style random init (VGG weights: see ``load_vgg19_weights``).

    Raises:
        KeyError: unknown ``name``; the message lists the valid names.
    """
    return _entry(name).builder(**kwargs)


def model_stride(name: str) -> int:
    """Total downsampling factor of model ``name`` (H and W must be multiples of it)."""
    return _entry(name).cls.stride


def describe_model(name: str) -> str:
    """One-line description of model ``name``."""
    return _entry(name).description


def check_input_size(name: str, size_wh: tuple[int, int]) -> None:
    """Raise :class:`train.errors.UserError` unless W and H are multiples of the model's stride.

    The message names the nearest valid size, e.g. ``size 380x288 is not divisible by 16
    (the stride of unet); the nearest valid size is 384x288``.
    """
    check_size_divisible(size_wh, model_stride(name), name)


__all__ = [
    "MODEL_NAMES",
    "ModelEntry",
    "build_model",
    "check_input_size",
    "describe_model",
    "list_models",
    "model_stride",
    "register_model",
]
