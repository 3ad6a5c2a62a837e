"""The localise-then-refine cascade as one PyTorch module (:class:`CascadeNet`), a composite of two
registered networks.

It registers itself in the parts' registry (:func:`train.models.register_model`) when imported;
the parts' registry never imports it (a composite sits above its parts). Whatever builds models
from a checkpoint's config (:func:`train.checkpoint.model_from_checkpoint`) imports this module,
so ``build_model("cascade", ...)`` works there. The window is placed by :mod:`train.window`, the
very functions the engines' two-session cascade uses.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor, nn

import train.ensemble_net  # noqa: F401  a refiner may be an ensemble: the composite registers when imported
from train.errors import UserError
from train.models import ModelEntry, build_model, model_stride, register_model
from train.models.layers import check_size_divisible
from train.window import (
    candidate_boxes,
    candidate_masses,
    check_tta,
    choose_candidates,
    flip_average,
    paste,
    window_boxes,
)

CASCADE_NAME = "cascade"
"""``config["model"]["name"]`` of a cascade checkpoint."""


def check_crop(crop_wh: Sequence[int], frame_wh: Sequence[int], stride: int, model: str) -> tuple[int, int]:
    """``crop_wh`` as a tuple, or a :class:`UserError` saying what is wrong with it."""
    cw, ch = (int(v) for v in crop_wh)
    fw, fh = (int(v) for v in frame_wh)
    if cw > fw or ch > fh:
        raise UserError(f"--crop {cw}x{ch} must fit inside --size {fw}x{fh}")
    check_size_divisible((cw, ch), stride, model)
    return cw, ch


class CascadeNet(nn.Module):
    """Localiser + refiner as one model: ``[N,1,H,W]`` frame in, full-frame logits out.

    ``localiser`` and ``refiner`` are ``{"name", "kwargs"}`` records of registered networks;
    ``crop`` is the refiner's window ``[W, H]``; ``tta`` the refiner's test-time augmentation
    (:data:`train.window.TTA_MODES`: ``"hflip"`` refines each window and its mirror in one batch and averages
    the probabilities, as the engines do). The window centres are computed on the CPU
    (numpy), so this module cannot be exported as one graph: the engines run the two networks
    as two sessions with the same numpy glue (``engines.cascade``).
    """

    name: ClassVar[str] = CASCADE_NAME
    stride: ClassVar[int] = 32
    """Frame sides must be multiples of the localiser's stride (32 for ``lunet-coarse``)."""
    has_vgg_encoder: ClassVar[bool] = False

    def __init__(self, localiser: dict | None = None, refiner: dict | None = None,
                 crop: Sequence[int] = (128, 96), candidates: int = 1, tta: str = "none") -> None:
        super().__init__()
        self.localiser_spec = dict(localiser or {"name": "lunet-coarse", "kwargs": {}})
        self.refiner_spec = dict(refiner or {"name": "lunet", "kwargs": {}})
        self.localiser = build_model(self.localiser_spec["name"], **self.localiser_spec.get("kwargs", {}))
        self.refiner = build_model(self.refiner_spec["name"], **self.refiner_spec.get("kwargs", {}))
        self.crop = (int(crop[0]), int(crop[1]))
        if int(candidates) < 1:
            raise UserError(f"a cascade needs at least one candidate window, got {candidates}")
        self.candidates = int(candidates)
        self.tta = check_tta(tta)
        self.frame_stride = model_stride(self.localiser_spec["name"])
        check_crop(self.crop, (1 << 30, 1 << 30), model_stride(self.refiner_spec["name"]),
                   self.refiner_spec["name"])

    def boxes(self, loc_prob: np.ndarray) -> list[tuple[int, int]]:
        """Window corners for localiser probabilities ``[N,1,H,W]``."""
        return window_boxes(loc_prob, self.crop)

    def forward(self, x: Tensor) -> Tensor:
        """Full-frame logits ``[N, 1, H, W]``."""
        return self.forward_parts(x)["logits"]

    def forward_parts(self, x: Tensor) -> dict[str, Any]:
        """``logits`` (full frame), ``localiser`` logits and the window ``boxes``."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise UserError(f"cascade expects a [N, 1, H, W] grey batch, got shape {tuple(x.shape)}")
        h, w = int(x.shape[2]), int(x.shape[3])
        cw, ch = self.crop
        if cw > w or ch > h:
            raise UserError(f"the cascade's window {cw}x{ch} does not fit a {w}x{h} frame")
        loc = self.localiser(x)
        loc_prob = torch.sigmoid(loc.float()).detach().cpu().numpy()
        if self.candidates == 1:
            boxes = self.boxes(loc_prob)
            windows = torch.stack([x[i, :, y0:y0 + ch, x0:x0 + cw] for i, (x0, y0) in enumerate(boxes)])
            refined = self.refine(windows)
            return {"logits": paste(refined, boxes, (h, w)), "localiser": loc, "boxes": boxes}
        cands = candidate_boxes(loc_prob, self.crop, self.candidates)
        flat = [(i, box) for i, boxes in enumerate(cands) for box in boxes]
        windows = torch.stack([x[i, :, y0:y0 + ch, x0:x0 + cw] for i, (x0, y0) in flat])
        refined_all = self.refine(windows)
        probs = torch.sigmoid(refined_all.float()).detach().cpu().numpy()
        masses, index = candidate_masses(cands, probs, self.candidates)
        picks = [int(index[i, c]) for i, c in enumerate(choose_candidates(masses))]
        boxes = [flat[j][1] for j in picks]
        refined = refined_all[picks]
        return {"logits": paste(refined, boxes, (h, w)), "localiser": loc, "boxes": boxes,
                "candidates": cands, "masses": masses}

    def refine(self, windows: Tensor) -> Tensor:
        """The refiner's logits for ``windows`` ``[N, 1, ch, cw]``; with ``tta="hflip"`` the logit of the average of
        the window's and its mirror's probabilities (:func:`train.window.flip_average`), both in one batch."""
        if self.tta == "none":
            return self.refiner(windows)
        n = windows.shape[0]
        prob = torch.sigmoid(self.refiner(torch.cat([windows, torch.flip(windows, [3])])).float())
        return torch.logit(flip_average(prob[:n], prob[n:]), eps=1e-7)

    def extra_repr(self) -> str:  # noqa: D102
        return f"crop={self.crop[0]}x{self.crop[1]}, candidates={self.candidates}, tta={self.tta}"


register_model(CASCADE_NAME, ModelEntry(CascadeNet, "localise-then-refine cascade: lunet-coarse localiser + "
                                       "L-UNet on a window around the nerve (train.cascade)"), composite=True)
