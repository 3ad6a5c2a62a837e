"""Temporal consistency as a training signal (``mn-train --consistency W``).

In video the same tissue is imaged again 24 times a second, each time with a new speckle pattern
(the probe and the tissue move by fractions of a wavelength, and the electronic noise is new). A network
that outlines the nerve a little differently under each speckle pattern reports an area that flickers
from frame to frame although the nerve did not change: error a user reads as motion (issue 18).

With ``--consistency W`` every training item is seen twice in the same batch: as augmented (view A)
and with a fresh speckle pattern on the same tissue (view B, :func:`respeckle`: same geometry, same
target). The loss is the mean of the two views' supervised losses plus ``W`` times the disagreement
of the two predictions (:func:`disagreement`: on 0/1 masks ``1 - Dice(A, B)``, the share of the outlined
area that moved; pooled over the batch like the supervised Dice). The disagreement
pulls both predictions towards each other wherever the speckle decides the outline; the
supervised terms keep them on the truth. Costs twice the compute per batch.

Deterministic: view B of item ``i`` in epoch ``e`` depends only on (seed, e, i) like every other
augmentation here, so workers and resumes change nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np
import torch
from torch import Tensor

from train.data import DatasetWrapper
from train.errors import UserError
from train.losses import bce_dice_loss

SPECKLE = 0.15
"""Strength of view B's multiplicative speckle (as in the strong augmentation's speckle)."""
SPECKLE_SIGMA = 0.8
"""Gaussian sigma (pixels) of view B's speckle noise (the strong augmentation's)."""


def respeckle(image: np.ndarray, rng: np.random.Generator, strength: float = SPECKLE,
              sigma: float = SPECKLE_SIGMA) -> np.ndarray:
    """The same tissue under a new speckle pattern: ``x + s * (x - min x) * blur(N(0, 1))``.

    ``image`` is a z-scored frame or a window of one (``[H, W]`` or ``[1, H, W]``, float32). Speckle
    multiplies the echo intensity, and a z-scored value is the intensity shifted and scaled; the darkest
    pixel stands for zero echo, so ``x - min x`` is proportional to the intensity and the noise it gets is
    multiplicative as in the strong augmentation. The result is not re-standardised: the network sees
    windows of frames z-scored as a whole, and a new speckle pattern leaves a frame's mean and spread
    almost unchanged.
    """
    x = np.asarray(image, dtype=np.float32)
    plane = x.reshape(x.shape[-2:])
    noise = rng.standard_normal(plane.shape).astype(np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    out = plane + np.float32(strength) * (plane - plane.min(initial=np.inf)) * noise
    return out.reshape(x.shape).astype(np.float32, copy=False)


class TwinViewDataset(DatasetWrapper):
    """Items of ``base`` as two views of the same tissue: ``image`` ``[2, H, W]`` (view A = ``base``'s item,
    view B = :func:`respeckle` of it) and ``base``'s mask ``[1, H, W]``, the target of both."""

    def __init__(self, base: Any, seed: int = 0) -> None:
        super().__init__(base)
        self.seed = int(seed)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.base[index]
        if image.shape[0] != 1:
            raise ValueError(f"TwinViewDataset needs one-channel items, got {tuple(image.shape)}")
        rng = np.random.default_rng([self.seed, self.epoch, int(index) % len(self), 23])
        view_b = torch.from_numpy(respeckle(image.numpy(), rng))
        return torch.cat([image, view_b]), mask


def check_weight(weight: float) -> float:
    """``--consistency``'s weight, checked (0 turns it off)."""
    weight = float(weight)
    if not (weight >= 0.0 and np.isfinite(weight)):
        raise UserError(f"--consistency is the weight of the two views' disagreement, 0 (off) or more; got {weight}")
    return weight


def disagreement(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """``sum (p_a - p_b)^2 / (sum p_a + sum p_b + 1)`` over the batch, ``p = sigmoid(logits)``.

    0 exactly when the two probability maps are equal (soft ones too: ``1 - soft Dice(p_a, p_b)`` is not, it
    would push the maps towards 0 and 1 rather than towards each other); on 0/1 masks it is ``1 - Dice``, the
    share of the two outlines' area that one has and the other has not. Pooled over the batch like the
    supervised Dice; the 1 keeps two empty maps at 0.
    """
    a, b = torch.sigmoid(logits_a.float()), torch.sigmoid(logits_b.float())
    return ((a - b) ** 2).sum() / (a.sum() + b.sum() + 1.0)


def twin_loss(logits: Tensor, target: Tensor, weight: float,
              loss_fn: Callable[[Tensor, Tensor], Tensor] = bce_dice_loss) -> tuple[Tensor, Tensor]:
    """The loss of a batch of twin views and view A's logits.

    ``logits`` ``[2N, 1, H, W]``: the network's output on the N A-views followed by the N B-views;
    ``target`` ``[N, 1, H, W]``. Returns ``(mean of the two views' loss_fn (the run's --loss) + weight *
    disagreement, view A's logits)``.
    """
    n = target.shape[0]
    if logits.shape[0] != 2 * n:
        raise ValueError(f"twin_loss: {logits.shape[0]} outputs for {n} targets (two views each expected)")
    a, b = logits[:n].float(), logits[n:].float()
    supervised = 0.5 * (loss_fn(a, target) + loss_fn(b, target))
    return supervised + weight * disagreement(a, b), a
