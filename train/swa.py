"""Stochastic weight averaging (``mn-train --swa-from EPOCH``): the mean of the weights at the ends of epochs.

Izmailov et al. 2018 (*Averaging Weights Leads to Wider Optima and Better Generalization*): weights visited by
training at a steady, not too small learning rate lie around a wide minimum; their mean sits nearer its centre than
any of them, and a network at the centre of a wide minimum generalises better and varies less from one training run
to another. No cost at inference: the averaged network is the same network.

:class:`WeightAverage` keeps the running mean of a model's floating-point weights (float64, so the mean of *n*
snapshots is exact to float32 whatever *n*); integer buffers (BatchNorm's batch counters) are the latest model's.
The BatchNorm running statistics of an average are not the average of its snapshots' statistics, so
:func:`recompute_batchnorm` measures them again with the averaged weights on training batches (what
``torch.optim.swa_utils.update_bn`` does). The trainer keeps the average in ``last.pt`` (``--resume`` continues
it exactly) and writes the averaged network as ``swa.pt`` when the run ends; ``best.pt`` and ``last.pt`` keep
the network as trained.
"""

from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn


class WeightAverage:
    """The running mean of a model's floating-point ``state_dict`` entries, one snapshot per :meth:`update`."""

    def __init__(self) -> None:
        self.mean: dict[str, torch.Tensor] = {}
        self.n = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Add ``model``'s current weights as one more snapshot."""
        self.n += 1
        for key, value in model.state_dict().items():
            v = value.detach().cpu()
            if not v.is_floating_point():
                self.mean[key] = v.clone()
            elif key not in self.mean:
                self.mean[key] = v.to(torch.float64)
            else:
                self.mean[key] += (v.to(torch.float64) - self.mean[key]) / self.n

    def averaged(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the mean weights (its BatchNorm statistics still to be measured)."""
        if not self.n:
            raise ValueError("no weights averaged yet")
        out = copy.deepcopy(model)
        target = out.state_dict()
        out.load_state_dict({k: v.to(dtype=target[k].dtype) for k, v in self.mean.items()})
        return out

    def state_dict(self) -> dict:
        return {"n": self.n, "mean": {k: v.clone() for k, v in self.mean.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.n = int(state["n"])
        self.mean = {k: v.clone() for k, v in state["mean"].items()}


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], autocast: dict | None = None) -> int:
    """Measure every BatchNorm layer's running mean and variance again, as the plain average over ``batches``
    (each an input tensor the model takes) of the per-batch statistics, in training mode (as training measured
    them). Returns the number of batches seen; the model is left in eval mode.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = {}
    for layer in layers:
        layer.reset_running_stats()
        momenta[layer] = layer.momentum
        layer.momentum = None  # cumulative average over the batches
    model.train()
    seen = 0
    try:
        for x in batches:
            with torch.autocast(**(autocast or {"device_type": x.device.type, "enabled": False})):
                model(x)
            seen += 1
    finally:
        for layer in layers:
            layer.momentum = momenta[layer]
        model.eval()
    return seen
