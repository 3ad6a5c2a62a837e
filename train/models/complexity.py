"""Model complexity: Keras-style parameter counts and GFLOPs (spec §0, DESIGN.md "Numbers").

- :func:`keras_param_count`: what Keras' ``model.summary()`` calls "Total params": every
  parameter plus the BatchNorm running mean and variance (Keras counts 4 values per BN
  channel, 2 of them non-trainable). This is the number in the paper's Table II.
- :func:`trainable_param_count`: parameters with ``requires_grad`` (Keras "Trainable params").
- :func:`gflops`: floating-point operations of one batch-1 forward, as counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (2 per multiply-accumulate of convs and
  matmuls; element-wise ops, pooling, BN and interpolation are not counted).
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DEFAULT_SIZE_WH = (384, 288)
"""The paper's input size, W x H (spec §0)."""


def keras_param_count(model: nn.Module) -> int:
    """All parameters + BatchNorm running_mean/running_var elements (Keras "Total params")."""
    total = sum(p.numel() for p in model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    total += buf.numel()
    return total


def trainable_param_count(model: nn.Module) -> int:
    """Parameters that require a gradient (Keras "Trainable params")."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gflops(model: nn.Module, size_wh: tuple[int, int] = DEFAULT_SIZE_WH) -> float:
    """GFLOPs (1e9, 2 per MAC) of a batch-1 ``[1, 1, H, W]`` forward in eval mode.

    Shapes alone decide the count, so a copy of the model runs on the ``meta`` device: no
    arithmetic is done and the given model is left untouched.
    """
    w, h = size_wh
    meta_model = copy.deepcopy(model).to(device="meta").eval()
    x = torch.zeros(1, 1, int(h), int(w), device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        meta_model(x)
    return counter.get_total_flops() / 1e9


def model_table(names: Iterable[str], size_wh: tuple[int, int] = DEFAULT_SIZE_WH) -> list[dict[str, object]]:
    """One row per registered model: ``name``, ``trainable``, ``keras_total``, ``gflops``, ``description``.

    Models are built on the ``meta`` device (no weight init, no memory), so the table is cheap.
    """
    from train.models import build_model, describe_model  # late: the registry imports this package

    rows: list[dict[str, object]] = []
    for name in names:
        with torch.device("meta"):
            model = build_model(name)
        rows.append(
            {
                "name": name,
                "trainable": trainable_param_count(model),
                "keras_total": keras_param_count(model),
                "gflops": round(gflops(model, size_wh), 2),
                "description": describe_model(name),
            }
        )
    return rows
