"""Training losses, chosen by name.

The paper trains every network with Keras ``bce_dice_loss`` (paper-code-spec.md §3.4 and
§4 item 9): the pixel-mean binary cross-entropy plus ``1 - soft Dice``, where the soft
Dice is pooled over the **whole batch** (every pixel of every image flattened and summed
together, not a mean of per-image Dice values) with ``smooth = 1e-7`` in both the
numerator and the denominator. The targets are the *soft* resized masks (values in
[0, 1]), so nothing here binarises them.

Because the Dice is pooled, the loss of a batch is not the mean of the per-image losses,
and the validation loss depends on how the images were batched (§4 item 9).
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


LOSSES: dict[str, LossFn] = {
    "bce_dice": bce_dice_loss,
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
