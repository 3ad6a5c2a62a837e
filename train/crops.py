"""Training windows of the cascade's refiner (``mn-train --crop WxH``): windows of the frame around
the true nerve, shifted at random by up to ``jitter`` of the half-window (what a localiser gets
wrong), optionally with negative windows that hold no nerve; and the centred validation windows.
The window is placed by :mod:`train.window`, as at inference."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from train.data import DatasetWrapper
from train.errors import UserError
from train.window import crop_box, mask_centre


class CropDataset(DatasetWrapper):
    """Windows of ``crop_wh`` around the (augmented) true nerve of a full-frame dataset.

    Each item takes the full-frame ``(image, mask)`` of ``base`` (augmented there), centres the
    window on the mask's centroid, shifts it by a uniform offset of up to ``jitter`` times half
    the window in each direction (what a localiser gets wrong), clamps it inside the frame and
    cuts. A mask the augmentation pushed out of the frame gives a random window. Deterministic
    in (seed, epoch, index), like :class:`train.data.SegmentationDataset`.

    With ``negatives`` > 0, that share of the items is instead a window placed at random where it
    holds no nerve at all (no mask pixel above :data:`NEGATIVE_MAX`), with an empty target: the
    refiner learns to answer "nothing here" for a window the localiser put on another structure
    (a tendon, a vessel, another body part), which is what the presence decision reads. An item
    for which no such window is found in :data:`NEGATIVE_TRIES` draws stays a positive.

    With ``removed`` > 0, that share of the items has the nerve removed from the frame
    (:func:`train.perturb.remove_nerve`: the tissue beside it painted over it) and keeps the window
    where the nerve was, with an empty target: the hardest negative, the right place without a
    nerve. Drawn from a separate stream, so the other items are those of ``removed=0``.
    """

    def __init__(self, base: Any, crop_wh: tuple[int, int], jitter: float = 0.25, seed: int = 0,
                 negatives: float = 0.0, removed: float = 0.0) -> None:
        if not 0.0 <= jitter <= 1.0:
            raise UserError(f"--crop-jitter must be in [0, 1], got {jitter}")
        if not 0.0 <= negatives < 1.0:
            raise UserError(f"--crop-negatives is a share of the windows in [0, 1), got {negatives}")
        super().__init__(base)
        self.crop = (int(crop_wh[0]), int(crop_wh[1]))
        self.jitter = float(jitter)
        self.seed = int(seed)
        self.negatives = float(negatives)
        if not 0.0 <= removed < 1.0 or negatives + removed >= 1.0:
            raise UserError(f"--nerve-removed is a share of the windows in [0, 1) and, with --crop-negatives, "
                            f"below 1 in all; got {removed} and {negatives}")
        self.removed = float(removed)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.base[index]
        h, w = image.shape[-2:]
        rng = np.random.default_rng([self.seed, self.epoch, int(index) % len(self), 7])
        centre = mask_centre(mask[0].numpy())
        cw, ch = self.crop
        if centre is None:
            centre = (rng.uniform(cw / 2, w - cw / 2), rng.uniform(ch / 2, h - ch / 2))
        dx, dy = rng.uniform(-1.0, 1.0, size=2) * self.jitter * np.array([cw / 2.0, ch / 2.0])
        x0, y0 = crop_box((centre[0] + dx, centre[1] + dy), self.crop, (w, h))
        if self.removed > 0 and np.random.default_rng([self.seed, self.epoch, int(index) % len(self), 11]).random() \
                < self.removed:
            from train.perturb import remove_nerve

            removed = remove_nerve(image[0].numpy(), mask[0].numpy())
            if removed is not None:
                window = torch.from_numpy(removed[y0:y0 + ch, x0:x0 + cw].copy())[None]
                return window, torch.zeros((mask.shape[0], ch, cw), dtype=mask.dtype)
        if self.negatives > 0 and rng.random() < self.negatives:
            box = negative_box(mask[0].numpy(), self.crop, rng)
            if box is not None:
                x0, y0 = box
                empty = torch.zeros((mask.shape[0], ch, cw), dtype=mask.dtype)
                return image[:, y0:y0 + ch, x0:x0 + cw].contiguous(), empty
        return image[:, y0:y0 + ch, x0:x0 + cw].contiguous(), mask[:, y0:y0 + ch, x0:x0 + cw].contiguous()


NEGATIVE_MAX = 0.01
"""A negative window holds no mask value above this (soft edges of a resized mask included)."""
NEGATIVE_TRIES = 30
"""Random window positions tried before a negative item falls back to a positive one."""


def negative_box(mask: np.ndarray, crop_wh: tuple[int, int], rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left ``(x0, y0)`` of a random ``crop_wh`` window of ``mask`` ``[H, W]`` with no nerve in it, or None."""
    h, w = mask.shape
    cw, ch = crop_wh
    for _ in range(NEGATIVE_TRIES):
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        if float(mask[y0:y0 + ch, x0:x0 + cw].max(initial=0.0)) <= NEGATIVE_MAX:
            return x0, y0
    return None


def crop_around_truth(images: np.ndarray, masks: np.ndarray, crop_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validation windows: each ``[N,1,H,W]`` image and mask cut around its true nerve (no jitter)."""
    out_i, out_m = [], []
    h, w = images.shape[-2:]
    cw, ch = crop_wh
    if len(images) == 0:  # no validation images (mn-train --split none)
        empty = np.zeros((0, 1, ch, cw), np.float32)
        return empty, empty.copy()
    for image, mask in zip(images, masks):
        centre = mask_centre(mask[0]) or (w / 2.0, h / 2.0)
        x0, y0 = crop_box(centre, crop_wh, (w, h))
        out_i.append(image[:, y0:y0 + ch, x0:x0 + cw])
        out_m.append(mask[:, y0:y0 + ch, x0:x0 + cw])
    return np.ascontiguousarray(np.stack(out_i)), np.ascontiguousarray(np.stack(out_m))
