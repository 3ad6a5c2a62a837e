"""Several trained networks of one task as one (:class:`MeanEnsemble`): the average of their probabilities.

Networks trained alike but apart (another seed, another schedule) disagree most where the image is
ambiguous, along the nerve's edge; averaging their probability maps cancels part of that and keeps what
they agree on. A cascade takes an ensemble as its refiner (``python -m train.cascade --refiner A.pt
--refiner B.pt``): the engines export it as one graph (one ONNX session, int8 like any other), so
nothing downstream knows it is several networks; it costs each member's time.

A member may see its input mirrored left to right (``mirrored``; ``python -m train.cascade --mirror alternate``), its
probabilities flipped back before the mean: the refiners are trained with left-right flips, so that is a test-time
flip shared out among the members, at no cost beyond theirs.

Registered as a composite (:func:`train.models.register_model`) when imported; the parts' registry never
imports it (a composite sits above its parts).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn

from train.errors import UserError
from train.models import ModelEntry, build_model, model_stride, register_model

ENSEMBLE_NAME = "ensemble"
"""``config["model"]["name"]`` of an ensemble (a cascade's refiner spec may be one)."""
PROB_EPS = 1e-7
"""Clamp of the averaged probability before its logit (``torch.logit``'s ``eps``), as ``CascadeNet``'s flip."""


class MeanEnsemble(nn.Module):
    """``[N,1,H,W]`` in, the logit of the members' mean probability ``[N,1,H,W]`` out.

    ``members``: ``{"name", "kwargs"}`` records of registered networks (at least two); their strides must
    divide :attr:`stride` (32, every mn-seg network's multiple). ``mirrored``: one flag a member (default all
    false): that member sees the input flipped left to right and its probabilities are flipped back.
    """

    name: ClassVar[str] = ENSEMBLE_NAME
    stride: ClassVar[int] = 32
    has_vgg_encoder: ClassVar[bool] = False

    def __init__(self, members: Sequence[dict] | None = None, mirrored: Sequence[bool] | None = None) -> None:
        super().__init__()
        specs = [dict(m) for m in (members or [])]
        if len(specs) < 2:
            raise UserError(f"an ensemble needs at least two networks, got {len(specs)}")
        for spec in specs:
            if not isinstance(spec.get("name"), str):
                raise UserError(f"an ensemble member must be {{'name', 'kwargs'}}, got {spec!r}")
            if spec["name"] == ENSEMBLE_NAME:
                raise UserError("an ensemble member cannot be an ensemble; list its networks instead")
            if self.stride % model_stride(spec["name"]):
                raise UserError(f"{spec['name']}'s stride {model_stride(spec['name'])} does not divide the "
                                f"ensemble's {self.stride}")
        flags = [False] * len(specs) if mirrored is None else list(mirrored)
        if len(flags) != len(specs) or not all(isinstance(f, bool) for f in flags):
            raise UserError(f"an ensemble's mirrored must be one true/false a member ({len(specs)}), got {mirrored!r}")
        self.member_specs = specs
        self.mirrored = flags
        self.members = nn.ModuleList(build_model(s["name"], **s.get("kwargs", {})) for s in specs)

    def forward(self, x: Tensor) -> Tensor:
        """The logit of the mean of the members' sigmoid probabilities (a mirrored member's flipped back)."""
        probs = []
        for member, mirror in zip(self.members, self.mirrored):
            if mirror:
                probs.append(torch.flip(torch.sigmoid(member(torch.flip(x, [3])).float()), [3]))
            else:
                probs.append(torch.sigmoid(member(x).float()))
        return torch.logit(torch.stack(probs).mean(0), eps=PROB_EPS)

    def extra_repr(self) -> str:  # noqa: D102
        return f"members={len(self.member_specs)}, mirrored={self.mirrored}"


register_model(ENSEMBLE_NAME, ModelEntry(MeanEnsemble, "mean of several trained networks' probabilities (a "
                                         "cascade's refiner: python -m train.cascade --refiner A --refiner B)"),
               composite=True)
