"""Training losses, chosen by name.

The paper trains every network with Keras ``bce_dice_loss`` (paper-code-spec.md §3.4 and
§4 item 9): the pixel-mean binary cross-entropy plus ``1 - soft Dice``, where the soft
Dice is pooled over the **whole batch** (every pixel of every image flattened and summed
together, not a mean of per-image Dice values) with ``smooth = 1e-7`` in both the
numerator and the denominator. The targets are the *soft* resized masks (values in
[0, 1]), so nothing here binarises them.

Because the Dice is pooled, the loss of a batch is not the mean of the per-image losses,
and the validation loss depends on how the images were batched (§4 item 9).

``bce_dice_area`` (this project's, not the paper's; ``mn-train --loss bce_dice_area``) adds each image's
relative error of the soft area, ``|sum(p) - sum(t)| / sum(t)``: the number the tool reports is the nerve's
cross-sectional area, per image, while the pooled Dice lets a batch trade one image's area against
another's. Its gradient is the same for every pixel of an image, scaled by the sigmoid's slope, so it acts
where the network is unsure (the boundary). Measured on one fold (2026-12-07,
benchmarks/results/exploratory-refiner-area-loss-amd-vm-2026-12-07/): the refiners meet it by blurring the map,
their soft area right and their 0.5 outline 16-18 % too large; not used by any shipped model.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]

DEFAULT_SMOOTH = 1e-7


def soft_dice(prob: Tensor, target: Tensor, smooth: float = DEFAULT_SMOOTH) -> Tensor:
    """Batch-pooled soft Dice coefficient (paper-code-spec.md §3.4).

    ``(2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)`` where the sums run over
    every element of the batch at once (Keras ``K.flatten`` of the whole batch).

    Args:
        prob: probabilities in [0, 1], any shape (typically ``[N, 1, H, W]``).
        target: soft or hard target of the same shape, values in [0, 1].
        smooth: added to numerator and denominator (Keras code: 1e-7).

    Returns:
        A 0-dim float32 tensor in [0, 1].

    Raises:
        ValueError: if the shapes differ (broadcasting would silently change the sums).
    """
    if prob.shape != target.shape:
        raise ValueError(f"soft_dice: prob shape {tuple(prob.shape)} != target shape {tuple(target.shape)}")
    p = prob.float().reshape(-1)
    t = target.float().reshape(-1)
    intersection = (p * t).sum()
    return (2.0 * intersection + smooth) / (p.sum() + t.sum() + smooth)


def bce_dice_loss(logits: Tensor, target: Tensor, smooth: float = DEFAULT_SMOOTH) -> Tensor:
    """The paper's ``bce_dice_loss`` computed from logits (paper-code-spec.md §3.4, §4 item 9).

    ``mean BCE(sigmoid(logits), target) + (1 - soft_dice(sigmoid(logits), target))``.
    The BCE is :func:`torch.nn.functional.binary_cross_entropy_with_logits` averaged over
    every pixel of the batch (Keras ``binary_crossentropy`` under ``fit()`` works from the
    logits too; the clipped-probability variant differs only numerically). The Dice term
    is batch-pooled (:func:`soft_dice`).

    Everything is computed in float32 with autocast disabled, so the loss is safe inside a
    ``torch.autocast`` region whatever the dtype of ``logits``.

    Args:
        logits: raw network output before the sigmoid, e.g. ``[N, 1, H, W]``.
        target: soft mask of the same shape, values in [0, 1].
        smooth: the soft Dice smoothing term (1e-7 as in the Keras code).

    Returns:
        A 0-dim float32 tensor.

    Raises:
        ValueError: if the shapes differ.
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"bce_dice_loss: logits shape {tuple(logits.shape)} != target shape {tuple(target.shape)}; "
            "the network output and the mask batch must have the same layout (e.g. [N, 1, H, W])"
        )
    with torch.autocast(device_type=logits.device.type, enabled=False):
        z = logits.float()
        t = target.float()
        bce = F.binary_cross_entropy_with_logits(z, t, reduction="mean")
        dice = soft_dice(torch.sigmoid(z), t, smooth=smooth)
        return bce + (1.0 - dice)


#: The area term's weight in ``bce_dice_area`` (a 7 % area error adds 0.07, against a converged BCE + Dice of
#: about 0.3).
AREA_WEIGHT = 1.0
#: Images whose target covers less than this fraction of the input are left out of the area term (a window
#: with a sliver of nerve at its edge has no area worth matching; the relative error would be huge).
AREA_MIN_FRACTION = 0.01


def relative_area_error(prob: Tensor, target: Tensor, min_fraction: float = AREA_MIN_FRACTION) -> Tensor:
    """Mean over the images of ``|sum(p) - sum(t)| / sum(t)``, the soft areas' relative error.

    Args:
        prob: probabilities ``[N, C, H, W]`` in [0, 1].
        target: soft or hard target of the same shape.
        min_fraction: images whose target sums to less than this fraction of an image's elements are left
            out (0 when none is left).

    Returns:
        A 0-dim float32 tensor.

    Raises:
        ValueError: if the shapes differ or the tensors are not batched.
    """
    if prob.shape != target.shape or prob.dim() < 2:
        raise ValueError(f"relative_area_error: prob {tuple(prob.shape)} and target {tuple(target.shape)} must be "
                         "batches of one shape, e.g. [N, 1, H, W]")
    p = prob.float().flatten(1).sum(1)
    t = target.float().flatten(1).sum(1)
    keep = t >= min_fraction * target[0].numel()
    if not bool(keep.any()):
        return prob.new_zeros((), dtype=torch.float32)
    return ((p[keep] - t[keep]).abs() / t[keep]).mean()


def bce_dice_area_loss(logits: Tensor, target: Tensor, weight: float = AREA_WEIGHT) -> Tensor:
    """:func:`bce_dice_loss` plus ``weight`` times each image's relative soft-area error
    (:func:`relative_area_error`), in float32 like it."""
    base = bce_dice_loss(logits, target)
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return base + weight * relative_area_error(torch.sigmoid(logits.float()), target)


LOSSES: dict[str, LossFn] = {
    "bce_dice": bce_dice_loss,
    "bce_dice_area": bce_dice_area_loss,
}


def get_loss(name: str) -> LossFn:
    """Return the loss function registered as ``name``.

    Raises:
        KeyError: listing the valid names if ``name`` is unknown.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}") from None
